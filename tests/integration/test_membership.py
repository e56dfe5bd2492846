"""Who may do what in a conversation: strangers get 403 and see nothing, members are not owners, admins may delete.

Every refused write is checked against the database: no message, event, participant or conversation row moves.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from litestar.testing import AsyncTestClient

from infrastructure.bootstrap import Services
from infrastructure.db.tables import conversations, messages, participants
from tests.integration.conftest import MakeConversation, MakeUser, Project, assert_error, events_committed
from tests.integration.conftest import TestUser as User

COUNTED = {"messages": messages, "participants": participants, "conversations": conversations}


async def row_counts(services: Services) -> dict[str, int]:
    """Rows of the write tables, and ``events``: events committed (outbox rows or already published)."""
    counts = {"events": await events_committed(services)}
    async with services.engine.connect() as conn:
        for name, table in COUNTED.items():
            counts[name] = (await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()
    return counts


#: (method, path under /api/conversations/{id}, JSON body or None); {other} is a third user's id.
CONVERSATION_CALLS = [
    ("GET", "", None),
    ("PATCH", "", {"title": "taken over"}),
    ("DELETE", "", None),
    ("GET", "/messages", None),
    ("POST", "/messages", {"client_msg_id": "c-1", "text": "let me in"}),
    ("GET", "/participants", None),
    ("POST", "/participants", {"user_id": "{other}"}),
    ("DELETE", "/participants/{other}", None),
    ("PUT", "/read", {"seq": 0}),
]
CALL_IDS = [f"{method} {path or '/'}" for method, path, _ in CONVERSATION_CALLS]


async def _call(
    client: AsyncTestClient[Any], user: User, conversation_id: str, call: tuple[str, str, Any], other: uuid.UUID
) -> Any:
    method, path, body = call
    url = f"/api/conversations/{conversation_id}{path.replace('{other}', str(other))}"
    if isinstance(body, dict):
        body = {k: str(other) if v == "{other}" else v for k, v in body.items()}
    return await client.request(method, url, json=body, headers=user.headers)


@pytest.mark.parametrize("call", CONVERSATION_CALLS, ids=CALL_IDS)
async def test_a_non_member_is_forbidden_and_nothing_is_written(
    client: AsyncTestClient[Any],
    make_user: MakeUser,
    make_conversation: MakeConversation,
    services: Services,
    call: tuple[str, str, Any],
) -> None:
    owner, member, stranger = await make_user(), await make_user(), await make_user()
    conv = await make_conversation(owner, member)
    posted = await client.post(
        f"/api/conversations/{conv['id']}/messages", json={"client_msg_id": "m-1", "text": "hi"}, headers=owner.headers
    )
    assert posted.status_code == 201
    before = await row_counts(services)

    response = await _call(client, stranger, conv["id"], call, other=member.id)

    assert_error(response, 403, "FORBIDDEN")
    assert await row_counts(services) == before


@pytest.mark.parametrize("call", CONVERSATION_CALLS, ids=CALL_IDS)
async def test_an_unknown_conversation_is_not_found(
    client: AsyncTestClient[Any], make_user: MakeUser, services: Services, call: tuple[str, str, Any]
) -> None:
    user, other = await make_user(), await make_user()
    before = await row_counts(services)

    response = await _call(client, user, str(uuid.uuid4()), call, other=other.id)

    assert_error(response, 404, "NOT_FOUND")
    assert await row_counts(services) == before


async def test_a_conversation_is_not_listed_for_a_non_member(
    client: AsyncTestClient[Any], make_user: MakeUser, make_conversation: MakeConversation, project: Project
) -> None:
    owner, member, stranger = await make_user(), await make_user(), await make_user()
    conv = await make_conversation(owner, member)
    await make_conversation(stranger)
    await project()

    listed = {
        name: [c["id"] for c in (await client.get("/api/conversations", headers=u.headers)).json()["items"]]
        for name, u in {"owner": owner, "member": member, "stranger": stranger}.items()
    }

    assert conv["id"] in listed["owner"] and conv["id"] in listed["member"]
    assert conv["id"] not in listed["stranger"] and len(listed["stranger"]) == 1


async def test_a_member_who_is_not_the_owner_cannot_update_or_delete(
    client: AsyncTestClient[Any], make_user: MakeUser, make_conversation: MakeConversation, services: Services
) -> None:
    owner, member = await make_user(), await make_user()
    conv = await make_conversation(owner, member)
    url = f"/api/conversations/{conv['id']}"
    before = await row_counts(services)

    assert_error(await client.patch(url, json={"title": "mine now"}, headers=member.headers), 403, "FORBIDDEN")
    assert_error(await client.delete(url, headers=member.headers), 403, "FORBIDDEN")

    assert await row_counts(services) == before
    assert (await client.get(url, headers=owner.headers)).json()["title"] == conv["title"]


async def test_a_member_cannot_remove_someone_else(
    client: AsyncTestClient[Any], make_user: MakeUser, make_conversation: MakeConversation, services: Services
) -> None:
    owner, member, third = await make_user(), await make_user(), await make_user()
    conv = await make_conversation(owner, member, third)
    before = await row_counts(services)

    response = await client.delete(f"/api/conversations/{conv['id']}/participants/{third.id}", headers=member.headers)

    assert_error(response, 403, "FORBIDDEN")
    assert await row_counts(services) == before


async def test_the_owner_can_update_and_remove_a_member(
    client: AsyncTestClient[Any], make_user: MakeUser, make_conversation: MakeConversation
) -> None:
    owner, member = await make_user(), await make_user()
    conv = await make_conversation(owner, member)
    url = f"/api/conversations/{conv['id']}"

    updated = await client.patch(url, json={"title": "renamed"}, headers=owner.headers)
    removed = await client.delete(f"{url}/participants/{member.id}", headers=owner.headers)

    assert updated.status_code == 200 and updated.json()["title"] == "renamed"
    assert removed.status_code == 204
    assert_error(await client.get(url, headers=member.headers), 403, "FORBIDDEN")


async def test_a_member_can_add_members_who_then_see_the_history(
    client: AsyncTestClient[Any], make_user: MakeUser, make_conversation: MakeConversation
) -> None:
    owner, member, newcomer = await make_user(), await make_user(), await make_user()
    conv = await make_conversation(owner, member)
    url = f"/api/conversations/{conv['id']}"
    await client.post(
        f"{url}/messages", json={"client_msg_id": "m-1", "text": "before you came"}, headers=owner.headers
    )

    added = await client.post(f"{url}/participants", json={"user_id": str(newcomer.id)}, headers=member.headers)

    assert added.status_code == 201, added.text
    assert str(newcomer.id) in {p["user_id"] for p in added.json()["items"]}
    roles = {p["user_id"]: p["role"] for p in added.json()["items"]}
    assert roles[str(newcomer.id)] == "member" and roles[str(owner.id)] == "owner"
    history = await client.get(f"{url}/messages", headers=newcomer.headers)
    assert history.status_code == 200 and [m["text"] for m in history.json()["items"]] == ["before you came"]


async def test_adding_an_existing_member_again_adds_no_row(
    client: AsyncTestClient[Any], make_user: MakeUser, make_conversation: MakeConversation, services: Services
) -> None:
    owner, member = await make_user(), await make_user()
    conv = await make_conversation(owner, member)
    before = await row_counts(services)

    response = await client.post(
        f"/api/conversations/{conv['id']}/participants", json={"user_ids": [str(member.id)]}, headers=owner.headers
    )

    assert response.status_code == 201 and len(response.json()["items"]) == 2
    assert await row_counts(services) == before


async def test_adding_an_unknown_user_is_refused_and_writes_nothing(
    client: AsyncTestClient[Any], make_user: MakeUser, make_conversation: MakeConversation, services: Services
) -> None:
    owner = await make_user()
    conv = await make_conversation(owner)
    before = await row_counts(services)

    response = await client.post(
        f"/api/conversations/{conv['id']}/participants", json={"user_id": str(uuid.uuid4())}, headers=owner.headers
    )

    assert_error(response, 400, "VALIDATION")
    assert await row_counts(services) == before


async def test_a_member_can_leave_and_is_forbidden_afterwards(
    client: AsyncTestClient[Any],
    make_user: MakeUser,
    make_conversation: MakeConversation,
    services: Services,
    project: Project,
) -> None:
    owner, member = await make_user(), await make_user()
    conv = await make_conversation(owner, member)
    await project()
    listed = (await client.get("/api/conversations", headers=member.headers)).json()["items"]
    assert conv["id"] in [c["id"] for c in listed]
    url = f"/api/conversations/{conv['id']}"
    before = await row_counts(services)

    left = await client.delete(f"{url}/participants/{member.id}", headers=member.headers)

    assert left.status_code == 204, left.text
    after = await row_counts(services)
    assert after["participants"] == before["participants"] - 1
    assert after["events"] == before["events"] + 1  # ParticipantRemoved
    assert_error(await client.get(url, headers=member.headers), 403, "FORBIDDEN")
    assert_error(
        await client.post(
            f"{url}/messages", json={"client_msg_id": "x", "text": "still here?"}, headers=member.headers
        ),
        403,
        "FORBIDDEN",
    )
    await project()
    listed = (await client.get("/api/conversations", headers=member.headers)).json()["items"]
    assert conv["id"] not in [c["id"] for c in listed]


async def test_the_owner_cannot_leave(
    client: AsyncTestClient[Any], make_user: MakeUser, make_conversation: MakeConversation, services: Services
) -> None:
    owner, member = await make_user(), await make_user()
    conv = await make_conversation(owner, member)
    before = await row_counts(services)

    response = await client.delete(f"/api/conversations/{conv['id']}/participants/{owner.id}", headers=owner.headers)

    assert_error(response, 400, "VALIDATION")
    assert await row_counts(services) == before


async def test_an_admin_can_delete_someone_elses_conversation(
    client: AsyncTestClient[Any], make_user: MakeUser, make_conversation: MakeConversation, services: Services
) -> None:
    owner, member, admin = await make_user(), await make_user(), await make_user()
    conv = await make_conversation(owner, member)
    url = f"/api/conversations/{conv['id']}"
    await services.auth.grant_admin(admin.email)

    response = await client.delete(url, headers=admin.headers)

    assert response.status_code == 204, response.text
    assert_error(await client.get(url, headers=owner.headers), 404, "NOT_FOUND")
    assert await row_counts(services) == {"messages": 0, "events": 1 + 1, "participants": 0, "conversations": 0}


async def test_being_admin_does_not_open_a_conversations_messages_to_a_non_member(
    client: AsyncTestClient[Any], make_user: MakeUser, make_conversation: MakeConversation, services: Services
) -> None:
    owner, admin = await make_user(), await make_user()
    conv = await make_conversation(owner)
    await services.auth.grant_admin(admin.email)

    response = await client.get(f"/api/conversations/{conv['id']}/messages", headers=admin.headers)

    assert_error(response, 403, "FORBIDDEN")
