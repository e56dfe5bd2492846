"""Read models (flow 4): how the projector, `parley projections rebuild` and the read-cursor fast path
change them, in SQL on asyncpg. Reads for users are in ``views.py``.

One rule keeps them right under redelivery, reordering and loss: per conversation ``projection_state``
holds the last seq applied, locked (``FOR UPDATE``) and moved in the same transaction as the change.
A message at or below it is a duplicate and is skipped; the next one is applied incrementally; one
further ahead (an entry trimmed away or lost) makes the conversation ``resync`` from PostgreSQL, which
is also what a rebuild does. Every other event (membership, title, deletion, read cursors) recomputes
the rows it touches from the write tables bounded by the applied seq, so those are idempotent and
order-free by construction. In every row: ``unread_count`` = messages in ``(read_seq, last_seq]`` not
sent by the row's user.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from uuid import UUID

import asyncpg
import msgspec

from domain.values import Message

#: Characters of a message kept as the list preview.
PREVIEW_CHARS = 140
#: actor_id / user_id of statistics rows with no user (assistant and system messages).
NIL = UUID(int=0)


class ListRow(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """One row of ``read_conversation_list``: a conversation as one user's list shows it."""

    user_id: UUID
    conversation_id: UUID
    title: str
    last_seq: int
    last_preview: str | None
    last_sender_id: UUID | None
    last_role: str | None
    last_message_at: datetime | None
    read_seq: int
    unread_count: int
    updated_at: datetime


