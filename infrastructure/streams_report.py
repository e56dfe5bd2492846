"""The operators' stream report: Redis stream/group state plus the Postgres outbox backlog."""

from __future__ import annotations

import sqlalchemy as sa

from infrastructure.bootstrap import Services
from infrastructure.redis.groups import StreamReport, stream_report


async def build_report(services: Services) -> StreamReport:
    async with services.engine.connect() as conn:
        backlog = int((await conn.execute(sa.text("SELECT count(*) FROM outbox"))).scalar_one())
    shards = await stream_report(services.redis, services.settings.redis.shard_count)
    return StreamReport(streams=shards, outbox_backlog=backlog)


def render(report: StreamReport) -> str:
    """A terminal table for `parley streams`."""
    lines = [f"outbox backlog: {report.outbox_backlog} rows", ""]
    lines.append(f"{'stream':<22} {'length':>8}  {'group':<34} {'lag':>7} {'pending':>8}  consumers (idle)")
    for s in report.streams:
        if not s.groups:
            lines.append(f"{s.stream:<22} {s.length:>8}  {'-':<34}")
        for g in s.groups:
            consumers = ", ".join(f"{c.name} ({c.idle_ms / 1000:.1f}s, {c.pending} pending)" for c in g.consumers)
            lag = "?" if g.lag is None else str(g.lag)
            lines.append(f"{s.stream:<22} {s.length:>8}  {g.name:<34} {lag:>7} {g.pending:>8}  {consumers or '-'}")
    return "\n".join(lines)
