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
import msgspec
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
        # The SDK sends the request, raises its typed errors (HTTP status) and splits the Server-Sent
        # Events; the events' JSON is decoded here with msgspec, which costs a fraction of building the
        # SDK's pydantic event models: the worker relays every delta of every answer.
        # No temperature: the current Messages API (SDK 2.x) has none; it applies to openai only.
        try:
            async with self._client.messages.with_streaming_response.create(
                model=request.model,
                system=request.system,
                messages=[_message(t) for t in request.turns],
                max_tokens=request.max_tokens,
                stream=True,
            ) as response:
                async for item in _read(anthropic.AsyncStream.raw_events(response.http_response)):
                    yield item
        except anthropic.APIError as exc:
            raise _translate(exc) from exc
        except httpx2.HTTPError as exc:  # the connection broke mid-stream
            raise LLMError("UNAVAILABLE", f"the provider's stream broke off: {exc}") from exc


class _Usage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None


class _Message(msgspec.Struct):
    model: str | None = None
    usage: _Usage = msgspec.field(default_factory=_Usage)


class _Delta(msgspec.Struct):
    type: str | None = None
    text: str | None = None
    stop_reason: str | None = None


class _ErrorBody(msgspec.Struct):
    type: str = "api_error"
    message: str = ""


class _Event(msgspec.Struct):
    """The fields of every Messages streaming event that matter here."""

    type: str
    message: _Message | None = None
    delta: _Delta | None = None
    usage: _Usage | None = None
    error: _ErrorBody | None = None


_decode_event = msgspec.json.Decoder(_Event).decode


async def _read(events: AsyncIterator[Any]) -> AsyncIterator[StreamItem]:
    """Server-Sent Events to our items. Usage: input tokens come with ``message_start``, output tokens
    (cumulative) with ``message_delta``; an ``error`` event ends the stream with that error."""
    input_tokens = output_tokens = 0
    stop_reason: str | None = None
    model: str | None = None
    async for sse in events:
        if not sse.data or sse.event == "ping":
            continue
        event = _decode_event(sse.data)
        kind = event.type
        if kind == "content_block_delta" and event.delta is not None and event.delta.type == "text_delta":
            yield TextDelta(event.delta.text or "")
        elif kind == "message_start" and event.message is not None:
            model = event.message.model
            input_tokens = event.message.usage.input_tokens or 0
            output_tokens = event.message.usage.output_tokens or 0
        elif kind == "message_delta":
            if event.usage is not None:
                output_tokens = event.usage.output_tokens or output_tokens
                input_tokens = event.usage.input_tokens or input_tokens
            stop_reason = event.delta.stop_reason if event.delta is not None else stop_reason
        elif kind == "message_stop":
            usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens)
            yield Finished(usage=usage, stop_reason=stop_reason, model=model)
            return
        elif kind == "error":
            raise _stream_error(event.error or _ErrorBody())
    raise LLMError("UNAVAILABLE", "the provider's stream ended before message_stop")


def _stream_error(error: _ErrorBody) -> LLMError:
    code = "RATE_LIMITED" if error.type == "rate_limit_error" else "PROVIDER_ERROR"
    detail = error.message or error.type
    return LLMError(code, f"the provider failed: {detail}", retryable=error.type in RETRYABLE_TYPES)


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
