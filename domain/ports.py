"""Ports: what the use-case handlers need from the outside world, as Protocols.

``infrastructure/db`` implements them on PostgreSQL; ``tests/unit/fakes.py`` in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self
from uuid import UUID

from domain.model import Conversation
from domain.values import MemberRole, Message, Participant


class Clock(Protocol):
    def now(self) -> datetime: ...


#: A send as the store keys it: (conversation, sender, client_msg_id); a None sender is the assistant.
SendKey = tuple[UUID, UUID | None, str]


@dataclass(frozen=True, slots=True)
class PostingState:
    """What a post batch decides on, read while it holds its conversations' row locks."""

    #: The conversations that exist, locked (``viewer_role`` unset).
    conversations: dict[UUID, Conversation]
    #: The role of each (conversation, user) asked about that is a membership; others are left out.
    roles: dict[tuple[UUID, UUID], MemberRole]
    #: The stored messages of the send keys asked about; keys never sent are left out.
    sent: dict[SendKey, Message]


class ConversationRepository(Protocol):
    async def get(self, conversation_id: UUID, *, viewer_id: UUID) -> Conversation | None:
        """Load without locking; ``viewer_role`` is filled from ``viewer_id``'s membership."""

    async def get_for_update(self, conversation_id: UUID, *, viewer_id: UUID | None) -> Conversation | None:
        """Load and take the row lock that orders writers of this conversation until commit."""

    async def lock_for_posting(
        self,
        conversation_ids: Sequence[UUID],
        members: Sequence[tuple[UUID, UUID]],
        sends: Sequence[SendKey],
    ) -> PostingState:
        """Lock those that exist, in id order; then, under the locks (so after any racing writer
        committed), read the roles of ``members`` and the messages stored under ``sends``."""

    async def add(self, conversation: Conversation) -> None: ...

    async def save(self, conversation: Conversation) -> None:
        """Write back title, assistant settings, ``last_seq`` and ``updated_at`` (at the latest on commit)."""

    async def delete(self, conversation_id: UUID) -> None: ...


class MessageRepository(Protocol):
    async def add_many(self, messages: Sequence[Message]) -> None:
        """Insert (at the latest on commit); the caller has checked their client ids under the row locks."""


class ParticipantRepository(Protocol):
    async def get(self, conversation_id: UUID, user_id: UUID) -> Participant | None: ...

    async def member_ids(self, conversation_id: UUID) -> list[UUID]: ...

    async def add(self, participant: Participant) -> bool:
        """Insert; False when the user already is a member."""

    async def remove(self, conversation_id: UUID, user_id: UUID) -> bool: ...

    async def move_read_cursor(self, conversation_id: UUID, user_id: UUID, seq: int) -> None:
        """Never backwards (at the latest on commit)."""


class UserDirectory(Protocol):
    async def existing(self, user_ids: list[UUID]) -> set[UUID]:
        """The subset of ``user_ids`` that are registered users."""


class UnitOfWork(Protocol):
    """One transaction. ``commit`` also writes the events recorded by the aggregates to the outbox."""

    @property
    def conversations(self) -> ConversationRepository: ...

    @property
    def messages(self) -> MessageRepository: ...

    @property
    def participants(self) -> ParticipantRepository: ...

    @property
    def users(self) -> UserDirectory: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...
