"""In-memory implementations of ``domain/ports.py`` for handler tests (cosmicpython's FakeUnitOfWork).

Each ``async with uow`` is one transaction: the stores are snapshotted on entry and restored unless the
handler commits, so "raises and commits nothing" is checked against state, not only against a flag.
Repositories hand out copies of conversations, as the SQL ones build fresh aggregates from rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self
from uuid import UUID

import msgspec

from domain import events
from domain.model import Conversation
from domain.ports import PostingState, SendKey
from domain.values import Message, Participant


class FakeClock:
    """Starts at a fixed instant and moves one second per call, so times are distinct and ordered."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2030, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        self._now += timedelta(seconds=1)
        return self._now


class FakeParticipantRepository:
    def __init__(self) -> None:
        self.rows: dict[tuple[UUID, UUID], Participant] = {}

    async def get(self, conversation_id: UUID, user_id: UUID) -> Participant | None:
        return self.rows.get((conversation_id, user_id))

    async def member_ids(self, conversation_id: UUID) -> list[UUID]:
        return [uid for (cid, uid) in self.rows if cid == conversation_id]

    async def add(self, participant: Participant) -> bool:
        key = (participant.conversation_id, participant.user_id)
        if key in self.rows:
            return False
        self.rows[key] = participant
        return True

    async def remove(self, conversation_id: UUID, user_id: UUID) -> bool:
        return self.rows.pop((conversation_id, user_id), None) is not None

    async def move_read_cursor(self, conversation_id: UUID, user_id: UUID, seq: int) -> None:
        row = self.rows.get((conversation_id, user_id))
        if row is not None:  # GREATEST, like the SQL repository
            self.rows[(conversation_id, user_id)] = msgspec.structs.replace(
                row, last_read_seq=max(row.last_read_seq, seq)
            )


class FakeConversationRepository:
    def __init__(self, participants: FakeParticipantRepository, messages: FakeMessageRepository) -> None:
        self.rows: dict[UUID, Conversation] = {}
        self.seen: list[Conversation] = []
        self._participants = participants
        self._messages = messages

    def _load(self, conversation_id: UUID, viewer_id: UUID | None) -> Conversation | None:
        stored = self.rows.get(conversation_id)
        if stored is None:
            return None
        member = None if viewer_id is None else self._participants.rows.get((conversation_id, viewer_id))
        conv = dataclasses.replace(stored, viewer_role=None if member is None else member.role, events=[])
        self.seen.append(conv)
        return conv

    async def get(self, conversation_id: UUID, *, viewer_id: UUID) -> Conversation | None:
        return self._load(conversation_id, viewer_id)

    async def get_for_update(self, conversation_id: UUID, *, viewer_id: UUID | None) -> Conversation | None:
        return self._load(conversation_id, viewer_id)

    async def lock_for_posting(
        self,
        conversation_ids: Sequence[UUID],
        members: Sequence[tuple[UUID, UUID]],
        sends: Sequence[SendKey],
    ) -> PostingState:
        loaded = (self._load(cid, None) for cid in sorted(conversation_ids))
        roles = {pair: self._participants.rows[pair].role for pair in members if pair in self._participants.rows}
        stored = self._messages.keys()
        return PostingState(
            conversations={conv.id: conv for conv in loaded if conv is not None},
            roles=roles,
            sent={key: stored[key] for key in sends if key in stored},
        )

    async def add(self, conversation: Conversation) -> None:
        self.rows[conversation.id] = dataclasses.replace(conversation, viewer_role=None, events=[])
        self.seen.append(conversation)

    async def save(self, conversation: Conversation) -> None:
        assert conversation.id in self.rows, "save of a conversation that was never added"
        self.rows[conversation.id] = dataclasses.replace(conversation, viewer_role=None, events=[])

    async def delete(self, conversation_id: UUID) -> None:
        self.rows.pop(conversation_id, None)  # participants and messages go with it: ON DELETE CASCADE
        for key in [k for k in self._participants.rows if k[0] == conversation_id]:
            del self._participants.rows[key]


class FakeMessageRepository:
    def __init__(self) -> None:
        self.rows: list[Message] = []

    async def add_many(self, messages: Sequence[Message]) -> None:
        for message in messages:
            key = (message.conversation_id, message.sender_id, message.client_msg_id)
            # The unique index of the SQL repository: a repeated client id is a bug in the handler.
            assert message.client_msg_id is None or key not in self.keys(), f"duplicate send {key}"
            self.rows.append(message)

    def keys(self) -> dict[SendKey, Message]:
        return {(m.conversation_id, m.sender_id, m.client_msg_id): m for m in self.rows if m.client_msg_id is not None}


class FakeUserDirectory:
    def __init__(self, user_ids: set[UUID]) -> None:
        self.user_ids = user_ids

    async def existing(self, user_ids: list[UUID]) -> set[UUID]:
        return self.user_ids & set(user_ids)


class FakeUnitOfWork:
    """``committed``: whether the latest transaction committed. ``outbox``: every event committed so far."""

    def __init__(self, users: set[UUID] | None = None) -> None:
        self.participants = FakeParticipantRepository()
        self.messages = FakeMessageRepository()
        self.conversations = FakeConversationRepository(self.participants, self.messages)
        self.users = FakeUserDirectory(set(users or ()))
        self.committed = False
        self.outbox: list[events.Event] = []
        self._snapshot: dict[str, Any] | None = None

    def _state(self) -> dict[str, Any]:
        return {
            "conversations": dict(self.conversations.rows),
            "participants": dict(self.participants.rows),
            "messages": list(self.messages.rows),
        }

    async def __aenter__(self) -> Self:
        assert self._snapshot is None, "transactions do not nest"
        self._snapshot = self._state()
        self.committed = False
        self.conversations.seen = []
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._snapshot is not None:
            await self.rollback()

    async def commit(self) -> None:
        assert self._snapshot is not None, "commit outside a transaction"
        for conv in self.conversations.seen:
            self.outbox.extend(conv.events)
            conv.events.clear()
        self._snapshot = None
        self.committed = True

    async def rollback(self) -> None:
        if self._snapshot is not None:
            self.conversations.rows = self._snapshot["conversations"]
            self.participants.rows = self._snapshot["participants"]
            self.messages.rows = self._snapshot["messages"]
            self._snapshot = None
