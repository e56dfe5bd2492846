"""``GET /api/search``: full-text, semantic and hybrid search over the caller's conversations.

Thin: validate the query, embed it when the mode needs a vector (``UNAVAILABLE`` without a provider),
run ``infrastructure.search.queries.search`` (membership enforced in its SQL), page by cursor.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from typing import Annotated
from uuid import UUID

import msgspec
from litestar import Controller, get
from litestar.params import FromQuery, QueryParameter

from app.controllers.conversations import require_member
from app.deps import AUTHENTICATED, ServicesDep, UserDep
from app.schemas import NO_NUL
from domain.errors import InvalidInput
from infrastructure.embeddings.provider import to_pgvector
from infrastructure.search.queries import MAX_DEPTH, Hit, Mode, SearchRequest, search

#: Longer queries are refused (400): nobody types more, and each costs a model call and a tsquery.
MAX_QUERY_CHARS = 1000

Query = Annotated[
    str, QueryParameter(min_length=1, max_length=MAX_QUERY_CHARS, pattern=NO_NUL, description="what to look for")
]
Limit = Annotated[int, QueryParameter(ge=1, le=50, description="hits per page")]


class SearchPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[Hit]
    has_more: bool
    next_cursor: str | None = None
    mode: Mode


class _Cursor(msgspec.Struct, frozen=True, array_like=True):
    offset: int
    #: Ties the cursor to the query it came from: reusing it for another query is a 400.
    fingerprint: int


def _fingerprint(q: str, mode: Mode, conversation_id: UUID | None) -> int:
    return zlib.crc32(f"{mode}\x00{conversation_id}\x00{q}".encode())


def _encode_cursor(cursor: _Cursor) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(cursor)).decode().rstrip("=")


def _decode_cursor(raw: str, fingerprint: int) -> int:
    try:
        cursor = msgspec.json.decode(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)), type=_Cursor)
    except (binascii.Error, ValueError, msgspec.DecodeError) as exc:
        raise InvalidInput("cursor is not one this server issued") from exc
    if cursor.fingerprint != fingerprint or not 0 <= cursor.offset < MAX_DEPTH:
        raise InvalidInput("cursor belongs to another search")
    return cursor.offset


class SearchController(Controller):
    path = "/api/search"
    tags = ["search"]
    dependencies = AUTHENTICATED

    @get("/", operation_id="SearchMessages", opt={"errors": [403, 404]})
    async def search_messages(
        self,
        services: ServicesDep,
        user: UserDep,
        q: Query,
        mode: FromQuery[Mode] = Mode.HYBRID,
        conversation_id: FromQuery[UUID | None] = None,
        limit: Limit = 20,
        cursor: FromQuery[str | None] = None,
    ) -> SearchPage:
        """Messages of the caller's conversations matching ``q``, best first (see docs/search.md)."""
        query = q.strip()
        if not query:
            raise InvalidInput("q must contain something to search for")
        if conversation_id is not None:
            await require_member(services, conversation_id, user.id)  # a clear 404/403, as elsewhere
        fingerprint = _fingerprint(query, mode, conversation_id)
        offset = _decode_cursor(cursor, fingerprint) if cursor else 0
        vector = None
        if mode is not Mode.TEXT:
            vector = to_pgvector(await services.embeddings.embed_one(query))
        request = SearchRequest(
            viewer_id=user.id,
            query=query,
            mode=mode,
            limit=limit,
            offset=offset,
            conversation_id=conversation_id,
            vector=vector,
        )
        hits, more = await search(services.pg, request)
        next_cursor = _encode_cursor(_Cursor(offset + limit, fingerprint)) if more else None
        return SearchPage(items=hits, has_more=more, next_cursor=next_cursor, mode=mode)
