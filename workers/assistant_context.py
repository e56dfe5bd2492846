"""What the model sees for one answer: the system prompt, the most recent messages of the conversation
up to the trigger (within a token budget, the trigger last), and the k most similar earlier messages of
the SAME conversation (recall). Nothing from any other conversation can get in: every query here is
scoped to the trigger's conversation in its SQL.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol
from uuid import UUID

import asyncpg

from domain.assistant import ContextMessage, recent_within_budget, system_prompt, to_turns
from infrastructure.db.assistant import recent_messages
from infrastructure.llm.base import LLMRequest
from infrastructure.llm.registry import Choice
from infrastructure.settings import LLMSettings


class Recall(Protocol):
    """The k messages of ``conversation_id`` most similar to ``text``, among those before ``before_seq``."""

    def __call__(
        self, conversation_id: UUID, text: str, *, k: int, before_seq: int
    ) -> Awaitable[list[ContextMessage]]: ...


async def no_recall(conversation_id: UUID, text: str, *, k: int, before_seq: int) -> list[ContextMessage]:
    return []


async def build_request(
    pool: asyncpg.Pool,
    recall: Recall,
    settings: LLMSettings,
    choice: Choice,
    *,
    conversation_id: UUID,
    trigger_seq: int,
) -> LLMRequest:
    newest_first = await recent_messages(pool, conversation_id, upto_seq=trigger_seq, limit=settings.context_messages)
    recent = recent_within_budget(newest_first, max_messages=settings.context_messages, budget=settings.context_tokens)
    recalled: list[ContextMessage] = []
    if recent and settings.retrieval_k > 0:
        question, oldest = recent[-1].message.text, recent[0].message.seq
        recalled = await recall(conversation_id, question, k=settings.retrieval_k, before_seq=oldest)
        # Belt and braces: whatever recall returns, only this conversation's earlier messages get in.
        recalled = [m for m in recalled if m.message.conversation_id == conversation_id and m.message.seq < oldest]
    return LLMRequest(
        model=choice.model,
        system=system_prompt(choice.system_prompt, sorted(recalled, key=lambda m: m.message.seq)),
        turns=to_turns(recent),
        temperature=choice.temperature,
        max_tokens=settings.max_tokens,
    )
