"""Bring the web app's third-party browser libraries in from the npm registry (``make vendor``).

The web app has no build step: it loads ES modules straight from ``app/static``. The two libraries it
needs (a Markdown renderer and an HTML sanitizer) are copied here from the packages' own tarballs,
fetched with ``npm pack`` (the ordinary npm client), checked against the pinned tarball integrity,
and recorded with each file's SHA-256 in ``app/static/vendor/manifest.json``;
``tests/unit/test_vendored.py`` checks the committed files against that record.

To upgrade: change a version below, delete its ``integrity`` from the manifest, run ``make vendor``,
review the diff (the new integrity is taken from the registry and written down).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "app" / "static" / "vendor"
MANIFEST = VENDOR / "manifest.json"

#: package -> (version, {file in the tarball: file name in app/static/vendor})
PINS: dict[str, tuple[str, dict[str, str]]] = {
    "marked": ("18.2.1", {"lib/marked.esm.js": "marked.esm.js", "LICENSE": "marked.LICENSE"}),
    "dompurify": (
        "3.4.18",
        {"dist/purify.es.mjs": "purify.es.mjs", "LICENSE": "dompurify.LICENSE"},
    ),
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pack(name: str, version: str, into: Path) -> tuple[Path, str]:
    """``npm pack name@version``: the registry's tarball and its integrity string."""
    out = subprocess.run(
        ["npm", "pack", f"{name}@{version}", "--json", "--pack-destination", str(into)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    info = json.loads(out)[0]
    return into / info["filename"], info["integrity"]


def vendor_one(name: str, version: str, files: dict[str, str], pinned: str | None, work: Path) -> dict[str, object]:
    tarball, integrity = pack(name, version, work)
    if pinned and pinned != integrity:
        sys.exit(f"{name}@{version}: registry integrity {integrity} differs from the pinned {pinned}")
    with tarfile.open(tarball) as tar:
        for inner, local in files.items():
            member = tar.extractfile(f"package/{inner}")
            if member is None:
                sys.exit(f"{name}@{version} has no {inner}")
            (VENDOR / local).write_bytes(member.read())
    return {
        "version": version,
        "integrity": integrity,
        "files": {local: {"from": inner, "sha256": sha256(VENDOR / local)} for inner, local in files.items()},
    }


def main() -> None:
    if shutil.which("npm") is None:
        sys.exit("npm is needed to vendor (only to update the committed files; serving them needs nothing)")
    old = json.loads(MANIFEST.read_text())["packages"] if MANIFEST.exists() else {}
    packages: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (version, files) in PINS.items():
            prior = old.get(name, {})
            pinned = prior.get("integrity") if prior.get("version") == version else None
            packages[name] = vendor_one(name, version, files, pinned, Path(tmp))
            print(f"vendored {name}@{version}")
    MANIFEST.write_text(json.dumps({"packages": packages}, indent=2) + "\n")


if __name__ == "__main__":
    main()
