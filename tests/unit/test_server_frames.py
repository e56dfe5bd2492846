"""Server frames are one tagged union: every frame encodes with its ``type`` and decodes back."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import msgspec

from app.ws import frames
from domain.values import MessageRole
from infrastructure.db.views import LastMessage
from tests.factories import MessageFactory

NOW = datetime(2026, 12, 1, tzinfo=UTC)
ID = uuid.uuid4()


def test_every_server_frame_round_trips_through_the_union() -> None:
    samples: list[frames.ServerFrame] = [
        frames.Joined(conversation_id=ID, last_seq=3),
        frames.Left(conversation_id=ID, reason="removed"),
        frames.Ack(client_msg_id="c", status="accepted", id=ID, seq=1, conversation_id=ID),
        frames.ReadReceipt(conversation_id=ID, user_id=ID, seq=2),
        frames.TypingNotice(conversation_id=ID, user_id=ID, active=True),
        frames.PresenceNotice(user_id=ID, status="online"),
        frames.ConversationChanged(
            id=ID,
            title="t",
            last_message=LastMessage(seq=1, preview="hi", sender_id=None, role=MessageRole.USER, created_at=NOW),
            unread_count=1,
            updated_at=NOW,
        ),
        frames.StreamDelta(conversation_id=ID, reply_id=ID, attempt=1, index=0, delta="he"),
        frames.StreamEnd(
            conversation_id=ID,
            reply_id=ID,
            attempt=1,
            cancelled=True,
            usage=frames.Usage(input_tokens=1, output_tokens=2),
            error=frames.StreamError(code="TIMEOUT", message="no first token within 20s"),
        ),
        frames.Refreshed(expires_in=60),
        frames.Pong(),
        frames.ErrorFrame(code="VALIDATION", message="bad"),
    ]
    decoder = msgspec.json.Decoder(frames.ServerFrame)
    for sample in samples:
        text = frames.encode(sample)
        assert json.loads(text)["type"] == sample.__struct_config__.tag
        assert decoder.decode(text) == sample


def test_a_message_frame_keeps_null_sender_and_client_id() -> None:
    message = MessageFactory.build(sender_id=None, client_msg_id=None, role=MessageRole.ASSISTANT)
    body = json.loads(frames.message_frame(message))
    assert body["type"] == "message" and body["sender_id"] is None and body["client_msg_id"] is None
    assert body["seq"] == message.seq and body["text"] == message.text
