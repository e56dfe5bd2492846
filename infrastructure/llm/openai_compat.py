"""Any OpenAI-compatible chat endpoint (Ollama, vLLM, llama.cpp server) over httpx streaming.

``POST {OPENAI_BASE_URL}/chat/completions`` with ``stream: true``; Server-Sent Events ``data: {chunk}``
lines end with ``data: [DONE]``. Usage arrives in the last chunk when the server honours
``stream_options.include_usage``; servers that do not send it are counted as zero.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import httpx
import msgspec

from domain.assistant import Usage
from infrastructure.llm.base import Finished, LLMError, LLMRequest, Policy, StreamItem, TextDelta, guarded

#: 503 is how vLLM and llama.cpp say "overloaded".
RETRYABLE_STATUS = {429, 503, 529}
CONNECT_TIMEOUT = 5.0


class OpenAICompatProvider:
    name = "openai"

    def __init__(self, *, base_url: str, api_key: str, policy: Policy) -> None:
        self._policy = policy
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(policy.total_timeout, connect=CONNECT_TIMEOUT),
        )

    def stream(self, request: LLMRequest) -> AsyncGenerator[StreamItem, None]:
        return guarded(self._attempt, request, self._policy)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _attempt(self, request: LLMRequest) -> AsyncGenerator[StreamItem, None]:
        body = {
            "model": request.model,
            "messages": [{"role": "system", "content": request.system}]
            + [{"role": t.role, "content": t.text} for t in request.turns],
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        try:
            async with self._http.stream("POST", "/chat/completions", json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _status_error(response)
                async for item in _read(response.aiter_lines()):
                    yield item
        except httpx.TimeoutException as exc:
            raise LLMError("TIMEOUT", "the provider did not answer in time") from exc
        except httpx.HTTPError as exc:
            raise LLMError("UNAVAILABLE", f"the provider could not be reached or broke off: {exc}") from exc


async def _read(lines: AsyncIterator[str]) -> AsyncIterator[StreamItem]:
    usage = Usage()
    stop_reason: str | None = None
    model: str | None = None
    async for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            yield Finished(usage=usage, stop_reason=stop_reason, model=model)
            return
        chunk: dict[str, Any] = msgspec.json.decode(data)
        if "error" in chunk:
            raise LLMError("PROVIDER_ERROR", f"the provider failed: {chunk['error']}")
        model = chunk.get("model") or model
        if chunk.get("usage"):
            usage = Usage(
                input_tokens=chunk["usage"].get("prompt_tokens") or 0,
                output_tokens=chunk["usage"].get("completion_tokens") or 0,
            )
        for choice in chunk.get("choices") or []:
            text = (choice.get("delta") or {}).get("content")
            if text:
                yield TextDelta(text)
            stop_reason = choice.get("finish_reason") or stop_reason
    raise LLMError("UNAVAILABLE", "the provider's stream ended before [DONE]")


def _status_error(response: httpx.Response) -> LLMError:
    retry_after = response.headers.get("retry-after")
    return LLMError(
        "RATE_LIMITED" if response.status_code == 429 else "PROVIDER_ERROR",
        f"the provider refused: HTTP {response.status_code} {response.text[:200]}",
        retryable=response.status_code in RETRYABLE_STATUS,
        retry_after=float(retry_after) if retry_after and retry_after.isdigit() else None,
    )