class Removed(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """A conversation left ``user_id``'s list (removed from it, or it was deleted)."""

    user_id: UUID
    conversation_id: UUID


Change = ListRow | Removed

_ROW_COLUMNS = (
    "user_id, conversation_id, title, last_seq, last_preview, last_sender_id, last_role, last_message_at, "
    "read_seq, unread_count, updated_at"
)


def _rows(records: Iterable[asyncpg.Record]) -> list[Change]:
    return [ListRow(**dict(r)) for r in records]


# -- projection state ----------------------------------------------------------------------------------


async def lock_states(conn: asyncpg.Connection, conversation_ids: Sequence[UUID]) -> dict[UUID, int]:
    """Lock the state rows that exist (in id order, so concurrent projectors never deadlock on them)."""
    rows = await conn.fetch(
        """SELECT conversation_id, applied_seq FROM projection_state
           WHERE conversation_id = ANY($1::uuid[]) ORDER BY conversation_id FOR UPDATE""",
        sorted(set(conversation_ids)),
    )
    return {r["conversation_id"]: r["applied_seq"] for r in rows}


async def _lock_or_create_state(conn: asyncpg.Connection, conversation_id: UUID) -> tuple[int, bool]:
    """(applied seq, whether the state row was just created) with the row locked."""
    created = await conn.fetchval(
        """INSERT INTO projection_state (conversation_id, applied_seq) VALUES ($1, 0)
           ON CONFLICT DO NOTHING RETURNING true""",
        conversation_id,
    )
    applied = await conn.fetchval(
        "SELECT applied_seq FROM projection_state WHERE conversation_id = $1 FOR UPDATE", conversation_id
    )
    return int(applied), bool(created)


# -- messages, incrementally ---------------------------------------------------------------------------

# Every member row of the batch's conversations moves to the batch's last message. A member's own
# messages move their read cursor (the write path did the same). Unread: if the cursor moved, the
# others' messages after it (all in this batch, since the cursor is one of them); otherwise the old
# count plus the others' messages after the cursor. Joins by conversation (hash joins), never a
# per-row scan of the batch, so the cost grows with members x messages per conversation.
_APPLY_MESSAGES = f"""
    WITH m AS MATERIALIZED (
        SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::uuid[], $4::text[], $5::text[], $6::timestamptz[])
            AS m(conversation_id, seq, sender_id, role, preview, created_at)
    ),
    last AS MATERIALIZED (SELECT DISTINCT ON (conversation_id) * FROM m ORDER BY conversation_id, seq DESC),
    members AS (
        SELECT r.user_id, r.conversation_id, r.read_seq
        FROM read_conversation_list r JOIN last ON last.conversation_id = r.conversation_id
    ),
    own AS (
        SELECT mb.user_id, mb.conversation_id, mb.read_seq,
               GREATEST(mb.read_seq, COALESCE(max(m.seq) FILTER (WHERE m.sender_id = mb.user_id), 0)) AS new_read
        FROM members mb JOIN m ON m.conversation_id = mb.conversation_id
        GROUP BY mb.user_id, mb.conversation_id, mb.read_seq
    ),
    calc AS (
        SELECT o.user_id, o.conversation_id, o.new_read, o.new_read > o.read_seq AS moved,
               count(*) FILTER (WHERE m.seq > o.new_read AND m.sender_id IS DISTINCT FROM o.user_id) AS fresh
        FROM own o JOIN m ON m.conversation_id = o.conversation_id
        GROUP BY o.user_id, o.conversation_id, o.new_read, o.read_seq
    )
    UPDATE read_conversation_list r SET
        last_seq = last.seq, last_preview = last.preview, last_sender_id = last.sender_id,
        last_role = last.role, last_message_at = last.created_at, updated_at = last.created_at,
        read_seq = calc.new_read,
        unread_count = CASE WHEN calc.moved THEN 0 ELSE r.unread_count END + calc.fresh
    FROM calc JOIN last ON last.conversation_id = calc.conversation_id
    WHERE r.user_id = calc.user_id AND r.conversation_id = calc.conversation_id
    RETURNING {", ".join("r." + c.strip() for c in _ROW_COLUMNS.split(","))}
"""

_COUNT_ACTIVITY = """
    INSERT INTO stats_daily_activity AS s (day, conversation_id, actor_id, messages)
    SELECT (created_at AT TIME ZONE 'UTC')::date, conversation_id, COALESCE(sender_id, $4::uuid), count(*)
    FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[]) AS m(conversation_id, sender_id, created_at)
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (day, conversation_id, actor_id) DO UPDATE SET messages = s.messages + excluded.messages
"""

_MOVE_STATE = """
    UPDATE projection_state s SET applied_seq = x.seq, updated_at = now()
    FROM unnest($1::uuid[], $2::bigint[]) AS x(conversation_id, seq)
    WHERE s.conversation_id = x.conversation_id
"""


_DROP_NON_MEMBERS_OF = """
    DELETE FROM read_conversation_list r
    WHERE r.conversation_id = ANY($1::uuid[])
      AND NOT EXISTS (
          SELECT 1 FROM participants p WHERE p.conversation_id = r.conversation_id AND p.user_id = r.user_id
      )
    RETURNING r.user_id, r.conversation_id
"""
_MISSING_MEMBERS_OF = """
    SELECT DISTINCT p.conversation_id FROM participants p
    WHERE p.conversation_id = ANY($1::uuid[])
      AND NOT EXISTS (
          SELECT 1 FROM read_conversation_list r WHERE r.user_id = p.user_id AND r.conversation_id = p.conversation_id
      )
"""


async def _align_members(conn: asyncpg.Connection, conversation_ids: list[UUID]) -> list[Change]:
    """Rows exactly for the current members before messages are applied, whatever membership events
    were lost: a removed member's row never receives a later preview."""
    gone = await conn.fetch(_DROP_NON_MEMBERS_OF, conversation_ids)
    changes: list[Change] = [Removed(user_id=r["user_id"], conversation_id=r["conversation_id"]) for r in gone]
    for r in await conn.fetch(_MISSING_MEMBERS_OF, conversation_ids):
        changes += await recompute(conn, r["conversation_id"], full=False)
    return changes


async def apply_messages(conn: asyncpg.Connection, batch: Sequence[Message]) -> list[Change]:
    """Apply messages that each directly follow their conversation's applied seq (states locked by the
    caller), in seq order; moves the states to the last one."""
    if not batch:
        return []
    cids = [m.conversation_id for m in batch]
    changes = await _align_members(conn, sorted(set(cids)))
    senders = [m.sender_id for m in batch]
    times = [m.created_at for m in batch]
    rows = await conn.fetch(
        _APPLY_MESSAGES,
        cids,
        [m.seq for m in batch],
        senders,
        [m.role.value for m in batch],
        [m.text[:PREVIEW_CHARS] for m in batch],
        times,
    )
    await conn.execute(_COUNT_ACTIVITY, cids, senders, times, NIL)
    last: dict[UUID, int] = {}
    for m in batch:
        last[m.conversation_id] = max(last.get(m.conversation_id, 0), m.seq)
    await conn.execute(_MOVE_STATE, list(last), list(last.values()))
    return changes + _rows(rows)


# -- recomputation from the write tables ---------------------------------------------------------------

_DROP_NON_MEMBERS = """
    DELETE FROM read_conversation_list r
    WHERE r.conversation_id = $1
      AND NOT EXISTS (SELECT 1 FROM participants p WHERE p.conversation_id = $1 AND p.user_id = r.user_id)
    RETURNING r.user_id
"""

# Every member's row as the write tables say, with messages up to $2 (the applied seq).
_UPSERT_MEMBERS = f"""
    WITH last AS (
        SELECT sender_id, role, left(text, {PREVIEW_CHARS}) AS preview, created_at
        FROM messages WHERE conversation_id = $1 AND seq = $2
    ),
    fresh AS (
        SELECT p.user_id, $1::uuid AS conversation_id, $3::text AS title,
               CASE WHEN last.created_at IS NULL THEN 0 ELSE $2::bigint END AS last_seq,
               last.preview AS last_preview, last.sender_id AS last_sender_id, last.role AS last_role,
               last.created_at AS last_message_at, p.last_read_seq AS read_seq,
               (SELECT count(*) FROM messages x
                WHERE x.conversation_id = $1 AND x.seq > p.last_read_seq AND x.seq <= $2
                  AND x.sender_id IS DISTINCT FROM p.user_id)::int AS unread_count,
               COALESCE(last.created_at, $4::timestamptz) AS updated_at
        FROM participants p LEFT JOIN last ON true
        WHERE p.conversation_id = $1 AND ($5::uuid IS NULL OR p.user_id = $5::uuid)
    )
    INSERT INTO read_conversation_list AS r ({_ROW_COLUMNS})
    SELECT {_ROW_COLUMNS} FROM fresh
    ON CONFLICT (user_id, conversation_id) DO UPDATE SET
        title = excluded.title, last_seq = excluded.last_seq, last_preview = excluded.last_preview,
        last_sender_id = excluded.last_sender_id, last_role = excluded.last_role,
        last_message_at = excluded.last_message_at, read_seq = excluded.read_seq,
        unread_count = excluded.unread_count, updated_at = excluded.updated_at
    WHERE (r.title, r.last_seq, r.read_seq, r.unread_count, r.updated_at)
          IS DISTINCT FROM (excluded.title, excluded.last_seq, excluded.read_seq, excluded.unread_count,
                            excluded.updated_at)
    RETURNING {", ".join("r." + c.strip() for c in _ROW_COLUMNS.split(","))}
"""

# Runs after deleting the conversation's activity rows (a separate statement: one statement's parts share
# a snapshot, so an insert would collide with the rows its own CTE deletes).
_RECOUNT_ACTIVITY = """
    INSERT INTO stats_daily_activity (day, conversation_id, actor_id, messages)
    SELECT (created_at AT TIME ZONE 'UTC')::date, $1, COALESCE(sender_id, $3::uuid), count(*)
    FROM messages WHERE conversation_id = $1 AND seq <= $2
    GROUP BY 1, 3
"""


async def _forget(conn: asyncpg.Connection, conversation_id: UUID) -> list[Change]:
    """The conversation is gone from the write side: gone from every read model too."""
    gone = await conn.fetch(
        "DELETE FROM read_conversation_list WHERE conversation_id = $1 RETURNING user_id", conversation_id
    )
    await conn.execute("DELETE FROM stats_daily_activity WHERE conversation_id = $1", conversation_id)
    await conn.execute("DELETE FROM projection_state WHERE conversation_id = $1", conversation_id)
    return [Removed(user_id=r["user_id"], conversation_id=conversation_id) for r in gone]


async def recompute(conn: asyncpg.Connection, conversation_id: UUID, *, full: bool) -> list[Change]:
    """Recompute a conversation's rows from the write tables. ``full``: up to its current last seq,
    statistics included, and move the applied seq there (a gap, a new conversation, a rebuild);
    otherwise up to the applied seq (membership, title). Locks the state row itself."""
    applied, created = await _lock_or_create_state(conn, conversation_id)
    conv = await conn.fetchrow("SELECT title, last_seq, created_at FROM conversations WHERE id = $1", conversation_id)
    if conv is None:
        return await _forget(conn, conversation_id)
    full = full or created
    bound = int(conv["last_seq"]) if full else applied
    gone = await conn.fetch(_DROP_NON_MEMBERS, conversation_id)
    rows = await conn.fetch(_UPSERT_MEMBERS, conversation_id, bound, conv["title"], conv["created_at"], None)
    if full:
        await conn.execute("DELETE FROM stats_daily_activity WHERE conversation_id = $1", conversation_id)
        await conn.execute(_RECOUNT_ACTIVITY, conversation_id, bound, NIL)
        await conn.execute(
            "UPDATE projection_state SET applied_seq = $2, updated_at = now() WHERE conversation_id = $1",
            conversation_id,
            bound,
        )
    removed: list[Change] = [Removed(user_id=r["user_id"], conversation_id=conversation_id) for r in gone]
    return removed + _rows(rows)


async def refresh_reader(conn: asyncpg.Connection, conversation_id: UUID, user_id: UUID) -> list[Change]:
    """A read cursor moved: recompute that one row (up to the applied seq). Used by the projector and,
    right after the cursor's commit, by ``PUT .../read`` so the reader's count changes at once."""
    applied, created = await _lock_or_create_state(conn, conversation_id)
    if created:
        return await recompute(conn, conversation_id, full=True)
    conv = await conn.fetchrow("SELECT title, created_at FROM conversations WHERE id = $1", conversation_id)
    if conv is None:
        return await _forget(conn, conversation_id)
    rows = await conn.fetch(_UPSERT_MEMBERS, conversation_id, applied, conv["title"], conv["created_at"], user_id)
    return _rows(rows)


async def unread_of(conn: asyncpg.Connection, conversation_id: UUID, user_id: UUID) -> int:
    value = await conn.fetchval(
        "SELECT unread_count FROM read_conversation_list WHERE user_id = $1 AND conversation_id = $2",
        user_id,
        conversation_id,
    )
    return int(value or 0)
