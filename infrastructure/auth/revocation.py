"""The session record in PostgreSQL: revoked access tokens, deleted accounts, used WS tickets.

Every check asks PostgreSQL (one primary-key lookup, on the asyncpg pool) instead of a Redis cache: a
Redis restored from an older snapshot, wiped, or paused can then neither forget a logout nor let a
ticket be used twice, and sends do not wait on Redis to authenticate. The same record answers the WS
nodes' periodic sweep (``invalid_sessions``), which closes sockets whose token was revoked or whose
account was deleted.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from uuid import UUID

import asyncpg

# For each (user, jti), in the order given: does the token's account still exist, and was the token
# revoked? One round trip for every check waiting (``SessionRecord.check``).
_CHECK = """
    SELECT EXISTS (SELECT 1 FROM users u WHERE u.id = s.user_id) AS user_exists,
           EXISTS (SELECT 1 FROM revoked_tokens r WHERE r.jti = s.jti) AS revoked
    FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS s(user_id, jti, n)
    ORDER BY s.n
"""
# Revoke, pruning a few expired entries on the way (they can never match again).
_REVOKE = """
    WITH pruned AS (
        DELETE FROM revoked_tokens WHERE jti IN (
            SELECT jti FROM revoked_tokens WHERE expires_at < now() LIMIT 100
        )
    )
    INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING
"""
# Sessions (jti, user) among the given ones that must end now.
_INVALID = """
    SELECT s.jti FROM unnest($1::text[], $2::uuid[]) AS s(jti, user_id)
    WHERE EXISTS (SELECT 1 FROM revoked_tokens r WHERE r.jti = s.jti)
       OR NOT EXISTS (SELECT 1 FROM users u WHERE u.id = s.user_id)
"""
# (user, conversation) pairs, among the given ones, where the user is no longer a member.
_LOST_MEMBERSHIPS = """
    SELECT DISTINCT s.user_id, s.conversation_id
    FROM unnest($1::uuid[], $2::uuid[]) AS s(user_id, conversation_id)
    WHERE NOT EXISTS (
        SELECT 1 FROM participants p WHERE p.user_id = s.user_id AND p.conversation_id = s.conversation_id
    )
"""
# Single use: the insert wins once; a ticket of a deleted account is refused too.
_USE_TICKET = """
    WITH pruned AS (
        DELETE FROM used_ws_tickets WHERE jti IN (
            SELECT jti FROM used_ws_tickets WHERE expires_at < now() LIMIT 100
        )
    )
    INSERT INTO used_ws_tickets (jti, expires_at)
    SELECT $1, $2 WHERE EXISTS (SELECT 1 FROM users WHERE id = $3)
    ON CONFLICT DO NOTHING
    RETURNING jti
"""


class SessionRecord:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        #: Checks asked for and not yet sent to PostgreSQL; ``_checking`` sends them while there are any.
        self._waiting: list[tuple[UUID, str, asyncio.Future[tuple[bool, bool]]]] = []
        self._checking: asyncio.Task[None] | None = None

    async def revoke(self, jti: str, expires_at: datetime) -> None:
        await self._pool.execute(_REVOKE, jti, expires_at)

    async def check(self, user_id: UUID, jti: str) -> tuple[bool, bool]:
        """(the account exists, the token is revoked), as PostgreSQL has it after this call began.

        Every authenticated request and every WebSocket connect asks this. Checks that arrive together
        share one query: the first starts a task that sends what is waiting, and what arrives while its
        query runs goes in the next one, so a batch's query always starts after each of its checks was
        asked (a logout committed before a check is seen by it). Alone, a check is one query as before;
        in a reconnect storm, one query answers many."""
        answer: asyncio.Future[tuple[bool, bool]] = asyncio.get_running_loop().create_future()
        self._waiting.append((user_id, jti, answer))
        if self._checking is None:
            self._checking = asyncio.create_task(self._check_waiting())
        return await answer

    async def _check_waiting(self) -> None:
        batch: list[tuple[UUID, str, asyncio.Future[tuple[bool, bool]]]] = []
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    rows = await self._pool.fetch(_CHECK, [b[0] for b in batch], [b[1] for b in batch])
                except Exception as exc:  # PostgreSQL unreachable, say: every check of the batch fails with it
                    for *_, answer in batch:
                        if not answer.done():
                            answer.set_exception(exc)
                    continue
                for (*_, answer), row in zip(batch, rows, strict=True):
                    if not answer.done():  # a caller that gave up (cancelled) is skipped
                        answer.set_result((bool(row["user_exists"]), bool(row["revoked"])))
        finally:
            self._checking = None
            # Only if this task was cancelled (the node stopping): nothing will answer these any more.
            left, self._waiting = [*batch, *self._waiting], []
            for *_, answer in left:
                if not answer.done():
                    answer.cancel()

    async def invalid_sessions(self, sessions: list[tuple[str, UUID]]) -> set[str]:
        """The jtis, among these (jti, user) pairs, revoked or of a deleted account."""
        if not sessions:
            return set()
        rows = await self._pool.fetch(_INVALID, [s[0] for s in sessions], [s[1] for s in sessions])
        return {r["jti"] for r in rows}

    async def lost_memberships(self, joined: set[tuple[UUID, UUID]]) -> set[tuple[UUID, UUID]]:
        """The (user, conversation) pairs, among those joined on a node, that are no longer memberships:
        a removal reaches the node's sockets from here even when the event stream is stalled."""
        if not joined:
            return set()
        pairs = list(joined)
        rows = await self._pool.fetch(_LOST_MEMBERSHIPS, [p[0] for p in pairs], [p[1] for p in pairs])
        return {(r["user_id"], r["conversation_id"]) for r in rows}

    async def use_ticket(self, jti: str, expires_at: datetime, user_id: UUID) -> bool:
        """True the first time this ticket is used (and its account exists); False ever after."""
        return await self._pool.fetchval(_USE_TICKET, jti, expires_at, user_id) is not None
