"""Migrations on a fresh database of their own: upgrade, downgrade to nothing, upgrade again; and the table
definitions in ``infrastructure/db/tables.py`` agree with what the migrations build."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from infrastructure.db.tables import metadata
from infrastructure.migrate import downgrade_base, upgrade_head
from migrations import head_revision

#: Every table the migrations build is declared in tables.py (and the other way round).
APP_TABLES = set(metadata.tables)


async def _admin(database_url: str, statement: str) -> None:
    engine = create_async_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text(statement))
    finally:
        await engine.dispose()


@pytest.fixture
async def fresh_url(database_url: str) -> AsyncIterator[str]:
    """An empty database on the suite's server, dropped afterwards."""
    name = f"parley_migrations_{uuid.uuid4().hex[:12]}"
    await _admin(database_url, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(database_url).set(database=name).render_as_string(hide_password=False)
    finally:
        await _admin(database_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _query(url: str, sql: str) -> list[Any]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(sa.text(sql))).scalars())
    finally:
        await engine.dispose()


async def _tables(url: str) -> set[str]:
    return set(await _query(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))


async def _extensions(url: str) -> set[str]:
    return set(await _query(url, "SELECT extname FROM pg_extension"))


async def test_upgrade_downgrade_and_upgrade_again_on_a_fresh_database(fresh_url: str) -> None:
    assert await _tables(fresh_url) == set()

    await asyncio.to_thread(upgrade_head, fresh_url)
    assert await _tables(fresh_url) == APP_TABLES | {"alembic_version"}
    assert "vector" in await _extensions(fresh_url)
    assert await _query(fresh_url, "SELECT version_num FROM alembic_version") == [head_revision()]

    await asyncio.to_thread(downgrade_base, fresh_url)
    assert await _tables(fresh_url) == {"alembic_version"}
    assert "vector" not in await _extensions(fresh_url)
    assert await _query(fresh_url, "SELECT version_num FROM alembic_version") == []

    await asyncio.to_thread(upgrade_head, fresh_url)
    assert await _tables(fresh_url) == APP_TABLES | {"alembic_version"}
    assert "vector" in await _extensions(fresh_url)


async def test_upgrading_a_database_already_at_head_changes_nothing(fresh_url: str) -> None:
    await asyncio.to_thread(upgrade_head, fresh_url)
    await asyncio.to_thread(upgrade_head, fresh_url)

    assert await _tables(fresh_url) == APP_TABLES | {"alembic_version"}
    assert await _query(fresh_url, "SELECT version_num FROM alembic_version") == [head_revision()]


def _schema_diff(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
    return list(compare_metadata(context, metadata))


async def test_the_table_definitions_match_the_migrated_schema(fresh_url: str) -> None:
    await asyncio.to_thread(upgrade_head, fresh_url)
    engine = create_async_engine(fresh_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(_schema_diff)
    finally:
        await engine.dispose()

    assert diff == []


async def test_the_schema_diff_is_not_blind_to_a_missing_table(fresh_url: str) -> None:
    """The control for the test above: a migrated database missing a table does show a difference."""
    await asyncio.to_thread(upgrade_head, fresh_url)
    await _admin(fresh_url, "DROP TABLE revoked_tokens")
    engine = create_async_engine(fresh_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(_schema_diff)
    finally:
        await engine.dispose()

    assert [(d[0], d[1].name) for d in diff if isinstance(d, tuple)] == [("add_table", "revoked_tokens")]
