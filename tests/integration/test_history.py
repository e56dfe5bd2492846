"""Message history paging, read cursors and unread counts, seen through REST."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from litestar.testing import AsyncTestClient

from domain import commands, handlers
from infrastructure.bootstrap import Services
from infrastructure.db.tables import participants
from tests.integration.conftest import MakeConversation, MakeUser, Project, written
from tests.integration.conftest import TestUser as User


async def _cursor(services: Services, user: User) -> int:
    async with services.engine.connect() as conn:
        stmt = sa.select(participants.c.last_read_seq).where(participants.c.user_id == user.id)
        return int((await conn.execute(stmt)).scalar_one())


async def _post_as(services: Services, conversation_id: str, sender: User, count: int) -> None:
    """Seed messages through the handler: the REST route would spend the sender's rate-limit tokens."""
    for _ in range(count):
        cmd = commands.PostMessage(
            conversation_id=uuid.UUID(conversation_id), sender_id=sender.id, client_msg_id=uuid.uuid4().hex, text="m"
        )
        await handlers.post_message(cmd, services.uow(), services.clock, services.settings.limits)


async def test_a_read_cursor_never_moves_backwards(
    client: AsyncTestClient[Any], services: Services, make_user: MakeUser, room: tuple[User, str]
) -> None:
    owner, url = room
    reader = await make_user()
    await client.post(f"{url}/participants", json={"user_id": str(reader.id)}, headers=owner.headers)
    await _post_as(services, url.rsplit("/", 1)[1], owner, 3)  # seqs 2..4
    forward = await client.put(f"{url}/read", json={"seq": 3}, headers=reader.headers)
    before = await written(services)

    backward = await client.put(f"{url}/read", json={"seq": 1}, headers=reader.headers)

    assert forward.status_code == 200 and forward.json()["seq"] == 3
    assert backward.status_code == 200 and backward.json()["seq"] == 3
    assert await written(services) == before  # a no-op records no ReadCursorMoved event
    assert await _cursor(services, reader) == 3
    assert (await client.get("/api/unread", headers=reader.headers)).json()["total"] == 1


# -- history and unread --------------------------------------------------------------------------------


async def _seqs(client: AsyncTestClient[Any], user: User, url: str, query: str) -> tuple[list[int], bool]:
    response = await client.get(f"{url}/messages?{query}", headers=user.headers)
    assert response.status_code == 200, response.text
    return [m["seq"] for m in response.json()["items"]], response.json()["has_more"]


async def test_history_pages_forward_and_backward_in_ascending_seq_without_gaps(
    client: AsyncTestClient[Any], services: Services, room: tuple[User, str]
) -> None:
    user, url = room
    await _post_as(services, url.rsplit("/", 1)[1], user, 24)  # seqs 2..25

    forward, after, more = [], 0, True
    while more:
        page, more = await _seqs(client, user, url, f"after_seq={after}&limit=10")
        forward += page
        after = page[-1]
    backward, before, more = [], 26, True
    while more:
        page, more = await _seqs(client, user, url, f"before_seq={before}&limit=10")
        backward = page + backward
        before = page[0]

    assert forward == backward == list(range(1, 26))
    assert await _seqs(client, user, url, "limit=10") == (list(range(1, 11)), True)
    assert await _seqs(client, user, url, "before_seq=26&limit=10") == (list(range(16, 26)), True)
    assert await _seqs(client, user, url, "after_seq=20&limit=5") == (list(range(21, 26)), False)
    assert await _seqs(client, user, url, "after_seq=5&before_seq=9") == ([6, 7, 8], False)
    assert await _seqs(client, user, url, "after_seq=25") == ([], False)


async def test_unread_counts_only_other_peoples_messages_and_drop_after_reading(
    client: AsyncTestClient[Any],
    services: Services,
    make_user: MakeUser,
    make_conversation: MakeConversation,
    project: Project,
) -> None:
    alice, bob = await make_user(), await make_user()
    conv = await make_conversation(alice, bob)
    await _post_as(services, conv["id"], alice, 2)  # seqs 1, 2

    async def unread(user: User) -> tuple[int, dict[str, int], int]:
        await project()
        summary = (await client.get("/api/unread", headers=user.headers)).json()
        listed = (await client.get("/api/conversations", headers=user.headers)).json()["items"]
        return summary["total"], summary["conversations"], next(c["unread_count"] for c in listed)

    assert await unread(alice) == (0, {}, 0)
    assert await unread(bob) == (2, {conv["id"]: 2}, 2)

    await _post_as(services, conv["id"], bob, 3)  # seqs 3..5
    assert await unread(alice) == (3, {conv["id"]: 3}, 3)

    read = await client.put(f"/api/conversations/{conv['id']}/read", json={"seq": 4}, headers=alice.headers)
    assert read.status_code == 200 and read.json() == {"conversation_id": conv["id"], "seq": 4, "unread_count": 1}
    assert (await client.get("/api/unread", headers=alice.headers)).json()["total"] == 1  # at once, no projector
    assert await unread(alice) == (1, {conv["id"]: 1}, 1)


async def test_the_conversation_list_pages_by_latest_activity_without_repeats(
    client: AsyncTestClient[Any],
    services: Services,
    make_user: MakeUser,
    make_conversation: MakeConversation,
    project: Project,
) -> None:
    user = await make_user()
    ids = [(await make_conversation(user))["id"] for _ in range(5)]
    await _post_as(services, ids[0], user, 1)  # the oldest becomes the most recent
    await project()

    listed, cursor = [], None
    while True:
        query = "limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await client.get(f"/api/conversations?{query}", headers=user.headers)).json()
        listed += [c["id"] for c in page["items"]]
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]

    assert listed == [ids[0], *reversed(ids[1:])]
