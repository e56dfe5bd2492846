"""Read side queries (cosmicpython's views.py): plain SELECTs returning plain structs, never aggregates.

Every query that returns conversation content takes the viewer and filters by membership in the SQL
itself, so a forgotten check in a caller cannot leak a conversation.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

import asyncpg
import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.errors import InvalidInput
from domain.values import MemberRole, Message, MessageRole
from infrastructure.db.repositories import message_from_row
from infrastructure.db.tables import messages, participants, users

#: Message columns without the generated full-text column and the embedding.
MESSAGE_COLUMNS = [c for c in messages.c if c.name not in {"search", "embedding"}]

T = TypeVar("T")


class LastMessage(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    preview: str
    sender_id: UUID | None
    role: MessageRole
    created_at: datetime


class ConversationSummary(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    title: str
    last_message: LastMessage | None
    unread_count: int
    updated_at: datetime


class ParticipantView(msgspec.Struct, frozen=True, kw_only=True):
    user_id: UUID
    name: str
    role: MemberRole
    last_read_seq: int
    joined_at: datetime


class Page(msgspec.Struct, Generic[T], frozen=True, kw_only=True):
    items: list[T]
    has_more: bool
    next_cursor: str | None = None


class _ListCursor(msgspec.Struct, frozen=True, array_like=True):
    updated_at: datetime
    id: UUID


def encode_cursor(cursor: _ListCursor) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(cursor)).decode().rstrip("=")


def decode_cursor(raw: str) -> _ListCursor:
    try:
        return msgspec.json.decode(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)), type=_ListCursor)
    except (binascii.Error, ValueError, msgspec.DecodeError) as exc:
        raise InvalidInput("cursor is not one this server issued") from exc


# The list and the unread counts read only the read model (``read_conversation_list``, kept by the
# projector); the membership check rides along in the SQL (a primary-key probe per row returned), so a
# row the projector has not yet removed is never shown to someone no longer in the conversation.
_LIST_PAGE = """
    SELECT r.conversation_id, r.title, r.last_seq, r.last_preview, r.last_sender_id, r.last_role,
           r.last_message_at, r.unread_count, r.updated_at
    FROM read_conversation_list r
    WHERE r.user_id = $1
      AND ($2::timestamptz IS NULL OR (r.updated_at, r.conversation_id) < ($2::timestamptz, $3::uuid))
      AND EXISTS (SELECT 1 FROM participants p WHERE p.conversation_id = r.conversation_id AND p.user_id = $1)
    ORDER BY r.updated_at DESC, r.conversation_id DESC
    LIMIT $4
"""


def summary_from_row(row: Mapping[str, Any]) -> ConversationSummary:
    last = None
    if row["last_seq"]:
        last = LastMessage(
            seq=row["last_seq"],
            preview=row["last_preview"] or "",
            sender_id=row["last_sender_id"],
            role=MessageRole(row["last_role"]),
            created_at=row["last_message_at"],
        )
    return ConversationSummary(
        id=row["conversation_id"],
        title=row["title"],
        last_message=last,
        unread_count=row["unread_count"],
        updated_at=row["updated_at"],
    )


async def list_conversations(
    pool: asyncpg.Pool, user_id: UUID, *, limit: int, cursor: str | None
) -> Page[ConversationSummary]:
    """The caller's conversations from the read model, most recent activity first, keyset-paginated on
    (updated_at, id). One index range scan of the caller's rows, whatever the size of their list."""
    after = None if cursor is None else decode_cursor(cursor)
    since, last_id = (None, None) if after is None else (after.updated_at, after.id)
    rows = await pool.fetch(_LIST_PAGE, user_id, since, last_id, limit + 1)
    items = [summary_from_row(r) for r in rows[:limit]]
    has_more = len(rows) > limit
    next_cursor = encode_cursor(_ListCursor(items[-1].updated_at, items[-1].id)) if has_more else None
    return Page(items=items, has_more=has_more, next_cursor=next_cursor)


def _viewer_is_member(conversation_id: UUID, viewer_id: UUID) -> sa.ColumnElement[bool]:
    """``EXISTS`` membership of the viewer: the condition every content query carries in its SQL."""
    me = participants.alias("viewer")
    return sa.exists().where(me.c.conversation_id == conversation_id, me.c.user_id == viewer_id)


