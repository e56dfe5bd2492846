"""Read-side benchmark: the conversation list of a user with thousands of conversations, and projector
throughput with one and two `parley projector` processes.

1. **List page.** One user is a member of ``--conversations`` conversations (default 5,000), each with a
   few messages (bulk-inserted, then ``parley projections rebuild``'s code fills the read models, which
   is timed too). It times the first page (50 items) of ``views.list_conversations`` (the read model, as
   ``GET /api/conversations`` serves it) and of ``views.unread_counts``, server side (the query and the
   decoding, no HTTP), against the previous on-the-fly queries over the write tables as the baseline in
   the same run: the list join of conversations, the caller's membership and each last message through
   SQLAlchemy, exactly as the list endpoint ran it before the read models, and the same SQL on asyncpg.
2. **Projector throughput.** ``--events`` MessagePosted events over ``--rooms`` conversations of 5
   members are written to PostgreSQL and published to the shard streams while N projector processes
   (N = 1, then 2) consume them; events/s = events / time from the first publish until the projector
   group has nothing undelivered or pending. The read models are then checked against the write tables.

Run: ``python -m bench.read_side [--conversations 5000] [--events 20000]``. Numbers vary on a busy machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import sqlalchemy as sa
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from domain import events
from domain.values import Message, MessageRole
from infrastructure.bootstrap import create_pg_pool
from infrastructure.db import views
from infrastructure.db.outbox import OutboxRow
from infrastructure.db.tables import conversations, messages, participants
from infrastructure.embedded import start_postgres, start_redis
from infrastructure.migrate import upgrade_head
from infrastructure.redis import keys, streams
from infrastructure.settings import DatabaseSettings, RedisSettings, Settings
from workers.projector_rebuild import rebuild

SHARDS = 8
MESSAGES_PER_CONVERSATION = 3
JWT = "bench-secret-" + "x" * 32


# -- seeding -------------------------------------------------------------------------------------------


async def seed_users(pool: asyncpg.Pool, count: int) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(count)]
    await pool.executemany(
        "INSERT INTO users (id, email, name, password_hash) VALUES ($1, $2, 'bench', 'x')",
        [(u, f"{u.hex}@bench.example") for u in ids],
    )
    return ids


async def seed_conversations(
    pool: asyncpg.Pool, members: list[list[uuid.UUID]], *, messages_each: int
) -> list[uuid.UUID]:
    """Conversations with these members (first is owner) and ``messages_each`` messages by random members,
    inserted in bulk as the write path would leave them (seq, last_seq, the senders' read cursors)."""
    start = datetime.now(UTC) - timedelta(days=1)
    conv_rows, part_rows, msg_rows = [], [], []
    for i, people in enumerate(members):
        cid = uuid.uuid4()
        created = start + timedelta(seconds=i)
        conv_rows.append(
            (cid, f"room {i}", people[0], messages_each, created, created + timedelta(seconds=messages_each))
        )
        reads: dict[uuid.UUID, int] = {}
        for seq in range(1, messages_each + 1):
            sender = random.choice(people)
            reads[sender] = seq
            msg_rows.append(
                (uuid.uuid4(), cid, seq, sender, f"message {seq} in room {i}", created + timedelta(seconds=seq))
            )
        for j, person in enumerate(people):
            part_rows.append((cid, person, "owner" if j == 0 else "member", reads.get(person, 0), created))
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "conversations",
            records=conv_rows,
            columns=["id", "title", "owner_id", "last_seq", "created_at", "updated_at"],
        )
        await conn.copy_records_to_table(
            "participants",
            records=part_rows,
            columns=["conversation_id", "user_id", "role", "last_read_seq", "joined_at"],
        )
        await conn.copy_records_to_table(
            "messages",
            records=[(m, c, s, u, "user", t, at) for m, c, s, u, t, at in msg_rows],
            columns=["id", "conversation_id", "seq", "sender_id", "role", "text", "created_at"],
        )
    return [r[0] for r in conv_rows]


# -- part 1: list page ----------------------------------------------------------------------------------


def on_the_fly_statement(user_id: uuid.UUID, limit: int) -> sa.Select[Any]:
    """The list query before the read models: membership join plus each conversation's last message."""
    last = messages.alias("last")
    me = participants.alias("me")
    return (
        sa.select(
            conversations.c.id, conversations.c.title, conversations.c.updated_at, conversations.c.last_seq,
            me.c.last_read_seq, last.c.seq.label("last_seq_row"), sa.func.left(last.c.text, 140).label("preview"),
            last.c.sender_id, last.c.role, last.c.created_at.label("last_created_at"),
        )
        .select_from(
            conversations.join(me, sa.and_(me.c.conversation_id == conversations.c.id, me.c.user_id == user_id))
            .outerjoin(last, sa.and_(last.c.conversation_id == conversations.c.id,
                                     last.c.seq == conversations.c.last_seq))
        )
        .order_by(conversations.c.updated_at.desc(), conversations.c.id.desc())
        .limit(limit + 1)
    )  # fmt: skip


