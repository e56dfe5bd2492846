"""Flow 1 -> 2, what a key holder's commit reads of the outbox: the rows of its keys nobody published and the
keyless rows of its shards (``outbox.LEFTOVERS_SQL``), each through a partial index that holds only such
rows (migrations 0011 and 0013), never the backlog of other keys. That backlog is largest when Redis answers
again after an outage (the nodes left publishing to the relay meanwhile): a commit that read it would cost
O(backlog) per post while the system catches up. Real PostgreSQL: the rows read are its own count
(``pg_stat_xact_user_tables``) for the commit statement a unit of work sends, planned as the unit of work
plans it (its BEGIN: generic plans, no sequential scans)."""

from __future__ import annotations

import uuid

import asyncpg

from domain import events
from infrastructure.bootstrap import Services, asyncpg_dsn
from infrastructure.db import outbox
from infrastructure.db.begun import BEGIN_SQL
from infrastructure.db.repositories import PendingWrites

#: Keyed rows of keys nobody holds, all in the holder's shard (the rows its keyless branch must not read).
BACKLOG = 5_000

_ROWS_READ = "SELECT seq_tup_read + idx_tup_fetch FROM pg_stat_xact_user_tables WHERE relid = 'outbox'::regclass"


async def _plan(conn: asyncpg.Connection, key: int, shard: int) -> str:
    """The leftovers' generic plan as executed, for the failure message."""
    await conn.execute(f"PREPARE leftovers(int[], int[]) AS {outbox.LEFTOVERS_SQL.format('$1', '$2')}")
    # EXPLAIN takes no parameters: the arrays as literals.
    explained = await conn.fetch(
        f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) EXECUTE leftovers('{{{key}}}', '{{{shard}}}')"
    )
    return "\n".join(row[0] for row in explained)


async def test_a_commit_reads_its_leftovers_and_not_the_backlog_of_other_keys(services: Services) -> None:
    shard_count = services.settings.redis.shard_count
    conversation = uuid.uuid4()
    key, shard = outbox.lock_key(conversation), events.shard_for(conversation, shard_count)
    other_keys = [k for k in range(1, 1002) if k != key][:1000]
    # (event type, shard, key) in id order: the leftovers spread through the backlog, and a keyless row of
    # another shard, which is not this holder's to publish.
    rows: list[tuple[str, int, int | None]] = [("backlog", shard, other_keys[i % 1000]) for i in range(BACKLOG)]
    for position, row in reversed([
        (0, ("keyless", shard, None)), (1000, ("keyed", shard, key)), (2000, ("keyless", shard, None)),
        (2500, ("other shard", (shard + 1) % shard_count, None)), (3000, ("keyed", shard, key)),
        (4000, ("keyless", shard, None)),
    ]):  # fmt: skip
        rows.insert(position, row)

    conn = await asyncpg.connect(asyncpg_dsn(services.settings))
    try:
        await conn.execute(
            outbox.INSERT_SQL.format("$1", "$2", "$3", "$4"),
            [r[0] for r in rows], [r[1] for r in rows], [b""] * len(rows), [r[2] for r in rows],
        )  # fmt: skip
        # Statistics that know the backlog, as autovacuum's do once it has grown. Without the index, the
        # generic plan then reads the whole outbox through pk_outbox (so it does with the statistics of an
        # empty outbox); with none, every row of the shard through ix_outbox_shard_id.
        await conn.execute("ANALYZE outbox")

        # A post's commit statement, as the unit of work builds it for a holder of the conversation's key.
        pending = PendingWrites()
        pending.add_outbox(["own"], [shard], [b""], [key])
        held = outbox.KeyLocks(shard_count)
        held.took([(key, shard)])
        sql, args = pending.statement(publish=held)
        await conn.execute(BEGIN_SQL)
        try:
            before = await conn.fetchval(_ROWS_READ)
            published = await conn.fetch(sql, *args)
            read = await conn.fetchval(_ROWS_READ) - before
            plan = await _plan(conn, key, shard)
        finally:
            await conn.execute("ROLLBACK")
    finally:
        await conn.close()  # the rows go with the test's tables (clean_state)

    leftovers = published[:-1]
    assert [r["event_type"] for r in leftovers] == ["keyless", "keyed", "keyless", "keyed", "keyless"]
    assert [r["id"] for r in leftovers] == sorted(r["id"] for r in leftovers)
    # Every row PostgreSQL read is one the holder publishes; none of the backlog.
    assert read == len(leftovers), f"{read} rows read for {len(leftovers)} leftovers:\n{plan}"
