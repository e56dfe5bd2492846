"""The operators' stream report (`parley streams`, ``GET /api/admin/streams``, the /metrics gauges): per shard
stream and consumer group, how far behind the consumers are; the projector's group summed over shards;
dead letters; the Postgres outbox backlog and its age.

Per-stream figures come from ``infrastructure.redis.groups.stream_report``; this module adds the
per-group summaries, the outbox and the dead letters.
"""

from __future__ import annotations

import msgspec

from infrastructure.bootstrap import Services
from infrastructure.db import outbox
from infrastructure.redis import keys
from infrastructure.redis.groups import ConsumerInfo, GroupInfo, StreamInfo, stream_report


class GroupSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One group over every shard stream."""

    name: str
    lag: int | None
    pending: int
    oldest_pending_age_seconds: float
    #: For the projector: how many seconds the read models are behind the streams.
    projection_lag_seconds: float
    #: Consumers by name, pending summed and idle the smallest over the shards.
    consumers: list[ConsumerInfo]


class StreamReport(msgspec.Struct, frozen=True, kw_only=True):
    streams: list[StreamInfo]
    groups: list[GroupSummary]
    projector: GroupSummary | None
    dead_letters: int
    outbox_backlog: int
    outbox_oldest_age_seconds: float


def summarize(infos: list[StreamInfo]) -> list[GroupSummary]:
    by_group: dict[str, list[GroupInfo]] = {}
    for info in infos:
        for group in info.groups:
            by_group.setdefault(group.name, []).append(group)
    out = []
    for name, parts in sorted(by_group.items()):
        consumers: dict[str, ConsumerInfo] = {}
        for part in parts:
            for c in part.consumers:
                seen = consumers.get(c.name)
                consumers[c.name] = ConsumerInfo(
                    name=c.name,
                    pending=c.pending + (seen.pending if seen else 0),
                    idle_ms=min(c.idle_ms, seen.idle_ms) if seen else c.idle_ms,
                )
        lags = [p.lag for p in parts]
        out.append(
            GroupSummary(
                name=name,
                lag=None if any(lag is None for lag in lags) else sum(lag or 0 for lag in lags),
                pending=sum(p.pending for p in parts),
                oldest_pending_age_seconds=max(p.oldest_pending_age_seconds for p in parts),
                projection_lag_seconds=max(p.behind_seconds for p in parts),
                consumers=sorted(consumers.values(), key=lambda c: c.name),
            )
        )
    return out


async def build_report(services: Services) -> StreamReport:
    backlog = await outbox.backlog(services.pg)
    infos = await stream_report(services.redis, services.settings.redis.shard_count)
    groups = summarize(infos)
    return StreamReport(
        streams=infos,
        groups=groups,
        projector=next((g for g in groups if g.name == keys.PROJECTOR_GROUP), None),
        dead_letters=int(await services.redis.xlen(keys.DEAD_LETTER_STREAM)),
        outbox_backlog=backlog.rows,
        outbox_oldest_age_seconds=round(backlog.oldest_age_seconds, 3),
    )


def render(report: StreamReport) -> str:
    """A terminal table for `parley streams`."""
    lines = [
        f"outbox backlog: {report.outbox_backlog} rows (oldest {report.outbox_oldest_age_seconds:.1f}s)",
        f"dead letters: {report.dead_letters} ({keys.DEAD_LETTER_STREAM})",
    ]
    p = report.projector
    if p is None:
        lines.append("projector: no group yet (no projector has started)")
    else:
        lines.append(
            f"projector: lag {'?' if p.lag is None else p.lag}, pending {p.pending}, oldest pending "
            f"{p.oldest_pending_age_seconds:.1f}s, projection lag {p.projection_lag_seconds:.1f}s, consumers: "
            + (", ".join(f"{c.name} (idle {c.idle_ms / 1000:.1f}s, {c.pending} pending)" for c in p.consumers) or "-")
        )
    lines.append("")
    lines.append(
        f"{'stream':<22} {'length':>8}  {'group':<34} {'lag':>7} {'pending':>8} {'behind':>8}  consumers (idle)"
    )
    for s in report.streams:
        if not s.groups:
            lines.append(f"{s.stream:<22} {s.length:>8}  {'-':<34}")
        for g in s.groups:
            consumers = ", ".join(f"{c.name} ({c.idle_ms / 1000:.1f}s, {c.pending} pending)" for c in g.consumers)
            lag = "?" if g.lag is None else str(g.lag)
            lines.append(
                f"{s.stream:<22} {s.length:>8}  {g.name:<34} {lag:>7} {g.pending:>8} {g.behind_seconds:>7.1f}s"
                f"  {consumers or '-'}"
            )
    return "\n".join(lines)
