"""The operators' stream report (`parley streams`, ``GET /api/admin/streams``, the /metrics gauges): per shard
stream and consumer group, how far behind the consumers are; the projector's group summed over shards;
dead letters; the Postgres outbox backlog and its age.

Ages come from stream entry ids (their millisecond part) against Redis's own clock (``TIME``), so a
skewed clock on the reporting host does not distort them.
"""

from __future__ import annotations

from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from infrastructure.bootstrap import Services
from infrastructure.db import outbox
from infrastructure.redis import keys, streams


class ConsumerInfo(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    pending: int
    idle_ms: int


class GroupInfo(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    #: Entries not yet delivered to the group (None: Redis cannot tell, e.g. after trimming).
    lag: int | None
    #: Delivered, not yet acknowledged.
    pending: int
    oldest_pending_age_seconds: float
    #: Age of the oldest entry the group has not acknowledged (pending or not yet delivered): how far
    #: behind its effects are. 0 when caught up.
    behind_seconds: float
    last_delivered_id: str
    consumers: list[ConsumerInfo]


class StreamInfo(msgspec.Struct, frozen=True, kw_only=True):
    stream: str
    length: int
    groups: list[GroupInfo]


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


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _id_ms(entry_id: Any) -> int:
    return int(_text(entry_id).split("-", 1)[0])


async def _group_info(redis: Redis, stream: str, group: dict[Any, Any], now_ms: int) -> GroupInfo:
    name = _text(group["name"])
    consumers = await redis.xinfo_consumers(stream, name)
    summary = await redis.xpending(stream, name)
    pending = int(summary["pending"])
    oldest_pending = 0.0 if not pending else max(now_ms - _id_ms(summary["min"]), 0) / 1000
    last = _text(group["last-delivered-id"])
    undelivered = await redis.xrange(stream, min=f"({last}", max="+", count=1)
    first_undelivered = max(now_ms - _id_ms(undelivered[0][0]), 0) / 1000 if undelivered else 0.0
    return GroupInfo(
        name=name,
        lag=None if group.get("lag") is None else int(group["lag"]),
        pending=pending,
        oldest_pending_age_seconds=oldest_pending,
        behind_seconds=max(oldest_pending, first_undelivered),
        last_delivered_id=last,
        consumers=[
            ConsumerInfo(name=_text(c["name"]), pending=int(c["pending"]), idle_ms=int(c["idle"])) for c in consumers
        ],
    )


async def stream_infos(redis: Redis, shard_count: int) -> list[StreamInfo]:
    seconds, micros = await redis.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    out: list[StreamInfo] = []
    for stream in streams.all_streams(shard_count):
        try:
            length = int(await redis.xlen(stream))
            groups = await redis.xinfo_groups(stream)
        except ResponseError:  # the stream does not exist yet
            out.append(StreamInfo(stream=stream, length=0, groups=[]))
            continue
        infos = [await _group_info(redis, stream, g, now_ms) for g in groups]
        out.append(StreamInfo(stream=stream, length=length, groups=infos))
    return out


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
    infos = await stream_infos(services.redis, services.settings.redis.shard_count)
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
