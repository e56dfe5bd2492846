"""Metrics every process can export about the resources it holds and the pipeline it feeds.

- ``parley_db_pool_connections{pool,state}``: the write pool (asyncpg) and the read pool
  (SQLAlchemy) of every ``Services`` this process tracks, read at scrape time (``track_pools``).
- ``parley_outbox_oldest_seconds``, ``parley_stream_length{stream}``, ``parley_stream_group_lag{stream,
  group}``: sampled every few seconds by ``sample_pipeline`` (the relay runs it), the same numbers as
  ``parley streams``. Stream lag is what a consumer group has not read yet; past
  ``PARLEY_STREAM_MAXLEN`` those entries are trimmed before they are read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from redis.exceptions import RedisError

from infrastructure.redis.groups import stream_report

if TYPE_CHECKING:
    from infrastructure.bootstrap import Services

log = logging.getLogger("parley.metrics")

OUTBOX_AGE = Gauge(
    "parley_outbox_oldest_seconds", "Age of the oldest outbox row not yet relayed (0 when the outbox is empty)"
)
STREAM_LENGTH = Gauge("parley_stream_length", "Entries in a shard stream", ["stream"])
STREAM_LAG = Gauge(
    "parley_stream_group_lag", "Entries of a stream a consumer group has not read yet", ["stream", "group"]
)

#: How often ``sample_pipeline`` refreshes the gauges (Prometheus scrapes every 15 s by default).
SAMPLE_SECONDS = 5.0


class _PoolCollector(Collector):
    def __init__(self) -> None:
        self.services: list[Services] = []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "parley_db_pool_connections",
            "Database connections of this process by pool and state",
            labels=["pool", "state"],
        )
        totals: dict[tuple[str, str], float] = {}
        for services in list(self.services):
            for key, value in _pool_numbers(services):
                totals[key] = totals.get(key, 0) + value
        for (pool, state), value in sorted(totals.items()):
            family.add_metric([pool, state], value)
        yield family


def _pool_numbers(services: Services) -> Iterator[tuple[tuple[str, str], float]]:
    pg = services.pg
    size, idle = pg.get_size(), pg.get_idle_size()
    yield ("write", "in_use"), size - idle
    yield ("write", "idle"), idle
    yield ("write", "max"), pg.get_max_size()
    pool = services.engine.pool
    checked_out = getattr(pool, "checkedout", lambda: 0)()
    yield ("read", "in_use"), checked_out
    yield ("read", "idle"), getattr(pool, "checkedin", lambda: 0)()
    yield ("read", "max"), services.settings.database.pool_size + services.settings.database.max_overflow


_POOLS = _PoolCollector()
REGISTRY.register(_POOLS)


def track_pools(services: Services) -> None:
    """Export this ``Services``' pool usage until ``untrack_pools``."""
    _POOLS.services.append(services)


def untrack_pools(services: Services) -> None:
    if services in _POOLS.services:
        _POOLS.services.remove(services)


async def sample_once(services: Services) -> None:
    age = await services.pg.fetchval(
        "SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 FROM outbox"
    )
    OUTBOX_AGE.set(float(age))
    seen: set[tuple[str, str]] = set()
    for info in await stream_report(services.redis, services.settings.redis.shard_count):
        STREAM_LENGTH.labels(info.stream).set(info.length)
        for group in info.groups:
            if group.lag is not None:
                STREAM_LAG.labels(info.stream, group.name).set(group.lag)
                seen.add((info.stream, group.name))
    # Groups removed since the last sample (dead nodes) must not keep reporting their last lag.
    global _lag_labels
    for stale in _lag_labels - seen:
        STREAM_LAG.remove(*stale)
    _lag_labels = seen


_lag_labels: set[tuple[str, str]] = set()


async def sample_pipeline(services: Services, stop: asyncio.Event) -> None:
    """Refresh the pipeline gauges until ``stop``; an outage only skips samples."""
    while not stop.is_set():
        try:
            await sample_once(services)
        except (TimeoutError, OSError, RedisError) as exc:
            log.debug("pipeline sample skipped: %s", exc)
        except Exception as exc:  # asyncpg errors and the like: a sample is never worth a crash
            log.warning("pipeline sample failed: %s: %s", type(exc).__name__, exc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_SECONDS)
