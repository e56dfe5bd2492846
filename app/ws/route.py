"""``GET /ws`` goes from the ASGI entry straight to the gateway (``app/ws/gateway.py``), not through
Litestar's router.

A socket lives for hours, and every layer it passed through at connect stays suspended on its stack
for that long: Litestar's router, its two exception middlewares, the Prometheus middleware (which
only counts HTTP) and the route's parameter handling were ~3.8 KiB of an idle socket's memory and
about 7 % of the event loop's samples through the connects, hold and reconnect storm of 4,000 clients
(``tracemalloc`` and py-spy under ``bench/connections.py``), for a handler that takes the socket and
nothing else. So ``install`` puts
this route in front of the router, inside the access log (which still logs every socket and counts
its close code) and the server-send keeper (``app/ws/direct_send.py``); Litestar has set the scope's
app, so ``WebSocket.app`` and its state work as on any route. Every other path, WebSocket or HTTP,
goes to Litestar as before.

An exception that escapes the gateway is logged with its traceback and the socket closed with 1011
(internal error; accepted first if it was not, as the gateway's refusals are). Through Litestar's
route it was refused with a 403 before the accept and closed with 4500 after it, and logged nowhere:
Litestar logs it only through its own logging config, which Parley leaves to ``infrastructure/logs.py``.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from litestar import Litestar, WebSocket
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from app.ws.gateway import gateway

log = logging.getLogger("parley.ws.gateway")

PATH = "/ws"
#: Close code of a socket whose handler failed (RFC 6455: the server met an unexpected condition).
CLOSE_INTERNAL_ERROR = 1011


def is_gateway(scope: Scope) -> bool:
    """A WebSocket scope for ``/ws`` (a trailing slash allowed, below the scope's root path)."""
    if scope["type"] != ScopeType.WEBSOCKET:
        return False
    path = scope["path"]
    if root_path := scope.get("root_path", ""):
        path = path.removeprefix(root_path)
    return path.rstrip("/") == PATH


async def serve(scope: Scope, receive: Receive, send: Send) -> None:
    socket: WebSocket[Any, Any, Any] = WebSocket(scope, receive, send)
    try:
        await gateway(socket)
    except Exception:
        log.exception("socket handler failed")
        with contextlib.suppress(Exception):  # the socket may be gone already
            if socket.connection_state == "init":
                await socket.accept()  # then close: a refused handshake would show a browser no code
            if socket.connection_state != "disconnect":
                await socket.close(CLOSE_INTERNAL_ERROR, "internal error")


class _SocketRoute:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if is_gateway(scope):
            await serve(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def install(app: Litestar) -> Litestar:
    """Wrap the app's ASGI handler; install before the access log, so that it logs these sockets too."""
    app.asgi_handler = _SocketRoute(app.asgi_handler)
    return app
