"""Load benchmark of the durable write path: group commit against one transaction per post and a bare INSERT.

What it measures: N concurrent writers post M messages through the path the API nodes use,
``GroupCommit`` (``infrastructure/db/group_commit.py``: concurrent posts share a transaction; row
locks on the conversations, seq bumps, dedup lookup, message insert, read-cursor update, outbox rows,
NOTIFY, commit), timing every call (from the post to its ack) and the whole run; then the same posts
one transaction each (``domain.handlers.post_message``, the path before group commit). It does so
twice: spread over K conversations, and "hot", all writers on one conversation, where they queue on
one row lock.

The baseline runs in the same process, on the same asyncpg pool and at the same concurrency: one
``INSERT INTO messages`` per transaction (hand-written SQL, like the write path's repositories),
seq from a per-conversation ``itertools.count`` kept in
Python, no lock, no outbox, no NOTIFY. It is the cheapest durable write of the same row into the same
table (same indexes, same commit/fsync), so the ratio parley/baseline is the price of the
guarantees: gapless ordered seqs, idempotent sends and an event that commits with its message.

After each parley run it checks that every conversation's seqs are exactly 1..n and that one outbox
row was written per message; the exit code is 1 if not.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from domain import commands, handlers
from domain.limits import Limits
from infrastructure.bootstrap import SystemClock, create_pg_pool
from infrastructure.db.group_commit import GroupCommit
from infrastructure.db.tables import conversations, messages, outbox, users
from infrastructure.db.unit_of_work import SqlUnitOfWork
from infrastructure.embedded import start_postgres
from infrastructure.migrate import upgrade_head
from infrastructure.settings import DatabaseSettings, Settings, async_database_url

SHARDS = 8
#: What the API nodes run with unless configured (``PARLEY_POST_TRANSACTIONS``).
DEFAULT_IN_FLIGHT = DatabaseSettings().post_transactions
TEXT = "the quick brown fox jumps over the lazy dog"
CLOCK = SystemClock()
LIMITS = Limits()
COLUMNS = ("msgs/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "cpu %")

#: One post: (message index, conversation id, sender id).
Post = Callable[[int, UUID, UUID], Awaitable[None]]


@dataclass
class Result:
    variant: str
    scenario: str
    conversations: int
    messages: int
    seconds: float
    cpu_seconds: float  # this process's CPU time: near 100% of one core means the client is the bottleneck
    latencies_ms: list[float]

    def summary(self) -> dict[str, Any]:
        cuts = statistics.quantiles(self.latencies_ms, n=100, method="inclusive")
        return {
            "variant": self.variant, "scenario": self.scenario, "conversations": self.conversations,
            "messages": self.messages, "seconds": round(self.seconds, 3),
            "msgs_per_s": round(self.messages / self.seconds, 1), "p50_ms": round(cuts[49], 2),
            "p95_ms": round(cuts[94], 2), "p99_ms": round(cuts[98], 2), "max_ms": round(max(self.latencies_ms), 2),
            "client_cpu_pct": round(100 * self.cpu_seconds / self.seconds),
        }  # fmt: skip


async def drive(writers: int, total: int, conv_ids: list[UUID], user_ids: list[UUID], post: Post) -> Result:
    """``writers`` tasks take message indexes from one counter until ``total`` are posted."""
    counter = itertools.count()
    latencies: list[float] = []

    async def writer(sender: UUID) -> None:
        while (i := next(counter)) < total:
            started = time.perf_counter()
            await post(i, conv_ids[i % len(conv_ids)], sender)
            latencies.append((time.perf_counter() - started) * 1000)

    started, cpu = time.perf_counter(), time.process_time()
    async with asyncio.TaskGroup() as group:
        for sender in user_ids[:writers]:
            group.create_task(writer(sender))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return Result("", "", len(conv_ids), total, elapsed, cpu, latencies)


def single_post(pool: asyncpg.Pool, tag: str) -> Post:
    """One transaction per post (what every post cost before group commit)."""

    async def post(i: int, conv_id: UUID, sender: UUID) -> None:
        cmd = commands.PostMessage(conversation_id=conv_id, sender_id=sender, client_msg_id=f"{tag}-{i}", text=TEXT)
        uow = SqlUnitOfWork(pool, shard_count=SHARDS)
        await handlers.post_message(cmd, uow, uow.clock, LIMITS)

    return post


def group_post(committer: GroupCommit, tag: str) -> Post:
    async def post(i: int, conv_id: UUID, sender: UUID) -> None:
        cmd = commands.PostMessage(conversation_id=conv_id, sender_id=sender, client_msg_id=f"{tag}-{i}", text=TEXT)
        await committer.post(cmd)

    return post


_BASELINE_INSERT = """INSERT INTO messages (id, conversation_id, seq, sender_id, role, text, client_msg_id, created_at)
                      VALUES ($1, $2, $3, $4, 'user', $5, $6, $7)"""


def baseline_post(pool: asyncpg.Pool, conv_ids: list[UUID], tag: str) -> Post:
    seqs = {conv_id: itertools.count(1) for conv_id in conv_ids}

    async def post(i: int, conv_id: UUID, sender: UUID) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                _BASELINE_INSERT, uuid4(), conv_id, next(seqs[conv_id]), sender, TEXT, f"{tag}-{i}", CLOCK.now()
            )

    return post


async def create_users(engine: AsyncEngine, count: int) -> list[UUID]:
    ids = [uuid4() for _ in range(count)]
    rows = [{"id": u, "email": f"bench-{u}@example.invalid", "name": f"writer {u}", "password_hash": "x"} for u in ids]
    async with engine.begin() as conn:
        await conn.execute(sa.insert(users), rows)
    return ids


async def create_conversations(pool: asyncpg.Pool, count: int, user_ids: list[UUID]) -> list[UUID]:
    """``count`` conversations owned by the first writer, with every writer a member."""
    owner, others, step = user_ids[0], user_ids[1:], LIMITS.max_participants_per_request
    ids: list[UUID] = []
    for n in range(count):
        start = commands.StartConversation(owner_id=owner, title=f"bench {n}", participant_ids=others[:step])
        conv = await handlers.start_conversation(start, SqlUnitOfWork(pool, shard_count=SHARDS), CLOCK, LIMITS)
        for k in range(step, len(others), step):
            add = commands.AddParticipants(conversation_id=conv.id, actor_id=owner, user_ids=others[k : k + step])
            await handlers.add_participants(add, SqlUnitOfWork(pool, shard_count=SHARDS), CLOCK, LIMITS)
        ids.append(conv.id)
    return ids


async def scalar(engine: AsyncEngine, stmt: sa.Executable) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(stmt)).scalar_one()


async def check(engine: AsyncEngine, conv_ids: list[UUID], posted: int, outbox_rows: int) -> tuple[bool, str]:
    """Per conversation: seqs exactly 1..n and ``last_seq == n``; one outbox row per message."""
    stmt = (
        sa.select(sa.func.count(messages.c.id), sa.func.min(messages.c.seq), sa.func.max(messages.c.seq),
                  sa.func.count(sa.distinct(messages.c.seq)), conversations.c.last_seq)
        .select_from(conversations.outerjoin(messages, messages.c.conversation_id == conversations.c.id))
        .where(conversations.c.id.in_(conv_ids))
        .group_by(conversations.c.id)
    )  # fmt: skip
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    gapless = sum(1 for n, lo, hi, distinct, last in rows if n == distinct == last == (hi or 0) and lo in (1, None))
    total = sum(row[0] for row in rows)
    ok = gapless == len(conv_ids) and total == posted == outbox_rows
    return ok, f"seqs 1..n in {gapless}/{len(conv_ids)} convs, {total}/{posted} messages, {outbox_rows} outbox rows"


async def warm_up(pool: asyncpg.Pool, writers: int, user_ids: list[UUID]) -> None:
    """Open every pooled connection and let each prepare both scenarios' statements once."""
    base_convs = await create_conversations(pool, 2, user_ids)
    parley_convs = await create_conversations(pool, 2, user_ids)
    await drive(writers, writers * 4, base_convs, user_ids, baseline_post(pool, base_convs, "warm"))
    await drive(writers, writers * 4, parley_convs, user_ids, single_post(pool, "warm-1"))
    await drive(writers, writers * 4, parley_convs, user_ids, group_post(group_commit(pool), "warm-g"))


