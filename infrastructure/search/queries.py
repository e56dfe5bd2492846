"""Message search over the caller's conversations: full text, semantic (pgvector) and hybrid (RRF).

Every statement joins ``participants`` on the viewer, so only conversations the caller is in right
now can match: membership is enforced by the SQL itself, never by filtering results afterwards.

- ``text``: ``websearch_to_tsquery('simple', q)`` against the generated ``messages.search`` column
  (GIN index), ranked by ``ts_rank_cd``.
- ``semantic``: cosine distance (``<=>``) between the query's vector and ``messages.embedding``.
  When the caller can see few messages (or searches one conversation) the distance is computed
  exactly over those rows; otherwise the HNSW index yields the nearest candidates of the whole table,
  which are then filtered by membership, falling back to the exact scan when too few survive (the
  number of candidates scales with the page depth and the share of the table the caller sees). (pgvector
  0.6 has no iterative index scans, so an index scan behind a selective filter would silently return
  too few rows: the exact path keeps results right.)
- ``hybrid``: reciprocal rank fusion, ``Σ 1/(60 + rank)``, of the semantic list and a lexical list
  that matches ANY word of the query that is neither a stop word nor in over 1 % of all messages (so
  a remembered word counts even when the rest of the query is a paraphrase).

Ranked results are paged by offset (the cursor carries it) to a depth of ``MAX_DEPTH`` hits.
Snippets are HTML: the message text escaped, query words wrapped in ``<mark>``…``</mark>``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from uuid import UUID

import asyncpg
import msgspec

from domain.values import Message
from infrastructure.db.repositories import message_from_row

#: Deepest hit a client can page to; deeper pages of ranked search are noise and cost.
MAX_DEPTH = 200
#: RRF's k (Cormack et al. 2009): damps the weight of the very first ranks.
RRF_K = 60
#: Up to this many visible messages, semantic search computes exact distances (cheap and complete).
EXACT_SCAN_MAX_ROWS = 20_000
#: HNSW candidates fetched from the whole table before the membership filter (and ``hnsw.ef_search``):
#: enough for the page depth given the share of the table the caller sees, twice over, within these.
ANN_MIN_CANDIDATES = 400
ANN_MAX_CANDIDATES = 1_000
#: Hybrid's lexical leg ignores words in more than this share of all messages (ANALYZE's statistics of
#: the tsvector column): ranking tens of thousands of rows for a word that says little costs more
#: than a whole semantic search, and the semantic leg carries the meaning anyway.
COMMON_WORD_SHARE = 0.01
#: ... once the table is this large (below it every word is cheap to rank, and statistics are thin).
COMMON_WORD_MIN_ROWS = 50_000


class Mode(enum.StrEnum):
    TEXT = "text"
    SEMANTIC = "semantic"
    HYBRID = "hybrid"


@dataclass(frozen=True)
class SearchRequest:
    viewer_id: UUID
    query: str
    mode: Mode
    limit: int
    offset: int = 0
    conversation_id: UUID | None = None
    #: The query's vector (pgvector text form), required by semantic and hybrid.
    vector: str | None = None


class Hit(msgspec.Struct, frozen=True, kw_only=True):
    """One search result: the message, where it is (conversation id, title, seq), why it matched."""

    message: Message
    conversation_id: UUID
    conversation_title: str
    seq: int
    #: HTML: the text escaped, query words in ``<mark>``; at most two fragments of ~24 words.
    snippet: str
    #: Mode-specific, higher is better: ``ts_rank_cd`` (text), ``1 - distance`` (semantic), RRF (hybrid).
    score: float
    #: Cosine distance to the query's vector (semantic and hybrid hits that had one), else null.
    distance: float | None


# ---------------------------------------------------------------------------------------------
# SQL fragments. $1 viewer, $2 conversation filter (NULL: all), $3 text query, $4 vector, $5 depth.

_VISIBLE = """
    JOIN participants p ON p.conversation_id = m.conversation_id AND p.user_id = $1
    WHERE ($2::uuid IS NULL OR m.conversation_id = $2::uuid)
