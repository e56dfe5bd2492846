"""The outbox, flow 1 -> 2: every piece of it in one place.

The unit of work inserts a commit's events (``INSERT_SQL``, plus ``NOTIFY_SQL`` where no publisher runs
in the process) in the same transaction as the state change they describe. Who publishes them:

- **An API node, from memory** (``infrastructure/outbox_publisher.py``). Each row carries its
  conversation's *publish key* (``lock_key``); a node takes the keys of the conversations it writes as
  session advisory locks before their row locks (``KeyLocks``, and ``parley_lock_for_posting`` for a
  post batch), reads in its commit statement the rows of those keys nobody published yet
  (``LEFTOVERS_SQL``), commits, XADDs those rows and its own, then deletes them and lets the keys go
  (``RELEASE_SQL``). The next writer of a conversation waits for its key, so a conversation's events
  reach its stream in commit order. Migration 0011 says why this cannot deadlock, and how a stopped
  node's keys are freed (``LEASE_MS``).
- **The relay** (``CLAIM_SQL``): the oldest rows of the shards it could lock, skipping every row of a
  key it cannot take; XADD; commit. Rows of workers and the CLI (which NOTIFY), of a node that died
  between commit and publish, of a publish that failed.

Rows carry the event bytes encoded once by ``domain.events.encode`` and relayed byte for byte;
operators read the backlog (``backlog``).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

import asyncpg

from domain import events

#: The channel relays LISTEN on; the payload is empty (a relay drains every shard it owns).
CHANNEL = "parley_outbox"

#: Advisory-lock namespace (first key of the two-int form) of the relays' shard locks; the second key
#: is the shard number.
LOCK_NAMESPACE = 0x5041524C  # "PARL"
#: Namespace of the publish keys; the second key is ``lock_key(conversation_id)``.
KEY_NAMESPACE = 0x5041524B  # "PARK"
#: Shard locks and publish keys are leases: a process that stays silent this long while holding them
#: (SIGSTOP, a GC pause, a hung call) has its session ended by PostgreSQL
#: (``idle_in_transaction_session_timeout`` inside a transaction, ``idle_session_timeout`` for a
#: node's keys between its commit and its release), which frees them for others. A healthy holder
#: takes milliseconds, and every Redis call made while holding is bounded well below this.
LEASE_MS = 3000


def lock_key(conversation_id: UUID) -> int:
    """The conversation's publish key: a stable signed 32-bit hash of its id (same on every process and
    version). Two conversations may share a key; they are then published one after the other."""
    key = zlib.crc32(conversation_id.bytes)
    return key - (1 << 32) if key >= 1 << 31 else key


@dataclass(frozen=True)
class OutboxRow:
    """One committed event waiting for the relay."""

    id: int
    shard: int
    event_type: str
    payload: bytes


# All of a commit's events in one insert, as a part of the unit of work's commit statement (its
# parameters ``{0}`` … ``{3}``: event types, shards, payloads, publish keys). unnest keeps array order
# and ids are drawn in insertion order, so sorted ids follow the order the aggregates recorded their
# events in (the publisher pairs them up that way).
INSERT_SQL = """
    INSERT INTO outbox (event_type, shard, payload, lock_key)
    SELECT * FROM unnest({0}::text[], {1}::int[], {2}::bytea[], {3}::int[])
    RETURNING id
"""
#: Wakes the relays; sent in the same statement as the insert when no publisher runs in the process.
NOTIFY_SQL = f"SELECT pg_notify('{CHANNEL}', '')"

# A part of the commit statement of a key holder (parameters ``{0}``: the keys it holds, ``{1}``: their
# shards): the rows of those keys nobody published, and the keyless rows of those shards (from before
# the keys), oldest first. ``FOR UPDATE`` waits out a previous holder's delete that is not committed
# yet (its key was released inside that statement) and then skips the deleted rows; nothing else can
# hold these rows, since the relay takes only rows of keys it holds. Each branch has a partial index
# that holds only its rows, so the (generic) plan reads the rows it returns and none of the backlog of
# other keys, which is largest when Redis comes back after an outage: the keys' rows through
# ``ix_outbox_lock_key_id`` (migration 0011), the keyless ones through ``ix_outbox_keyless_shard_id``
# (migration 0013), combined by a BitmapOr. Not ``ix_outbox_shard_id`` (the relay's): it holds every
# row of a shard.
LEFTOVERS_SQL = """
    SELECT id, shard, event_type, payload FROM outbox
    WHERE lock_key = ANY({0}::int[]) OR (lock_key IS NULL AND shard = ANY({1}::int[]))
    ORDER BY id FOR UPDATE