def group_commit(pool: asyncpg.Pool, in_flight: int = DEFAULT_IN_FLIGHT) -> GroupCommit:
    return GroupCommit(lambda: SqlUnitOfWork(pool, shard_count=SHARDS), LIMITS, max_in_flight=in_flight)


async def run(url: str, args: argparse.Namespace) -> tuple[list[Result], list[tuple[str, bool, str]], str]:
    engine = create_async_engine(url, pool_size=2, max_overflow=0)  # set-up and checks only
    pool = await create_pg_pool(Settings(database=DatabaseSettings(url=url, pool_size=pool_size(args))))
    results: list[Result] = []
    checks: list[tuple[str, bool, str]] = []
    try:
        version = await scalar(engine, sa.text("SELECT version()"))
        user_ids = await create_users(engine, args.writers)
        await warm_up(pool, args.writers, user_ids)
        for variant, k in (("spread", args.conversations), ("hot", 1)):
            base_convs = await create_conversations(pool, k, user_ids)
            base_post = baseline_post(pool, base_convs, "b")
            base = await drive(args.writers, args.messages, base_convs, user_ids, base_post)
            base.variant, base.scenario = variant, "baseline"
            results.append(base)
            for scenario, make_post in (
                ("group commit", lambda: group_post(group_commit(pool, args.in_flight), "g")),
                ("1 tx / post", lambda: single_post(pool, "s")),
            ):
                parley_convs = await create_conversations(pool, k, user_ids)
                outbox_before = await scalar(engine, sa.select(sa.func.count()).select_from(outbox))
                parley = await drive(args.writers, args.messages, parley_convs, user_ids, make_post())
                outbox_rows = await scalar(engine, sa.select(sa.func.count()).select_from(outbox)) - outbox_before
                parley.variant, parley.scenario = variant, scenario
                results.append(parley)
                checks.append((f"{variant}/{scenario}", *await check(engine, parley_convs, args.messages, outbox_rows)))
    finally:
        await pool.close()
        await engine.dispose()
    return results, checks, str(version)


