"""Measure what a mass connect and a mass close of WebSockets cost one API node in PostgreSQL connections.

Starts a private PostgreSQL and Redis (as the test suite does), migrates, runs one API node on uvicorn in
this process with the pool sizes given, opens ``--sockets`` sockets of distinct users (in conversations
of ``--room`` members) all at once, optionally has each join its conversation, then closes them all at
once. It samples ``pg_stat_activity`` (client connections on the node's database) every 5 ms and
prints the peak during the connect and during the close, and how long the close took until every
user's ``offline`` presence signal was in ``parley:signals``. The numbers in docs/operations.md
("Database connections") come from it::

    .venv/bin/python scripts/mass_close.py --sockets 1000 --pool-size 30 --max-overflow 5 --join

Not a benchmark of speed (client and server share this process and its cores): of connection counts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import msgspec
import sqlalchemy as sa
import uvicorn
import websockets
from sqlalchemy.ext.asyncio import create_async_engine

from app.asgi import create_app
from infrastructure.auth.jwt_codec import JwtCodec
from infrastructure.bootstrap import asyncpg_dsn
from infrastructure.db.tables import conversations, participants, users
from infrastructure.embedded import start_postgres, start_redis
from infrastructure.migrate import upgrade_head
from infrastructure.redis import keys
from infrastructure.settings import AuthSettings, DatabaseSettings, RedisSettings, Settings

# Both asked from another database (``postgres``), so that measuring adds nothing to what is measured.
_TRANSACTIONS = "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1"
_BACKENDS = "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'"
#: Idle backends report their transaction counts within 10 s (PostgreSQL's PGSTAT_IDLE_INTERVAL).
STATS_DELAY_SECONDS = 11


class Problems(logging.Handler):
    """Counts warnings and errors logged by Parley while the run lasts."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.first: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("parley"):
            self.count += 1
            if len(self.first) < 5:
                self.first.append(record.getMessage()[:200])


