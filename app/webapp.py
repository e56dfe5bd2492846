"""The web app: ``GET /`` (the single page) and ``GET /assets/{version}/…`` (its ES modules, styles and
vendored libraries), served from ``app/static`` in the package. No build step.

Caching: every asset URL carries a version, a hash of the whole ``app/static`` tree taken at start-up,
so assets are cached for a year as immutable and a new release is a new URL; relative imports between
modules stay under the same versioned prefix. ``/`` itself is ``no-cache`` (revalidated by ETag), so a
browser always learns the current version. An asset asked for under another version (a rolling deploy
where nodes differ) is served with ``no-cache`` instead of being refused.

Security: a strict Content-Security-Policy on every response (no inline script or style, nothing from
other origins, Trusted Types so only the sanitizer may produce HTML), plus nosniff, no framing, no
referrer. Files are looked up in an index built at start-up, so no request path reaches the file system.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from litestar import Controller, Request, Response, get
from litestar.exceptions import NotFoundException
from litestar.params import FromPath

AnyRequest = Request[Any, Any, Any]
STATIC_ROOT = Path(__file__).parent / "static"
ONE_YEAR = 365 * 24 * 3600

CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".png": "image/png",
    ".webmanifest": "application/manifest+json",
}
#: Worth compressing; images already are.
COMPRESSIBLE = {".html", ".js", ".mjs", ".css", ".svg", ".json", ".webmanifest", ".LICENSE"}

#: ``connect-src 'self'`` also covers the page's own ws:/wss: origin (CSP Level 3, every current browser).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'; require-trusted-types-for 'script'; trusted-types dompurify"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes | None
    content_type: str


@dataclass(frozen=True)
class Bundle:
    """Every file under ``app/static`` in memory, and the version naming this exact set of bytes."""

    version: str
    assets: dict[str, Asset]
    index: Asset

    @classmethod
    def load(cls, root: Path = STATIC_ROOT) -> Bundle:
        files = {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
        digest = hashlib.sha256()
        for name, body in files.items():
            digest.update(name.encode() + b"\0" + hashlib.sha256(body).digest())
        version = digest.hexdigest()[:12]
        index = files.pop("index.html").replace(b"%ASSETS%", f"/assets/{version}".encode())
        assets = {name: _asset(name, body) for name, body in files.items()}
        return cls(version=version, assets=assets, index=_asset("index.html", index))


def _asset(name: str, body: bytes) -> Asset:
    suffix = Path(name).suffix
    gzipped = gzip.compress(body, 9, mtime=0) if suffix in COMPRESSIBLE or name.endswith("LICENSE") else None
    return Asset(body, gzipped, CONTENT_TYPES.get(suffix, "text/plain"))


def _respond(request: AnyRequest, asset: Asset, cache: str, etag: str | None = None) -> Response[bytes]:
    headers = {**SECURITY_HEADERS, "Cache-Control": cache, "Vary": "Accept-Encoding"}
    if etag is not None:
        headers["ETag"] = etag
        if request.headers.get("if-none-match") == etag:
            return Response(b"", status_code=304, headers=headers)
    body = asset.body
    if asset.gzipped is not None and "gzip" in request.headers.get("accept-encoding", ""):
        body = asset.gzipped
        headers["Content-Encoding"] = "gzip"
    return Response(body, media_type=asset.content_type, headers=headers)


class WebAppController(Controller):
    """The single-page app; its routes are not part of the API's OpenAPI document."""

    include_in_schema = False

    @get("/", name="webapp:index")
    async def index(self, request: AnyRequest) -> Response[bytes]:
        bundle: Bundle = request.app.state.webapp
        return _respond(request, bundle.index, "no-cache", etag=f'"{bundle.version}"')

    @get("/assets/{version:str}/{path:path}", name="webapp:asset")
    async def asset(self, request: AnyRequest, version: FromPath[str], path: FromPath[str]) -> Response[bytes]:
        bundle: Bundle = request.app.state.webapp
        found = bundle.assets.get(path.lstrip("/"))
        if found is None:
            raise NotFoundException("no such asset")
        current = version == bundle.version
        return _respond(request, found, f"public, max-age={ONE_YEAR}, immutable" if current else "no-cache")
