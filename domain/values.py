"""Value objects: the plain data that model, events and read side share."""

from __future__ import annotations

import enum
from datetime import datetime
from uuid import UUID

import msgspec


class MessageRole(enum.StrEnum):
    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"


class MemberRole(enum.StrEnum):
    OWNER = "owner"
    MEMBER = "member"


class UserRole(enum.StrEnum):
    USER = "user"
    ADMIN = "admin"


class User(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    email: str
    name: str
    role: UserRole
    created_at: datetime


class AssistantSettings(msgspec.Struct, frozen=True, kw_only=True):
    """The assistant of one conversation; ``None`` means the server's default (LLM_* settings)."""

    enabled: bool = False
    model: str | None = None
    system_prompt: str | None = None
    provider: str | None = None
    temperature: float | None = None


class Message(msgspec.Struct, frozen=True, kw_only=True):
    """A stored message; the same shape travels in events and over the wire."""

    id: UUID
    conversation_id: UUID
    seq: int
    sender_id: UUID | None
    role: MessageRole
    text: str
    client_msg_id: str | None
    created_at: datetime


class Participant(msgspec.Struct, frozen=True, kw_only=True):
    conversation_id: UUID
    user_id: UUID
    role: MemberRole
    last_read_seq: int
    joined_at: datetime

    @classmethod
    def new(cls, conversation_id: UUID, user_id: UUID, role: MemberRole, now: datetime) -> Participant:
        return cls(conversation_id=conversation_id, user_id=user_id, role=role, last_read_seq=0, joined_at=now)
