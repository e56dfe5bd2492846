"""Integration fixtures: the app in-process over real PostgreSQL and Redis, and users made through it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import msgspec
import pytest
import sqlalchemy as sa
from litestar.testing import AsyncTestClient

from app.asgi import create_app
from infrastructure import outbox_publisher
from infrastructure.bootstrap import Services, bootstrap
from infrastructure.db import outbox as db_outbox
from infrastructure.db.tables import messages
from infrastructure.redis import streams
from infrastructure.settings import Settings
from tests.factories import ConversationCreateFactory, RegisterBodyFactory
from tests.fakes.anthropic_server import FakeAnthropic
from tests.uvicorn_server import running


@dataclass
class TestUser:
    __test__ = False  # not a test class, despite the name

    id: UUID
    email: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeAnthropic]:
    """Our HTTP server speaking the Anthropic Messages streaming API (and OpenAI's), one per module."""
    fake = FakeAnthropic().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(server: FakeAnthropic) -> FakeAnthropic:
    """The same server with its script and recorded requests cleared."""
    server.reset()
    return server


@pytest.fixture(autouse=True)
def _patient_publishers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Integration tests run no relay unless a test starts one, and many check what a node published
    itself. A node gives up an XADD after ``NODE_PUBLISH_TIMEOUT`` (0.5 s) and leaves its rows to the
    relay, and the suite's Redis can stall that long on a busy disk (an AOF fsync): more patience here,
    so that such a stall slows a test down instead of failing it. Refused connections still fail at once
    (``test_group_commit.py`` leaves a node's commits to the relay that way)."""
    monkeypatch.setattr(outbox_publisher, "NODE_PUBLISH_TIMEOUT", 10.0)


@pytest.fixture
async def services(settings: Settings, clean_state: None) -> AsyncIterator[Services]:
    built = await bootstrap(settings)
    yield built
    await built.close()


@pytest.fixture
async def client(settings: Settings, clean_state: None) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app(settings)) as test_client:
        yield test_client


Project = Callable[[], Awaitable[int]]


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[str]:
    """The API node on a real uvicorn server on a free port, in this process, with the WebSocket protocol
    ``parley api`` uses; yields its /ws URL."""
    async with running(create_app(settings)) as (_, port):
        yield f"ws://127.0.0.1:{port}/ws"


async def publish_everything(services: Services) -> None:
    """Publish every committed outbox row to the streams: relay what nobody is publishing, until the
    outbox is empty. An app's node publisher may still hold the keys of rows it is publishing, which
    the relay skips (and a read of the streams right after would miss)."""
    from workers.outbox_relay import OutboxRelay

    relay = OutboxRelay(services)
    async with asyncio.timeout(10):
        while (await db_outbox.backlog(services.pg)).rows:
            await relay.drain()
            await asyncio.sleep(0.005)


@pytest.fixture
async def project(services: Services) -> Project:
    """Run flows 2 and 4 once, in-process: relay every outbox row, then project every stream entry.
    Returns the number of entries projected. Read-model reads (list, unread) need it after writes."""
    from workers.projector import Projector

    projector = Projector(services, consumer_name="test-projector")
    await projector.consumer.setup()

    async def run() -> int:
        await publish_everything(services)
        total = 0
        while read := await projector.consumer.read_once(block=None):
            total += read
        return total

    return run


MakeUser = Callable[..., Awaitable[TestUser]]


@pytest.fixture
def make_user(client: AsyncTestClient[Any]) -> MakeUser:
    async def create(**overrides: Any) -> TestUser:
        body = RegisterBodyFactory.build(**overrides)
        response = await client.post("/api/auth/register", content=msgspec.json.encode(body))
        assert response.status_code == 201, response.text
        data = response.json()
        return TestUser(
            id=UUID(data["user"]["id"]),
            email=body.email,
            password=body.password,
            access_token=data["access_token"],
            refresh_token=data["refresh_token"],
        )

    return create


MakeConversation = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def make_conversation(client: AsyncTestClient[Any]) -> MakeConversation:
    async def create(owner: TestUser, *members: TestUser, **overrides: Any) -> dict[str, Any]:
        body = ConversationCreateFactory.build(participant_ids=[m.id for m in members], **overrides)
        response = await client.post("/api/conversations", content=msgspec.json.encode(body), headers=owner.headers)
        assert response.status_code == 201, response.text
        data: dict[str, Any] = response.json()
        return data

    return create


@pytest.fixture
async def room(
    client: AsyncTestClient[Any], make_user: MakeUser, make_conversation: MakeConversation
) -> tuple[TestUser, str]:
    """A user and the URL of a conversation they own that already holds one message (seq 1)."""
    user = await make_user()
    url = f"/api/conversations/{(await make_conversation(user))['id']}"
    first = await client.post(f"{url}/messages", json={"client_msg_id": "first", "text": "hi"}, headers=user.headers)
    assert first.status_code == 201
    return user, url


async def events_committed(services: Services) -> int:
    """Events committed so far, counted in the streams once every outbox row is published there: the
    app's node publishes its commits at once, and the relay's step (as in production) publishes what a
    node left behind, e.g. when its XADD outlived ``NODE_PUBLISH_TIMEOUT`` on a slow disk."""
    await publish_everything(services)
    published = [await services.redis.xlen(s) for s in streams.all_streams(services.settings.redis.shard_count)]
    return sum(published)


async def written(services: Services) -> tuple[int, int]:
    """(messages, events committed) as they stand: a refused request must leave both unchanged."""
    events = await events_committed(services)
    async with services.engine.connect() as conn:
        stored = (await conn.execute(sa.select(sa.func.count()).select_from(messages))).scalar_one()
    return stored, events


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """The response is the error envelope with this status and code."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    error: dict[str, Any] = body["error"]
    return error
