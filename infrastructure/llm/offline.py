"""The offline stand-in: a deterministic answer streamed at a realistic pace, no network, no key.

``parley dev`` uses it when no provider key is set, so the whole product (streaming, cancel, resume,
usage) works on a bare machine. It says plainly that it is a stand-in, and quotes what it was asked.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator

from domain.assistant import Usage, estimate_tokens
from infrastructure.llm.base import Finished, LLMRequest, Policy, StreamItem, TextDelta, guarded

MODEL = "offline"
_WORDS = re.compile(r"\S+\s*")


def answer_for(request: LLMRequest) -> str:
    """The same request always gets the same answer."""
    question = request.turns[-1].text if request.turns else ""
    quoted = question if len(question) <= 200 else question[:197] + "..."
    return (
        f"I am Parley's offline stand-in for a language model, so I cannot really think about "
        f'"{quoted}". Set LLM_PROVIDER and a key (or an OpenAI-compatible server) for real answers. '
        f"Meanwhile this reply streams word by word, like a real one, so you can try cancel and resume."
    )


class OfflineProvider:
    name = "offline"

    def __init__(self, *, delay: float, policy: Policy) -> None:
        self._delay = delay
        self._policy = policy

    def stream(self, request: LLMRequest) -> AsyncGenerator[StreamItem, None]:
        return guarded(self._attempt, request, self._policy)

    async def aclose(self) -> None:
        return None

    async def _attempt(self, request: LLMRequest) -> AsyncGenerator[StreamItem, None]:
        words = _WORDS.findall(answer_for(request))
        for word in words:
            await asyncio.sleep(self._delay)
            yield TextDelta(word)
        prompt = request.system + "".join(t.text for t in request.turns)
        yield Finished(
            usage=Usage(input_tokens=estimate_tokens(prompt), output_tokens=len(words)),
            stop_reason="end_turn",
            model=MODEL,
        )
