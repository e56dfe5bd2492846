"""Flow 1: one transaction per post: lock-and-bump seq, message, outbox row, NOTIFY; idempotent retries."""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa
from litestar.testing import AsyncTestClient

from domain import events, handlers
from domain.limits import Limits
from infrastructure.bootstrap import Services
from infrastructure.db.tables import messages, outbox
from infrastructure.db.unit_of_work import OUTBOX_CHANNEL
from tests.factories import MessageCreateFactory, PostMessageFactory, StartConversationFactory
from tests.integration.conftest import MakeConversation, MakeUser


async def _rows(services: Services, stmt: Any) -> list[Any]:
    async with services.engine.connect() as conn:
        return list((await conn.execute(stmt)).all())


async def test_fifty_concurrent_posts_get_seqs_one_to_fifty_with_one_outbox_row_each(services: Services) -> None:
    owner = await _user(services)
    conv = await handlers.start_conversation(
        StartConversationFactory.build(owner_id=owner), services.uow(), services.clock, Limits()
    )

    async def post() -> int:
        cmd = PostMessageFactory.build(conversation_id=conv.id, sender_id=owner)
        result = await handlers.post_message(cmd, services.uow(), services.clock, Limits())
        return result.message.seq

    seqs = await asyncio.gather(*(post() for _ in range(50)))

    assert sorted(seqs) == list(range(1, 51))
    stored = await _rows(services, sa.select(messages.c.seq).where(messages.c.conversation_id == conv.id))
    assert sorted(r.seq for r in stored) == list(range(1, 51))
    posted = await _rows(services, sa.select(outbox.c.payload).where(outbox.c.event_type == "message_posted"))
    assert sorted(events.decode(r.payload).message.seq for r in posted) == list(range(1, 51))  # type: ignore[union-attr]


async def test_twenty_concurrent_identical_posts_store_one_message(services: Services) -> None:
    owner = await _user(services)
    conv = await handlers.start_conversation(
        StartConversationFactory.build(owner_id=owner), services.uow(), services.clock, Limits()
    )
    cmd = PostMessageFactory.build(conversation_id=conv.id, sender_id=owner, client_msg_id="same-id")

    results = await asyncio.gather(
        *(handlers.post_message(cmd, services.uow(), services.clock, Limits()) for _ in range(20))
    )

    assert len({r.message.id for r in results}) == 1
    assert sum(not r.duplicate for r in results) == 1
    assert len(await _rows(services, sa.select(messages.c.id))) == 1
    assert len(await _rows(services, sa.select(outbox.c.id).where(outbox.c.event_type == "message_posted"))) == 1


async def test_a_commit_notifies_the_outbox_channel(services: Services) -> None:
    owner = await _user(services)
    conv = await handlers.start_conversation(
        StartConversationFactory.build(owner_id=owner), services.uow(), services.clock, Limits()
    )
    got: asyncio.Queue[str] = asyncio.Queue()
    async with services.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        await raw.driver_connection.add_listener(
            OUTBOX_CHANNEL, lambda _conn, _pid, channel, _payload: got.put_nowait(channel)
        )
        await handlers.post_message(
            PostMessageFactory.build(conversation_id=conv.id, sender_id=owner), services.uow(), services.clock, Limits()
        )
        assert await asyncio.wait_for(got.get(), 5) == OUTBOX_CHANNEL


async def test_a_failed_post_writes_neither_message_nor_outbox_row(services: Services) -> None:
    owner, stranger = await _user(services), await _user(services)
    conv = await handlers.start_conversation(
        StartConversationFactory.build(owner_id=owner), services.uow(), services.clock, Limits()
    )
    before = len(await _rows(services, sa.select(outbox.c.id)))

    try:
        await handlers.post_message(
            PostMessageFactory.build(conversation_id=conv.id, sender_id=stranger),
            services.uow(),
            services.clock,
            Limits(),
        )
    except Exception as exc:
        assert type(exc).__name__ == "NotAParticipant"
    else:
        raise AssertionError("a stranger could post")

    assert await _rows(services, sa.select(messages.c.id)) == []
    assert len(await _rows(services, sa.select(outbox.c.id))) == before


async def test_rest_post_is_201_then_200_with_the_original_for_a_repeated_client_msg_id(
    client: AsyncTestClient[Any], make_user: MakeUser, make_conversation: MakeConversation
) -> None:
    alice = await make_user()
    conv = await make_conversation(alice)
    body = MessageCreateFactory.build()
    url = f"/api/conversations/{conv['id']}/messages"

    first = await client.post(url, json={"client_msg_id": body.client_msg_id, "text": "  hi  "}, headers=alice.headers)
    again = await client.post(url, json={"client_msg_id": body.client_msg_id, "text": "other"}, headers=alice.headers)

    assert first.status_code == 201 and again.status_code == 200
    assert again.json() == first.json()
    assert first.json()["text"] == "hi" and first.json()["seq"] == 1


async def _user(services: Services) -> Any:
    """A user row straight in the table (these tests are about messages, not auth)."""
    import uuid

    from infrastructure.db.tables import users

    user_id = uuid.uuid4()
    async with services.engine.begin() as conn:
        await conn.execute(
            sa.insert(users).values(id=user_id, email=f"{user_id}@example.com", name="u", password_hash="x")
        )
    return user_id
