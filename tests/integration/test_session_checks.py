"""The session check every authenticated request and WebSocket connect makes
(``infrastructure/auth/revocation.py``, ``SessionRecord.check``): checks asked together share one
query, and each still gets its own answer, its own failure, and sees every logout committed before
it was asked. Real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa

from infrastructure.auth.revocation import SessionRecord
from infrastructure.bootstrap import Services, asyncpg_dsn
from infrastructure.db.tables import users


class _CountedPool:
    """The real pool, counting the queries sent through ``fetch``; each waits for ``gate`` first."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.fetches = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def fetch(self, *args: Any) -> Any:
        self.fetches += 1
        await self.gate.wait()
        return await self.pool.fetch(*args)


async def _user(services: Services) -> uuid.UUID:
    user_id = uuid.uuid4()
    async with services.engine.begin() as conn:
        await conn.execute(
            sa.insert(users).values(id=user_id, email=f"{user_id}@example.com", name="u", password_hash="x")
        )
    return user_id


async def test_checks_asked_together_share_one_query_and_each_gets_its_own_answer(services: Services) -> None:
    live, revoked = await _user(services), await _user(services)
    gone = uuid.uuid4()  # no such account
    record = SessionRecord(services.pg)
    await record.revoke("revoked-jti", datetime.now(UTC) + timedelta(minutes=5))
    counted = _CountedPool(services.pg)
    record._pool = counted

    answers = await asyncio.gather(
        *(record.check(live, f"live-{i}") for i in range(20)),
        record.check(revoked, "revoked-jti"),
        record.check(gone, "gone-jti"),
    )

    assert answers == [(True, False)] * 20 + [(True, True), (False, False)]
    assert counted.fetches == 1


async def test_a_check_asked_while_a_query_runs_waits_for_the_next_one_and_sees_a_logout_before_it(
    services: Services,
) -> None:
    # A query already under way may have read the record before the logout: a check asked after the
    # logout must not take that query's answer.
    user = await _user(services)
    record = SessionRecord(services.pg)
    counted = _CountedPool(services.pg)
    record._pool = counted
    counted.gate.clear()
    first = asyncio.create_task(record.check(user, "jti-1"))
    async with asyncio.timeout(5):
        while counted.fetches < 1:  # noqa: ASYNC110 - the first query is under way
            await asyncio.sleep(0.01)
    await SessionRecord(services.pg).revoke("jti-1", datetime.now(UTC) + timedelta(minutes=5))  # committed
    second = asyncio.create_task(record.check(user, "jti-1"))
    await asyncio.sleep(0.05)
    counted.gate.set()
    assert await second == (True, True)
    assert counted.fetches == 2
    await first  # answered too, whichever way its query saw it


async def test_a_caller_that_gives_up_leaves_the_others_their_answers(services: Services) -> None:
    user = await _user(services)
    record = SessionRecord(services.pg)
    impatient = asyncio.create_task(record.check(user, "a"))
    patient = asyncio.create_task(record.check(user, "b"))
    await asyncio.sleep(0)
    impatient.cancel()
    assert await patient == (True, False)
    with pytest.raises(asyncio.CancelledError):
        await impatient
    assert await record.check(user, "c") == (True, False)  # and the record goes on answering


async def test_a_batch_that_cannot_reach_postgresql_fails_every_check_in_it(services: Services) -> None:
    pool = await asyncpg.create_pool(asyncpg_dsn(services.settings), min_size=1, max_size=1)
    await pool.close()
    record = SessionRecord(pool)
    results = await asyncio.gather(
        record.check(uuid.uuid4(), "x"), record.check(uuid.uuid4(), "y"), return_exceptions=True
    )
    assert all(isinstance(r, asyncpg.InterfaceError) for r in results), results
    record._pool = services.pg
    assert await record.check(uuid.uuid4(), "z") == (False, False)  # the next batch is a fresh try
