"""The README and docs stand on their own: no link or path reference leaves the repository, and every
relative link points at a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.md"))]
PAGES += [ROOT / "bench" / "README.md"]


def _leaves_root(page: Path, line: str) -> bool:
    """A ``../`` path that, taken from the page's own folder, ends outside the repository."""
    return any(
        not (page.parent / m).resolve().is_relative_to(ROOT)
        for m in re.findall(r"(?<![\w.])((?:\.\./)+[\w./-]*)", line)
    )


def test_no_page_refers_outside_the_repository() -> None:
    outside = [
        f"{page.relative_to(ROOT)}:{n}"
        for page in PAGES
        for n, line in enumerate(page.read_text().splitlines(), 1)
        if re.search(r"/work/|shared/design", line) or _leaves_root(page, line)
    ]
    assert outside == []


def test_relative_links_resolve_inside_the_repository() -> None:
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#", 1)[0]).resolve()
            if not (path.is_relative_to(ROOT) and path.exists()):
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []
