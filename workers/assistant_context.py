"""What the model sees for one answer: the system prompt, the most recent messages of the conversation
up to the trigger (within a token budget, the trigger last), and the k most similar earlier messages of
the SAME conversation (recall). Nothing from any other conversation can get in: every query here is
scoped to the trigger's conversation in its SQL.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Protocol
from uuid import UUID

import asyncpg

from domain.assistant import ContextMessage, recent_within_budget, system_prompt, to_turns
from domain.values import Message, MessageRole
from infrastructure.bootstrap import Services
from infrastructure.db.assistant import recent_messages, user_names
from infrastructure.embeddings.provider import EmbeddingsUnavailable
from infrastructure.llm.base import LLMRequest
from infrastructure.llm.registry import Choice
from infrastructure.search.retrieval import similar_messages
from infrastructure.settings import LLMSettings


class Recall(Protocol):
    """The k messages of ``conversation_id`` most similar to ``text``, among those before ``before_seq``."""

    def __call__(
        self, conversation_id: UUID, text: str, *, k: int, before_seq: int
    ) -> Awaitable[list[ContextMessage]]: ...


log = logging.getLogger("parley.assistant")


async def no_recall(conversation_id: UUID, text: str, *, k: int, before_seq: int) -> list[ContextMessage]:
    return []


def conversation_recall(services: Services) -> Recall:
    """Recall through the search's retrieval function (one conversation, by meaning). Without a working
    embedding provider the assistant answers without recall rather than not at all."""

    async def recall(conversation_id: UUID, text: str, *, k: int, before_seq: int) -> list[ContextMessage]:
        try:
            found = await similar_messages(
                services.pg, services.embeddings, conversation_id=conversation_id, query_text=text, k=k,
                before_seq=before_seq,
            )  # fmt: skip
        except EmbeddingsUnavailable as exc:
            log.warning("answering without recall: %s", exc.message)
            return []
        names = await user_names(services.pg, [r.sender_id for r in found if r.sender_id is not None])
        return [
            ContextMessage(
                message=Message(
                    id=r.message_id,
                    conversation_id=conversation_id,
                    seq=r.seq,
                    sender_id=r.sender_id,
                    role=MessageRole(r.role),
                    text=r.text,
                    client_msg_id=None,
                    created_at=r.created_at,
                ),
                author=None if r.sender_id is None else names.get(r.sender_id),
            )
            for r in found
        ]

    return recall


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
