"""Bad input over REST is refused with the error envelope and writes nothing; history paging and unread counts.

Every refused request is followed by a row count of ``messages`` and ``outbox``: a refusal that wrote half
a message (or an event about it) would be a bug even with the right status code.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from litestar.testing import AsyncTestClient

from infrastructure.bootstrap import Services
from infrastructure.db.tables import participants
from tests.integration.conftest import MakeConversation, MakeUser, assert_error, written
from tests.integration.conftest import TestUser as User

BAD_MESSAGES: dict[str, tuple[Any, int, str]] = {
    "empty_text": ({"client_msg_id": "a", "text": ""}, 400, "VALIDATION"),
    "whitespace_only_text": ({"client_msg_id": "a", "text": " \n\t\u3000 "}, 400, "VALIDATION"),
    "text_of_4001_chars": ({"client_msg_id": "a", "text": "x" * 4001}, 413, "TOO_LARGE"),
    "text_is_a_number": ({"client_msg_id": "a", "text": 123}, 400, "VALIDATION"),
    "client_msg_id_is_null": ({"client_msg_id": None, "text": "x"}, 400, "VALIDATION"),
    "client_msg_id_is_empty": ({"client_msg_id": "", "text": "x"}, 400, "VALIDATION"),
    "client_msg_id_of_101_chars": ({"client_msg_id": "c" * 101, "text": "x"}, 400, "VALIDATION"),
    "unknown_field": ({"client_msg_id": "a", "text": "x", "sender_id": str(uuid.uuid4())}, 400, "VALIDATION"),
    "missing_text": ({"client_msg_id": "a"}, 400, "VALIDATION"),
    "missing_client_msg_id": ({"text": "x"}, 400, "VALIDATION"),
    "empty_object": ({}, 400, "VALIDATION"),
    "array_body": ([{"client_msg_id": "a", "text": "x"}], 400, "VALIDATION"),
    "body_over_64_kib": ({"client_msg_id": "a", "text": "x" * (64 * 1024 + 1)}, 413, "TOO_LARGE"),
    "invalid_json": (b'{"client_msg_id": "a", "text": ', 400, "VALIDATION"),
    "no_body": (b"", 400, "VALIDATION"),
}


@pytest.mark.parametrize("case", list(BAD_MESSAGES))
async def test_a_bad_message_body_is_refused_and_nothing_is_written(
    client: AsyncTestClient[Any], services: Services, room: tuple[User, str], case: str
) -> None:
    user, url = room
    body, status, code = BAD_MESSAGES[case]
    before = await written(services)

    if isinstance(body, bytes):
        headers = {**user.headers, "Content-Type": "application/json"}
        response = await client.post(f"{url}/messages", content=body, headers=headers)
    else:
        response = await client.post(f"{url}/messages", json=body, headers=user.headers)

    assert_error(response, status, code)
    assert await written(services) == before


@pytest.mark.parametrize(
    ("text", "stored"),
    [("x" * 4000, "x" * 4000), ("  " + "y" * 4000 + "\n", "y" * 4000), ("é" * 4000, "é" * 4000)],
    ids=["exactly_4000", "4000_after_trimming", "4000_two_byte_chars"],
)
async def test_a_text_of_4000_characters_is_accepted(
    client: AsyncTestClient[Any], room: tuple[User, str], text: str, stored: str
) -> None:
    user, url = room

    response = await client.post(f"{url}/messages", json={"client_msg_id": "long", "text": text}, headers=user.headers)

    assert response.status_code == 201, response.text
    assert response.json()["text"] == stored and response.json()["seq"] == 2


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/conversations/not-a-uuid", None),
        ("GET", "/api/conversations/1234/messages", None),
        ("POST", "/api/conversations/not-a-uuid/messages", {"client_msg_id": "a", "text": "x"}),
        ("PUT", "/api/conversations/not-a-uuid/read", {"seq": 1}),
        ("DELETE", "{url}/participants/not-a-uuid", None),
    ],
)
async def test_a_non_uuid_id_in_the_path_names_no_resource_and_writes_nothing(
    client: AsyncTestClient[Any], services: Services, room: tuple[User, str], method: str, path: str, body: Any
) -> None:
    user, url = room
    before = await written(services)

    response = await client.request(method, path.replace("{url}", url), json=body, headers=user.headers)

    assert_error(response, 404, "NOT_FOUND")  # the routes only match UUIDs (docs/protocol.md)
    assert await written(services) == before


async def test_a_non_uuid_participant_id_is_a_validation_error(
    client: AsyncTestClient[Any], services: Services, room: tuple[User, str]
) -> None:
    user, url = room
    before = await written(services)

    created = await client.post(
        "/api/conversations", json={"title": "t", "participant_ids": ["bob"]}, headers=user.headers
    )
    added = await client.post(f"{url}/participants", json={"user_ids": ["12345"]}, headers=user.headers)

    assert_error(created, 400, "VALIDATION")
    assert_error(added, 400, "VALIDATION")
    assert await written(services) == before


@pytest.mark.parametrize(
    "query",
    ["{url}/messages?limit=0", "{url}/messages?limit=1000", "{url}/messages?limit=ten", "{url}/messages?after_seq=-1",
     "{url}/messages?before_seq=-5", "/api/conversations?limit=0", "/api/conversations?limit=1000",
     "/api/conversations?cursor=not-ours"],
)  # fmt: skip
async def test_bad_list_parameters_are_validation_errors(
    client: AsyncTestClient[Any], room: tuple[User, str], query: str
) -> None:
    user, url = room

    assert_error(await client.get(query.replace("{url}", url), headers=user.headers), 400, "VALIDATION")


NUL_BODIES = [
    ("POST", "{url}/messages", {"client_msg_id": "a", "text": "he\u0000llo"}),
    ("POST", "{url}/messages", {"client_msg_id": "a\u0000", "text": "hello"}),
    ("POST", "/api/conversations", {"title": "t\u0000"}),
    ("PATCH", "{url}", {"title": "t\u0000"}),
    ("PATCH", "{url}", {"assistant": {"enabled": True, "system_prompt": "be \u0000 nice"}}),
    ("POST", "/api/auth/register", {"email": "a\u0000b@example.com", "password": "long enough", "name": "x"}),
    ("POST", "/api/auth/register", {"email": "nul@example.com", "password": "long enough", "name": "x\u0000"}),
    ("POST", "/api/auth/login", {"email": "a\u0000b@example.com", "password": "long enough"}),
]


@pytest.mark.parametrize(("method", "path", "body"), NUL_BODIES, ids=[f"{m} {p} {list(b)}" for m, p, b in NUL_BODIES])
async def test_a_nul_character_in_a_body_is_a_validation_error_not_a_500(
    client: AsyncTestClient[Any], services: Services, room: tuple[User, str], method: str, path: str, body: Any
) -> None:
    """PostgreSQL text cannot store NUL: it must be refused before it reaches the driver."""
    user, url = room
    before = await written(services)

    response = await client.request(method, path.replace("{url}", url), json=body, headers=user.headers)

    assert_error(response, 400, "VALIDATION")
    assert await written(services) == before


# -- read cursors --------------------------------------------------------------------------------------


async def _cursor(services: Services, user: User) -> int:
    async with services.engine.connect() as conn:
        stmt = sa.select(participants.c.last_read_seq).where(participants.c.user_id == user.id)
        return int((await conn.execute(stmt)).scalar_one())


@pytest.mark.parametrize("seq", [2, 10**9, -1, 1.5, None])
async def test_a_read_cursor_beyond_the_last_message_or_malformed_is_refused(
    client: AsyncTestClient[Any], services: Services, room: tuple[User, str], seq: Any
) -> None:
    user, url = room
    before = await written(services)

    assert_error(await client.put(f"{url}/read", json={"seq": seq}, headers=user.headers), 400, "VALIDATION")

    assert await written(services) == before and await _cursor(services, user) == 1


# -- rate limit ----------------------------------------------------------------------------------------


async def test_sending_faster_than_the_rate_limit_gets_429_and_stores_only_the_accepted(
    client: AsyncTestClient[Any], services: Services, make_user: MakeUser, make_conversation: MakeConversation
) -> None:
    user = await make_user()
    url = f"/api/conversations/{(await make_conversation(user))['id']}/messages"
    _, outbox_before = await written(services)
    started = time.monotonic()

    responses = await asyncio.gather(
        *(client.post(url, json={"client_msg_id": f"r-{i}", "text": f"#{i}"}, headers=user.headers) for i in range(40))
    )

    elapsed = time.monotonic() - started
    accepted = [r for r in responses if r.status_code == 201]
    limited = [r for r in responses if r.status_code == 429]
    assert len(accepted) + len(limited) == 40, [r.text for r in responses if r.status_code not in (201, 429)]
    assert 20 <= len(accepted) <= 20 + 10 * elapsed + 1  # the burst, plus what refilled meanwhile
    assert limited
    for response in limited:
        assert_error(response, 429, "RATE_LIMITED")
        assert int(response.headers["Retry-After"]) >= 1
    assert await written(services) == (len(accepted), outbox_before + len(accepted))
    assert sorted(r.json()["seq"] for r in accepted) == list(range(1, len(accepted) + 1))
