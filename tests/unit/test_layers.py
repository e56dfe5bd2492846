"""The domain stays pure: ``domain/*.py`` imports only the standard library, msgspec and ``domain`` itself."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

DOMAIN = Path(__file__).resolve().parents[2] / "domain"
ALLOWED = set(sys.stdlib_module_names) | {"msgspec", "domain"}


def imported_roots(source: str) -> set[str]:
    """Top-level package of every absolute import in ``source`` (relative imports stay inside the package)."""
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_checker_sees_imports_in_every_form() -> None:
    source = (
        "import os.path, sqlalchemy as sa\nfrom redis.asyncio import Redis\nfrom . import x\ndef f():\n import app\n"
    )

    assert imported_roots(source) == {"os", "sqlalchemy", "redis", "app"}


DOMAIN_FILES = sorted(DOMAIN.glob("*.py"))


def test_the_domain_package_is_where_it_is_expected() -> None:
    names = {p.name for p in DOMAIN_FILES}
    assert {"model.py", "handlers.py", "events.py", "ports.py"} <= names


@pytest.mark.parametrize("path", DOMAIN_FILES, ids=[p.name for p in DOMAIN_FILES])
def test_a_domain_module_imports_only_stdlib_msgspec_and_domain(path: Path) -> None:
    assert imported_roots(path.read_text()) - ALLOWED == set()
