"""What the model is shown: recent messages (trigger last), earlier similar ones of the SAME conversation
recalled by meaning, and never anything from another conversation (canary)."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from app.schemas import AssistantBody
from infrastructure.bootstrap import Services, bootstrap
from infrastructure.embeddings.provider import to_pgvector
from infrastructure.llm.registry import Providers
from infrastructure.settings import Settings
from tests.fakes.anthropic_server import FakeAnthropic
from tests.integration.conftest import MakeConversation, MakeUser, TestUser
from tests.integration.test_assistant_reply import ask, llm_settings
from workers.assistant import Assistant
from workers.assistant_context import conversation_recall

SECRET = "The launch code for project Zephyr is 7431."
QUESTION = "@assistant what was the launch code for project Zephyr?"


@pytest.fixture
async def worker_services(settings: Settings, server: FakeAnthropic, clean_state: None) -> AsyncIterator[Services]:
    server.reset()
    llm = llm_settings(server, context_messages=3, retrieval_k=2)
    built = await bootstrap(dataclasses.replace(settings, llm=llm))
    yield built
    await built.close()


async def post(client: AsyncTestClient[Any], user: TestUser, cid: str, text: str) -> None:
    response = await client.post(
        f"/api/conversations/{cid}/messages", json={"client_msg_id": uuid.uuid4().hex, "text": text},
        headers=user.headers,
    )  # fmt: skip
    assert response.status_code == 201


async def embed_everything(services: Services) -> None:
    """What the worker's embedding job does for every message, done here directly."""
    rows = await services.pg.fetch("SELECT id, text FROM messages WHERE embedding IS NULL")
    for row in rows:
        vector = await services.embeddings.embed_one(row["text"])
        await services.pg.execute(
            "UPDATE messages SET embedding = $1::vector WHERE id = $2", to_pgvector(vector), row["id"]
        )


async def test_the_request_has_recent_messages_trigger_last_and_recalls_only_this_conversation(
    client: AsyncTestClient[Any], make_user: MakeUser, make_conversation: MakeConversation,
    server: FakeAnthropic, worker_services: Services,
) -> None:  # fmt: skip
    ann, bob = await make_user(name="Ann"), await make_user(name="Bob")
    on = AssistantBody(enabled=True)
    mine = (await make_conversation(ann, assistant=on))["id"]
    theirs = (await make_conversation(bob, assistant=on))["id"]
    canary = f"CANARY-{uuid.uuid4().hex[:8]}: the launch code for project Zephyr is 9999."
    await post(client, bob, theirs, canary)
    await post(client, ann, mine, SECRET)
    for filler in ("lunch at noon?", "sure, the usual place", "bring the slides"):
        await post(client, ann, mine, filler)
    await embed_everything(worker_services)
    trigger = await ask(client, ann, mine, QUESTION)
    assistant = Assistant(
        worker_services, Providers(worker_services.settings.llm), conversation_recall(worker_services)
    )

    assert await assistant.answer(trigger, attempt=1) == "done"
    await assistant.aclose()

    body = server.requests[0].body
    assert body["messages"][-1]["role"] == "user"
    assert body["messages"][-1]["content"].endswith(f"Ann: {QUESTION}")
    assert "Ann: sure, the usual place" in body["messages"][-1]["content"]  # recent, in order
    assert SECRET in body["system"]  # outside the recent window, recalled by meaning
    assert "CANARY" not in server.requests[0].text and "9999" not in server.requests[0].text
