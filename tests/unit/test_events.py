"""Domain events: every type survives encode/decode byte-for-byte, and a conversation's stream shard never moves."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID, uuid4

import msgspec
import pytest

from domain import events
from domain.values import AssistantSettings, Message, MessageRole

OWNER, MEMBER = uuid4(), uuid4()

NOW = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
CID = uuid4()
MESSAGE = Message(
    id=uuid4(), conversation_id=CID, seq=7, sender_id=None, role=MessageRole.ASSISTANT, text="é ✓", client_msg_id=None,
    created_at=NOW,
)  # fmt: skip
EVENTS: list[events.Event] = [
    events.MessagePosted(event_id=uuid4(), occurred_at=NOW, message=MESSAGE),
    events.ConversationCreated(
        event_id=uuid4(), occurred_at=NOW, conversation_id=CID, title="t", owner_id=OWNER, participant_ids=[OWNER]
    ),
    events.ConversationUpdated(
        event_id=uuid4(), occurred_at=NOW, conversation_id=CID, title="t", assistant=AssistantSettings(enabled=True)
    ),
    events.ConversationDeleted(event_id=uuid4(), occurred_at=NOW, conversation_id=CID, participant_ids=[OWNER]),
    events.ParticipantAdded(event_id=uuid4(), occurred_at=NOW, conversation_id=CID, user_id=MEMBER, added_by=OWNER),
    events.ParticipantRemoved(event_id=uuid4(), occurred_at=NOW, conversation_id=CID, user_id=MEMBER, removed_by=OWNER),
    events.ReadCursorMoved(event_id=uuid4(), occurred_at=NOW, conversation_id=CID, user_id=MEMBER, seq=7),
    events.AssistantUsageRecorded(
        event_id=uuid4(),
        occurred_at=NOW,
        conversation_id=CID,
        user_id=MEMBER,
        provider="anthropic",
        model="m",
        input_tokens=12,
        output_tokens=34,
        cost=0.0012,
    ),
]


@pytest.mark.parametrize("event", EVENTS, ids=[events.type_name(e) for e in EVENTS])
def test_an_event_round_trips_through_encode_and_decode(event: events.Event) -> None:
    data = events.encode(event)

    assert events.decode(data) == event
    assert msgspec.json.decode(data)["type"] == events.type_name(event)
    assert event.conversation_id == CID


def test_every_event_type_is_covered_by_the_round_trip() -> None:
    assert {type(e) for e in EVENTS} == set(events.Event.__args__)  # type: ignore[attr-defined]


def test_decoding_an_unknown_event_type_fails_loudly() -> None:
    with pytest.raises(msgspec.ValidationError):
        events.decode(b'{"type": "message_exploded", "event_id": "%s"}' % str(uuid4()).encode())


def test_shard_for_is_stable_and_in_range() -> None:
    ids = [uuid4() for _ in range(2000)]

    for count in (1, 4, 8, 13):
        shards = [events.shard_for(cid, count) for cid in ids]
        assert all(0 <= s < count for s in shards)
        assert shards == [events.shard_for(cid, count) for cid in ids]
        assert set(shards) == set(range(count))  # 2,000 random ids reach every shard

    # Pinned values: a change here would reroute every existing conversation to another stream.
    assert events.shard_for(UUID("12345678-1234-5678-1234-56781234567b"), 8) == 3
    assert events.shard_for(UUID("ffffffff-ffff-4fff-8000-000000000011"), 13) == 12
