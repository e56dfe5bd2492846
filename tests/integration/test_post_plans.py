"""Flow 1, the plans of a post: every row a post reads or writes is found through an index, on tables of
any size (``infrastructure/db/unit_of_work.py`` plans a unit of work's statements generically, without
sequential scans; migration 0012 does the same for ``parley_lock_for_posting``). A sequential scan
here would be a scan of every conversation, member or message per post once the tables are large.
Real PostgreSQL: the counters are its own (``pg_stat_user_tables``)."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from domain import commands, handlers
from domain.limits import Limits
from infrastructure.bootstrap import Services, asyncpg_dsn
from infrastructure.db.group_commit import GroupCommit
from infrastructure.db.unit_of_work import SqlUnitOfWork
from tests.factories import StartConversationFactory

_TABLES = ("conversations", "participants", "messages", "outbox")


async def _scans(conn: asyncpg.Connection) -> dict[str, tuple[int, int, int]]:
    """(sequential scans, index scans, rows inserted) of each table, as PostgreSQL has counted them."""
    rows = await conn.fetch(
        "SELECT relname, seq_scan, coalesce(idx_scan, 0), n_tup_ins FROM pg_stat_user_tables"
        " WHERE relname = ANY($1::text[])",
        list(_TABLES),
    )
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


async def _reported(
    conn: asyncpg.Connection, reader: asyncpg.Connection, since: dict[str, tuple[int, int, int]]
) -> dict[str, tuple[int, int, int]]:
    """The counters once the backend of ``conn``, which inserted rows since ``since``, has reported them
    (a backend sends its statistics when it goes idle, at most once a second unless asked to)."""
    async with asyncio.timeout(15):
        while (now := await _scans(reader)) and sum(n[2] for n in now.values()) == sum(n[2] for n in since.values()):
            await conn.execute("SELECT pg_stat_force_next_flush()")
            await asyncio.sleep(0.05)
    return now


async def test_posts_find_every_row_through_an_index_on_small_tables(services: Services) -> None:
    # One connection does everything, so that its statistics are the ones awaited below.
    pool = await asyncpg.create_pool(asyncpg_dsn(services.settings), min_size=1, max_size=1)
    reader = await asyncpg.connect(asyncpg_dsn(services.settings))

    def uow() -> SqlUnitOfWork:
        return SqlUnitOfWork(pool, shard_count=services.settings.redis.shard_count)

    try:
        initially = await _scans(reader)
        ids = [uuid.uuid4() for _ in range(3)]
        async with pool.acquire() as conn:
            await conn.executemany(
                "INSERT INTO users (id, email, name, password_hash) VALUES ($1, $2, 'u', 'x')",
                [(u, f"{u}@example.com") for u in ids],
            )
        start = StartConversationFactory.build(owner_id=ids[0], participant_ids=ids[1:])
        convs = [(await handlers.start_conversation(start, uow(), services.clock, Limits())).id for _ in range(3)]
        async with pool.acquire() as conn:
            before = await _reported(conn, reader, initially)
        posts = GroupCommit(uow, Limits(), max_in_flight=1)
        for i in range(12):  # past the five executions after which PostgreSQL may settle on a generic plan
            await asyncio.gather(*(
                posts.post(commands.PostMessage(conversation_id=c, sender_id=ids[i % 3], client_msg_id=f"{i}-{c}",
                                                text="hi"))
                for c in convs[: 1 + i % 3]
            ))  # fmt: skip
        async with pool.acquire() as conn:
            after = await _reported(conn, reader, before)
    finally:
        await reader.close()
        await pool.close()

    assert after["messages"][2] - before["messages"][2] == 24
    assert {t: after[t][0] - before[t][0] for t in _TABLES} == dict.fromkeys(_TABLES, 0)
    assert after["conversations"][1] > before["conversations"][1]
