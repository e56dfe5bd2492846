"""The policy every provider shares (``infrastructure/llm/base.guarded``): retries only before the first
token, a first-token deadline per attempt, a total deadline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from domain.assistant import Turn, Usage
from infrastructure.llm.base import Finished, LLMError, LLMRequest, LLMTimeout, Policy, StreamItem, TextDelta, guarded

REQUEST = LLMRequest(model="m", system="s", turns=[Turn(role="user", text="hi")], temperature=0.0, max_tokens=10)
POLICY = Policy(first_token_timeout=0.2, total_timeout=1.0, retries=2, backoff=0.01)


def scripted(*attempts: list[object]) -> tuple[list[int], object]:
    """An attempt function playing one script per call: text, an exception to raise, or a pause."""
    calls: list[int] = []

    async def attempt(request: LLMRequest) -> AsyncGenerator[StreamItem, None]:
        calls.append(1)
        for step in attempts[len(calls) - 1]:
            if isinstance(step, Exception):
                raise step
            if isinstance(step, float):
                await asyncio.sleep(step)
            else:
                yield TextDelta(str(step))
        yield Finished(usage=Usage(input_tokens=1, output_tokens=1))

    return calls, attempt


async def run(attempt: object, policy: Policy = POLICY) -> str:
    return "".join([i.text async for i in guarded(attempt, REQUEST, policy) if isinstance(i, TextDelta)])  # type: ignore[arg-type]


async def test_overload_before_the_first_token_is_retried() -> None:
    calls, attempt = scripted([LLMError("PROVIDER_ERROR", "overloaded", retryable=True)], ["ok"])
    assert await run(attempt) == "ok" and len(calls) == 2


async def test_an_error_after_the_first_token_is_never_retried() -> None:
    calls, attempt = scripted(["a", LLMError("PROVIDER_ERROR", "overloaded", retryable=True)], ["b"])
    with pytest.raises(LLMError):
        await run(attempt)
    assert len(calls) == 1


async def test_retries_stop_after_the_allowed_number() -> None:
    overloaded = LLMError("RATE_LIMITED", "slow down", retryable=True)
    calls, attempt = scripted([overloaded], [overloaded], [overloaded], ["never"])
    with pytest.raises(LLMError):
        await run(attempt)
    assert len(calls) == 1 + POLICY.retries


async def test_silence_before_the_first_token_is_a_timeout() -> None:
    _, attempt = scripted([5.0, "late"])
    with pytest.raises(LLMTimeout, match="first token"):
        await run(attempt)


async def test_an_answer_past_the_total_deadline_is_a_timeout() -> None:
    _, attempt = scripted(["a", 0.15, "b", 0.15, "c", 0.15, "d", 0.15, "e", 0.15, "f", 0.15, "g", 0.15, "h"])
    with pytest.raises(LLMTimeout, match="longer than"):  # 1.05 s of pauses against a 1 s deadline
        await run(attempt, Policy(first_token_timeout=1.0, total_timeout=1.0, retries=0))
