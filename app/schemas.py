"""Request and response bodies (msgspec Structs). Requests forbid unknown fields: a typo is an error,
not a silently ignored setting."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

import msgspec

from domain.values import AssistantSettings, MemberRole, UserRole
from infrastructure.db.views import ParticipantView

#: PostgreSQL text cannot hold NUL characters: refused here as a 400 instead of failing in the driver as a 500.
NO_NUL = r"^[^\x00]*$"

ClientMsgId = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=NO_NUL)]
Text = Annotated[str, msgspec.Meta(max_length=100_000, pattern=NO_NUL)]  # the 4,000-char rule is the domain's
Title = Annotated[str, msgspec.Meta(max_length=10_000, pattern=NO_NUL)]
Seq = Annotated[int, msgspec.Meta(ge=0, le=2**62)]
Email = Annotated[str, msgspec.Meta(max_length=320, pattern=NO_NUL)]


class _Request(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


# -- auth ------------------------------------------------------------------------------------------


class RegisterBody(_Request):
    email: Annotated[str, msgspec.Meta(max_length=320, pattern=NO_NUL)]
    password: Annotated[str, msgspec.Meta(max_length=1024)]
    name: Annotated[str, msgspec.Meta(max_length=200, pattern=NO_NUL)]


class LoginBody(_Request):
    email: Annotated[str, msgspec.Meta(max_length=320, pattern=NO_NUL)]
    password: Annotated[str, msgspec.Meta(max_length=4096)]


class RefreshBody(_Request):
    refresh_token: Annotated[str, msgspec.Meta(max_length=512)]


class LogoutBody(_Request):
    refresh_token: Annotated[str, msgspec.Meta(max_length=512)] | None = None


class UserRead(msgspec.Struct, kw_only=True):
    id: UUID
    email: str
    name: str
    role: UserRole


class AuthRead(msgspec.Struct, kw_only=True):
    user: UserRead
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "Bearer"


class TokenPairRead(msgspec.Struct, kw_only=True):
    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "Bearer"


class TicketRead(msgspec.Struct, kw_only=True):
    ticket: str
    expires_in: int


# -- conversations -----------------------------------------------------------------------------------


class AssistantBody(_Request):
    enabled: bool
    model: Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=NO_NUL)] | None = None
    system_prompt: Annotated[str, msgspec.Meta(max_length=8000, pattern=NO_NUL)] | None = None
    provider: Literal["anthropic", "openai", "offline"] | None = None
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None

    def to_settings(self) -> AssistantSettings:
        return AssistantSettings(
            enabled=self.enabled,
            model=self.model,
            system_prompt=self.system_prompt,
            provider=self.provider,
            temperature=self.temperature,
        )


class ConversationCreate(_Request):
    title: Title
    participant_ids: list[UUID] = []
    assistant: AssistantBody | None = None


class ConversationUpdate(_Request):
    title: Title | None = None
    assistant: AssistantBody | None = None


class ConversationRead(msgspec.Struct, kw_only=True):
    id: UUID
    title: str
    owner_id: UUID
    last_seq: int
    assistant: AssistantSettings
    created_at: datetime
    updated_at: datetime
    role: MemberRole | None
    participants: list[ParticipantView]


class ParticipantsAdd(_Request):
    """``user_id``, ``user_ids`` and/or ``emails`` (a web app adds people by address, with no user directory)."""

    user_id: UUID | None = None
    user_ids: list[UUID] = []
    emails: Annotated[list[Email], msgspec.Meta(max_length=100)] = []

    def all_ids(self) -> list[UUID]:
        return ([self.user_id] if self.user_id else []) + self.user_ids


class ParticipantList(msgspec.Struct, kw_only=True):
    items: list[ParticipantView]


# -- messages ----------------------------------------------------------------------------------------


class MessageCreate(_Request):
    client_msg_id: ClientMsgId
    text: Text


class ReadCursorBody(_Request):
    seq: Seq


class ReadCursorRead(msgspec.Struct, kw_only=True):
    conversation_id: UUID
    seq: int
    #: The reader's unread count in this conversation after the move (what the next list GET shows).
    unread_count: int = 0


class UnreadRead(msgspec.Struct, kw_only=True):
    total: int
    conversations: dict[str, int]


class PresenceRead(msgspec.Struct, kw_only=True):
    """Members of the conversation with a live socket now."""

    online: list[UUID]


class ReplyCancelRead(msgspec.Struct, kw_only=True):
    reply_id: UUID
    cancelled: bool
