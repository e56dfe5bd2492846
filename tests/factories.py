"""polyfactory factories for commands and request bodies, with unique ids and valid defaults."""

from __future__ import annotations

import uuid

from polyfactory import Use
from polyfactory.factories.msgspec_factory import MsgspecFactory

from app.schemas import ConversationCreate, MessageCreate, RegisterBody
from domain import commands, events
from domain.values import AssistantSettings, Message, MessageRole, User, UserRole


class RegisterBodyFactory(MsgspecFactory[RegisterBody]):
    email = Use(lambda: f"user-{uuid.uuid4().hex[:10]}@example.com")
    password = Use(lambda: "pw-" + uuid.uuid4().hex[:12])
    name = Use(lambda: f"User {uuid.uuid4().hex[:6]}")


class ConversationCreateFactory(MsgspecFactory[ConversationCreate]):
    title = Use(lambda: f"room-{uuid.uuid4().hex[:6]}")
    participant_ids = Use(list)
    assistant = None


class MessageCreateFactory(MsgspecFactory[MessageCreate]):
    client_msg_id = Use(lambda: f"c-{uuid.uuid4().hex}")
    text = Use(lambda: f"hello {uuid.uuid4().hex[:8]}")


class PostMessageFactory(MsgspecFactory[commands.PostMessage]):
    client_msg_id = Use(lambda: f"c-{uuid.uuid4().hex}")
    text = Use(lambda: f"hello {uuid.uuid4().hex[:8]}")
    role = MessageRole.USER


class StartConversationFactory(MsgspecFactory[commands.StartConversation]):
    title = Use(lambda: f"room-{uuid.uuid4().hex[:6]}")
    participant_ids = Use(list)
    assistant = AssistantSettings()


class MessageFactory(MsgspecFactory[Message]):
    """A stored message; pass ``conversation_id`` and ``seq`` when they matter."""

    role = MessageRole.USER
    sender_id = None
    client_msg_id = None
    text = Use(lambda: f"text {uuid.uuid4().hex[:8]}")


def message_posted(**message_fields: object) -> events.MessagePosted:
    message = MessageFactory.build(**message_fields)
    return events.MessagePosted(event_id=uuid.uuid4(), occurred_at=message.created_at, message=message)


class UserFactory(MsgspecFactory[User]):
    """A user row for tests that seed the database directly (no password: they never log in)."""

    email = Use(lambda: f"seed-{uuid.uuid4().hex[:12]}@example.com")
    name = Use(lambda: f"Seed {uuid.uuid4().hex[:6]}")
    role = UserRole.USER
