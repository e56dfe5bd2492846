"""The access log, request ids and connection ids: one ASGI wrapper around the whole app.

HTTP: every request gets a request id (the caller's ``X-Request-ID`` when it is a sane token, else a
new one), echoed in the response's ``X-Request-ID`` and set in ``infrastructure.logs.request_id`` so
every line logged while serving it carries it; one access line when it ends. WebSocket: a connection
id the same way, an access line at open and at close (with the close code), and the connection
close counter of ``app/ws/metrics.py``. Query strings are logged redacted (``/ws?ticket=[REDACTED]``).

It wraps ``Litestar.asgi_handler`` (``install``), outside the router, so 404s and errors are logged too.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from litestar import Litestar
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

from app.deps import scope_header
from app.ws.metrics import CLOSES
from infrastructure.logs import connection_id, redact, request_id

log = logging.getLogger("parley.access")

_SANE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _incoming_id(scope: Scope) -> str | None:
    text = scope_header(scope, b"x-request-id")
    return text if text is not None and _SANE_ID.match(text) else None


def _target(scope: Scope) -> str:
    query = scope.get("query_string", b"").decode("latin-1")
    return redact(scope["path"] + ("?" + query if query else ""))


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "-"


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP:
            await self._http(scope, receive, send)
        elif scope["type"] == ScopeType.WEBSOCKET:
            await self._websocket(scope, receive, send)
        else:  # lifespan never reaches asgi_handler; anything else passes through untouched
            await self.app(scope, receive, send)  # type: ignore[unreachable]

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = _incoming_id(scope) or uuid.uuid4().hex[:16]
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            ms = (time.perf_counter() - started) * 1000
            log.info('%s "%s %s" %d %.1fms', _client(scope), scope.get("method", "-"), _target(scope), status, ms)
            request_id.reset(token)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        cid = _incoming_id(scope) or uuid.uuid4().hex[:16]
        token = connection_id.set(cid)
        started = time.perf_counter()
        state: dict[str, Any] = {"accepted": False, "code": None}

        async def send_tracked(message: Message) -> None:
            if message["type"] == "websocket.accept" and not state["accepted"]:
                state["accepted"] = True
                log.info('%s "WS %s" open', _client(scope), _target(scope))
            elif message["type"] == "websocket.close" and state["code"] is None:
                state["code"] = message.get("code", 1000)
            await send(message)

        async def receive_tracked() -> ReceiveMessage:
            message: ReceiveMessage = await receive()
            if message["type"] == "websocket.disconnect" and state["code"] is None:
                state["code"] = message.get("code", 1005)
            return message

        try:
            await self.app(scope, receive_tracked, send_tracked)
        finally:
            code = state["code"] if state["code"] is not None else 1006
            CLOSES.labels(str(code)).inc()
            seconds = time.perf_counter() - started
            log.info('%s "WS %s" closed %s after %.1fs', _client(scope), _target(scope), code, seconds)
            connection_id.reset(token)


def install(app: Litestar) -> Litestar:
    app.asgi_handler = AccessLog(app.asgi_handler)
    return app
