"""Commands: what a caller asks the domain to do (imperative names, validated by the handlers)."""

from __future__ import annotations

from uuid import UUID

import msgspec

from domain.values import AssistantSettings, MessageRole


class _Command(msgspec.Struct, frozen=True, kw_only=True):
    pass


class StartConversation(_Command, frozen=True, kw_only=True):
    owner_id: UUID
    title: str
    participant_ids: list[UUID] = []
    assistant: AssistantSettings = AssistantSettings()


class UpdateConversation(_Command, frozen=True, kw_only=True):
    conversation_id: UUID
    actor_id: UUID
    title: str | None = None
    assistant: AssistantSettings | None = None


class DeleteConversation(_Command, frozen=True, kw_only=True):
    conversation_id: UUID
    actor_id: UUID
    actor_is_admin: bool = False


class AddParticipants(_Command, frozen=True, kw_only=True):
    conversation_id: UUID
    actor_id: UUID
    user_ids: list[UUID]


class RemoveParticipant(_Command, frozen=True, kw_only=True):
    conversation_id: UUID
    actor_id: UUID
    user_id: UUID
    actor_is_admin: bool = False


class PostMessage(_Command, frozen=True, kw_only=True):
    conversation_id: UUID
    sender_id: UUID | None
    client_msg_id: str | None
    text: str
    role: MessageRole = MessageRole.USER


class MarkRead(_Command, frozen=True, kw_only=True):
    conversation_id: UUID
    user_id: UUID
    seq: int
