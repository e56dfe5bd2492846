"""The node's presence announcer: tells the members of a user's conversations that the user came online
or went offline (``presence`` frames, through ``parley:signals``), in batches.

Flow: a socket's ``Session.run`` (app/ws/gateway.py) calls ``announce(user, status)`` when Redis presence
(infrastructure/redis/presence.py) says its user just came online or went offline; it never waits. One
task per node (started by app/ws/node.py) drains the queue: whatever queued while the previous batch
was in flight, up to ``BATCH_USERS`` users, is one batch. For a batch it re-reads the users' presence in
one Redis pipeline (a user who flipped within the batch, or meanwhile on another node, is announced in
the state they are in now: the last word wins), resolves their conversations with ONE PostgreSQL query
on the write pool, and publishes one signal per user in one Redis pipeline. Receiving nodes read them
as before (``SignalFanout`` in app/ws/fanout.py).

Why: announcing per socket cost one PostgreSQL query per user, all at once when a thousand sockets
closed together; each wanted a pooled connection, the pools of every node grew to their bound together,
and PostgreSQL ran out of connections. Batched, a mass close of N sockets costs about N / BATCH_USERS
queries, one connection at a time per node, and nothing on a socket's connect or close path waits on
PostgreSQL for presence.

Presence is best effort: the queue is bounded (the oldest announcements are dropped, counted in
``parley_ws_presence_dropped_total`` and logged); a batch that fails is logged and counted in
``parley_ws_presence_failed_total{step}``, and its announcements are lost (clients get the current
state from ``GET /api/conversations/{id}/presence``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from uuid import UUID

import asyncpg
from redis.asyncio import Redis

from app.errors import is_unavailable
from app.ws import metrics
from app.ws.fanout import Signal, publish_signals
from infrastructure.db import views
from infrastructure.redis.presence import Presence

log = logging.getLogger("parley.ws.presence")

#: Users per batch: one PostgreSQL query and two Redis pipelines of about this many commands each.
BATCH_USERS = 1000
#: Announcements waiting at most; past it the oldest are dropped (a storm that outruns PostgreSQL or
#: Redis for this long has already made most of them stale).
MAX_QUEUED = 100_000
#: A batch taking longer than this (PostgreSQL or Redis stalled) is given up, logged and counted.
BATCH_TIMEOUT_SECONDS = 10.0
#: After a failed batch, wait this long before the next: announcements gather into one batch meanwhile,
#: so an outage costs one log line a second, not one per socket.
FAILURE_PAUSE_SECONDS = 1.0


class PresenceAnnouncer:
    def __init__(
        self,
        pg: asyncpg.Pool,
        redis: Redis,
        presence: Presence,
        *,
        batch_users: int = BATCH_USERS,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        self._pg = pg
        self._redis = redis
        self._presence = presence
        self._batch_users = batch_users
        self._max_queued = max_queued
        self._queue: deque[tuple[UUID, str]] = deque()
        self._wake = asyncio.Event()
        #: Set while nothing is queued or in flight (``flush`` waits for it).
        self._idle = asyncio.Event()
        self._idle.set()
        self._dropped = 0

    def announce(self, user_id: UUID, status: str) -> None:
        """Queue ``online`` or ``offline`` for a user; returns at once."""
        if len(self._queue) >= self._max_queued:
            self._queue.popleft()
            self._dropped += 1
            metrics.PRESENCE_DROPPED.inc()
        self._queue.append((user_id, status))
        self._idle.clear()
        self._wake.set()

    @property
    def queued(self) -> int:
        """Announcements waiting (not counting a batch in flight)."""
        return len(self._queue)

    async def flush(self) -> None:
        """Wait until everything queued so far was published or given up (bound it with a timeout)."""
        await self._idle.wait()

    async def run(self) -> None:
        """Drain the queue batch by batch, for as long as the node runs (it cancels this task)."""
        while True:
            if not self._queue:
                self._idle.set()
                await self._wake.wait()
            self._wake.clear()
            batch = self._take()
            if self._dropped:
                log.warning(
                    "presence queue full (%d announcements): dropped the %d oldest", self._max_queued, self._dropped
                )
                self._dropped = 0
            await self._publish(batch)

    def _take(self) -> dict[UUID, str]:
        """The next batch: user -> their last queued status, at most ``batch_users`` users."""
        latest: dict[UUID, str] = {}
        queue = self._queue
        while queue and (len(latest) < self._batch_users or queue[0][0] in latest):
            user_id, status = queue.popleft()
            latest[user_id] = status
        return latest

    async def _publish(self, batch: dict[UUID, str]) -> None:
        """One batch; a failure is logged and counted here, never raised (the loop goes on)."""
        users = list(batch)
        metrics.PRESENCE_BATCH_USERS.observe(len(users))
        step = "redis"
        try:
            async with asyncio.timeout(BATCH_TIMEOUT_SECONDS):
                online = await self._presence.online(users)
                step = "postgres"
                conversations = await views.conversations_of_users(self._pg, users)
                step = "redis"
                signals = [
                    Signal(
                        kind="presence",
                        user_id=str(user_id),
                        conversation_ids=[str(c) for c in conversations[user_id]],
                        status="online" if user_id in online else "offline",
                    )
                    for user_id in users
                    if user_id in conversations
                ]
                await publish_signals(self._redis, signals)
        except Exception as exc:
            metrics.PRESENCE_FAILED.labels(step).inc(len(users))
            if is_unavailable(exc):
                log.warning("presence of %d users not announced: %s unavailable: %r", len(users), step, exc)
            else:
                log.exception("presence of %d users not announced: %s failed", len(users), step)
            await asyncio.sleep(FAILURE_PAUSE_SECONDS)
            return
        for signal in signals:
            metrics.PRESENCE_PUBLISHED.labels(signal.status).inc()
