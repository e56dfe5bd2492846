"""Reading texts to embed and writing vectors back: the database half of embedding messages.

A vector is written only where ``embedding IS NULL``, in the same statement that checks it, and
texts are read only for messages still without one. So however often a message is handed to
``embed_messages`` (a re-delivered event, an arq retry after ``kill -9``, backfill running beside the
worker), the model sees it once in the common case and its vector is written exactly once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import asyncpg

from infrastructure.embeddings.provider import Embedder, Vector, to_pgvector

_PENDING_TEXTS = "SELECT id, text FROM messages WHERE id = ANY($1::uuid[]) AND embedding IS NULL"

_STORE = """
    UPDATE messages m SET embedding = v.embedding::vector
    FROM unnest($1::uuid[], $2::text[]) AS v(id, embedding)
    WHERE m.id = v.id AND m.embedding IS NULL
    RETURNING m.id
"""

# Oldest first, keyset-paged on (created_at, id); the partial index ix_messages_unembedded serves it.
_UNEMBEDDED = """
    SELECT id, created_at FROM messages
    WHERE embedding IS NULL AND created_at < now() - make_interval(secs => $1)
      AND (created_at, id) > ($2::timestamptz, $3::uuid)
    ORDER BY created_at, id
    LIMIT $4
"""

_COUNT_UNEMBEDDED = "SELECT count(*) FROM messages WHERE embedding IS NULL"

_EPOCH = "1970-01-01T00:00:00Z"
_ZERO = UUID(int=0)


async def pending_texts(pg: asyncpg.Pool, ids: Sequence[UUID]) -> list[tuple[UUID, str]]:
    """(id, text) of the given messages that still have no embedding (deleted ones are absent)."""
    rows = await pg.fetch(_PENDING_TEXTS, list(ids))
    return [(r["id"], r["text"]) for r in rows]


async def store_vectors(pg: asyncpg.Pool, pairs: Sequence[tuple[UUID, Vector]]) -> set[UUID]:
    """Write vectors where none is stored yet; returns the ids written."""
    if not pairs:
        return set()
    rows = await pg.fetch(_STORE, [p[0] for p in pairs], [to_pgvector(p[1]) for p in pairs])
    return {r["id"] for r in rows}


async def embed_messages(pg: asyncpg.Pool, embedder: Embedder, ids: Sequence[UUID]) -> set[UUID]:
    """Embed those of the given messages that need it, in one model call; returns the ids written."""
    todo = await pending_texts(pg, ids)
    if not todo:
        return set()
    vectors = await embedder.embed([text for _, text in todo])
    return await store_vectors(pg, [(mid, vec) for (mid, _), vec in zip(todo, vectors, strict=True)])


async def unembedded_page(
    pg: asyncpg.Pool, *, limit: int, older_than_seconds: float = 0.0, after: tuple[object, UUID] | None = None
) -> tuple[list[UUID], tuple[object, UUID] | None]:
    """Ids of messages without a vector, oldest first, and the key to pass as ``after`` next time."""
    start_at, start_id = after if after is not None else (datetime.fromisoformat(_EPOCH), _ZERO)
    rows = await pg.fetch(_UNEMBEDDED, float(older_than_seconds), start_at, start_id, limit)
    if not rows:
        return [], after
    return [r["id"] for r in rows], (rows[-1]["created_at"], rows[-1]["id"])


async def count_unembedded(pg: asyncpg.Pool) -> int:
    return int(await pg.fetchval(_COUNT_UNEMBEDDED))
