"""A broadcast read of one small stream: every reader sees every entry (no consumer group, no acks).

WS nodes read three such streams: signals (typing, presence), list changes (``conversation`` frames)
and live assistant replies. Entries there are live hints, not the record: a node that was away catches
up from PostgreSQL (messages, lists) or from the reply's own stream (resume), so a reader starts at the
stream's current end and only ever moves forward.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("parley.redis.broadcast")

#: Entries per XREAD call.
READ_COUNT = 500
#: How long a read blocks; also bounds how quickly a stop request is noticed.
BLOCK_MS = 1000
#: Pause after a Redis error before reading again.
RETRY_SECONDS = 1.0


class BroadcastReader:
    """Calls ``route(raw)`` with the ``field`` of every entry added to ``stream`` after ``run`` starts."""

    def __init__(self, redis: Redis, stream: str, field: bytes, route: Callable[[bytes], None]) -> None:
        self._redis = redis
        self._stream = stream
        self._field = field
        self._route = route
        self._last_id: str | bytes | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Read until ``stop``. Run again after a crash, it goes on from the last entry it routed."""
        while self._last_id is None and not stop.is_set():
            self._last_id = await self._read(self._start_id())
        while not stop.is_set():
            after: str | bytes = self._last_id or "0-0"
            reply: Any = await self._read(self._redis.xread({self._stream: after}, count=READ_COUNT, block=BLOCK_MS))
            for _stream, items in reply or []:
                for entry_id, fields in items:
                    self._last_id = entry_id
                    self._route(fields.get(self._field, b""))

    async def _start_id(self) -> str | bytes:
        """The stream's current last id, not ``$``: a read that returns nothing would leave ``$`` in place
        and the next read would skip whatever was added between the two."""
        last: Any = await self._redis.xrevrange(self._stream, count=1)
        return last[0][0] if last else "0-0"

    async def _read(self, call: Awaitable[Any]) -> Any:
        try:
            return await call
        except (RedisError, OSError) as exc:
            log.warning("broadcast read of %s: %s; retrying", self._stream, exc)
            await asyncio.sleep(RETRY_SECONDS)
            return None
