"""A chatting node makes no garbage that only the cyclic collector can free.

Objects freed by reference counting cost nothing more; objects in a reference cycle wait for a
collection, and a young collection that has to free thousands of them pauses the event loop for
10 to 40 ms, which every socket of the node waits out (docs/perf/README.md, "Garbage"). A post's
unit of work once held its own clock, which held the unit of work: every post left its repositories,
rows and aggregates to the collector, ~12,000 objects every 5 s per node at 200 msg/s. A socket the
client closed left its session and connection behind (the connection's end kept the session's
callback).

These drive the real path (uvicorn with ``parley api``'s WebSocket protocol, the gateway, group
commit, the node's publisher, the stream fan-out) and keep what the collector finds unreachable
(``gc.DEBUG_SAVEALL``): none of it may be Parley's own objects, but for ``KNOWN``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import uuid
from datetime import UTC, datetime

import msgspec
import sqlalchemy as sa
import websockets
from sqlalchemy.ext.asyncio import create_async_engine

from app.asgi import create_app
from infrastructure.auth.jwt_codec import JwtCodec
from infrastructure.db.tables import conversations, participants, users
from infrastructure.settings import Settings
from tests.uvicorn_server import running

#: Parley's own packages: garbage of these types is a cycle of ours.
OURS = ("app.", "domain.", "infrastructure.", "workers.")
#: Still left to the collector when a socket closes, through cycles not broken yet: closures over the
#: server protocol's ``send`` and ``receive`` that the connection's objects keep, and the server's
#: ``send`` kept in the scope (``app/ws/direct_send.py``); see "Garbage" in docs/perf/README.md.
KNOWN = ("app.ws.server_protocol.",)
POSTS = 30


async def _pair(settings: Settings) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    sender, reader, conversation_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    engine = create_async_engine(settings.database.url)
    async with engine.begin() as conn:
        await conn.execute(
            sa.insert(users),
            [{"id": u, "email": f"{u}@example.com", "name": "p", "password_hash": "-"} for u in (sender, reader)],
        )
        await conn.execute(sa.insert(conversations).values(id=conversation_id, title="pair", owner_id=sender))
        await conn.execute(
            sa.insert(participants),
            [
                {"conversation_id": conversation_id, "user_id": sender, "role": "owner"},
                {"conversation_id": conversation_id, "user_id": reader, "role": "member"},
            ],
        )
    await engine.dispose()
    return sender, reader, conversation_id


async def _frames(socket: websockets.ClientConnection, kind: str, count: int) -> None:
    seen = 0
    async with asyncio.timeout(30):
        while seen < count:
            if json.loads(await socket.recv())["type"] == kind:
                seen += 1


async def _exchange(
    sender: websockets.ClientConnection, reader: websockets.ClientConnection, conversation_id: uuid.UUID, tag: str
) -> None:
    """``POSTS`` sends, each acked to the sender and delivered to the reader."""
    for i in range(POSTS):
        await sender.send(
            json.dumps(
                {"type": "send", "conversation_id": str(conversation_id), "client_msg_id": f"{tag}-{i}", "text": "hi"}
            )
        )
    await asyncio.gather(_frames(sender, "ack", POSTS), _frames(reader, "message", POSTS))


def _ours(garbage: list[object]) -> list[str]:
    names = {f"{type(o).__module__}.{type(o).__qualname__}" for o in garbage}
    return sorted(name for name in names if name.startswith(OURS) and not name.startswith(KNOWN))


def _watching() -> None:
    """From here on, what a collection finds unreachable is kept in ``gc.garbage``."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)


def _unreachable_of_ours() -> list[str]:
    try:
        gc.collect()
        return _ours(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


async def _connected(
    settings: Settings, url: str
) -> tuple[websockets.ClientConnection, websockets.ClientConnection, uuid.UUID]:
    """A sender and a reader in one conversation, both joined."""
    sender_id, reader_id, conversation_id = await _pair(settings)
    jwt = JwtCodec(settings.auth)
    now = datetime.now(UTC)
    sockets = []
    for user_id in (sender_id, reader_id):
        token = jwt.issue(user_id, now)[0]
        socket = await websockets.connect(url, additional_headers={"Authorization": f"Bearer {token}"})
        await socket.send(json.dumps({"type": "join", "conversation_id": str(conversation_id)}))
        await _frames(socket, "joined", 1)
        sockets.append(socket)
    return sockets[0], sockets[1], conversation_id


def _generous(settings: Settings) -> Settings:
    """Rounds of ``POSTS`` sends at once: more than the default burst allows one user."""
    return dataclasses.replace(settings, limits=msgspec.structs.replace(settings.limits, message_burst=4 * POSTS))


async def test_posting_and_delivering_leave_no_reference_cycles_of_ours(settings: Settings, clean_state: None) -> None:
    settings = _generous(settings)
    async with running(create_app(settings)) as (_, port):
        sender, reader, conversation_id = await _connected(settings, f"ws://127.0.0.1:{port}/ws")
        await _exchange(sender, reader, conversation_id, "warm")  # first-use caches, prepared statements
        _watching()
        try:
            await _exchange(sender, reader, conversation_id, "steady")
        finally:
            ours = _unreachable_of_ours()
        await sender.close()
        await reader.close()

    assert ours == [], f"{POSTS} posts left reference cycles holding: {', '.join(ours)}"


async def test_a_socket_the_client_closes_leaves_no_reference_cycles_of_ours(
    settings: Settings, clean_state: None
) -> None:
    settings = _generous(settings)
    async with running(create_app(settings)) as (server, port):
        sender, reader, conversation_id = await _connected(settings, f"ws://127.0.0.1:{port}/ws")
        await _exchange(sender, reader, conversation_id, "warm")
        _watching()
        try:
            await reader.close()
            async with asyncio.timeout(10):  # until the server's task of that socket has ended
                while len(server.server_state.tasks) > 1:  # noqa: ASYNC110 - uvicorn offers no event for it
                    await asyncio.sleep(0.01)
        finally:
            ours = _unreachable_of_ours()
        await sender.close()

    assert ours == [], f"a closed socket left reference cycles holding: {', '.join(ours)}"