"""

#: Take publish keys outside ``parley_lock_for_posting`` (before a conversation's row lock, or for a
#: conversation nobody else can lock yet): ``$1`` the keys, ``$2`` ``KEY_NAMESPACE``, ``$3`` ``LEASE_MS``.
#: The same function takes them inside it (migration 0011): one place sets the lease.
TAKE_KEYS_SQL = "SELECT parley_take_publish_keys($1::int[], $2::int, $3::int)"

# After a key holder's XADD (``$1``: the ids it published, none if it could not publish): delete them,
# then drop every key and the lease, one round trip. The unlock reads the delete's count so that it
# runs after it (an unreferenced data-modifying CTE would run after the rest of the statement): once a
# key is free, the rows are already locked by this delete, which the relay's claim skips and the next
# holder's ``LEFTOVERS_SQL`` waits out. The deletion commits asynchronously: if a crash loses it, the
# rows are published again and consumers absorb the duplicates by seq.
RELEASE_SQL = """
    WITH async_commit AS MATERIALIZED (SELECT set_config('synchronous_commit', 'off', true)),
    published AS (DELETE FROM outbox WHERE id = ANY($1::bigint[]) RETURNING 1),
    deleted AS MATERIALIZED (SELECT count(*) FROM published, async_commit)
    SELECT pg_advisory_unlock_all(), set_config('idle_session_timeout', '0', false) FROM deleted
"""


@dataclass
class KeyLocks:
    """The publish keys one unit of work holds on its connection (session advisory locks), with the
    shards of their conversations (for the keyless rows ``LEFTOVERS_SQL`` also publishes)."""

    shard_count: int
    held: dict[int, int] = field(default_factory=dict)  # key -> shard

    def missing(self, conversation_ids: Iterable[UUID]) -> list[tuple[int, int]]:
        """(key, shard) of those conversations whose key is not held yet, ascending."""
        wanted = {lock_key(c): events.shard_for(c, self.shard_count) for c in conversation_ids}
        return sorted((k, s) for k, s in wanted.items() if k not in self.held)

    async def take(self, conn: asyncpg.Connection, conversation_ids: Iterable[UUID]) -> None:
        """Take the keys of those conversations not held yet (waits for their holders)."""
        if missing := self.missing(conversation_ids):
            self.took(missing)  # before the call: if it fails midway, the rollback lets them go
            await conn.execute(TAKE_KEYS_SQL, [k for k, _ in missing], KEY_NAMESPACE, LEASE_MS)

    def took(self, keys: Iterable[tuple[int, int]]) -> None:
        """Record keys taken by another statement (``parley_lock_for_posting``)."""
        self.held.update(keys)


# The relay's claim, one statement: lock the shards no other relay holds (transaction-scoped), take
# the oldest rows of those shards, try the publish key of each (once per key: a key held by a node
# that is publishing it, or by another relay, makes every row of that key wait for a later claim, so
# a conversation's rows are never taken out of order), take the rows out of the outbox and let this
# transaction commit asynchronously. The rows come back if it does not commit (Redis refused the XADD,
# the relay died); if a crash loses the commit, the rows are published again and consumers absorb the
# duplicates. MATERIALIZED keeps the lock calls out of the outer plan and runs each once. The lease
# (``LEASE_MS``) is set here too, for this transaction only. RETURNING has no order: ``claim`` sorts.
CLAIM_SQL = f"""
    WITH settings AS MATERIALIZED (
        SELECT set_config('synchronous_commit', 'off', true),
               set_config('idle_in_transaction_session_timeout', '{LEASE_MS}', true)
    ),
    shards AS MATERIALIZED (
        SELECT s FROM unnest($1::int[]) AS s, settings WHERE pg_try_advisory_xact_lock($2::int, s)
    ),
    oldest AS MATERIALIZED (
        SELECT id, lock_key FROM outbox WHERE shard IN (SELECT s FROM shards) ORDER BY id LIMIT $3
    ),
    keys AS MATERIALIZED (
        SELECT k FROM (SELECT DISTINCT lock_key AS k FROM oldest WHERE lock_key IS NOT NULL) AS d
        WHERE pg_try_advisory_xact_lock($4::int, k)
    )
    DELETE FROM outbox WHERE id IN (
        SELECT id FROM outbox
        WHERE id IN (SELECT id FROM oldest WHERE lock_key IS NULL OR lock_key IN (SELECT k FROM keys))
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id, shard, event_type, payload
"""


async def claim(conn: asyncpg.Connection, *, shards: Sequence[int], limit: int) -> list[OutboxRow]:
    """Inside the caller's transaction: the oldest rows of those ``shards`` no one else is publishing,
    oldest first."""
    records = await conn.fetch(CLAIM_SQL, sorted(shards), LOCK_NAMESPACE, limit, KEY_NAMESPACE)
    rows = [OutboxRow(r["id"], r["shard"], r["event_type"], r["payload"]) for r in records]
    rows.sort(key=lambda e: e.id)
    return rows


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
