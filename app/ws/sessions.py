"""Sockets end with their session: the node's guard closes (4401) every local socket whose access token
expired (checked locally every ``CHECK_SECONDS``), was revoked by a logout, or whose account was
deleted (both asked of PostgreSQL, the record, every ``SWEEP_SECONDS`` in one query for all local
sockets). Every node runs its own guard, so a logout on one node closes the user's sockets on all of
them within ``SWEEP_SECONDS`` plus a query, whatever state Redis is in.

The same sweep checks the memberships behind every joined conversation: a member removed while the
event stream is stalled (relay stopped, Redis paused) gets ``left`` within ``SWEEP_SECONDS`` and their
socket stops getting that conversation (the PostgreSQL catch-up paths are scoped by membership too).
"""

from __future__ import annotations

import asyncio
import logging
import time

from prometheus_client import Counter

from app.ws import frames
from app.ws.connection import CLOSE_SESSION_ENDED
from app.ws.hub import Hub
from infrastructure.auth.revocation import SessionRecord

log = logging.getLogger("parley.ws.sessions")

#: Expiry is checked this often (a socket lives at most this long past its token's ``exp``).
CHECK_SECONDS = 0.5
#: Revocations and deleted accounts are looked up this often: the "within seconds" of a logout.
SWEEP_SECONDS = 2.0

SESSIONS_ENDED = Counter(
    "parley_ws_sessions_ended_total", "Sockets closed with 4401 because their session ended", ["why"]
)


class SessionGuard:
    def __init__(self, hub: Hub, record: SessionRecord) -> None:
        self._hub = hub
        self._record = record

    async def run(self, stop: asyncio.Event) -> None:
        next_sweep = time.monotonic() + SWEEP_SECONDS
        while not stop.is_set():
            await asyncio.sleep(CHECK_SECONDS)
            self.close_expired()
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + SWEEP_SECONDS
                try:
                    await self.sweep()
                except Exception as exc:  # PostgreSQL down: expiry still applies; try again next time
                    log.warning("session sweep failed: %r", exc)

    def close_expired(self) -> None:
        now = time.time()
        for conn in list(self._hub.connections):
            if not conn.closing and conn.session_expired(now):
                SESSIONS_ENDED.labels("expired").inc()
                conn.end(CLOSE_SESSION_ENDED, "session expired: send refresh before it does, or reconnect")

    async def sweep(self) -> None:
        """Close the sockets whose token was revoked or whose account no longer exists; take removed
        members out of the conversations they had joined."""
        live = [conn for conn in self._hub.connections if not conn.closing]
        ended = await self._record.invalid_sessions([(c.session.jti, c.user_id) for c in live])
        for conn in live:
            if conn.session.jti in ended:
                SESSIONS_ENDED.labels("revoked").inc()
                conn.end(CLOSE_SESSION_ENDED, "session ended: logged out, revoked or account deleted")
        live = [conn for conn in live if not conn.closing]
        lost = await self._record.lost_memberships({(c.user_id, cid) for c in live for cid in c.cursors})
        for conn in live:
            for conversation_id in [cid for cid in conn.cursors if (conn.user_id, cid) in lost]:
                self._hub.unsubscribe(conn, conversation_id)
                reason = "removed from the conversation"
                conn.offer(frames.encode(frames.Left(conversation_id=conversation_id, reason=reason)))
