"""The web app as served: the page, its versioned assets, cache headers and the Content-Security-Policy."""

from __future__ import annotations

import re
from typing import Any

from litestar.testing import AsyncTestClient

from app.webapp import STATIC_ROOT, Bundle


def asset_urls(page: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/assets/[^"]+)"', page)


async def test_the_page_is_revalidated_and_names_every_asset_by_version(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-cache"
    version = Bundle.load().version
    urls = asset_urls(response.text)
    assert urls and all(u.startswith(f"/assets/{version}/") for u in urls)
    again = await client.get("/", headers={"if-none-match": response.headers["etag"]})
    assert again.status_code == 304


async def test_assets_are_immutable_under_their_version_and_revalidated_under_another(
    client: AsyncTestClient[Any],
) -> None:
    version = Bundle.load().version
    current = await client.get(f"/assets/{version}/js/parley-client.js")
    assert current.status_code == 200
    assert current.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert current.headers["content-type"].startswith("text/javascript")
    assert current.content == (STATIC_ROOT / "js/parley-client.js").read_bytes()
    stale = await client.get("/assets/000000000000/js/parley-client.js")
    assert stale.status_code == 200 and stale.headers["cache-control"] == "no-cache"


async def test_every_module_the_page_loads_is_served(client: AsyncTestClient[Any]) -> None:
    """Relative imports resolve under the same versioned prefix: each one must exist."""
    version = Bundle.load().version
    for path in sorted(STATIC_ROOT.rglob("*.js")) + sorted(STATIC_ROOT.rglob("*.mjs")):
        for imported in re.findall(r'from "(\.[^"]+)"', path.read_text()):
            target = (path.parent / imported).resolve().relative_to(STATIC_ROOT.resolve()).as_posix()
            response = await client.get(f"/assets/{version}/{target}")
            assert response.status_code == 200, f"{path.name} imports {imported}: {response.status_code}"


async def test_unknown_assets_and_escapes_are_not_found(client: AsyncTestClient[Any]) -> None:
    version = Bundle.load().version
    for path in ("js/nope.js", "../webapp.py", "..%2Fwebapp.py", "index.html"):
        response = await client.get(f"/assets/{version}/{path}")
        assert response.status_code == 404, path


async def test_text_assets_are_gzipped_for_clients_that_accept_it(client: AsyncTestClient[Any]) -> None:
    version = Bundle.load().version
    response = await client.get(f"/assets/{version}/js/app.js", headers={"accept-encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["vary"] == "Accept-Encoding"


async def test_the_policy_allows_no_inline_script_and_nothing_from_elsewhere(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/")
    directives = [d.strip().split(" ", 1) for d in response.headers["content-security-policy"].split(";")]
    csp = {d[0]: d[1] if len(d) > 1 else "" for d in directives}
    assert csp["default-src"] == "'none'"
    assert csp["script-src"] == "'self'"
    assert csp["style-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'"
    assert csp["connect-src"] == "'self'"
    assert csp["require-trusted-types-for"] == "'script'"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in response.text and " style=" not in response.text and " on" not in response.text.lower()


async def test_the_web_app_is_not_in_the_api_document(client: AsyncTestClient[Any]) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    assert not [p for p in schema["paths"] if p == "/" or p.startswith("/assets")]
