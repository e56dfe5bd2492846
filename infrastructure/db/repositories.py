"""Repositories for the write path: explicit row <-> entity mapping, hand-written SQL on asyncpg.

The write path is the hottest code in Parley (every message crosses it), so it skips the ORM and
SQLAlchemy's statement building and talks to asyncpg directly; asyncpg prepares and caches each
statement per connection. The SQL must agree with ``tables.py`` (checked by the migration tests).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from uuid import UUID

import asyncpg

from domain.model import Conversation
from domain.values import AssistantSettings, MemberRole, Message, MessageRole, Participant, User, UserRole


def conversation_from_row(row: Mapping[Any, Any]) -> Conversation:
    role = row.get("viewer_role")
    return Conversation(
        id=row["id"],
        title=row["title"],
        owner_id=row["owner_id"],
        last_seq=row["last_seq"],
        assistant=AssistantSettings(
            enabled=row["assistant_enabled"],
            model=row["assistant_model"],
            system_prompt=row["assistant_system_prompt"],
            provider=row["assistant_provider"],
            temperature=row["assistant_temperature"],
        ),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        viewer_role=None if role is None else MemberRole(role),
    )


def message_from_row(row: Mapping[Any, Any]) -> Message:
    return Message(
        id=row["id"],
        conversation_id=row["conversation_id"],
        seq=row["seq"],
        sender_id=row["sender_id"],
        role=MessageRole(row["role"]),
        text=row["text"],
        client_msg_id=row["client_msg_id"],
        created_at=row["created_at"],
    )


def participant_from_row(row: Mapping[Any, Any]) -> Participant:
    return Participant(
        conversation_id=row["conversation_id"],
        user_id=row["user_id"],
        role=MemberRole(row["role"]),
        last_read_seq=row["last_read_seq"],
        joined_at=row["joined_at"],
    )


def user_from_row(row: Mapping[Any, Any]) -> User:
    return User(
        id=row["id"], email=row["email"], name=row["name"], role=UserRole(row["role"]), created_at=row["created_at"]
    )


_SELECT_CONVERSATION = """
    SELECT c.id, c.title, c.owner_id, c.last_seq, c.assistant_enabled, c.assistant_model,
           c.assistant_system_prompt, c.assistant_provider, c.assistant_temperature, c.created_at, c.updated_at,
           p.role AS viewer_role
    FROM conversations c
    LEFT JOIN participants p ON p.conversation_id = c.id AND p.user_id = $2
    WHERE c.id = $1
"""
_MESSAGE_COLUMNS = "id, conversation_id, seq, sender_id, role, text, client_msg_id, created_at"


_PLACEHOLDER = re.compile(r"\$(\d+)")


class PendingWrites:
    """Writes whose result nobody waits for, sent together at commit as one statement.

    Each is a statement with its own ``$1…$n`` parameters; ``statement()`` renumbers them and joins
    them as data-modifying CTEs (``WITH w0 AS (UPDATE …), w1 AS (INSERT …) SELECT …``), which
    PostgreSQL runs exactly once each. A post then costs one round trip for its conversation update,
    read cursor and outbox row instead of three. Only this module's own SQL goes through here.

    All parts see the same snapshot, so a row must be written by at most one part per unit of work
    (PostgreSQL applies only one of two updates of a row in one statement); handlers save an
    aggregate once, right before commit.
    """

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._args: list[Any] = []

    def __bool__(self) -> bool:
        return bool(self._parts)

    def add(self, sql: str, *args: Any) -> None:
        offset = len(self._args)
        self._parts.append(_PLACEHOLDER.sub(lambda m: f"${int(m.group(1)) + offset}", sql))
        self._args.extend(args)

    def statement(self, final_select: str) -> tuple[str, list[Any]]:
        ctes = ",\n".join(f"w{i} AS ({part})" for i, part in enumerate(self._parts))
        return f"WITH {ctes}\n{final_select}", self._args


def _inserted(status: str) -> bool:
    """asyncpg returns the command tag, e.g. ``INSERT 0 1``."""
    return status.rsplit(" ", 1)[-1] == "1"


class SqlConversationRepository:
    def __init__(self, conn: asyncpg.Connection, pending: PendingWrites) -> None:
        self._conn = conn
        self._pending = pending
        #: Aggregates loaded or added in this unit of work; their events go to the outbox at commit.
        self.seen: list[Conversation] = []

    async def _load(self, sql: str, conversation_id: UUID, viewer_id: UUID | None) -> Conversation | None:
        row = await self._conn.fetchrow(sql, conversation_id, viewer_id)
        if row is None:
            return None
        conv = conversation_from_row(row)
        self.seen.append(conv)
        return conv

    async def get(self, conversation_id: UUID, *, viewer_id: UUID) -> Conversation | None:
        return await self._load(_SELECT_CONVERSATION, conversation_id, viewer_id)

    async def get_for_update(self, conversation_id: UUID, *, viewer_id: UUID | None) -> Conversation | None:
        return await self._load(_SELECT_CONVERSATION + " FOR UPDATE OF c", conversation_id, viewer_id)

    async def add(self, conv: Conversation) -> None:
        await self._conn.execute(
            """INSERT INTO conversations (id, title, owner_id, last_seq, assistant_enabled, assistant_model,
                   assistant_system_prompt, created_at, updated_at, assistant_provider, assistant_temperature)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
            conv.id, conv.title, conv.owner_id, conv.last_seq, conv.assistant.enabled, conv.assistant.model,
            conv.assistant.system_prompt, conv.created_at, conv.updated_at, conv.assistant.provider,
            conv.assistant.temperature,
        )  # fmt: skip
        self.seen.append(conv)

    async def save(self, conv: Conversation) -> None:
        self._pending.add(
            """UPDATE conversations SET title = $2, last_seq = $3, assistant_enabled = $4, assistant_model = $5,
                   assistant_system_prompt = $6, updated_at = $7, assistant_provider = $8, assistant_temperature = $9
               WHERE id = $1""",
            conv.id, conv.title, conv.last_seq, conv.assistant.enabled, conv.assistant.model,
            conv.assistant.system_prompt, conv.updated_at, conv.assistant.provider, conv.assistant.temperature,
        )  # fmt: skip

    async def delete(self, conversation_id: UUID) -> None:
        await self._conn.execute("DELETE FROM conversations WHERE id = $1", conversation_id)


class SqlMessageRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def add(self, m: Message) -> bool:
        status = await self._conn.execute(
            f"""INSERT INTO messages ({_MESSAGE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                ON CONFLICT ON CONSTRAINT uq_messages_conversation_id_sender_id_client_msg_id DO NOTHING""",
            m.id, m.conversation_id, m.seq, m.sender_id, m.role.value, m.text, m.client_msg_id, m.created_at,
        )  # fmt: skip
        return _inserted(status)

    async def by_client_msg_id(
        self, conversation_id: UUID, sender_id: UUID | None, client_msg_id: str
    ) -> Message | None:
        """``sender_id`` None: the assistant's answer of that id (one per reply, see domain/assistant.py)."""
        sender = "sender_id IS NULL AND $2::uuid IS NULL" if sender_id is None else "sender_id = $2"
        row = await self._conn.fetchrow(
            f"""SELECT {_MESSAGE_COLUMNS} FROM messages
                WHERE conversation_id = $1 AND {sender} AND client_msg_id = $3""",
            conversation_id, sender_id, client_msg_id,
        )  # fmt: skip
        return None if row is None else message_from_row(row)


class SqlParticipantRepository:
    def __init__(self, conn: asyncpg.Connection, pending: PendingWrites) -> None:
        self._conn = conn
        self._pending = pending

    async def get(self, conversation_id: UUID, user_id: UUID) -> Participant | None:
        row = await self._conn.fetchrow(
            "SELECT * FROM participants WHERE conversation_id = $1 AND user_id = $2", conversation_id, user_id
        )
        return None if row is None else participant_from_row(row)

    async def member_ids(self, conversation_id: UUID) -> list[UUID]:
        rows = await self._conn.fetch("SELECT user_id FROM participants WHERE conversation_id = $1", conversation_id)
        return [r["user_id"] for r in rows]

    async def add(self, p: Participant) -> bool:
        status = await self._conn.execute(
            """INSERT INTO participants (conversation_id, user_id, role, last_read_seq, joined_at)
               VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING""",
            p.conversation_id, p.user_id, p.role.value, p.last_read_seq, p.joined_at,
        )  # fmt: skip
        return _inserted(status)

    async def remove(self, conversation_id: UUID, user_id: UUID) -> bool:
        status = await self._conn.execute(
            "DELETE FROM participants WHERE conversation_id = $1 AND user_id = $2", conversation_id, user_id
        )
        return _inserted(status)

    async def move_read_cursor(self, conversation_id: UUID, user_id: UUID, seq: int) -> None:
        # GREATEST keeps the cursor monotonic even when two devices race without a lock.
        self._pending.add(
            """UPDATE participants SET last_read_seq = GREATEST(last_read_seq, $3)
               WHERE conversation_id = $1 AND user_id = $2""",
            conversation_id, user_id, seq,
        )  # fmt: skip


class SqlUserRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def existing(self, user_ids: list[UUID]) -> set[UUID]:
        if not user_ids:
            return set()
        rows = await self._conn.fetch("SELECT id FROM users WHERE id = ANY($1::uuid[])", user_ids)
        return {r["id"] for r in rows}
