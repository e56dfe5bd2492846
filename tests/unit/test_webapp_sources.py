"""The web app's sources: vendored libraries are the pinned releases, byte for byte, with their licences;
the client module passes its own tests under node's test runner; no HTML sink outside markdown.js."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENDOR = ROOT / "app" / "static" / "vendor"
JS = ROOT / "app" / "static" / "js"


def load_vendor_script():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("vendor_script", ROOT / "scripts" / "vendor.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vendored_files_match_the_pinned_versions_checksums() -> None:
    manifest = json.loads((VENDOR / "manifest.json").read_text())["packages"]
    pins = load_vendor_script().PINS
    assert {name: version for name, (version, _) in pins.items()} == {n: p["version"] for n, p in manifest.items()}
    for name, package in manifest.items():
        assert package["integrity"].startswith("sha512-"), name
        assert set(package["files"]) == set(pins[name][1].values())
        for file, entry in package["files"].items():
            assert hashlib.sha256((VENDOR / file).read_bytes()).hexdigest() == entry["sha256"], file


def test_every_vendored_library_ships_its_licence() -> None:
    for name in json.loads((VENDOR / "manifest.json").read_text())["packages"]:
        assert (VENDOR / f"{name}.LICENSE").read_text().strip(), name


def test_no_module_but_markdown_assigns_html() -> None:
    """Trusted Types enforce this in the browser; this keeps a refactor from even trying."""
    sinks = re.compile(r"\.(innerHTML|outerHTML)\s*=|insertAdjacentHTML|document\.write|\beval\(|new Function\(")
    offenders = [p.name for p in JS.rglob("*.js") if p.name != "markdown.js" and sinks.search(p.read_text())]
    assert offenders == []


@pytest.mark.timeout(120)
def test_the_client_module_passes_its_node_tests() -> None:
    node = shutil.which("node")
    assert node, "node (20+) is needed to test app/static/js/parley-client.js"
    command = [node, "--test", "--test-timeout=20000", str(ROOT / "tests" / "js")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert re.search(r"^# pass [1-9]", done.stdout, re.M), done.stdout[-2000:]


def test_every_screenshot_the_readme_shows_is_committed() -> None:
    linked = re.findall(r"\((docs/screenshots/[\w.-]+\.png)\)", (ROOT / "README.md").read_text())
    assert linked, "the README shows the web app"
    assert [p for p in linked if not (ROOT / p).is_file()] == []
