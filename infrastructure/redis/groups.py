"""Consumer-group housekeeping and the stream-lag report for operators (`parley streams`, /api/admin/streams)."""

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


class ConsumerInfo(msgspec.Struct, frozen=True):
    name: str
    pending: int
    idle_ms: int


class GroupInfo(msgspec.Struct, frozen=True):
    name: str
    lag: int | None
    pending: int
    last_delivered_id: str
    consumers: list[ConsumerInfo]


class StreamInfo(msgspec.Struct, frozen=True):
    stream: str
    length: int
    groups: list[GroupInfo]


class StreamReport(msgspec.Struct, frozen=True):
    streams: list[StreamInfo]
    outbox_backlog: int | None = None


async def stream_report(redis: Redis, shard_count: int) -> list[StreamInfo]:
    """Length, and per group: lag (entries not yet delivered), pending (delivered, not acked), consumers."""
    out: list[StreamInfo] = []
    for stream in streams.all_streams(shard_count):
        try:
            length = int(await redis.xlen(stream))
            groups = await redis.xinfo_groups(stream)
        except ResponseError:
            out.append(StreamInfo(stream=stream, length=0, groups=[]))
            continue
        infos = []
        for group in groups:
            name = _text(group["name"])
            consumers = await redis.xinfo_consumers(stream, name)
            infos.append(
                GroupInfo(
                    name=name,
                    lag=None if group.get("lag") is None else int(group["lag"]),
                    pending=int(group["pending"]),
                    last_delivered_id=_text(group["last-delivered-id"]),
                    consumers=[
                        ConsumerInfo(name=_text(c["name"]), pending=int(c["pending"]), idle_ms=int(c["idle"]))
                        for c in consumers
                    ],
                )
            )
        out.append(StreamInfo(stream=stream, length=length, groups=infos))
    return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
