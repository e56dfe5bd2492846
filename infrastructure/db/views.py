"""Read side queries (cosmicpython's views.py): plain SELECTs returning plain structs, never aggregates.

Every query that returns conversation content takes the viewer and filters by membership in the SQL
itself, so a forgotten check in a caller cannot leak a conversation.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Generic, TypeVar
from uuid import UUID

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.errors import InvalidInput
from domain.values import MemberRole, Message, MessageRole
from infrastructure.db.repositories import message_from_row
from infrastructure.db.tables import conversations, messages, participants, users

#: Message columns without the generated full-text column.
MESSAGE_COLUMNS = [c for c in messages.c if c.name != "search"]

PREVIEW_CHARS = 140

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


async def list_conversations(
    engine: AsyncEngine, user_id: UUID, *, limit: int, cursor: str | None
) -> Page[ConversationSummary]:
    """The caller's conversations, most recent activity first, keyset-paginated on (updated_at, id)."""
    last = messages.alias("last")
    me = participants.alias("me")
    stmt = (
        sa.select(
            conversations.c.id,
            conversations.c.title,
            conversations.c.updated_at,
            conversations.c.last_seq,
            me.c.last_read_seq,
            last.c.seq.label("last_seq_row"),
            sa.func.left(last.c.text, PREVIEW_CHARS).label("preview"),
            last.c.sender_id,
            last.c.role,
            last.c.created_at.label("last_created_at"),
        )
        .select_from(
            conversations.join(
                me, sa.and_(me.c.conversation_id == conversations.c.id, me.c.user_id == user_id)
            ).outerjoin(
                last, sa.and_(last.c.conversation_id == conversations.c.id, last.c.seq == conversations.c.last_seq)
            )
        )
        .order_by(conversations.c.updated_at.desc(), conversations.c.id.desc())
        .limit(limit + 1)
    )
    if cursor is not None:
        after = decode_cursor(cursor)
        stmt = stmt.where(sa.tuple_(conversations.c.updated_at, conversations.c.id) < (after.updated_at, after.id))
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    items = [
        ConversationSummary(
            id=r.id,
            title=r.title,
            updated_at=r.updated_at,
            unread_count=max(r.last_seq - r.last_read_seq, 0),
            last_message=None
            if r.last_seq_row is None
            else LastMessage(
                seq=r.last_seq_row,
                preview=r.preview,
                sender_id=r.sender_id,
                role=MessageRole(r.role),
                created_at=r.last_created_at,
            ),
        )
        for r in rows[:limit]
    ]
    has_more = len(rows) > limit
    next_cursor = encode_cursor(_ListCursor(items[-1].updated_at, items[-1].id)) if has_more else None
    return Page(items=items, has_more=has_more, next_cursor=next_cursor)


async def participants_of(engine: AsyncEngine, conversation_id: UUID) -> list[ParticipantView]:
    stmt = (
        sa.select(participants, users.c.name)
        .join(users, users.c.id == participants.c.user_id)
        .where(participants.c.conversation_id == conversation_id)
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
    *,
    after_seq: int | None,
    before_seq: int | None,
    limit: int,
) -> Page[Message]:
    """Messages ascending by seq. With only ``before_seq`` it returns the newest page before it
    (scrolling back); otherwise the oldest page after ``after_seq`` (catching up). Membership is
    checked by the caller (it owns the 403 vs 404 distinction)."""
    cond = [messages.c.conversation_id == conversation_id]
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


async def messages_after(engine: AsyncEngine, conversation_id: UUID, after_seq: int, limit: int) -> list[Message]:
    """Replay for WS joins: the next ``limit`` messages after ``after_seq``."""
    page = await message_page(engine, conversation_id, after_seq=after_seq, before_seq=None, limit=limit)
    return page.items


async def unread_counts(engine: AsyncEngine, user_id: UUID) -> dict[UUID, int]:
    stmt = (
        sa.select(conversations.c.id, conversations.c.last_seq - participants.c.last_read_seq)
        .join(participants, participants.c.conversation_id == conversations.c.id)
        .where(participants.c.user_id == user_id, conversations.c.last_seq > participants.c.last_read_seq)
    )
    async with engine.connect() as conn:
        return {r[0]: int(r[1]) for r in (await conn.execute(stmt)).all()}


class Membership(msgspec.Struct, frozen=True):
    exists: bool
    role: MemberRole | None
    last_seq: int


async def membership(engine: AsyncEngine, conversation_id: UUID, user_id: UUID) -> Membership:
    """Does the conversation exist, what is the user's role in it (None: not a member), its last seq."""
    stmt = (
        sa.select(conversations.c.last_seq, participants.c.role)
        .select_from(
            conversations.outerjoin(
                participants,
                sa.and_(participants.c.conversation_id == conversations.c.id, participants.c.user_id == user_id),
            )
        )
        .where(conversations.c.id == conversation_id)
    )
    async with engine.connect() as conn:
        row = (await conn.execute(stmt)).one_or_none()
    if row is None:
        return Membership(exists=False, role=None, last_seq=0)
    return Membership(exists=True, role=None if row.role is None else MemberRole(row.role), last_seq=int(row.last_seq))


async def schema_version(engine: AsyncEngine) -> str | None:
    """The Alembic revision the database is at (None: never migrated)."""
    async with engine.connect() as conn:
        version = (await conn.execute(sa.text("SELECT version_num FROM alembic_version"))).scalar_one_or_none()
    return None if version is None else str(version)


async def conversation_ids_of(engine: AsyncEngine, user_id: UUID) -> list[UUID]:
    async with engine.connect() as conn:
        stmt = sa.select(participants.c.conversation_id).where(participants.c.user_id == user_id)
        return list((await conn.execute(stmt)).scalars())


async def user_ids_by_email(engine: AsyncEngine, emails: list[str]) -> dict[str, UUID]:
    """Lower-cased address -> user id, for the addresses that have an account (adding people by email)."""
    wanted = sorted({e.strip().lower() for e in emails})
    if not wanted:
        return {}
    stmt = sa.select(sa.func.lower(users.c.email), users.c.id).where(sa.func.lower(users.c.email).in_(wanted))
    async with engine.connect() as conn:
        return {email: user_id for email, user_id in (await conn.execute(stmt)).all()}
