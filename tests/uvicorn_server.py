"""An ASGI app on a real uvicorn server in the test's own event loop, on a free port: for tests that
need real sockets and the server's own WebSocket protocol rather than a test client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Literal

import uvicorn

from app.ws import server_protocol


@contextlib.asynccontextmanager
async def running(
    app: Any, *, ws: Any = server_protocol.IMPORT_STRING, lifespan: Literal["auto", "on", "off"] = "auto"
) -> AsyncIterator[tuple[uvicorn.Server, int]]:
    """The server and its port while the block runs; ``ws`` defaults to the protocol ``parley api`` uses."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, ws=ws, lifespan=lifespan, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(30):
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no event for it
            await asyncio.sleep(0.02)
    try:
        yield server, server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
