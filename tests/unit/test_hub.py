"""Routing in the node's hub: who gets a message, and who stops getting them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from app.ws.connection import Connection, Live
from app.ws.hub import Hub
from domain import events
from tests.factories import message_posted, session_of

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class SpyConnection(Connection):
    def __init__(self, user_id: uuid.UUID) -> None:
        super().__init__(socket=None, session=session_of(user_id), fetch_after=None)  # type: ignore[arg-type]
        self.offered: list[Any] = []

    def offer(self, item: Any) -> None:
        self.offered.append(item)


def message(conversation_id: uuid.UUID, seq: int) -> events.MessagePosted:
    return message_posted(conversation_id=conversation_id, seq=seq)


def test_a_message_reaches_every_socket_joined_to_its_conversation_and_no_other() -> None:
    hub, conv, other = Hub(), uuid.uuid4(), uuid.uuid4()
    a, b, c = (SpyConnection(uuid.uuid4()) for _ in range(3))
    for conn in (a, b, c):
        hub.register(conn)
    hub.subscribe(a, conv, 0)
    hub.subscribe(b, conv, 0)
    hub.subscribe(c, other, 0)

    hub.on_event(message(conv, 1))

    assert [type(i) for i in a.offered] == [Live] and a.offered == b.offered
    assert c.offered == []
    assert hub.seen_seq[conv] == 1


def test_a_removed_participant_is_unsubscribed_and_told_why() -> None:
    hub, conv = Hub(), uuid.uuid4()
    stays, leaves = SpyConnection(uuid.uuid4()), SpyConnection(uuid.uuid4())
    for conn in (stays, leaves):
        hub.register(conn)
        hub.subscribe(conn, conv, 0)

    hub.on_event(
        events.ParticipantRemoved(
            event_id=uuid.uuid4(),
            occurred_at=NOW,
            conversation_id=conv,
            user_id=leaves.user_id,
            removed_by=uuid.uuid4(),
        )
    )
    hub.on_event(message(conv, 1))

    assert conv not in leaves.cursors
    assert '"type":"left"' in leaves.offered[0] and len(leaves.offered) == 1
    assert len(stays.offered) == 1 and isinstance(stays.offered[0], Live)


def test_unregistering_the_last_socket_of_a_conversation_forgets_it() -> None:
    hub, conv = Hub(), uuid.uuid4()
    conn = SpyConnection(uuid.uuid4())
    hub.register(conn)
    hub.subscribe(conn, conv, 3)
    hub.on_event(message(conv, 4))

    hub.unregister(conn)

    assert hub.joined_conversations() == [] and conv not in hub.seen_seq
    assert hub.sockets_of(conn.user_id) == 0
