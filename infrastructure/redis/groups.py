"""Consumer-group housekeeping: node liveness and the janitor for groups of dead nodes (the operators'
report is ``infrastructure/streams_report.py``)."""

from __future__ import annotations

import logging
from typing import Any

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


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
