"""The provider interface and the policy every provider shares: timeouts and retries.

A provider streams ``TextDelta`` items and ends with one ``Finished`` (usage, stop reason). Errors are
``LLMError``s with a code the client can show. ``guarded`` wraps a provider's raw attempt with:

- a first-token deadline per attempt (``LLM_FIRST_TOKEN_TIMEOUT``), far below the SDKs' minutes;
- a total deadline for the whole answer (``LLM_TOTAL_TIMEOUT``), so a job never hangs;
- retries on rate limits and overload (429, 529, ``overloaded_error``) **only before the first token**:
  after it, a retry would show the client a second, different beginning.

Closing the stream (``aclose``) closes the provider's connection: that is how cancel stops generation.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, Callable
from typing import Protocol

import msgspec

from domain.assistant import Turn, Usage


class LLMRequest(msgspec.Struct, frozen=True, kw_only=True):
    model: str
    system: str
    turns: list[Turn]
    temperature: float
    max_tokens: int


class TextDelta(msgspec.Struct, frozen=True):
    text: str


class Finished(msgspec.Struct, frozen=True, kw_only=True):
    usage: Usage
    stop_reason: str | None = None
    #: The model that answered, as the provider names it.
    model: str | None = None


StreamItem = TextDelta | Finished


class LLMError(Exception):
    """A provider call failed; ``code`` goes to the client in ``stream_end.error``."""

    def __init__(self, code: str, message: str, *, retryable: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after


class LLMTimeout(LLMError):
    def __init__(self, message: str) -> None:
        super().__init__("TIMEOUT", message)


class LLMProvider(Protocol):
    """Implementations: ``anthropic_sdk.AnthropicProvider``, ``openai_compat.OpenAICompatProvider``,
    ``offline.OfflineProvider``."""

    name: str

    def stream(self, request: LLMRequest) -> AsyncGenerator[StreamItem, None]:
        """Deltas then one ``Finished``; raises ``LLMError``. ``aclose()`` ends the call."""
        ...


class Policy(msgspec.Struct, frozen=True, kw_only=True):
    first_token_timeout: float
    total_timeout: float
    retries: int
    #: First retry delay in seconds; doubles each time, jittered, capped by MAX_BACKOFF.
    backoff: float = 0.5


#: Longest pause between two attempts, whatever the provider's retry-after says.
MAX_BACKOFF = 4.0

Attempt = Callable[[LLMRequest], AsyncGenerator[StreamItem, None]]


def _delay(policy: Policy, error: LLMError, retry: int) -> float:
    if error.retry_after is not None:
        return min(error.retry_after, MAX_BACKOFF)
    pause: float = policy.backoff * 2**retry * random.uniform(0.8, 1.2)
    return min(pause, MAX_BACKOFF)


async def guarded(attempt: Attempt, request: LLMRequest, policy: Policy) -> AsyncGenerator[StreamItem, None]:
    """``attempt(request)`` under the deadlines and the retry rule above."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + policy.total_timeout
    retry = 0
    while True:
        first_deadline = min(loop.time() + policy.first_token_timeout, deadline)
        started = False
        items = attempt(request)
        try:
            while True:
                try:
                    async with asyncio.timeout_at(deadline if started else first_deadline):
                        item = await anext(items)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    if started:
                        raise LLMTimeout(f"the answer took longer than {policy.total_timeout:g}s") from None
                    raise LLMTimeout(f"no first token within {policy.first_token_timeout:g}s") from None
                started = started or isinstance(item, TextDelta)
                yield item
        except LLMError as exc:
            if started or not exc.retryable or retry >= policy.retries:
                raise
            pause = _delay(policy, exc, retry)
            if loop.time() + pause >= deadline:
                raise
        finally:
            await items.aclose()
        retry += 1
        await asyncio.sleep(pause)
