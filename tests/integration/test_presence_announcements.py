"""Presence announcements go out in batches per node (app/ws/presence_announcer.py): a mass close of
sockets reaches the members of their conversations without PostgreSQL connections beyond the node's
pools, a user who flipped within a batch is announced once in their current state, and a batch that
cannot reach PostgreSQL is logged and counted, never swallowed."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import socket
import uuid
from datetime import UTC, datetime

import asyncpg
import msgspec
import pytest
import sqlalchemy as sa
import websockets
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import create_async_engine

from app.ws.fanout import Signal
from app.ws.presence_announcer import PresenceAnnouncer
from infrastructure.auth.jwt_codec import JwtCodec
from infrastructure.bootstrap import Services, asyncpg_dsn
from infrastructure.db.tables import conversations, participants, users
from infrastructure.redis import groups, keys
from infrastructure.redis.presence import Presence
from infrastructure.settings import Settings
from tests.integration.conftest import serving

SOCKETS = 300

_BACKENDS = """
    SELECT count(*) FROM pg_stat_activity
    WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()
"""


def _counter(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


async def _room(settings: Settings, members: int) -> tuple[uuid.UUID, list[uuid.UUID], uuid.UUID]:
    """A watcher and ``members`` other users in one conversation, written straight to PostgreSQL (no
    password hashing: the sockets authenticate with tokens issued below)."""
    watcher, others = uuid.uuid4(), [uuid.uuid4() for _ in range(members)]
    conversation_id = uuid.uuid4()
    engine = create_async_engine(settings.database.url)
    async with engine.begin() as conn:
        await conn.execute(
            sa.insert(users),
            [{"id": u, "email": f"{u}@example.com", "name": "p", "password_hash": "-"} for u in [watcher, *others]],
        )
        await conn.execute(sa.insert(conversations).values(id=conversation_id, title="all", owner_id=watcher))
        await conn.execute(
            sa.insert(participants),
            [{"conversation_id": conversation_id, "user_id": watcher, "role": "owner"}]
            + [{"conversation_id": conversation_id, "user_id": u, "role": "member"} for u in others],
        )
    await engine.dispose()
    return watcher, others, conversation_id


async def _sample_backends(dsn: str, stop: asyncio.Event) -> int:
    """The most client connections PostgreSQL had on this database at any sample until ``stop``."""
    conn = await asyncpg.connect(dsn)
    peak = 0
    try:
        while not stop.is_set():
            peak = max(peak, int(await conn.fetchval(_BACKENDS)))
            await asyncio.sleep(0.005)
    finally:
        await conn.close()
    return peak


async def test_a_mass_close_reaches_the_watcher_without_exceeding_the_pools(
    settings: Settings, clean_state: None, caplog: pytest.LogCaptureFixture
) -> None:
    small = dataclasses.replace(settings, database=dataclasses.replace(settings.database, pool_size=2, max_overflow=1))
    bound = small.database.pool_size + small.database.pool_size + small.database.max_overflow  # asyncpg + engine
    watcher_id, member_ids, conversation_id = await _room(small, SOCKETS)
    jwt = JwtCodec(small.auth)
    now = datetime.now(UTC)

    def headers(user_id: uuid.UUID) -> dict[str, str]:
        return {"Authorization": f"Bearer {jwt.issue(user_id, now)[0]}"}

    failed_before = sum(_counter("parley_ws_presence_failed_total", {"step": s}) for s in ("postgres", "redis"))
    dropped_before = _counter("parley_ws_presence_dropped_total")
    stop_sampling = asyncio.Event()
    caplog.set_level(logging.INFO)
    async with serving(small) as url:
        sampler = asyncio.create_task(_sample_backends(asyncpg_dsn(small), stop_sampling))
        watcher = await websockets.connect(url, additional_headers=headers(watcher_id))
        await watcher.send(json.dumps({"type": "join", "conversation_id": str(conversation_id)}))
        status: dict[str, str] = {}

        async def read() -> None:
            async for raw in watcher:
                frame = json.loads(raw)
                if frame["type"] == "presence":
                    status[frame["user_id"]] = frame["status"]

        reader = asyncio.create_task(read())
        sockets = await asyncio.gather(*(websockets.connect(url, additional_headers=headers(u)) for u in member_ids))
        expected_online = {str(u): "online" for u in member_ids}
        async with asyncio.timeout(60):
            while status != expected_online:  # noqa: ASYNC110 - polling what the reader records
                await asyncio.sleep(0.05)

        await asyncio.gather(*(s.close() for s in sockets))  # all at once
        expected_offline = {str(u): "offline" for u in member_ids}
        async with asyncio.timeout(60):
            while status != expected_offline:  # noqa: ASYNC110 - polling what the reader records
                await asyncio.sleep(0.05)

        stop_sampling.set()
        peak = await sampler
        reader.cancel()
        await watcher.close()

    assert 0 < peak <= bound, f"PostgreSQL had {peak} connections; the pools allow {bound}"
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("parley")]
    assert not problems, [r.getMessage() for r in problems]
    failed_after = sum(_counter("parley_ws_presence_failed_total", {"step": s}) for s in ("postgres", "redis"))
    assert failed_after == failed_before
    assert _counter("parley_ws_presence_dropped_total") == dropped_before


async def test_a_user_who_flipped_within_a_batch_is_announced_once_in_their_current_state(
    services: Services, settings: Settings
) -> None:
    user_id, _, conversation_id = await _room(settings, 0)
    await groups.mark_node_alive(services.redis, "n1")
    presence = Presence(services.redis, "n1")
    await presence.connect(user_id, "s1")  # online now
    announcer = PresenceAnnouncer(services.pg, services.redis, presence)
    for status in ("online", "offline", "online"):
        announcer.announce(user_id, status)

    runner = asyncio.create_task(announcer.run())
    try:
        async with asyncio.timeout(10):
            await announcer.flush()
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner

    entries = await services.redis.xrange(keys.SIGNALS_STREAM)
    signals = [msgspec.json.decode(fields[b"s"], type=Signal) for _, fields in entries]
    assert signals == [
        Signal(kind="presence", user_id=str(user_id), conversation_ids=[str(conversation_id)], status="online")
    ]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # nothing listens there any more


async def test_a_batch_that_cannot_reach_postgres_is_logged_and_counted(
    services: Services, caplog: pytest.LogCaptureFixture
) -> None:
    unreachable = await asyncpg.create_pool(f"postgresql://parley@127.0.0.1:{_closed_port()}/parley", min_size=0)
    announcer = PresenceAnnouncer(unreachable, services.redis, Presence(services.redis, "n1"))
    before = _counter("parley_ws_presence_failed_total", {"step": "postgres"})
    caplog.set_level(logging.WARNING, logger="parley.ws.presence")

    announcer.announce(uuid.uuid4(), "offline")
    announcer.announce(uuid.uuid4(), "offline")
    runner = asyncio.create_task(announcer.run())
    try:
        async with asyncio.timeout(15):
            await announcer.flush()
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        await unreachable.close()

    assert _counter("parley_ws_presence_failed_total", {"step": "postgres"}) == before + 2
    logged = [r.getMessage() for r in caplog.records if r.name == "parley.ws.presence"]
    assert any("presence of 2 users not announced: postgres" in m for m in logged), logged
