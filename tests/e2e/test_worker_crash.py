"""`parley worker` as real processes: `kill -9` mid-batch and a restart leave every message embedded
exactly once; `parley embeddings backfill` embeds what a worker outage missed, and reruns change nothing.

A test-only trigger on the real ``messages`` table records every write of the embedding column, so
"exactly once" is counted by the database, not inferred."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from domain import handlers
from domain.limits import Limits
from infrastructure.bootstrap import Services, bootstrap
from infrastructure.db.tables import users
from infrastructure.embedded import EmbeddedPostgres, EmbeddedRedis, start_redis
from infrastructure.settings import AuthSettings, DatabaseSettings, RedisSettings, Settings
from tests.conftest import TEST_JWT_SECRET, migrated_database
from tests.e2e.cluster import Process
from tests.embedding_audit import AUDIT, writes_per_message
from tests.factories import PostMessageFactory, StartConversationFactory

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def worker_db(postgres: EmbeddedPostgres | None, database_url: str) -> str:
    return migrated_database(postgres, database_url, f"parley_e2e_worker_{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def worker_redis(tmp_root: Path) -> Iterator[EmbeddedRedis]:
    server = start_redis(tmp_root / f"worker-redis-{uuid.uuid4().hex[:6]}")
    yield server
    server.stop()


@pytest.fixture
async def services(worker_db: str, worker_redis: EmbeddedRedis) -> AsyncIterator[Services]:
    settings = Settings(
        database=DatabaseSettings(url=worker_db),
        redis=RedisSettings(url=worker_redis.url, shard_count=4),
        auth=AuthSettings(jwt_secret=TEST_JWT_SECRET),
    )
    built = await bootstrap(settings)
    await built.pg.execute("TRUNCATE messages, participants, conversations, outbox, users CASCADE")
    await built.redis.flushdb()
    for statement in AUDIT:
        await built.pg.execute(statement)
    await built.pg.execute("TRUNCATE embedding_writes")
    yield built
    await built.close()


def process_env(services: Services) -> dict[str, str]:
    import os

    return {
        **os.environ,
        "DATABASE_URL": services.settings.database.url,
        "REDIS_URL": services.settings.redis.url,
        "JWT_SECRET": TEST_JWT_SECRET,
        "PARLEY_SHARDS": "4",
        "PARLEY_LOG_LEVEL": "info",
        "EMBEDDINGS_SWEEP_SECONDS": "1",
        "PARLEY_WORKER_CLAIM_IDLE_MS": "2000",
        "EMBEDDINGS_BATCH_SIZE": "16",
    }


async def post_many(services: Services, count: int) -> list[uuid.UUID]:
    owner = uuid.uuid4()
    async with services.engine.begin() as conn:
        await conn.execute(sa.insert(users).values(id=owner, email=f"{owner}@x.io", name="u", password_hash="x"))
    conv = await handlers.start_conversation(
        StartConversationFactory.build(owner_id=owner), services.uow(), services.clock, Limits()
    )
    ids = []
    for i in range(count):
        text = f"message {i}: " + " ".join(f"word{(i * 7 + j) % 97}" for j in range(12))
        result = await handlers.post_message(
            PostMessageFactory.build(conversation_id=conv.id, sender_id=owner, text=text),
            services.uow(),
            services.clock,
            Limits(),
        )
        ids.append(result.message.id)
    return ids


async def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "app.cli", *args]
    return await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=120, cwd=ROOT
    )


async def embedded_count(services: Services) -> int:
    return int(await services.pg.fetchval("SELECT count(*) FROM messages WHERE embedding IS NOT NULL"))


async def wait_for(services: Services, at_least: int, timeout: float) -> int:
    deadline = asyncio.get_running_loop().time() + timeout
    count = 0
    while asyncio.get_running_loop().time() < deadline:
        count = await embedded_count(services)
        if count >= at_least:
            return count
        await asyncio.sleep(0.05)
    raise AssertionError(f"only {count} of {at_least} messages embedded after {timeout}s")


async def test_kill_9_of_the_worker_mid_batch_then_restart_embeds_every_message_exactly_once(
    services: Services, tmp_path: Path
) -> None:
    env = process_env(services)
    relay = Process("relay", ["relay"], env, tmp_path / "relay.log")
    first = Process("worker", ["worker"], env, tmp_path / "worker-1.log")
    relay.start()
    first.start()
    try:
        await asyncio.sleep(3)  # model loaded, consumer groups created
        ids = await post_many(services, 300)
        await wait_for(services, 20, timeout=60)
        first.kill()
        assert await embedded_count(services) < len(ids), "the worker finished before it could be killed"

        second = Process("worker", ["worker"], env, tmp_path / "worker-2.log")
        second.start()
        try:
            await wait_for(services, len(ids), timeout=90)
            await asyncio.sleep(3)  # the killed worker's jobs and stream entries come back meanwhile
        finally:
            second.stop()
    finally:
        first.stop()
        relay.stop()

    assert await writes_per_message(services) == {mid: 1 for mid in ids}


async def test_backfill_embeds_what_a_worker_outage_missed_and_reruns_change_nothing(
    services: Services, tmp_path: Path
) -> None:
    ids = await post_many(services, 40)  # no worker, no relay: nothing embeds them
    env = process_env(services)

    first = await run_cli(env, "embeddings", "backfill", "--progress", "log", "--batch-size", "16")
    assert first.returncode == 0, first.stderr
    assert "backfill done: 40 messages embedded, 0 left without a vector" in first.stdout
    assert "backfill: 40/40 messages (100%" in first.stderr

    again = await run_cli(env, "embeddings", "backfill")
    assert again.returncode == 0, again.stderr
    assert "backfill done: 0 messages embedded, 0 left without a vector" in again.stdout
    assert await writes_per_message(services) == {mid: 1 for mid in ids}
