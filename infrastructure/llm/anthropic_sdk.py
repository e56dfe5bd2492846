"""Anthropic's Messages API through the official ``anthropic`` SDK, streaming.

The SDK's own retries are off (``max_retries=0``): its policy retries whatever fails, while ours
(``base.guarded``) retries only rate limits and overload, and only before the first token. Its
minutes-long default timeout is replaced by ours. ``ANTHROPIC_BASE_URL`` points it elsewhere (the
tests' local server speaks the same streaming protocol).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import anthropic
import httpx2
from anthropic.types import AssistantMessageParam, UserMessageParam

from domain.assistant import Turn, Usage
from infrastructure.llm.base import Finished, LLMError, LLMRequest, Policy, StreamItem, TextDelta, guarded

#: HTTP statuses and error types that mean "try again shortly": rate limited, overloaded.
RETRYABLE_STATUS = {429, 529}
RETRYABLE_TYPES = {"rate_limit_error", "overloaded_error"}
CONNECT_TIMEOUT = 5.0

MessageParam = UserMessageParam | AssistantMessageParam


class AnthropicProvider:
    name = "anthropic"

    def __init__(self, *, api_key: str, base_url: str | None, policy: Policy) -> None:
        self._policy = policy
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=base_url or None,
            max_retries=0,
            timeout=httpx2.Timeout(policy.total_timeout, connect=CONNECT_TIMEOUT),
        )

    def stream(self, request: LLMRequest) -> AsyncGenerator[StreamItem, None]:
        return guarded(self._attempt, request, self._policy)

    async def aclose(self) -> None:
        await self._client.close()

    async def _attempt(self, request: LLMRequest) -> AsyncGenerator[StreamItem, None]:
        try:
            # No temperature: the current Messages API (SDK 2.x) has none; it applies to openai only.
            events: Any = await self._client.messages.create(
                model=request.model,
                system=request.system,
                messages=[_message(t) for t in request.turns],
                max_tokens=request.max_tokens,
                stream=True,
            )
        except anthropic.APIError as exc:
            raise _translate(exc) from exc
        try:
            async for item in _read(events):
                yield item
        except anthropic.APIError as exc:
            raise _translate(exc) from exc
        except httpx2.HTTPError as exc:  # the connection broke mid-stream
            raise LLMError("UNAVAILABLE", f"the provider's stream broke off: {exc}") from exc
        finally:
            await events.close()


async def _read(events: Any) -> AsyncIterator[StreamItem]:
    """Raw stream events to our items. Usage: input tokens come with ``message_start``, output tokens
    (cumulative) with ``message_delta``."""
    input_tokens = output_tokens = 0
    stop_reason: str | None = None
    model: str | None = None
    async for event in events:
        kind = event.type
        if kind == "message_start":
            model = event.message.model
            input_tokens = event.message.usage.input_tokens or 0
            output_tokens = event.message.usage.output_tokens or 0
        elif kind == "content_block_delta" and event.delta.type == "text_delta":
            yield TextDelta(event.delta.text)
        elif kind == "message_delta":
            output_tokens = event.usage.output_tokens or output_tokens
            input_tokens = event.usage.input_tokens or input_tokens
            stop_reason = event.delta.stop_reason
        elif kind == "message_stop":
            yield Finished(
                usage=Usage(input_tokens=input_tokens, output_tokens=output_tokens),
                stop_reason=stop_reason,
                model=model,
            )
            return
    raise LLMError("UNAVAILABLE", "the provider's stream ended before message_stop")


def _message(turn: Turn) -> MessageParam:
    if turn.role == "assistant":
        return AssistantMessageParam(role="assistant", content=turn.text)
    return UserMessageParam(role="user", content=turn.text)


def _translate(exc: anthropic.APIError) -> LLMError:
    if isinstance(exc, anthropic.APITimeoutError):
        return LLMError("TIMEOUT", "the provider did not answer in time")
    if isinstance(exc, anthropic.APIConnectionError):
        return LLMError("UNAVAILABLE", "the provider could not be reached")
    if isinstance(exc, anthropic.APIStatusError):
        kind = exc.type or ""
        retryable = exc.status_code in RETRYABLE_STATUS or kind in RETRYABLE_TYPES
        retry_after = _retry_after(exc.response.headers.get("retry-after"))
        code = "RATE_LIMITED" if exc.status_code == 429 or kind == "rate_limit_error" else "PROVIDER_ERROR"
        detail = exc.api_message or kind or f"HTTP {exc.status_code}"
        return LLMError(code, f"the provider refused: {detail}", retryable=retryable, retry_after=retry_after)
    return LLMError("PROVIDER_ERROR", str(exc))


def _retry_after(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None
