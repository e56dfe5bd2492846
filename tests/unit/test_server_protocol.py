"""The trimmed WebSocket protocol (``app/ws/server_protocol.py``): what it replaces still exists in the
installed uvicorn under those names, a real server with it speaks WebSocket as uvicorn's own does, and
an open socket no longer holds its handshake."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
import websockets
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from app.ws import server_protocol
from app.ws.server_protocol import LeanWebSocketProtocol
from tests.uvicorn_server import running

#: Close codes the echo app received, in order.
_CLOSES: list[int] = []


async def _echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Accept, echo text frames upper-cased, and report the close code the client sent."""
    assert scope["type"] == "websocket"
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        event = await receive()
        if event["type"] == "websocket.disconnect":
            _CLOSES.append(event["code"])
            return
        await send({"type": "websocket.send", "text": event["text"].upper()})


@contextlib.asynccontextmanager
async def _serving(ws: Any) -> AsyncIterator[tuple[uvicorn.Server, str]]:
    async with running(_echo, ws=ws, lifespan="off") as (server, port):
        yield server, f"ws://127.0.0.1:{port}/"


def _protocols(server: uvicorn.Server) -> list[Any]:
    return [p for p in server.server_state.connections if isinstance(p, WebSocketsSansIOProtocol)]


async def test_uvicorn_still_keeps_what_the_lean_protocol_replaces() -> None:
    # Against uvicorn's own class: if an upgrade renames these, the trimmed protocol would silently
    # keep both the old objects and its own.
    async with _serving("websockets-sansio") as (server, url), websockets.connect(url) as client:
        await client.send("hi")
        assert await client.recv() == "HI"
        (stock,) = _protocols(server)
        assert isinstance(stock.queue, asyncio.Queue)
        assert isinstance(stock.writable, asyncio.Event)
        assert stock.request is not None and stock.response is not None  # kept for the socket's life


async def test_the_lean_protocol_echoes_in_order_and_forgets_the_handshake() -> None:
    async with _serving(server_protocol.IMPORT_STRING) as (server, url):
        async with websockets.connect(url) as client:
            texts = [f"frame {i}" for i in range(200)]
            for text in texts:  # all at once: frames wait in the protocol's queue
                await client.send(text)
            assert [await client.recv() for _ in texts] == [t.upper() for t in texts]
            (proto,) = _protocols(server)
            assert type(proto) is LeanWebSocketProtocol
            assert vars(proto)["request"] is None and vars(proto)["response"] is None
            assert proto.queue.empty()
        async with asyncio.timeout(5):
            while _protocols(server):  # noqa: ASYNC110 - the server's own bookkeeping
                await asyncio.sleep(0.02)
        assert _CLOSES[-1] == 1000


async def test_received_events_wait_for_one_reader_and_survive_its_cancellation() -> None:
    received = server_protocol._Received()
    reader = asyncio.create_task(received.get())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="another task"):
        await received.get()
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader
    received.put_nowait("a")
    received.put_nowait("b")
    assert not received.empty()
    assert [await received.get(), await received.get()] == ["a", "b"]
    assert received.empty()
    later = asyncio.create_task(received.get())
    await asyncio.sleep(0)
    received.put_nowait("c")
    assert await later == "c"


async def test_the_writable_flag_holds_every_sender_until_set() -> None:
    flag = server_protocol._Flag()
    flag.set()
    await asyncio.wait_for(flag.wait(), 1)  # set: no wait
    flag.clear()
    waiting = [asyncio.create_task(flag.wait()) for _ in range(3)]
    gone = asyncio.create_task(flag.wait())
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)
    assert not any(t.done() for t in waiting)
    flag.set()
    await asyncio.wait_for(asyncio.gather(*waiting), 1)
    assert flag.is_set()