"""

#: The parsed text query, once per statement. ``text`` (and the snippets of ``semantic``): web-search
#: syntax, all words required (``"a phrase"``, ``or``, ``-word``). ``hybrid``: any of the query's
#: words that is neither an English stop word nor common in the table (the semantic leg carries the
#: meaning; the lexical leg brings exact, rare words), from letter/digit tokens only, so nothing the
#: user typed is parsed as syntax.
_QUERY = {
    "strict": "SELECT websearch_to_tsquery('simple', $3) AS query",
    "any": f"""
        SELECT coalesce(to_tsquery('simple', string_agg(quote_literal(w.word), ' | ')), ''::tsquery) AS query
        FROM (SELECT DISTINCT lower(token) AS word FROM ts_debug('english', $3)
              WHERE alias IN ('asciiword', 'word', 'numword', 'int', 'uint') AND lexemes <> '{{}}'
              LIMIT 32) w
        WHERE w.word NOT IN (
            SELECT c.word FROM pg_stats s,
                 unnest(s.most_common_elems::text::text[], s.most_common_elem_freqs) AS c(word, freq)
            WHERE s.schemaname = current_schema() AND s.tablename = 'messages' AND s.attname = 'search'
              AND c.word IS NOT NULL AND c.freq > {COMMON_WORD_SHARE}
              AND (SELECT reltuples FROM pg_class WHERE oid = 'messages'::regclass) > {COMMON_WORD_MIN_ROWS})""",
}

_TEXT_CANDIDATES = f"""
    text_hits AS MATERIALIZED (
        SELECT m.id, ts_rank_cd(m.search, tsq.query) AS score,
               row_number() OVER (ORDER BY ts_rank_cd(m.search, tsq.query) DESC, m.id) AS rank
        FROM messages m CROSS JOIN tsq
        {_VISIBLE} AND m.search @@ tsq.query
        ORDER BY score DESC, m.id
        LIMIT $5
    )"""

# "+ 0" keeps the planner off the HNSW index: this path must be exact over the visible rows.
_SEMANTIC_EXACT = f"""
    semantic_hits AS MATERIALIZED (
        SELECT m.id, (m.embedding <=> $4::vector) AS distance,
               row_number() OVER (ORDER BY (m.embedding <=> $4::vector) + 0, m.id) AS rank
        FROM messages m
        {_VISIBLE} AND m.embedding IS NOT NULL
        ORDER BY (m.embedding <=> $4::vector) + 0, m.id
        LIMIT $5
    )"""

_SEMANTIC_ANN = f"""
    ann AS MATERIALIZED (
        SELECT id, embedding <=> $4::vector AS distance FROM messages
        WHERE embedding IS NOT NULL
        ORDER BY embedding <=> $4::vector
        LIMIT {{candidates}}
    ),
    semantic_hits AS MATERIALIZED (
        SELECT m.id, a.distance, row_number() OVER (ORDER BY a.distance, m.id) AS rank
        FROM ann a JOIN messages m ON m.id = a.id
        {_VISIBLE}
        ORDER BY a.distance, m.id
        LIMIT $5
    )"""

_FUSED = {
    Mode.TEXT: "SELECT id, score, NULL::float8 AS distance FROM text_hits",
    Mode.SEMANTIC: "SELECT id, 1 - distance AS score, distance FROM semantic_hits",
    Mode.HYBRID: f"""
        SELECT coalesce(t.id, s.id) AS id,
               coalesce(1.0 / ({RRF_K} + t.rank), 0) + coalesce(1.0 / ({RRF_K} + s.rank), 0) AS score,
               s.distance
        FROM text_hits t FULL OUTER JOIN semantic_hits s ON s.id = t.id""",
}

_PAGE = """
    SELECT m.id, m.conversation_id, c.title, m.seq, m.sender_id, m.role, m.text, m.client_msg_id, m.created_at,
           f.score::float8 AS score, f.distance::float8 AS distance,
           ts_headline('simple',
                       replace(replace(replace(m.text, '&', '&amp;'), '<', '&lt;'), '>', '&gt;'),
                       tsq.query,
                       'StartSel=<mark>, StopSel=</mark>, MaxWords=24, MinWords=8, MaxFragments=2') AS snippet
    FROM page f
    CROSS JOIN tsq
    JOIN messages m ON m.id = f.id
    JOIN conversations c ON c.id = m.conversation_id
    ORDER BY f.score DESC, m.id
