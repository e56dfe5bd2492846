"""Domain events: facts, past tense, one tagged union so any consumer can decode stream bytes.

Every event carries ``conversation_id``: it picks the stream shard, so all events of one
conversation travel in one ordered stream.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import msgspec

from domain.values import AssistantSettings, Message


class _Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    event_id: UUID
    occurred_at: datetime


class MessagePosted(_Event, frozen=True, kw_only=True, tag="message_posted"):
    message: Message

    @property
    def conversation_id(self) -> UUID:
        return self.message.conversation_id


class ConversationCreated(_Event, frozen=True, kw_only=True, tag="conversation_created"):
    conversation_id: UUID
    title: str
    owner_id: UUID
    participant_ids: list[UUID]


class ConversationUpdated(_Event, frozen=True, kw_only=True, tag="conversation_updated"):
    conversation_id: UUID
    title: str
    assistant: AssistantSettings


class ConversationDeleted(_Event, frozen=True, kw_only=True, tag="conversation_deleted"):
    conversation_id: UUID
    participant_ids: list[UUID]


class ParticipantAdded(_Event, frozen=True, kw_only=True, tag="participant_added"):
    conversation_id: UUID
    user_id: UUID
    added_by: UUID


class ParticipantRemoved(_Event, frozen=True, kw_only=True, tag="participant_removed"):
    conversation_id: UUID
    user_id: UUID
    removed_by: UUID


class ReadCursorMoved(_Event, frozen=True, kw_only=True, tag="read_cursor_moved"):
    conversation_id: UUID
    user_id: UUID
    seq: int


class AssistantUsageRecorded(_Event, frozen=True, kw_only=True, tag="assistant_usage_recorded"):
    """An LLM call made for a conversation, with what it cost (the assistant emits it with its reply;
    the projector adds it to the daily statistics, once per ``event_id``). ``occurred_at`` is when the
    call finished; ``user_id`` is whose message triggered it (None: no user, e.g. a summary)."""

    conversation_id: UUID
    user_id: UUID | None
    reply_id: UUID | None = None
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    #: US dollars, as the provider's price list says at the time of the call.
    cost: float
    #: The attempt at the reply (a job retried after a crash makes a second call), its outcome
    #: (``done``, ``cancelled``, ``error``), time to first token and duration.
    attempt: int = 1
    status: str = "done"
    ttft_ms: int | None = None
    duration_ms: int | None = None


Event = (
    MessagePosted
    | ConversationCreated
    | ConversationUpdated
    | ConversationDeleted
    | ParticipantAdded
    | ParticipantRemoved
    | ReadCursorMoved
    | AssistantUsageRecorded
)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)


def encode(event: Event) -> bytes:
    """Events are encoded once, at commit; relay and consumers pass these bytes along untouched."""
    return _encoder.encode(event)


def decode(data: bytes) -> Event:
    event: Event = _decoder.decode(data)
    return event


def type_name(event: Event) -> str:
    return event.__struct_config__.tag  # type: ignore[return-value]


def shard_for(conversation_id: UUID, shard_count: int) -> int:
    """Stable shard of a conversation: same id, same shard, on every process and every version.

    UUIDv4 bits are uniform, so the low 64 bits modulo the shard count spread evenly.
    """
    return (conversation_id.int & 0xFFFF_FFFF_FFFF_FFFF) % shard_count
