"""Repositories: explicit row <-> entity mapping over one transaction's connection."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.model import Conversation
from domain.values import AssistantSettings, MemberRole, Message, MessageRole, Participant, User, UserRole
from infrastructure.db.tables import conversations, messages, participants, users


def conversation_from_row(row: Any, viewer_role: str | None) -> Conversation:
    return Conversation(
        id=row.id,
        title=row.title,
        owner_id=row.owner_id,
        last_seq=row.last_seq,
        assistant=AssistantSettings(
            enabled=row.assistant_enabled, model=row.assistant_model, system_prompt=row.assistant_system_prompt
        ),
        created_at=row.created_at,
        updated_at=row.updated_at,
        viewer_role=None if viewer_role is None else MemberRole(viewer_role),
    )


def message_from_row(row: Any) -> Message:
    return Message(
        id=row.id,
        conversation_id=row.conversation_id,
        seq=row.seq,
        sender_id=row.sender_id,
        role=MessageRole(row.role),
        text=row.text,
        client_msg_id=row.client_msg_id,
        created_at=row.created_at,
    )


def participant_from_row(row: Any) -> Participant:
    return Participant(
        conversation_id=row.conversation_id,
        user_id=row.user_id,
        role=MemberRole(row.role),
        last_read_seq=row.last_read_seq,
        joined_at=row.joined_at,
    )


def user_from_row(row: Any) -> User:
    return User(id=row.id, email=row.email, name=row.name, role=UserRole(row.role), created_at=row.created_at)


#: Message columns without the generated full-text column.
MESSAGE_COLUMNS = [c for c in messages.c if c.name != "search"]


class SqlConversationRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn
        #: Aggregates loaded or added in this unit of work; their events go to the outbox at commit.
        self.seen: list[Conversation] = []

    def _select(self, conversation_id: UUID, viewer_id: UUID | None) -> sa.Select[Any]:
        viewer = participants.alias("viewer")
        return (
            sa.select(conversations, viewer.c.role.label("viewer_role"))
            .select_from(
                conversations.outerjoin(
                    viewer, sa.and_(viewer.c.conversation_id == conversations.c.id, viewer.c.user_id == viewer_id)
                )
            )
            .where(conversations.c.id == conversation_id)
        )

    async def _load(self, stmt: sa.Select[Any]) -> Conversation | None:
        row = (await self._conn.execute(stmt)).one_or_none()
        if row is None:
            return None
        conv = conversation_from_row(row, row.viewer_role)
        self.seen.append(conv)
        return conv

    async def get(self, conversation_id: UUID, *, viewer_id: UUID) -> Conversation | None:
        return await self._load(self._select(conversation_id, viewer_id))

    async def get_for_update(self, conversation_id: UUID, *, viewer_id: UUID | None) -> Conversation | None:
        return await self._load(self._select(conversation_id, viewer_id).with_for_update(of=conversations))

    async def add(self, conversation: Conversation) -> None:
        await self._conn.execute(sa.insert(conversations).values(**self._values(conversation), id=conversation.id))
        self.seen.append(conversation)

    async def save(self, conversation: Conversation) -> None:
        await self._conn.execute(
            sa.update(conversations).where(conversations.c.id == conversation.id).values(**self._values(conversation))
        )

    async def delete(self, conversation_id: UUID) -> None:
        await self._conn.execute(sa.delete(conversations).where(conversations.c.id == conversation_id))

    @staticmethod
    def _values(conv: Conversation) -> dict[str, Any]:
        return {
            "title": conv.title,
            "owner_id": conv.owner_id,
            "last_seq": conv.last_seq,
            "assistant_enabled": conv.assistant.enabled,
            "assistant_model": conv.assistant.model,
            "assistant_system_prompt": conv.assistant.system_prompt,
            "created_at": conv.created_at,
            "updated_at": conv.updated_at,
        }


class SqlMessageRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def add(self, message: Message) -> bool:
        stmt = (
            pg_insert(messages)
            .values(
                id=message.id,
                conversation_id=message.conversation_id,
                seq=message.seq,
                sender_id=message.sender_id,
                role=message.role.value,
                text=message.text,
                client_msg_id=message.client_msg_id,
                created_at=message.created_at,
            )
            .on_conflict_do_nothing(constraint="uq_messages_conversation_id_sender_id_client_msg_id")
        )
        return (await self._conn.execute(stmt)).rowcount == 1

    async def by_client_msg_id(self, conversation_id: UUID, sender_id: UUID, client_msg_id: str) -> Message | None:
        stmt = sa.select(*MESSAGE_COLUMNS).where(
            messages.c.conversation_id == conversation_id,
            messages.c.sender_id == sender_id,
            messages.c.client_msg_id == client_msg_id,
        )
        row = (await self._conn.execute(stmt)).one_or_none()
        return None if row is None else message_from_row(row)


class SqlParticipantRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def get(self, conversation_id: UUID, user_id: UUID) -> Participant | None:
        stmt = sa.select(participants).where(
            participants.c.conversation_id == conversation_id, participants.c.user_id == user_id
        )
        row = (await self._conn.execute(stmt)).one_or_none()
        return None if row is None else participant_from_row(row)

    async def member_ids(self, conversation_id: UUID) -> list[UUID]:
        stmt = sa.select(participants.c.user_id).where(participants.c.conversation_id == conversation_id)
        return list((await self._conn.execute(stmt)).scalars())

    async def add(self, participant: Participant) -> bool:
        stmt = (
            pg_insert(participants)
            .values(
                conversation_id=participant.conversation_id,
                user_id=participant.user_id,
                role=participant.role.value,
                last_read_seq=participant.last_read_seq,
                joined_at=participant.joined_at,
            )
            .on_conflict_do_nothing()
        )
        return (await self._conn.execute(stmt)).rowcount == 1

    async def remove(self, conversation_id: UUID, user_id: UUID) -> bool:
        stmt = sa.delete(participants).where(
            participants.c.conversation_id == conversation_id, participants.c.user_id == user_id
        )
        return (await self._conn.execute(stmt)).rowcount == 1

    async def move_read_cursor(self, conversation_id: UUID, user_id: UUID, seq: int) -> None:
        # GREATEST keeps the cursor monotonic even when two devices race without a lock.
        stmt = (
            sa.update(participants)
            .where(participants.c.conversation_id == conversation_id, participants.c.user_id == user_id)
            .values(last_read_seq=sa.func.greatest(participants.c.last_read_seq, seq))
        )
        await self._conn.execute(stmt)


class SqlUserRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def existing(self, user_ids: list[UUID]) -> set[UUID]:
        if not user_ids:
            return set()
        stmt = sa.select(users.c.id).where(users.c.id.in_(user_ids))
        return set((await self._conn.execute(stmt)).scalars())