ON_THE_FLY_SQL = """
    SELECT c.id, c.title, c.updated_at, c.last_seq, me.last_read_seq, last.seq, left(last.text, 140),
           last.sender_id, last.role, last.created_at
    FROM conversations c
    JOIN participants me ON me.conversation_id = c.id AND me.user_id = $1
    LEFT JOIN messages last ON last.conversation_id = c.id AND last.seq = c.last_seq
    ORDER BY c.updated_at DESC, c.id DESC LIMIT $2
"""
ON_THE_FLY_UNREAD = """
    SELECT c.id, c.last_seq - p.last_read_seq FROM conversations c
    JOIN participants p ON p.conversation_id = c.id
    WHERE p.user_id = $1 AND c.last_seq > p.last_read_seq
"""


async def timed(call: Callable[[], Awaitable[Any]], rounds: int) -> list[float]:
    for _ in range(20):  # warm caches and prepared statements
        await call()
    out = []
    for _ in range(rounds):
        started = time.perf_counter()
        await call()
        out.append((time.perf_counter() - started) * 1000)
    return out


def stats(samples: list[float]) -> str:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return f"p50 {cuts[49]:7.2f} ms   p99 {cuts[98]:7.2f} ms   max {max(samples):7.2f} ms"


async def list_page(pool: asyncpg.Pool, engine: AsyncEngine, args: argparse.Namespace) -> None:
    others = await seed_users(pool, 50)
    (me,) = await seed_users(pool, 1)
    members = [[me, random.choice(others)] for _ in range(args.conversations)]
    await seed_conversations(pool, members, messages_each=MESSAGES_PER_CONVERSATION)
    async with pool.acquire() as conn:
        await conn.execute("ANALYZE")
    settings = Settings(redis=RedisSettings(url=args.redis_url, shard_count=SHARDS))
    started = time.perf_counter()
    services = _RebuildServices(pool, settings, Redis.from_url(args.redis_url))
    await rebuild(services)  # type: ignore[arg-type]
    await services.redis.aclose()
    print(f"rebuild of the read models for {args.conversations} conversations: {time.perf_counter() - started:.1f} s\n")
    async with pool.acquire() as conn:
        await conn.execute("ANALYZE")

    async def on_the_fly_sqlalchemy() -> None:
        async with engine.connect() as conn:
            (await conn.execute(on_the_fly_statement(me, 50))).all()

    rows = {
        "list, read model (views.list_conversations)": lambda: views.list_conversations(
            pool, me, limit=50, cursor=None
        ),
        "list, on the fly via SQLAlchemy (before)": on_the_fly_sqlalchemy,
        "list, on the fly, same SQL on asyncpg": lambda: pool.fetch(ON_THE_FLY_SQL, me, 51),
        "unread, read model (views.unread_counts)": lambda: views.unread_counts(pool, me),
        "unread, on the fly on asyncpg (before)": lambda: pool.fetch(ON_THE_FLY_UNREAD, me),
    }
    print(f"first page (50) for a user with {args.conversations} conversations, {args.rounds} rounds each:")
    for name, call in rows.items():
        print(f"  {name:<46} {stats(await timed(call, args.rounds))}")


