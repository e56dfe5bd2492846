"""``parley_db_pool_connections{pool,state}``, which every process exports: the write pool (asyncpg) and
the read pool (SQLAlchemy) of every ``Services`` it tracks, read at scrape time (``track_pools``).

The pipeline's gauges (streams, groups, outbox, projector) are sampled by every API node instead:
``infrastructure/stream_metrics.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from infrastructure.bootstrap import Services


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
