"""The outbox, flow 1 -> 2: every piece of it in one place.

The unit of work inserts a commit's events (``INSERT_SQL`` + ``NOTIFY_SQL``) in the same transaction as
the state change they describe; the relay takes the oldest rows of the shards it owns (``CLAIM_SQL``),
publishes them and lets the deletion commit; operators read its backlog (``backlog``). Rows carry the
event bytes encoded once by ``domain.events.encode`` and relayed byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

#: The channel relays LISTEN on; the payload is empty (a relay drains every shard it owns).
CHANNEL = "parley_outbox"

#: Advisory-lock namespace (first key of the two-int form); the second key is the shard number.
LOCK_NAMESPACE = 0x5041524C  # "PARL"


@dataclass(frozen=True)
class OutboxRow:
    """One committed event waiting for the relay."""

    id: int
    shard: int
    event_type: str
    payload: bytes


# All of a commit's events in one insert; unnest keeps array order, so outbox ids follow the order the
# aggregates recorded their events in. Parameters: event types, shards, payloads (three arrays).
INSERT_SQL = """
    INSERT INTO outbox (event_type, shard, payload)
    SELECT * FROM unnest($1::text[], $2::int[], $3::bytea[])
"""
#: Wakes the relays; sent in the same statement as the insert.
NOTIFY_SQL = f"SELECT pg_notify('{CHANNEL}', '')"

# One statement: lock the shards no other relay holds (transaction-scoped, released at commit), take
# the oldest rows of those shards out of the outbox, and let this transaction commit asynchronously.
# The rows come back if the transaction does not commit (Redis refused the XADD, the relay died).
# An asynchronous commit is enough: if a crash loses it, the rows are published again and consumers
# absorb the duplicates; it saves a WAL flush per batch. MATERIALIZED keeps the lock calls out of the
# outer plan, and RETURNING has no order, so ``claim`` sorts by id.
CLAIM_SQL = """
    WITH async_commit AS MATERIALIZED (SELECT set_config('synchronous_commit', 'off', true)),
    mine AS MATERIALIZED (
        SELECT s FROM generate_series(0, $1::int - 1) AS s
        WHERE pg_try_advisory_xact_lock($2::int, s)
    ),
    claimed AS (
        DELETE FROM outbox WHERE id IN (
            SELECT id FROM outbox
            WHERE shard IN (SELECT s FROM mine)
            ORDER BY id
            LIMIT $3
            FOR UPDATE SKIP LOCKED
        )
        RETURNING id, shard, event_type, payload
    )
    SELECT claimed.* FROM claimed, async_commit
"""


async def claim(conn: asyncpg.Connection, *, shard_count: int, limit: int) -> list[OutboxRow]:
    """Inside the caller's transaction: the oldest rows of the shards this relay could lock, by id."""
    rows = await conn.fetch(CLAIM_SQL, shard_count, LOCK_NAMESPACE, limit)
    return sorted((OutboxRow(r["id"], r["shard"], r["event_type"], r["payload"]) for r in rows), key=lambda e: e.id)


@dataclass(frozen=True)
class Backlog:
    rows: int
    #: Age of the oldest unpublished row; 0 when the outbox is empty.
    oldest_age_seconds: float


_BACKLOG_SQL = """
    SELECT count(*) AS rows, min(created_at) AS oldest, now() AS now FROM outbox
"""


async def backlog(pool: asyncpg.Pool | asyncpg.Connection) -> Backlog:
    """Rows committed but not yet published, and how long the oldest has waited."""
    row = await pool.fetchrow(_BACKLOG_SQL)
    assert row is not None
    oldest: datetime | None = row["oldest"]
    age = 0.0 if oldest is None else max((row["now"] - oldest).total_seconds(), 0.0)
    return Backlog(rows=int(row["rows"]), oldest_age_seconds=age)
