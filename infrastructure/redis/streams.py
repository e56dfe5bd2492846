"""Redis Streams plumbing shared by the relay (writer) and the consumers (WS nodes, projectors, assistant).

An entry is ``{type: <event type>, data: <event JSON as committed to the outbox>}``; consumers decode
``data`` with ``domain.events.decode``. Delivery is at-least-once: consumers dedup by (conversation, seq).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from infrastructure.db.outbox import OutboxRow
from infrastructure.redis import keys

#: The relay publishes outbox rows; the name tests and older callers use.
OutboxEntry = OutboxRow


@dataclass(frozen=True)
class StreamEntry:
    stream: str
    entry_id: bytes
    event_type: str
    data: bytes


def all_streams(shard_count: int) -> list[str]:
    return [keys.events_stream(shard) for shard in range(shard_count)]


async def publish(redis: Redis, entries: Sequence[OutboxRow], *, maxlen: int) -> None:
    """XADD every entry, in order, in one round trip. ``MAXLEN ~`` keeps each shard bounded; anything
    trimmed before a consumer read it is recovered from Postgres by seq (see docs/architecture.md)."""
    pipe = redis.pipeline(transaction=False)
    for entry in entries:
        pipe.xadd(
            keys.events_stream(entry.shard),
            {"type": entry.event_type, "data": entry.payload},
            maxlen=maxlen,
            approximate=True,
        )
    await pipe.execute()


async def ensure_group(redis: Redis, stream: str, group: str, *, start: str = "$") -> bool:
    """Create ``group`` on ``stream`` (and the stream); False when it already existed."""
    try:
        await redis.xgroup_create(stream, group, id=start, mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise
        return False
    return True


def parse_entries(response: list[tuple[bytes, list[tuple[bytes, dict[bytes, bytes]]]]] | None) -> list[StreamEntry]:
    """Flatten an XREAD/XREADGROUP reply; entries deleted while pending come back as None and are skipped."""
    out: list[StreamEntry] = []
    for stream, items in response or []:
        name = stream.decode() if isinstance(stream, bytes) else stream
        for entry_id, fields in items:
            if not fields:
                continue
            out.append(StreamEntry(name, entry_id, fields[b"type"].decode(), fields[b"data"]))
    return out


async def ensure_epoch(redis: Redis) -> str:
    """The current Redis epoch, creating it if absent. A different value than a process saw before
    means this Redis lost its data (restart without persistence, failover to an empty replica)."""
    await redis.set(keys.EPOCH, secrets.token_hex(8), nx=True)
    value = await redis.get(keys.EPOCH)
    return value.decode() if isinstance(value, bytes) else str(value)
