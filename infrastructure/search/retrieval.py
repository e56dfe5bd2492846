"""Retrieval for the assistant: the earlier messages of ONE conversation most similar to a query text.

This is the only function the assistant uses to recall history (architecture flow 5). It never looks
outside the conversation it is given: the conversation id is a condition of the SQL itself, so a
secret posted in another conversation (of the same or another user) cannot come back, whatever the
query. The caller (the assistant's job) decides which conversation it is answering in and has
already checked that the conversation exists and has the assistant enabled.

Usage (inside an arq job, with the worker's ``ctx``)::

    from infrastructure.search.retrieval import similar_messages
    recalled = await similar_messages(
        ctx["services"].pg, ctx["services"].embeddings,
        conversation_id=conv_id, query_text=trigger.text, k=5,
        exclude_ids=[m.id for m in recent_window], before_seq=trigger.seq,
    )
    for r in recalled:  # nearest first
        print(r.seq, r.distance, r.text)

Distances are cosine distances in [0, 2] (0 = same direction). Messages without an embedding yet
(the worker has not reached them) are not candidates. Exact search over the conversation's rows
(the ``(conversation_id, seq)`` index finds them; no approximate index), so results are complete.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from infrastructure.embeddings.provider import Embedder, to_pgvector

#: Most messages one call may return.
MAX_K = 50

# "+ 0": an exact scan over this conversation's rows, never the global HNSW index (which would
# rank the whole table's nearest vectors first and then drop the other conversations' rows).
_SIMILAR = """
    SELECT m.id, m.seq, m.sender_id, m.role, m.text, m.created_at, (m.embedding <=> $2::vector) AS distance
    FROM messages m
    WHERE m.conversation_id = $1
      AND m.embedding IS NOT NULL
      AND m.seq < $3
      AND NOT (m.id = ANY($4::uuid[]))
    ORDER BY (m.embedding <=> $2::vector) + 0, m.seq
    LIMIT $5
"""


@dataclass(frozen=True, slots=True)
class Retrieved:
    """One recalled message of the conversation, with its cosine distance to the query."""

    message_id: UUID
    seq: int
    sender_id: UUID | None
    role: str  # "user" | "assistant" | "system"
    text: str
    created_at: datetime
    distance: float


async def similar_messages(
    pg: asyncpg.Pool,
    embedder: Embedder,
    *,
    conversation_id: UUID,
    query_text: str,
    k: int = 5,
    exclude_ids: Sequence[UUID] = (),
    before_seq: int | None = None,
) -> list[Retrieved]:
    """The ``k`` messages of ``conversation_id`` nearest in meaning to ``query_text``, nearest first.

    - ``exclude_ids``: messages the caller already has (the recent window, the trigger itself).
    - ``before_seq``: only messages with ``seq < before_seq`` ("earlier" than the trigger); None: all.
    - Raises ``EmbeddingsUnavailable`` (a ``domain.errors.Unavailable``) when no embedding provider
      works; the assistant should then answer without recall rather than fail.
    """
    if k <= 0:
        return []
    vector = await embedder.embed_one(query_text)
    return await similar_to_vector(
        pg,
        conversation_id=conversation_id,
        vector=vector,
        k=k,
        exclude_ids=exclude_ids,
        before_seq=before_seq,
    )


async def similar_to_vector(
    pg: asyncpg.Pool,
    *,
    conversation_id: UUID,
    vector: Sequence[float],
    k: int = 5,
    exclude_ids: Sequence[UUID] = (),
    before_seq: int | None = None,
) -> list[Retrieved]:
    """``similar_messages`` for a vector already computed (e.g. the trigger message's own)."""
    rows = await pg.fetch(
        _SIMILAR,
        conversation_id,
        to_pgvector(vector),
        before_seq if before_seq is not None else 2**62,
        list(exclude_ids),
        min(k, MAX_K),
    )
    return [
        Retrieved(
            message_id=r["id"],
            seq=r["seq"],
            sender_id=r["sender_id"],
            role=r["role"],
            text=r["text"],
            created_at=r["created_at"],
            distance=float(r["distance"]),
        )
        for r in rows
    ]