class _RebuildServices:
    """The two things ``rebuild`` uses (a pool and Redis), without the rest of ``bootstrap``."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings, redis: Redis) -> None:
        self.pg, self.settings, self.redis = pool, settings, redis


# -- part 2: projector throughput ------------------------------------------------------------------------


async def _drained(redis: Redis) -> bool:
    for stream in streams.all_streams(SHARDS):
        try:
            groups = await redis.xinfo_groups(stream)
        except Exception:
            return False
        mine = [g for g in groups if g["name"].decode() == keys.PROJECTOR_GROUP]
        if not mine or mine[0]["pending"] or mine[0]["lag"] or mine[0]["lag"] is None:
            return False
    return True


async def _consumers_ready(redis: Redis, count: int) -> bool:
    names: set[bytes] = set()
    for stream in streams.all_streams(SHARDS):
        try:
            names |= {c["name"] for c in await redis.xinfo_consumers(stream, keys.PROJECTOR_GROUP)}
        except Exception:
            return False
    return len(names) >= count


async def projector_run(
    pool: asyncpg.Pool, redis: Redis, env: dict[str, str], args: argparse.Namespace, n: int
) -> float:
    await redis.flushdb()
    people = await seed_users(pool, args.rooms * 2)
    rooms = [random.sample(people, 5) for _ in range(args.rooms)]
    cids = await seed_conversations(pool, rooms, messages_each=0)
    services = _RebuildServices(pool, Settings(redis=RedisSettings(url=args.redis_url, shard_count=SHARDS)), redis)
    for cid in cids:  # projection state at 0 for these conversations: their events apply incrementally
        async with pool.acquire() as conn, conn.transaction():
            from infrastructure.db import read_models

            await read_models.recompute(conn, cid, full=True)
    del services
    # The events, in order per conversation, written to the messages table as the write path would.
    seqs = dict.fromkeys(cids, 0)
    now = datetime.now(UTC)
    posted: list[events.MessagePosted] = []
    for i in range(args.events):
        k = random.randrange(len(cids))
        cid = cids[k]
        seqs[cid] += 1
        m = Message(
            id=uuid.uuid4(), conversation_id=cid, seq=seqs[cid], sender_id=random.choice(rooms[k]),
            role=MessageRole.USER, text=f"bench {i}", client_msg_id=None, created_at=now + timedelta(microseconds=i),
        )  # fmt: skip
        posted.append(events.MessagePosted(event_id=uuid.uuid4(), occurred_at=m.created_at, message=m))
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "messages",
            records=[(e.message.id, e.message.conversation_id, e.message.seq, e.message.sender_id, "user",
                      e.message.text, e.message.created_at) for e in posted],
            columns=["id", "conversation_id", "seq", "sender_id", "role", "text", "created_at"],
        )  # fmt: skip
        await conn.executemany(
            "UPDATE conversations SET last_seq = $2, updated_at = now() WHERE id = $1", list(seqs.items())
        )
        own: dict[tuple[uuid.UUID, uuid.UUID], int] = {}
        for e in posted:  # a sender's read cursor moves to their own message, as the write path does
            assert e.message.sender_id is not None
            own[(e.message.conversation_id, e.message.sender_id)] = e.message.seq
        await conn.executemany(
            "UPDATE participants SET last_read_seq = $3 WHERE conversation_id = $1 AND user_id = $2",
            [(c, u, seq) for (c, u), seq in own.items()],
        )
    procs = [
        subprocess.Popen(  # noqa: ASYNC220 - started once per run, outside the timed part
            [sys.executable, "-m", "app.cli", "projector"],
            env={**env, "PARLEY_NODE_ID": f"bench-{n}-{i}"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(n)
    ]
    try:
        async with asyncio.timeout(60):
            while not await _consumers_ready(redis, n):  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        rows = [
            OutboxRow(i, events.shard_for(e.conversation_id, SHARDS), "message_posted", events.encode(e))
            for i, e in enumerate(posted)
        ]
        started = time.perf_counter()
        for chunk in range(0, len(rows), 2000):
            await streams.publish(redis, rows[chunk : chunk + 2000], maxlen=1_000_000)
        async with asyncio.timeout(600):
            while not await _drained(redis):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(20)
    wrong = await pool.fetchval(
        """SELECT count(*) FROM participants p JOIN conversations c ON c.id = p.conversation_id
           LEFT JOIN read_conversation_list r ON r.user_id = p.user_id AND r.conversation_id = c.id
           WHERE c.id = ANY($1::uuid[]) AND (r.last_seq IS DISTINCT FROM c.last_seq OR r.unread_count IS DISTINCT FROM
             (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id AND m.seq > p.last_read_seq
              AND m.sender_id IS DISTINCT FROM p.user_id))""",
        cids,
    )
    check = "read models equal the write tables" if wrong == 0 else f"{wrong} rows DIFFER from the write tables"
    rate = args.events / elapsed
    print(f"  {n} projector process(es): {args.events} events in {elapsed:.2f} s = {rate:8.0f} events/s  ({check})")
    return float(rate)


async def run(url: str, args: argparse.Namespace) -> None:
    pool = await create_pg_pool(Settings(database=DatabaseSettings(url=url, pool_size=8)))
    engine = create_async_engine(url, pool_size=2, max_overflow=0, pool_pre_ping=True)
    redis = Redis.from_url(args.redis_url)
    try:
        version = await pool.fetchval("SELECT version()")
        print("Parley read-side benchmark")
        print(f"machine   {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}")
        print(f"postgres  {version}\n")
        if not args.skip_list:
            await list_page(pool, engine, args)
        print(
            f"\nprojector throughput, {args.events} MessagePosted events over {args.rooms} conversations of 5 members:"
        )
        env = {
            **os.environ, "DATABASE_URL": url, "REDIS_URL": args.redis_url, "JWT_SECRET": JWT,
            "PARLEY_SHARDS": str(SHARDS), "PARLEY_LOG_LEVEL": "warning", "PARLEY_STREAM_MAXLEN": "1000000",
        }  # fmt: skip
        for n in args.processes:
            await projector_run(pool, redis, env, args, n)
    finally:
        await redis.aclose()
        await engine.dispose()
        await pool.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.read_side", description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=5000, help="conversations of the list user")
    parser.add_argument("--rounds", type=int, default=1000, help="timed calls per query")
    parser.add_argument("--events", type=int, default=20000, help="events per projector run")
    parser.add_argument("--rooms", type=int, default=500, help="conversations the events go to")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="projector processes per run")
    parser.add_argument("--skip-list", action="store_true", help="only the projector part")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="parley-bench-read-") as tmp:
        pg = start_postgres(Path(tmp) / "pg")
        redis = start_redis(Path(tmp) / "redis", appendonly=False)
        args.redis_url = redis.url
        name = f"bench_read_{os.getpid()}"
        pg.create_database(name)
        url = pg.url(name)
        try:
            upgrade_head(url)
            asyncio.run(run(url, args))
        finally:
            redis.stop()
            pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
