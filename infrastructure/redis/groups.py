"""Consumer-group housekeeping and the per-stream lag report for operators (`parley streams`,
/api/admin/streams, the /metrics gauges; ``infrastructure/streams_report.py`` adds summaries, the outbox and
dead letters). Ages come from entry ids (their millisecond part) against Redis's own clock (``TIME``)."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from infrastructure.redis import keys, streams

log = logging.getLogger("parley.redis.groups")

#: A node refreshes its alive key this often, with this TTL; a node silent for the TTL is gone.
NODE_HEARTBEAT_SECONDS = 10
NODE_ALIVE_TTL_SECONDS = 60


async def mark_node_alive(redis: Redis, node_id: str) -> None:
    await redis.set(keys.node_alive(node_id), "1", ex=NODE_ALIVE_TTL_SECONDS)


async def mark_node_gone(redis: Redis, node_id: str) -> None:
    await redis.delete(keys.node_alive(node_id))


async def remove_dead_node_groups(redis: Redis, shard_count: int) -> list[str]:
    """Destroy ``node:*`` groups whose node stopped heartbeating. A dead node's group would otherwise
    keep every entry pending and its lag would grow forever. Safe to run on every node at once."""
    removed: list[str] = []
    for stream in streams.all_streams(shard_count):
        try:
            groups = await redis.xinfo_groups(stream)
        except ResponseError:  # stream does not exist yet
            continue
        for group in groups:
            name = _text(group["name"])
            if not name.startswith("node:"):
                continue
            if not await redis.exists(keys.node_alive(name.removeprefix("node:"))):
                await redis.xgroup_destroy(stream, name)
                removed.append(f"{stream} {name}")
    if removed:
        log.info("janitor removed %d consumer groups of dead nodes: %s", len(removed), ", ".join(removed))
    return removed


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


async def stream_report(redis: Redis, shard_count: int) -> list[StreamInfo]:
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


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
