"""Flow 3, the last hop: a socket's frames go straight to the ASGI server's ``send``.

A frame sent with ``WebSocket.send_data`` passes through every ``send`` wrapper between the server
and the handler: Litestar's disconnect check, its exception middleware's "response started" capture
and the access log's close-code tracking (``app/access_log.py``), each a Python call and an event
dict looked at, for every frame of every socket. At rooms of ten a message is ten frames, and on a
node under load those layers were a large part of the per-frame cost (``docs/perf/README.md``).

None of them does anything for a data frame: the disconnect check is the server's too (uvicorn
raises ``ClientDisconnected``, an ``OSError``, on a closed socket), nothing is "started" by it, and
the access log only looks at accept and close. So ``install`` keeps the server's own ``send`` in the
scope, outside every wrapper, and ``sender`` gives a socket's writer a function that sends a text
frame through it (``Connection`` sends through the socket when there is none). Accept and close
still go through ``WebSocket`` (and so through the access log, which counts close codes).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Litestar, WebSocket
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

#: Where the server's ``send`` is kept in a WebSocket scope's ``extensions`` (the ASGI spec's place
#: for what a server or an outer layer adds to a connection).
EXTENSION = "parley.server_send"

SendText = Callable[[str], Awaitable[None]]


class _KeepServerSend:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.WEBSOCKET:
            extensions = scope.get("extensions") or {}
            extensions[EXTENSION] = {"send": send}
            scope["extensions"] = extensions
        await self.app(scope, receive, send)


def install(app: Litestar) -> Litestar:
    """Wrap the app's ASGI handler; must be the outermost wrapper (installed last)."""
    app.asgi_handler = _KeepServerSend(app.asgi_handler)
    return app


def sender(socket: WebSocket[Any, Any, Any]) -> SendText | None:
    """Send a text frame on ``socket`` through the server's own ``send`` (the socket must be accepted);
    None without ``install`` (an app built otherwise, a test client): send through the socket then."""
    kept = (socket.scope.get("extensions") or {}).get(EXTENSION)
    if kept is None:
        return None
    server_send: Send = kept["send"]  # type: ignore[assignment]

    async def send_direct(text: str) -> None:
        await server_send({"type": "websocket.send", "bytes": None, "text": text})

    return send_direct
