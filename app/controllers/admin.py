"""Operators: stream and consumer-group lag (`GET /api/admin/streams`; `parley streams` prints the same)."""

from __future__ import annotations

from litestar import Controller, get

from app.deps import AUTHENTICATED, ServicesDep, UserDep, require_admin
from infrastructure.redis.groups import StreamReport
from infrastructure.streams_report import build_report


class AdminController(Controller):
    path = "/api/admin"
    tags = ["operations"]
    dependencies = AUTHENTICATED

    @get("/streams", operation_id="GetStreamReport", opt={"errors": [403]})
    async def streams(self, services: ServicesDep, user: UserDep) -> StreamReport:
        """Per shard stream: length; per group: lag, pending, consumers and their idle time; the outbox backlog."""
        await require_admin(services, user)
        return await build_report(services)