"""

# How many messages the caller can see (an upper bound: last_seq counts deleted ones too), and the table's
# size as the planner last estimated it (-1 before the first ANALYZE).
_VISIBLE_ROWS = """
    SELECT coalesce(sum(c.last_seq), 0) AS visible,
           (SELECT reltuples::bigint FROM pg_class WHERE oid = 'messages'::regclass) AS total
    FROM participants p JOIN conversations c ON c.id = p.conversation_id
    WHERE p.user_id = $1
"""


def _statement(mode: Mode, *, candidates: int | None, offset: int, limit: int) -> str:
    """The statement for ``mode``; ``candidates`` None: exact semantic leg, else HNSW with that many."""
    ctes = [f"tsq AS MATERIALIZED ({_QUERY['any' if mode is Mode.HYBRID else 'strict']})"]
    if mode in (Mode.TEXT, Mode.HYBRID):
        ctes.append(_TEXT_CANDIDATES)
    if mode in (Mode.SEMANTIC, Mode.HYBRID):
        ctes.append(_SEMANTIC_EXACT if candidates is None else _SEMANTIC_ANN.format(candidates=int(candidates)))
    page = f"page AS ({_FUSED[mode]} ORDER BY score DESC, id OFFSET {int(offset)} LIMIT {int(limit)})"
    return "WITH " + ",".join([*ctes, page]) + _PAGE


async def search(pg: asyncpg.Pool, request: SearchRequest) -> tuple[list[Hit], bool]:
    """One page of hits (best first) and whether more exist within ``MAX_DEPTH``."""
    depth = min(request.offset + request.limit + 1, MAX_DEPTH)
    if request.offset >= depth:
        return [], False
    take = min(request.limit + 1, depth - request.offset)
    needs_vector = request.mode is not Mode.TEXT
    if needs_vector and request.vector is None:
        raise ValueError("semantic and hybrid search need the query vector")
    args = (request.viewer_id, request.conversation_id, request.query, request.vector, depth)
    async with pg.acquire() as conn:
        candidates = None
        if needs_vector and request.conversation_id is None:
            candidates = _ann_candidates(await conn.fetchrow(_VISIBLE_ROWS, request.viewer_id), depth)
        rows = await _run(conn, request.mode, candidates, request.offset, take, args)
        if candidates is not None and len(rows) < take:
            # The table's nearest candidates were mostly in others' conversations: be exact instead.
            rows = await _run(conn, request.mode, None, request.offset, take, args)
    hits = [_hit(r) for r in rows[: request.limit]]
    more = len(rows) > request.limit and request.offset + request.limit < MAX_DEPTH
    return hits, more


def _ann_candidates(counts: asyncpg.Record, depth: int) -> int | None:
    """None (exact) when the caller sees few messages; else HNSW candidates for ``depth`` hits."""
    visible = int(counts["visible"])
    if visible <= EXACT_SCAN_MAX_ROWS:
        return None
    total = max(int(counts["total"] or 0), visible)
    wanted = math.ceil(2 * depth * total / visible)
    return min(max(wanted, ANN_MIN_CANDIDATES), ANN_MAX_CANDIDATES)


async def _run(
    conn: asyncpg.Connection, mode: Mode, candidates: int | None, offset: int, take: int, args: tuple[object, ...]
) -> list[asyncpg.Record]:
    sql = _statement(mode, candidates=candidates, offset=offset, limit=take)
    if mode is Mode.TEXT:
        # $4 is not referenced: pass the text statement only the parameters it uses.
        sql = sql.replace("$5", "$4")
        args = (args[0], args[1], args[2], args[4])
    if candidates is not None:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL hnsw.ef_search = {int(candidates)}")
            return list(await conn.fetch(sql, *args))
    return list(await conn.fetch(sql, *args))


def _hit(r: asyncpg.Record) -> Hit:
    return Hit(
        message=message_from_row(r),
        conversation_id=r["conversation_id"],
        conversation_title=r["title"],
        seq=r["seq"],
        snippet=r["snippet"],
        score=float(r["score"]),
        distance=None if r["distance"] is None else float(r["distance"]),
    )
