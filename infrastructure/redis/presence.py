"""Presence: a user is online while any of their sockets, on any node, has a fresh heartbeat.

Each user has a hash ``socket id -> expiry (ms)``. Nodes refresh their sockets' entries on a
heartbeat; a node that dies without saying goodbye simply stops refreshing and its entries go
stale, so nobody stays online forever. The key itself also expires when nothing refreshes it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from uuid import UUID

from redis.asyncio import Redis

from infrastructure.redis import keys

#: An entry is live this long after its last heartbeat; heartbeats come every TTL/3.
PRESENCE_TTL_SECONDS = 45


def _now_ms() -> int:
    return int(time.time() * 1000)


def _live(entries: dict[bytes, bytes], now_ms: int, *, excluding: str | None = None) -> int:
    return sum(1 for sid, exp in entries.items() if int(exp) > now_ms and sid.decode() != excluding)


class Presence:
    def __init__(self, redis: Redis, ttl_seconds: int = PRESENCE_TTL_SECONDS) -> None:
        self._redis = redis
        self._ttl_ms = ttl_seconds * 1000

    async def connect(self, user_id: UUID, socket_id: str) -> int:
        """Record a socket; returns how many other live sockets the user has (0: just came online).

        Atomic (MULTI), so concurrent connects of one user each see the others: the sockets-per-user
        limit holds across nodes without a separate counter."""
        now = _now_ms()
        key = keys.presence(user_id)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hgetall(key)
        pipe.hset(key, socket_id, str(now + self._ttl_ms))
        pipe.pexpire(key, self._ttl_ms)
        before, *_ = await pipe.execute()
        return _live(before, now, excluding=socket_id)

    async def disconnect(self, user_id: UUID, socket_id: str) -> bool:
        """Forget a socket; True when the user just went offline."""
        key = keys.presence(user_id)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hdel(key, socket_id)
        pipe.hgetall(key)
        _, after = await pipe.execute()
        return _live(after, _now_ms()) == 0

    async def heartbeat(self, sockets: Iterable[tuple[UUID, str]]) -> None:
        """Refresh many sockets in one round trip (one call per node per heartbeat, not per socket)."""
        expiry = _now_ms() + self._ttl_ms
        pipe = self._redis.pipeline(transaction=False)
        for user_id, socket_id in sockets:
            key = keys.presence(user_id)
            pipe.hset(key, socket_id, str(expiry))
            pipe.pexpire(key, self._ttl_ms)
        await pipe.execute()
