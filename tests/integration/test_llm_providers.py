"""The providers against our local Messages-API server, through the real ``anthropic`` SDK (and httpx
for the OpenAI-compatible one): streaming, usage, retries only before the first token, timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from domain.assistant import Turn, Usage
from infrastructure.llm.anthropic_sdk import AnthropicProvider
from infrastructure.llm.base import Finished, LLMError, LLMRequest, LLMTimeout, Policy, TextDelta
from infrastructure.llm.offline import OfflineProvider, answer_for
from infrastructure.llm.openai_compat import OpenAICompatProvider
from tests.fakes.anthropic_server import Answer, FakeAnthropic, Hang, Status, words

POLICY = Policy(first_token_timeout=1.0, total_timeout=5.0, retries=2, backoff=0.05)
REQUEST = LLMRequest(
    model="claude-test",
    system="be brief",
    turns=[
        Turn(role="user", text="Ann: hi"),
        Turn(role="assistant", text="hello"),
        Turn(role="user", text="Ann: why?"),
    ],
    temperature=0.5,
    max_tokens=100,
)


@pytest.fixture
async def providers() -> AsyncIterator[list[AnthropicProvider]]:
    made: list[AnthropicProvider] = []
    yield made
    for provider in made:
        await provider.aclose()


@pytest.fixture
def anthropic(fake: FakeAnthropic, providers: list[AnthropicProvider]) -> Callable[..., AnthropicProvider]:
    def build(fake: FakeAnthropic = fake, policy: Policy = POLICY) -> AnthropicProvider:
        providers.append(AnthropicProvider(api_key="test-key", base_url=fake.base_url, policy=policy))
        return providers[-1]

    return build


async def collect(items: object) -> tuple[str, Finished | None]:
    text, finished = [], None
    async for item in items:  # type: ignore[attr-defined]
        if isinstance(item, TextDelta):
            text.append(item.text)
        else:
            finished = item
    return "".join(text), finished


async def test_anthropic_streams_the_deltas_and_reports_the_servers_usage(
    fake: FakeAnthropic, anthropic: Callable[..., AnthropicProvider]
) -> None:
    fake.script(Answer(chunks=words("Because the sky is blue."), input_tokens=321, output_tokens=7))

    text, finished = await collect(anthropic(fake).stream(REQUEST))

    assert text == "Because the sky is blue."
    assert finished is not None
    assert finished.usage == Usage(input_tokens=321, output_tokens=7)
    assert finished.stop_reason == "end_turn"
    body = fake.requests[0].body
    assert body["system"] == "be brief" and body["model"] == "claude-test" and body["stream"] is True
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][-1]["content"] == "Ann: why?"


async def test_529_and_overload_before_the_first_token_are_retried(
    fake: FakeAnthropic, anthropic: Callable[..., AnthropicProvider]
) -> None:
    fake.script(Status(529), Answer(chunks=["ok"], error_after=0), Answer(chunks=["fine"]))

    text, finished = await collect(anthropic(fake).stream(REQUEST))

    assert text == "fine" and finished is not None
    assert len(fake.requests) == 3


async def test_a_rate_limit_that_persists_ends_with_rate_limited_after_the_allowed_retries(
    fake: FakeAnthropic, anthropic: Callable[..., AnthropicProvider]
) -> None:
    fake.script(*[Status(429, "rate_limit_error", "slow down")] * 5)

    with pytest.raises(LLMError) as raised:
        await collect(anthropic(fake).stream(REQUEST))

    assert raised.value.code == "RATE_LIMITED"
    assert len(fake.requests) == 1 + POLICY.retries


async def test_a_client_error_is_not_retried(fake: FakeAnthropic, anthropic: Callable[..., AnthropicProvider]) -> None:
    fake.script(Status(400, "invalid_request_error", "bad model"))

    with pytest.raises(LLMError) as raised:
        await collect(anthropic(fake).stream(REQUEST))

    assert raised.value.code == "PROVIDER_ERROR" and "bad model" in raised.value.message
    assert len(fake.requests) == 1


async def test_an_error_after_the_first_token_is_not_retried(
    fake: FakeAnthropic, anthropic: Callable[..., AnthropicProvider]
) -> None:
    fake.script(Answer(chunks=["a", "b", "c"], error_after=2))
    seen: list[str] = []

    with pytest.raises(LLMError):
        async for item in anthropic(fake).stream(REQUEST):
            if isinstance(item, TextDelta):
                seen.append(item.text)

    assert seen == ["a", "b"]
    assert len(fake.requests) == 1


async def test_a_hang_before_the_first_token_times_out_and_closes_the_connection(
    fake: FakeAnthropic, anthropic: Callable[..., AnthropicProvider]
) -> None:
    fake.script(Hang())
    policy = Policy(first_token_timeout=0.5, total_timeout=5.0, retries=2, backoff=0.05)

    with pytest.raises(LLMTimeout):
        await collect(anthropic(fake, policy).stream(REQUEST))

    await _until(lambda: fake.requests[0].closed_at is not None)
    assert len(fake.requests) == 1  # a timeout is not retried


async def test_a_disconnect_mid_stream_ends_with_an_error(
    fake: FakeAnthropic, anthropic: Callable[..., AnthropicProvider]
) -> None:
    fake.script(Answer(chunks=["one", " two", " three"], disconnect_after=2))
    seen: list[str] = []

    with pytest.raises(LLMError) as raised:
        async for item in anthropic(fake).stream(REQUEST):
            if isinstance(item, TextDelta):
                seen.append(item.text)

    assert raised.value.code == "UNAVAILABLE"
    assert seen == ["one", " two"]
    assert len(fake.requests) == 1


async def test_closing_the_stream_mid_answer_closes_the_provider_connection(
    fake: FakeAnthropic, anthropic: Callable[..., AnthropicProvider]
) -> None:
    fake.script(Answer(chunks=["x"] * 200, delay=0.02))
    stream = anthropic(fake).stream(REQUEST)

    async for item in stream:
        if isinstance(item, TextDelta):
            break
    await stream.aclose()

    await _until(lambda: fake.requests[0].closed_at is not None)
    assert len(fake.requests[0].delta_sent_at) < 200


async def test_openai_compatible_provider_streams_deltas_and_usage(fake: FakeAnthropic) -> None:
    fake.script(Status(503), Answer(chunks=words("Local models work too."), input_tokens=12, output_tokens=4))
    provider = OpenAICompatProvider(base_url=fake.base_url + "/v1", api_key="", policy=POLICY)

    text, finished = await collect(provider.stream(REQUEST))
    await provider.aclose()

    assert text == "Local models work too."
    assert finished is not None and finished.usage == Usage(input_tokens=12, output_tokens=4)
    body = fake.requests[-1].body
    assert body["messages"][0] == {"role": "system", "content": "be brief"}
    assert body["temperature"] == 0.5 and body["messages"][-1]["content"] == "Ann: why?"


async def test_the_offline_stand_in_answers_deterministically(fake: FakeAnthropic) -> None:
    provider = OfflineProvider(delay=0.0, policy=POLICY)

    first, finished = await collect(provider.stream(REQUEST))
    second, _ = await collect(provider.stream(REQUEST))

    assert first == second == answer_for(REQUEST)
    assert "Ann: why?" in first
    assert finished is not None and finished.usage.output_tokens > 10


async def _until(condition: object, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # type: ignore[operator]  # noqa: ASYNC110 - polls state the server thread sets
            await asyncio.sleep(0.01)