class Sampler:
    """Peak client connections on the database since the last ``reset``."""

    def __init__(self, dsn: str, database: str) -> None:
        self.dsn = dsn
        self.database = database
        self.peak = 0
        self.last = 0
        self._stop = asyncio.Event()

    def reset(self) -> None:
        self.peak = self.last

    async def transactions(self) -> int:
        """Transactions the database has seen (as reported: wait ``STATS_DELAY_SECONDS`` before)."""
        conn = await asyncpg.connect(self.dsn)
        try:
            return int(await conn.fetchval(_TRANSACTIONS, self.database))
        finally:
            await conn.close()

    async def run(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            while not self._stop.is_set():
                self.last = int(await conn.fetchval(_BACKENDS, self.database))
                self.peak = max(self.peak, self.last)
                await asyncio.sleep(0.005)
        finally:
            await conn.close()

    def stop(self) -> None:
        self._stop.set()


async def seed(settings: Settings, sockets: int, room: int) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """(user, conversation) for ``sockets`` users in conversations of ``room`` members."""
    pairs = [(uuid.uuid4(), uuid.uuid4()) for _ in range(sockets)]
    pairs = [(user, pairs[i - i % room][1]) for i, (user, _) in enumerate(pairs)]
    engine = create_async_engine(settings.database.url)
    async with engine.begin() as conn:
        await conn.execute(
            sa.insert(users),
            [{"id": u, "email": f"{u}@example.com", "name": "u", "password_hash": "-"} for u, _ in pairs],
        )
        owners = {c: u for u, c in reversed(pairs)}
        await conn.execute(
            sa.insert(conversations), [{"id": c, "title": "r", "owner_id": u} for c, u in owners.items()]
        )
        await conn.execute(
            sa.insert(participants),
            [{"conversation_id": c, "user_id": u, "role": "owner" if owners[c] == u else "member"} for u, c in pairs],
        )
    await engine.dispose()
    return pairs


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[str]:
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=0, log_config=None, access_log=False, backlog=4096
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    try:
        yield f"ws://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/ws"
    finally:
        server.should_exit = True
        await task


async def offline_signals(settings: Settings) -> int:
    from redis.asyncio import Redis

    redis = Redis.from_url(settings.redis.url)
    try:
        entries = await redis.xrange(keys.SIGNALS_STREAM)
    finally:
        await redis.aclose()
    return sum(1 for _, fields in entries if msgspec.json.decode(fields[b"s"]).get("status") == "offline")


async def measure(settings: Settings, args: argparse.Namespace) -> None:
    pairs = await seed(settings, args.sockets, args.room)
    jwt = JwtCodec(settings.auth)
    now = datetime.now(UTC)
    problems = Problems()
    logging.getLogger().addHandler(problems)
    admin = dataclasses.replace(settings, database=dataclasses.replace(settings.database, url=args.admin_url))
    sampler = Sampler(asyncpg_dsn(admin), "parley")
    sampling = asyncio.create_task(sampler.run())
    async with serving(settings) as url:
        await asyncio.sleep(0.5)
        idle = sampler.last
        sampler.reset()

        async def connect(user: uuid.UUID, conversation: uuid.UUID) -> websockets.ClientConnection:
            ws = await websockets.connect(
                url, additional_headers={"Authorization": f"Bearer {jwt.issue(user, now)[0]}"}, open_timeout=120
            )
            if args.join:
                await ws.send(msgspec.json.encode({"type": "join", "conversation_id": str(conversation)}).decode())
                while msgspec.json.decode(await ws.recv()).get("type") != "joined":
                    pass
            return ws

        started = time.perf_counter()
        sockets = await asyncio.gather(*(connect(u, c) for u, c in pairs))
        connect_seconds = time.perf_counter() - started
        await asyncio.sleep(STATS_DELAY_SECONDS)  # online announcements settle, statistics are reported
        connect_peak, before_close = sampler.peak, sampler.last
        sampler.reset()
        transactions_before = await sampler.transactions()

        started = time.perf_counter()
        await asyncio.gather(*(ws.close() for ws in sockets))
        deadline = started + 120
        while (announced := await offline_signals(settings)) < len(pairs) and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        close_seconds = time.perf_counter() - started
        close_peak = sampler.peak
        await asyncio.sleep(STATS_DELAY_SECONDS)
        close_transactions = await sampler.transactions() - transactions_before
    sampler.stop()
    await sampling
    bound = settings.database.pool_size * 2 + settings.database.max_overflow
    print(
        f"sockets={args.sockets} room={args.room} join={args.join} pool_size={settings.database.pool_size} "
        f"max_overflow={settings.database.max_overflow} (pools' bound {bound})\n"
        f"  PostgreSQL client connections: idle node {idle}; peak during connect {connect_peak} "
        f"({connect_seconds:.1f} s); before close {before_close}; peak during close {close_peak}\n"
        f"  offline signals published: {announced}/{len(pairs)} in {close_seconds:.2f} s after the close; "
        f"PostgreSQL transactions meanwhile: {close_transactions}\n"
        f"  warnings/errors logged by parley: {problems.count} {problems.first}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=1000)
    parser.add_argument("--room", type=int, default=10, help="members per conversation")
    parser.add_argument("--pool-size", type=int, default=10)
    parser.add_argument("--max-overflow", type=int, default=5)
    parser.add_argument("--join", action="store_true", help="each socket joins its conversation after connecting")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="parley-mass-close-") as tmp:
        postgres = start_postgres(Path(tmp) / "pg")
        redis = start_redis(Path(tmp) / "redis", appendonly=False)
        try:
            postgres.create_database("parley")
            url = postgres.url("parley")
            args.admin_url = postgres.url("postgres")
            upgrade_head(url)
            settings = Settings(
                database=DatabaseSettings(url=url, pool_size=args.pool_size, max_overflow=args.max_overflow),
                redis=RedisSettings(url=redis.url),
                auth=AuthSettings(jwt_secret="mass-close-" + "x" * 32),
            )
            asyncio.run(measure(settings, args))
        finally:
            redis.stop()
            postgres.stop()


if __name__ == "__main__":
    main()
