"""Composition root: builds the long-lived clients once (engine, Redis, auth) from settings.

The API's lifespan, the workers' start-up and the CLI all call ``bootstrap``; nothing is built at import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from infrastructure.auth.service import AuthService
from infrastructure.db.begun import BegunConnections
from infrastructure.db.group_commit import GroupCommit
from infrastructure.db.unit_of_work import SqlUnitOfWork
from infrastructure.embeddings.provider import Embedder
from infrastructure.outbox_publisher import OutboxPublisher
from infrastructure.redis.rate_limit import SendRateLimiter
from infrastructure.settings import Settings


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    #: asyncpg pool for the write path (``uow()``); ``engine`` serves the read side and auth.
    pg: asyncpg.Pool
    redis: Redis
    auth: AuthService
    send_limiter: SendRateLimiter
    clock: SystemClock
    #: The embedding provider, loaded on first use (once per process); see infrastructure/embeddings.
    embeddings: Embedder
    #: Set where the process publishes its own commits (API nodes, ``start_publisher``); else the relay does.
    publisher: OutboxPublisher | None = None
    #: Posts go through here: concurrent posts of this process share transactions (group commit).
    posts: GroupCommit = field(init=False)
    #: Connections the publisher left with their next BEGIN sent (with a publisher only).
    begun: BegunConnections | None = None

    def __post_init__(self) -> None:
        self.posts = GroupCommit(self.uow, self.settings.limits, max_in_flight=self.settings.database.post_transactions)

    def uow(self) -> SqlUnitOfWork:
        return SqlUnitOfWork(
            self.pg,
            shard_count=self.settings.redis.shard_count,
            # While the node's publisher is failing (Redis down), the relay publishes: see its ``healthy``.
            publisher=self.publisher if self.publisher is not None and self.publisher.healthy else None,
            begun=self.begun,
        )

    def start_publisher(self) -> OutboxPublisher:
        """From now on this process publishes what it commits (and begins its next transactions ahead)."""
        if self.begun is None:
            self.begun = BegunConnections(self.pg)
        self.publisher = OutboxPublisher(
            self.pg, self.redis, maxlen=self.settings.redis.stream_maxlen, begun=self.begun
        )
        return self.publisher

    async def close(self) -> None:
        await self.posts.close()
        if self.publisher is not None:
            await self.publisher.close()
        if self.begun is not None:
            await self.begun.close()
        await self.embeddings.close()
        await self.redis.aclose()
        await self.pg.close()
        await self.engine.dispose()


def create_engine(settings: Settings) -> AsyncEngine:
    return create_async_engine(
        settings.database.url,
        pool_size=settings.database.pool_size,
        max_overflow=settings.database.max_overflow,
        pool_pre_ping=True,  # a restarted Postgres leaves dead connections in the pool
        pool_recycle=1800,
    )


def create_redis(settings: Settings) -> Redis:
    client: Redis = Redis.from_url(
        settings.redis.url,
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=30,
        retry_on_timeout=True,
    )
    return client


def asyncpg_dsn(settings: Settings) -> str:
    return settings.database.url.replace("postgresql+asyncpg://", "postgresql://", 1)


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Release without asyncpg's reset query (``RESET ALL; UNLISTEN *; …``, a round trip per use).

    Nothing that uses this pool leaves session state behind: the relay's locks are transaction-scoped
    (``pg_try_advisory_xact_lock``); the publish keys, session locks, are let go by their holder
    (``outbox.RELEASE_SQL``) before it gives the connection back, or the connection is closed; settings
    are ``SET LOCAL`` (the keys' ``idle_session_timeout`` is reset by the same release); LISTEN runs on
    a dedicated connection (the relay's). So there is nothing to reset."""


async def create_pg_pool(settings: Settings) -> asyncpg.Pool:
    pool: asyncpg.Pool = await asyncpg.create_pool(
        asyncpg_dsn(settings),
        min_size=1,
        max_size=settings.database.pool_size,
        max_inactive_connection_lifetime=300,
        reset=_keep_session,
    )
    return pool


async def bootstrap(settings: Settings) -> Services:
    engine = create_engine(settings)
    redis = create_redis(settings)
    pg = await create_pg_pool(settings)
    return Services(
        settings=settings,
        engine=engine,
        pg=pg,
        redis=redis,
        auth=AuthService(engine, pg, settings.auth),
        send_limiter=SendRateLimiter(
            redis, rate=settings.limits.messages_per_second, burst=settings.limits.message_burst
        ),
        clock=SystemClock(),
        embeddings=Embedder(settings.embeddings),
    )
