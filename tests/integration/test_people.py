"""Adding people by email, and who of a conversation's members is online."""

from __future__ import annotations

from typing import Any

from litestar.testing import AsyncTestClient

from infrastructure.bootstrap import Services
from infrastructure.redis import groups, keys
from infrastructure.redis.presence import Presence
from tests.integration.conftest import MakeConversation, MakeUser, assert_error


async def test_members_add_people_by_email_in_any_case(
    client: AsyncTestClient[Any], make_user: MakeUser, make_conversation: MakeConversation
) -> None:
    ann, bob = await make_user(), await make_user()
    conv = await make_conversation(ann)
    response = await client.post(
        f"/api/conversations/{conv['id']}/participants", json={"emails": [bob.email.upper()]}, headers=ann.headers
    )
    assert response.status_code == 201, response.text
    assert {p["user_id"] for p in response.json()["items"]} == {str(ann.id), str(bob.id)}


async def test_an_unknown_email_is_named_and_nobody_is_added(
    client: AsyncTestClient[Any], make_user: MakeUser, make_conversation: MakeConversation
) -> None:
    ann, bob = await make_user(), await make_user()
    conv = await make_conversation(ann)
    url = f"/api/conversations/{conv['id']}/participants"
    response = await client.post(url, json={"emails": [bob.email, "nobody@example.com"]}, headers=ann.headers)
    assert "nobody@example.com" in assert_error(response, 400, "VALIDATION")["message"]
    listed = await client.get(url, headers=ann.headers)
    assert [p["user_id"] for p in listed.json()["items"]] == [str(ann.id)]


async def test_a_stranger_cannot_probe_addresses_through_someone_elses_conversation(
    client: AsyncTestClient[Any], make_user: MakeUser, make_conversation: MakeConversation
) -> None:
    ann, eve = await make_user(), await make_user()
    conv = await make_conversation(ann)
    response = await client.post(
        f"/api/conversations/{conv['id']}/participants", json={"emails": ["nobody@example.com"]}, headers=eve.headers
    )
    assert_error(response, 403, "FORBIDDEN")


async def test_presence_lists_members_with_a_socket_on_a_live_node(
    client: AsyncTestClient[Any], services: Services, make_user: MakeUser, make_conversation: MakeConversation
) -> None:
    ann, bob = await make_user(), await make_user()
    conv = await make_conversation(ann, bob)
    url = f"/api/conversations/{conv['id']}/presence"
    assert (await client.get(url, headers=ann.headers)).json() == {"online": []}
    await groups.mark_node_alive(services.redis, "other-node")
    await Presence(services.redis, "other-node").connect(bob.id, "bob-socket")
    assert (await client.get(url, headers=ann.headers)).json() == {"online": [str(bob.id)]}
    await services.redis.delete(keys.node_alive("other-node"))  # that node died
    assert (await client.get(url, headers=ann.headers)).json() == {"online": []}
    stranger = await make_user()
    assert_error(await client.get(url, headers=stranger.headers), 403, "FORBIDDEN")
