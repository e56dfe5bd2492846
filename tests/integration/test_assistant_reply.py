"""The reply job in-process over real PostgreSQL and Redis, its provider the real ``anthropic`` SDK
talking to our local Messages-API server: what it streams, stores, records, and how it stops."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from litestar.testing import AsyncTestClient

from app.schemas import AssistantBody
from domain.assistant import answer_client_msg_id, reply_id_for
from infrastructure.bootstrap import Services, bootstrap
from infrastructure.db.tables import assistant_usage, messages, outbox
from infrastructure.llm.registry import Providers
from infrastructure.redis import replies
from infrastructure.redis.replies import ReplyDelta, ReplyEnd
from infrastructure.settings import LLMSettings, Settings
from tests.fakes.anthropic_server import Answer, FakeAnthropic, Hang, words
from tests.integration.conftest import MakeConversation, MakeUser, TestUser
from workers.assistant import Assistant, Trigger

ANSWER = "Paris is the capital of France, and it has been for a long time."


def llm_settings(fake: FakeAnthropic, **overrides: Any) -> LLMSettings:
    values: dict[str, Any] = {
        "provider": "anthropic",
        "model": "claude-test",
        "anthropic_api_key": "test-key",
        "anthropic_base_url": fake.base_url,
        "first_token_timeout": 1.0,
        "total_timeout": 5.0,
        "retries": 1,
        "prices": "claude-test=3/15",
    }
    return LLMSettings(**{**values, **overrides})


@pytest.fixture
async def worker_services(settings: Settings, fake: FakeAnthropic, clean_state: None) -> AsyncIterator[Services]:
    built = await bootstrap(dataclasses.replace(settings, llm=llm_settings(fake)))
    yield built
    await built.close()


@pytest.fixture
async def assistant(worker_services: Services) -> AsyncIterator[Assistant]:
    made = Assistant(worker_services, Providers(worker_services.settings.llm))
    yield made
    await made.aclose()


async def ask(client: AsyncTestClient[Any], user: TestUser, conversation_id: str, text: str) -> Trigger:
    response = await client.post(
        f"/api/conversations/{conversation_id}/messages",
        json={"client_msg_id": uuid.uuid4().hex, "text": text},
        headers=user.headers,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    return Trigger(
        message_id=uuid.UUID(body["id"]), conversation_id=uuid.UUID(conversation_id), seq=body["seq"], user_id=user.id
    )


async def room(make_user: MakeUser, make_conversation: MakeConversation) -> tuple[TestUser, str]:
    user = await make_user(name="Ann")
    conversation = await make_conversation(user, assistant=AssistantBody(enabled=True, system_prompt="Be brief."))
    return user, conversation["id"]


async def count(services: Services, table: sa.Table, *where: Any) -> int:
    async with services.engine.connect() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(table).where(*where))).scalar_one())


async def test_an_answer_is_streamed_stored_once_and_its_usage_recorded(
    client: AsyncTestClient[Any], make_user: MakeUser, make_conversation: MakeConversation,
    fake: FakeAnthropic, assistant: Assistant, worker_services: Services,
) -> None:  # fmt: skip
    user, cid = await room(make_user, make_conversation)
    await ask(client, user, cid, "hello there")
    trigger = await ask(client, user, cid, "What is the capital of France?")
    fake.script(Answer(chunks=words(ANSWER), input_tokens=77, output_tokens=15))

    assert await assistant.answer(trigger, attempt=1) == "done"

    reply_id = reply_id_for(trigger.message_id)
    stored = await replies.history(worker_services.redis, reply_id)
    deltas = [e for e in stored if isinstance(e, ReplyDelta)]
    end = stored[-1]
    assert [d.index for d in deltas] == list(range(len(words(ANSWER))))
    assert "".join(d.delta for d in deltas) == ANSWER
    assert isinstance(end, ReplyEnd) and not end.cancelled and end.error is None
    assert (end.usage.input_tokens, end.usage.output_tokens) == (77, 15)
    history = (await client.get(f"/api/conversations/{cid}/messages", headers=user.headers)).json()["items"]
    assert history[-1]["role"] == "assistant" and history[-1]["text"] == ANSWER
    assert history[-1]["seq"] == end.seq == trigger.seq + 1 and history[-1]["id"] == str(end.message_id)
    body = fake.requests[0].body
    assert body["system"] == "Be brief."
    assert [m["content"] for m in body["messages"]] == ["Ann: hello there\n\nAnn: What is the capital of France?"]
    async with worker_services.engine.connect() as conn:
        usage = (await conn.execute(sa.select(assistant_usage))).one()
    assert (usage.input_tokens, usage.output_tokens, usage.status, usage.user_id) == (77, 15, "done", user.id)
    assert float(usage.cost_usd) == pytest.approx((77 * 3 + 15 * 15) / 1_000_000)
    assert usage.ttft_ms is not None and usage.duration_ms >= usage.ttft_ms
    assert await count(worker_services, outbox, outbox.c.event_type == "assistant_usage_recorded") == 1


async def test_a_retried_job_writes_no_second_answer_and_calls_no_provider(
    client: AsyncTestClient[Any], make_user: MakeUser, make_conversation: MakeConversation,
    fake: FakeAnthropic, assistant: Assistant, worker_services: Services,
) -> None:  # fmt: skip
    user, cid = await room(make_user, make_conversation)
    trigger = await ask(client, user, cid, "once please")
    await assistant.answer(trigger, attempt=1)

    assert await assistant.answer(trigger, attempt=2) == "already answered"

    assert len(fake.requests) == 1
    client_msg_id = answer_client_msg_id(reply_id_for(trigger.message_id))
    assert await count(worker_services, messages, messages.c.client_msg_id == client_msg_id) == 1
    ends = [
        e
        for e in await replies.history(worker_services.redis, reply_id_for(trigger.message_id))
        if isinstance(e, ReplyEnd)
    ]
    assert [e.attempt for e in ends] == [1, 2] and ends[0].message_id == ends[1].message_id


async def test_cancel_mid_stream_ends_the_reply_closes_the_provider_call_and_keeps_what_was_shown(
    client: AsyncTestClient[Any], make_user: MakeUser, make_conversation: MakeConversation,
    fake: FakeAnthropic, assistant: Assistant, worker_services: Services,
) -> None:  # fmt: skip
    user, cid = await room(make_user, make_conversation)
    trigger = await ask(client, user, cid, "count to a thousand")
    fake.script(Answer(chunks=[f" {i}" for i in range(1000)], delay=0.01))
    reply_id = reply_id_for(trigger.message_id)
    job = asyncio.create_task(assistant.answer(trigger, attempt=1))
    async with asyncio.timeout(5):
        while len(await replies.history(worker_services.redis, reply_id)) < 5:  # noqa: ASYNC110 - polls Redis
            await asyncio.sleep(0.01)

    response = await client.post(f"/api/conversations/{cid}/replies/{reply_id}/cancel", headers=user.headers)
    assert response.status_code == 200 and response.json() == {"reply_id": str(reply_id), "cancelled": True}

    assert await asyncio.wait_for(job, 5) == "cancelled"
    stored = await replies.history(worker_services.redis, reply_id)
    end = stored[-1]
    assert isinstance(end, ReplyEnd) and end.cancelled
    assert all(isinstance(e, ReplyDelta) for e in stored[:-1]) and end.deltas == len(stored) - 1 < 1000
    request = fake.requests[0]
    async with asyncio.timeout(2):
        while request.closed_at is None:  # noqa: ASYNC110 - set by the server thread
            await asyncio.sleep(0.01)
    history = (await client.get(f"/api/conversations/{cid}/messages", headers=user.headers)).json()["items"]
    assert history[-1]["text"] == "".join(e.delta for e in stored[:-1]).strip() and history[-1]["seq"] == end.seq


async def test_a_provider_that_never_answers_ends_the_reply_with_a_timeout_error(
    client: AsyncTestClient[Any], make_user: MakeUser, make_conversation: MakeConversation,
    fake: FakeAnthropic, assistant: Assistant, worker_services: Services,
) -> None:  # fmt: skip
    user, cid = await room(make_user, make_conversation)
    trigger = await ask(client, user, cid, "are you there?")
    fake.script(Hang())

    assert await asyncio.wait_for(assistant.answer(trigger, attempt=1), 5) == "error"

    end = (await replies.history(worker_services.redis, reply_id_for(trigger.message_id)))[-1]
    assert isinstance(end, ReplyEnd) and end.error is not None and end.error.code == "TIMEOUT"
    assert end.message_id is None
    assert await count(worker_services, messages, messages.c.role == "assistant") == 0
    assert await count(worker_services, assistant_usage, assistant_usage.c.status == "error") == 1


async def test_a_user_over_the_daily_budget_gets_a_clear_refusal_and_no_provider_call(
    settings: Settings, fake: FakeAnthropic, client: AsyncTestClient[Any], make_user: MakeUser,
    make_conversation: MakeConversation, worker_services: Services,
) -> None:  # fmt: skip
    budgeted = dataclasses.replace(worker_services.settings, llm=llm_settings(fake, daily_token_budget=50))
    worker_services.settings = budgeted
    assistant = Assistant(worker_services, Providers(budgeted.llm))
    user, cid = await room(make_user, make_conversation)
    fake.script(Answer(chunks=["ok"], input_tokens=40, output_tokens=20))
    await assistant.answer(await ask(client, user, cid, "first"), attempt=1)

    second = await ask(client, user, cid, "second")
    assert await assistant.answer(second, attempt=1) == "refused: budget"

    end = (await replies.history(worker_services.redis, reply_id_for(second.message_id)))[-1]
    assert isinstance(end, ReplyEnd) and end.error is not None and end.error.code == "BUDGET_EXCEEDED"
    assert len(fake.requests) == 1
    await assistant.aclose()


async def test_cancel_is_refused_to_non_members_and_unknown_replies(
    client: AsyncTestClient[Any], make_user: MakeUser, make_conversation: MakeConversation, worker_services: Services
) -> None:
    user, cid = await room(make_user, make_conversation)
    stranger = await make_user()
    trigger = await ask(client, user, cid, "hi")
    reply_id = reply_id_for(trigger.message_id)
    await replies.announce(worker_services.redis, reply_id, trigger.conversation_id, user.id)

    as_stranger = await client.post(f"/api/conversations/{cid}/replies/{reply_id}/cancel", headers=stranger.headers)
    unknown = await client.post(f"/api/conversations/{cid}/replies/{uuid.uuid4()}/cancel", headers=user.headers)

    assert as_stranger.status_code == 403 and unknown.status_code == 404
    assert not await replies.cancel_requested(worker_services.redis, reply_id)