def pool_size(args: argparse.Namespace) -> int:
    """One connection per writer, within PostgreSQL's default max_connections (100)."""
    return min(args.writers, 80)


def report(args: argparse.Namespace, where: str, version: str, results: list[Result], checks: list[Any]) -> None:
    def line(s: dict[str, Any]) -> str:
        cells = (f"{s['msgs_per_s']:.0f}", *(f"{s[k]:.2f}" for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")))
        cells += (str(s["client_cpu_pct"]),)
        return f"{s['variant']:<8}{s['conversations']:>6}  {s['scenario']:<13}" + "".join(f"{c:>9}" for c in cells)

    print("Parley write-path benchmark")
    print(f"machine   {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}")
    print(f"postgres  {version}  ({where})")
    print(
        f"load      {args.writers} writers, {args.messages} messages per scenario, pool_size={pool_size(args)}, "
        f"group commit: {args.in_flight} transactions in flight\n"
    )
    head = f"{'variant':<8}{'convs':>6}  {'scenario':<13}" + "".join(f"{h:>9}" for h in COLUMNS)
    print(head + "\n" + "-" * len(head))
    rows = [r.summary() for r in results]
    for base, grouped, single in zip(rows[::3], rows[1::3], rows[2::3], strict=True):
        print("\n".join(line(r) for r in (base, grouped, single)))
        for parley in (grouped, single):
            tput, p99 = parley["msgs_per_s"] / base["msgs_per_s"], parley["p99_ms"] / base["p99_ms"]
            print(f"{'':<16}{parley['scenario']}/baseline: throughput {tput:.2f}x, p99 {p99:.2f}x")
        print()
    print("cpu % = this process's CPU time / wall time; near 100 the Python client, not PostgreSQL, is the limit\n")
    for variant, ok, text in checks:
        print(f"check {variant:<20}{'OK' if ok else 'FAIL'}  {text}")
    if args.json:
        machine = {"cpus": os.cpu_count(), "platform": platform.platform()}
        ok = all(ok for _, ok, _ in checks)
        summary = {"machine": machine, "postgres": version, "writers": args.writers, "results": rows, "ok": ok}
        print(json.dumps(summary))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.write_path", description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=32, help="concurrent writers (and pool size)")
    parser.add_argument("--messages", type=int, default=5000, help="messages per scenario")
    parser.add_argument("--conversations", type=int, default=32, help="conversations of the spread variant")
    parser.add_argument(
        "--in-flight",
        type=int,
        default=DEFAULT_IN_FLIGHT,
        help="group commit: transactions in flight at once (default: PARLEY_POST_TRANSACTIONS' default)",
    )
    parser.add_argument("--database-url", help="a disposable database (migrated first); default: embedded")
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    args = parser.parse_args(argv)
    if min(args.writers, args.conversations) < 1 or args.messages < 2:
        parser.error("--writers and --conversations must be at least 1, --messages at least 2")
    with tempfile.TemporaryDirectory(prefix="parley-bench-") as tmp:
        pg = None
        if args.database_url:
            url = async_database_url(args.database_url)
        else:
            pg = start_postgres(Path(tmp) / "pg")
            pg.create_database(f"bench_{os.getpid()}")
            url = pg.url(f"bench_{os.getpid()}")
        try:
            upgrade_head(url)  # blocking, with its own event loop: before asyncio.run
            results, checks, version = asyncio.run(run(url, args))
        finally:
            if pg is not None:
                pg.stop()
    where = "embedded PostgreSQL" if pg else make_url(url).render_as_string(hide_password=True)
    report(args, where, version, results, checks)
    return 0 if all(ok for _, ok, _ in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
