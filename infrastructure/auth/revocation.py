"""The session record in PostgreSQL: revoked access tokens, deleted accounts, used WS tickets.

Every check asks PostgreSQL (one primary-key lookup, on the asyncpg pool) instead of a Redis cache: a
Redis restored from an older snapshot, wiped, or paused can then neither forget a logout nor let a
ticket be used twice, and sends do not wait on Redis to authenticate. The same record answers the WS
nodes' periodic sweep (``invalid_sessions``), which closes sockets whose token was revoked or whose
account was deleted.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg

# One round trip: does the token's account still exist, and was the token revoked?
_CHECK = """
    SELECT EXISTS (SELECT 1 FROM users WHERE id = $1) AS user_exists,
           EXISTS (SELECT 1 FROM revoked_tokens WHERE jti = $2) AS revoked
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

    async def revoke(self, jti: str, expires_at: datetime) -> None:
        await self._pool.execute(_REVOKE, jti, expires_at)

    async def check(self, user_id: UUID, jti: str) -> tuple[bool, bool]:
        """(the account exists, the token is revoked)."""
        row = await self._pool.fetchrow(_CHECK, user_id, jti)
        assert row is not None
        return bool(row["user_exists"]), bool(row["revoked"])

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
