"""End-to-end fixtures: a cluster of real processes (two API nodes and a relay) on a database and a
Redis of its own, so tests can kill -9 any of them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from infrastructure.embedded import EmbeddedPostgres, EmbeddedRedis, start_redis
from tests.conftest import TEST_JWT_SECRET, migrated_database
from tests.e2e.checker import History
from tests.e2e.client import Api, ChatClient
from tests.e2e.cluster import Cluster


@pytest.fixture(scope="session")
def e2e_database_url(postgres: EmbeddedPostgres | None, database_url: str) -> str:
    """A database for the cluster alone (integration tests truncate theirs after every test)."""
    return migrated_database(postgres, database_url, "parley_e2e")


@pytest.fixture(scope="session")
def e2e_redis(tmp_root: Path) -> Iterator[EmbeddedRedis]:
    server = start_redis(tmp_root / "e2e-redis")
    yield server
    server.stop()


@contextlib.contextmanager
def running_cluster(
    database_url: str, redis: EmbeddedRedis, log_dir: Path, *, with_worker: bool = False, **env: str
) -> Iterator[Cluster]:
    built = Cluster.build(
        database_url=database_url,
        redis_url=redis.url,
        log_dir=log_dir,
        jwt_secret=TEST_JWT_SECRET,
        with_worker=with_worker,
        **env,
    )
    built.start()
    try:
        yield built
    finally:
        built.stop()


@pytest.fixture(scope="module")
def cluster(
    e2e_database_url: str, e2e_redis: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    # These tests drive load through few users; the per-user limit is tested in test_ws_protocol.py.
    with running_cluster(
        e2e_database_url,
        e2e_redis,
        tmp_path_factory.mktemp("e2e-logs"),
        PARLEY_LIMIT_MESSAGES_PER_SECOND="5000",
        PARLEY_LIMIT_MESSAGE_BURST="5000",
    ) as built:
        yield built


@pytest.fixture
def api(cluster: Cluster) -> Api:
    return Api(cluster.nodes[0].base_url)


@pytest.fixture
def history() -> History:
    return History()


@pytest.fixture
async def clients(history: History) -> AsyncIterator[list[ChatClient]]:
    """Clients created by a test are closed after it."""
    made: list[ChatClient] = []
    yield made
    for client in made:
        await client.close()
