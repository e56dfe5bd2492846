"""Operators and analysts (admins only): stream and consumer-group lag (`GET /api/admin/streams`;
`parley streams` prints the same) and daily statistics from the read models (`GET /api/admin/stats`)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated

from litestar import Controller, get
from litestar.params import QueryParameter

from app.deps import AUTHENTICATED, ServicesDep, UserDep, require_admin
from domain.errors import InvalidInput
from infrastructure.db import stats_views
from infrastructure.streams_report import StreamReport, build_report

#: Longest range one stats request may cover.
MAX_STATS_DAYS = 366
StatsLimit = Annotated[int, QueryParameter(ge=1, le=10_000, description="rows per section")]


def stats_range(start: date | None, end: date | None) -> tuple[date, date]:
    """Default: the 30 days up to today (UTC)."""
    end = end or datetime.now(UTC).date()
    start = start or end - timedelta(days=29)
    if start > end:
        raise InvalidInput("'from' must not be after 'to'")
    if (end - start).days >= MAX_STATS_DAYS:
        raise InvalidInput(f"at most {MAX_STATS_DAYS} days per request")
    return start, end


class AdminController(Controller):
    path = "/api/admin"
    tags = ["operations"]
    dependencies = AUTHENTICATED

    @get("/streams", operation_id="GetStreamReport", opt={"errors": [403]})
    async def streams(self, services: ServicesDep, user: UserDep) -> StreamReport:
        """Per shard stream and group: length, lag, pending, oldest pending, consumers and their idle time;
        the projector group over all shards with its projection lag; dead letters; the outbox backlog."""
        await require_admin(services, user)
        return await build_report(services)

    @get("/stats", operation_id="GetStats", opt={"errors": [403]})
    async def stats(
        self,
        services: ServicesDep,
        user: UserDep,
        from_day: Annotated[date | None, QueryParameter(name="from", description="first UTC day")] = None,
        to_day: Annotated[date | None, QueryParameter(name="to", description="last UTC day")] = None,
        limit: StatsLimit = 1000,
    ) -> stats_views.Stats:
        """Messages per day per conversation and per user, active users, LLM calls, tokens and cost."""
        await require_admin(services, user)
        start, end = stats_range(from_day, to_day)
        return await stats_views.stats(services.pg, start=start, end=end, limit=limit)