async def participants_of(engine: AsyncEngine, conversation_id: UUID, viewer_id: UUID) -> list[ParticipantView]:
    """The members of a conversation, as ``viewer_id`` may see them: empty unless the viewer is one."""
    stmt = (
        sa.select(participants, users.c.name)
        .join(users, users.c.id == participants.c.user_id)
        .where(participants.c.conversation_id == conversation_id, _viewer_is_member(conversation_id, viewer_id))
        .order_by(participants.c.joined_at, participants.c.user_id)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    return [
        ParticipantView(
            user_id=r.user_id,
            name=r.name,
            role=MemberRole(r.role),
            last_read_seq=r.last_read_seq,
            joined_at=r.joined_at,
        )
        for r in rows
    ]


async def message_page(
    engine: AsyncEngine,
    conversation_id: UUID,
    viewer_id: UUID,
    *,
    after_seq: int | None,
    before_seq: int | None,
    limit: int,
) -> Page[Message]:
    """Messages ascending by seq. With only ``before_seq`` it returns the newest page before it
    (scrolling back); otherwise the oldest page after ``after_seq`` (catching up). Empty unless
    ``viewer_id`` is a member now (the SQL says so; callers still check first to tell 403 from 404)."""
    cond = [messages.c.conversation_id == conversation_id, _viewer_is_member(conversation_id, viewer_id)]
    if after_seq is not None:
        cond.append(messages.c.seq > after_seq)
    if before_seq is not None:
        cond.append(messages.c.seq < before_seq)
    backwards = before_seq is not None and after_seq is None
    order = messages.c.seq.desc() if backwards else messages.c.seq.asc()
    stmt = sa.select(*MESSAGE_COLUMNS).where(*cond).order_by(order).limit(limit + 1)
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    has_more = len(rows) > limit
    page = [message_from_row(r._mapping) for r in rows[:limit]]
    if backwards:
        page.reverse()
    next_cursor = None
    if has_more and page:
        next_cursor = str(page[0].seq) if backwards else str(page[-1].seq)
    return Page(items=page, has_more=has_more, next_cursor=next_cursor)


async def messages_after(
    engine: AsyncEngine, conversation_id: UUID, viewer_id: UUID, after_seq: int, limit: int
) -> list[Message]:
    """WS replay (join with after_seq, gap fill, resync): the next ``limit`` messages after ``after_seq``,
    none once ``viewer_id`` is no longer a member (a removed member's socket catches up on nothing)."""
    page = await message_page(engine, conversation_id, viewer_id, after_seq=after_seq, before_seq=None, limit=limit)
    return page.items


async def unread_counts(pool: asyncpg.Pool, user_id: UUID) -> dict[UUID, int]:
    """The caller's non-zero unread counts from the read model (the partial index of unread rows)."""
    rows = await pool.fetch(
        """SELECT r.conversation_id, r.unread_count FROM read_conversation_list r
           WHERE r.user_id = $1 AND r.unread_count > 0
             AND EXISTS (
                 SELECT 1 FROM participants p WHERE p.conversation_id = r.conversation_id AND p.user_id = $1
             )""",
        user_id,
    )
    return {r[0]: int(r[1]) for r in rows}


class Membership(msgspec.Struct, frozen=True):
    exists: bool
    role: MemberRole | None
    last_seq: int


# One round trip on the asyncpg pool: every join and every REST call on a conversation asks this, and
# the SQLAlchemy engine made it four (pre-ping, BEGIN, the query, the ROLLBACK of the reset on return).
_MEMBERSHIP = """
    SELECT c.last_seq, p.role FROM conversations c
    LEFT JOIN participants p ON p.conversation_id = c.id AND p.user_id = $2
    WHERE c.id = $1
"""


async def membership(pool: asyncpg.Pool, conversation_id: UUID, user_id: UUID) -> Membership:
    """Does the conversation exist, what is the user's role in it (None: not a member), its last seq."""
    row = await pool.fetchrow(_MEMBERSHIP, conversation_id, user_id)
    if row is None:
        return Membership(exists=False, role=None, last_seq=0)
    role = None if row["role"] is None else MemberRole(row["role"])
    return Membership(exists=True, role=role, last_seq=int(row["last_seq"]))


async def schema_version(engine: AsyncEngine) -> str | None:
    """The Alembic revision the database is at (None: never migrated)."""
    async with engine.connect() as conn:
        version = (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalar_one_or_none()
    return None if version is None else str(version)


async def conversations_of_users(pool: asyncpg.Pool, user_ids: list[UUID]) -> dict[UUID, list[UUID]]:
    """Each user's conversation ids, for many users in one query (one pooled connection, however many
    users: the presence announcer resolves a whole batch of sockets with it). Users in none are absent."""
    rows = await pool.fetch(
        "SELECT user_id, conversation_id FROM participants WHERE user_id = ANY($1::uuid[])", user_ids
    )
    found: dict[UUID, list[UUID]] = {}
    for user_id, conversation_id in rows:
        found.setdefault(user_id, []).append(conversation_id)
    return found


async def user_ids_by_email(engine: AsyncEngine, emails: list[str]) -> dict[str, UUID]:
    """Lower-cased address -> user id, for the addresses that have an account (adding people by email)."""
    wanted = sorted({e.strip().lower() for e in emails})
    if not wanted:
        return {}
    stmt = sa.select(sa.func.lower(users.c.email), users.c.id).where(sa.func.lower(users.c.email).in_(wanted))
    async with engine.connect() as conn:
        return {email: user_id for email, user_id in (await conn.execute(stmt)).all()}
