"""The outbox, flow 1 -> 2: every piece of it in one place.

The unit of work inserts a commit's events (``INSERT_SQL``, plus ``NOTIFY_SQL`` where no publisher runs
in the process) in the same transaction as the state change they describe; a publisher (the API node
that wrote, or the relay) takes the oldest rows of the shards it could lock (``CLAIM_SQL``), publishes
them and lets the deletion commit; operators read the backlog (``backlog``). Rows carry the
event bytes encoded once by ``domain.events.encode`` and relayed byte for byte.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

#: The channel relays LISTEN on; the payload is empty (a relay drains every shard it owns).
CHANNEL = "parley_outbox"

#: Advisory-lock namespace (first key of the two-int form); the second key is the shard number.
LOCK_NAMESPACE = 0x5041524C  # "PARL"
#: The shard locks are a lease: a relay that stays silent inside a batch this long (SIGSTOP, a GC
#: pause, a hung call) has its session ended by PostgreSQL (``idle_in_transaction_session_timeout``),
#: which rolls its claim back and frees its shards for a standby. A healthy batch takes milliseconds,
#: and the relay bounds its Redis call well below this.
LEASE_MS = 3000


@dataclass(frozen=True)
class OutboxRow:
    """One committed event waiting for the relay."""

    id: int
    shard: int
    event_type: str
    payload: bytes


# All of a commit's events in one insert, as a part of the unit of work's commit statement (its
# parameters ``{0}`` … ``{2}``: event types, shards, payloads). unnest keeps array order, so outbox ids
# follow the order the aggregates recorded their events in.
INSERT_SQL = """
    INSERT INTO outbox (event_type, shard, payload) SELECT * FROM unnest({0}::text[], {1}::int[], {2}::bytea[])
"""
#: Wakes the relays; sent in the same statement as the insert when no publisher runs in the process.
NOTIFY_SQL = f"SELECT pg_notify('{CHANNEL}', '')"

# One statement: lock the given shards (transaction-scoped, released at commit; ``{locks}`` is
# ``_TRY_LOCKS`` or ``_WAIT_LOCKS``), take the oldest rows of the locked shards out of the outbox, and
# let this transaction commit asynchronously. The rows come back if the transaction does not commit
# (Redis refused the XADD, the publisher died). An asynchronous commit is enough: if a crash loses it,
# the rows are published again and consumers absorb the duplicates; it saves a WAL flush per batch.
# MATERIALIZED keeps the lock calls out of the outer plan. The last row (id NULL) carries the shards
# this claim locked; RETURNING has no order, so ``claim`` sorts by id. The lease (``LEASE_MS``) is set
# here too, for this transaction only.
_CLAIM_SQL = f"""
    WITH async_commit AS MATERIALIZED (
        SELECT set_config('synchronous_commit', 'off', true),
               set_config('idle_in_transaction_session_timeout', '{LEASE_MS}', true)
    ),
    mine AS MATERIALIZED ({{locks}}),
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
    SELECT claimed.id, claimed.shard, claimed.event_type, claimed.payload, NULL::int[] AS locked
    FROM claimed, async_commit
    UNION ALL
    SELECT NULL, NULL, NULL, NULL, ARRAY(SELECT s FROM mine)
"""


# Skip the shards another publisher holds (the relays: any number may run, none ever waits).
_TRY_LOCKS = "SELECT s FROM unnest($1::int[]) AS s WHERE pg_try_advisory_xact_lock($2::int, s)"
# Wait for them, in the order given (ascending, so waiters never deadlock; the relays never wait).
# The statement's snapshot is older than the locks, which is enough: the caller wants rows it
# committed before it started, and the rows the previous holder took are gone when their locks are
# released (``SKIP LOCKED`` / the DELETE skips them).
_WAIT_LOCKS = "SELECT s FROM unnest($1::int[]) AS s, LATERAL (SELECT pg_advisory_xact_lock($2::int, s)) AS l"
CLAIM_SQL = _CLAIM_SQL.format(locks=_TRY_LOCKS)
CLAIM_WAITING_SQL = _CLAIM_SQL.format(locks=_WAIT_LOCKS)


@dataclass(frozen=True)
class Claim:
    """The rows one publisher took, oldest first, and the shards it held while taking them."""

    rows: list[OutboxRow]
    locked: frozenset[int]


async def claim(conn: asyncpg.Connection, *, shards: Sequence[int], limit: int, wait: bool = False) -> Claim:
    """Inside the caller's transaction: the oldest rows of those ``shards`` no one else is publishing
    (``wait``: once the others let go of them)."""
    records = await conn.fetch(CLAIM_WAITING_SQL if wait else CLAIM_SQL, sorted(shards), LOCK_NAMESPACE, limit)
    rows: list[OutboxRow] = []
    locked: frozenset[int] = frozenset()
    for r in records:
        if r["id"] is None:
            locked = frozenset(r["locked"])
        else:
            rows.append(OutboxRow(r["id"], r["shard"], r["event_type"], r["payload"]))
    rows.sort(key=lambda e: e.id)
    return Claim(rows, locked)


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
