"""Revoked access tokens: Postgres is the record, Redis the cache every request consults.

A cache miss must not mean "not revoked" after Redis lost its data, so the cache carries a marker
(``keys.REVOKED_LOADED``); when the marker is gone the unexpired revocations are reloaded from
Postgres before answering.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from redis.asyncio import Redis
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from infrastructure.db.tables import revoked_tokens
from infrastructure.redis import keys


class RevocationList:
    def __init__(self, engine: AsyncEngine, redis: Redis) -> None:
        self._engine = engine
        self._redis = redis

    async def revoke(self, jti: str, expires_at: datetime) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(
                pg_insert(revoked_tokens).values(jti=jti, expires_at=expires_at).on_conflict_do_nothing()
            )
            # Expired entries can never match again: prune them on the way.
            await conn.execute(sa.delete(revoked_tokens).where(revoked_tokens.c.expires_at < sa.func.now()))
        await self._cache(jti, expires_at)

    async def is_revoked(self, jti: str) -> bool:
        pipe = self._redis.pipeline(transaction=False)
        pipe.exists(keys.REVOKED_LOADED)
        pipe.exists(keys.revoked_jti(jti))
        loaded, hit = await pipe.execute()
        if hit:
            return True
        if loaded:
            return False
        await self._reload()
        return bool(await self._redis.exists(keys.revoked_jti(jti)))

    async def _reload(self) -> None:
        async with self._engine.connect() as conn:
            rows = (
                await conn.execute(sa.select(revoked_tokens).where(revoked_tokens.c.expires_at > sa.func.now()))
            ).all()
        for row in rows:
            await self._cache(row.jti, row.expires_at)
        await self._redis.set(keys.REVOKED_LOADED, "1")

    async def _cache(self, jti: str, expires_at: datetime) -> None:
        ttl = int((expires_at - datetime.now(UTC)).total_seconds()) + 1
        if ttl > 0:
            await self._redis.set(keys.revoked_jti(jti), "1", ex=ttl)
