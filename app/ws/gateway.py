"""``GET /ws`` (routed here by ``app/ws/route.py``): authenticate first, then the socket's ASGI task
reads it; a handler task while client frames wait to be handled and a writer task
(``app/ws/connection.py``) while frames wait to be sent, each ending when it has had nothing to do for
a moment (``app/ws/linger.py``), so an idle socket costs its ASGI task only.

Close codes: 4401 authentication failed or the session ended (token expired without a ``refresh``,
logged out, revoked, account deleted: see ``app/ws/sessions.py``), 4403 Origin not allowed, 1008 too
many sockets for the user, 1009 frame too large, 1013 client too slow to keep up or PostgreSQL
unreachable at connect, 1011 an unexpected failure (``app/ws/route.py``). Everything else is an
``error`` frame and the socket stays open: one bad frame never costs a client its connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from litestar import WebSocket
from litestar.exceptions import WebSocketDisconnect

from app.deps import bearer_token, scope_header
from app.errors import is_unavailable
from app.reply_access import reply_of
from app.ws import frames, metrics
from app.ws.connection import CLOSE_SESSION_ENDED, CLOSE_TOO_SLOW, CatchUp, Connection
from app.ws.direct_send import sender
from app.ws.fanout import Signal, publish_signal
from app.ws.linger import Linger
from app.ws.node import Node
from app.ws.replies import ReplyResume
from domain import commands, handlers
from domain.errors import DomainError, Forbidden, NotAParticipant, NotFound, TooLarge, Unauthorized
from infrastructure.auth.jwt_codec import AccessClaims
from infrastructure.bootstrap import Services
from infrastructure.db import views
from infrastructure.read_cursor import apply_read_cursor
from infrastructure.redis import replies
from infrastructure.redis.rate_limit import DEGRADED

log = logging.getLogger("parley.ws.gateway")

CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN_ORIGIN = 4403
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
#: Client frames accepted but not yet handled, per socket; past it a frame is refused with RATE_LIMITED.
MAX_FRAMES_IN_FLIGHT = 64
#: A socket waits at most this long for Redis to record its presence; past it (Redis paused or down)
#: it is let in without presence, counted in ``parley_degraded_total{component="presence"}``.
PRESENCE_TIMEOUT = 2.0


def origin_allowed(origin: str | None, host: str | None, allowed: tuple[str, ...]) -> bool:
    """Browsers always send Origin; other clients usually do not. Litestar's CSRF protection skips
    WebSockets, so a hostile page could otherwise open a socket riding on the victim's credentials."""
    if origin is None:
        return True
    if origin in allowed or "*" in allowed:
        return True
    return urlsplit(origin).netloc == (host or "")


def query_param(socket: WebSocket[Any, Any, Any], name: str) -> str | None:
    """One query parameter, parsed on the spot (``socket.query_params`` is kept by the socket too)."""
    for key, value in parse_qsl(socket.scope["query_string"].decode("latin-1")):
        if key == name:
            return value
    return None


async def authenticate(socket: WebSocket[Any, Any, Any], services: Services) -> AccessClaims:
    """The access session the socket will live on (a ticket carries the one it was issued from)."""
    ticket = query_param(socket, "ticket")
    if ticket:
        return await services.auth.redeem_ws_ticket(ticket)
    return await services.auth.authenticate(bearer_token(scope_header(socket.scope, b"authorization")))


async def gateway(socket: WebSocket[Any, Any, Any]) -> None:
    services: Services = socket.app.state.services
    node: Node = socket.app.state.node
    origin, host = scope_header(socket.scope, b"origin"), scope_header(socket.scope, b"host")
    if not origin_allowed(origin, host, services.settings.server.allowed_origins):
        await _refuse(socket, CLOSE_FORBIDDEN_ORIGIN, "origin not allowed")
        return
    try:
        session = await authenticate(socket, services)
    except Unauthorized as exc:
        await _refuse(socket, CLOSE_UNAUTHORIZED, exc.message)
        return
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        await _refuse(socket, CLOSE_TOO_SLOW, "service unavailable; try again later")
        return
    user_id = session.user_id
    limits = services.settings.limits
    conn = Connection(
        socket,
        session,
        lambda cid, after, limit: views.messages_after(services.engine, cid, user_id, after, limit),
        lambda reply_id: replies.history(services.redis, reply_id),
        max_queued_bytes=limits.ws_max_queued_bytes,
        write_timeout=limits.ws_write_timeout_seconds,
        send_text=sender(socket),
    )
    try:
        async with asyncio.timeout(PRESENCE_TIMEOUT):  # not wait_for: no task of its own per connect (3.11)
            others = await node.presence.connect(user_id, conn.id)
    except Exception as exc:
        if not is_unavailable(exc):
            raise
        # Degraded rule: without Redis the per-user socket count is not known; the socket is let in
        # (sends need only PostgreSQL) and presence is not announced.
        DEGRADED.labels("presence").inc()
        others = -1
    if others >= services.settings.limits.sockets_per_user:
        await node.presence.disconnect(user_id, conn.id)
        await _refuse(socket, CLOSE_POLICY, f"at most {services.settings.limits.sockets_per_user} sockets per user")
        return
    await socket.accept()
    await Session(conn, node, services).run(came_online=others == 0)


async def _refuse(socket: WebSocket[Any, Any, Any], code: int, reason: str) -> None:
    """Accept then close, so the client sees the code (a refused handshake shows browsers nothing)."""
    await socket.accept()
    await socket.close(code=code, reason=reason)


class Session:
    """One authenticated socket: registration, presence, and the handling of each client frame."""

    def __init__(self, conn: Connection, node: Node, services: Services) -> None:
        self.conn = conn
        self.node = node
        self.services = services
        self.limits = services.settings.limits
        #: Client frames read and not yet handled; ``_handler`` runs while there are any (None when
        #: idle: an empty deque holds a 64-slot block, ~0.7 KiB per idle socket).
        self._inbox: deque[str] | None = None
        self._handler: asyncio.Task[None] | None = None
        self._linger = Linger()
        #: The task reading the socket (the ASGI task itself) while it reads; the writer's end stops it.
        self._reading: asyncio.Task[Any] | None = None
        self._stopped_by_writer = False

    async def run(self, *, came_online: bool) -> None:
        """The socket is accepted and its presence recorded; this owns both until it closes."""
        hub, conn = self.node.hub, self.conn
        hub.register(conn)
        try:
            if came_online:  # queued for the node's announcer: the socket never waits on it
                self.node.announcer.announce(conn.user_id, "online")
            await self._read_until_closed()
        finally:
            hub.unregister(conn)
            if (handler := self._handler) is not None:
                handler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await handler
            await conn.stop()
            try:
                went_offline = await self.node.presence.disconnect(conn.user_id, conn.id)
            except Exception as exc:  # best effort, but not silent: the socket may go on counting as online
                DEGRADED.labels("presence").inc()
                log.warning("presence of user %s not updated at close: %r", conn.user_id, exc)
            else:
                if went_offline:
                    self.node.announcer.announce(conn.user_id, "offline")

    async def _handle_queued(self) -> None:
        """Handle the client's frames one at a time, in the order they came; end when none has come
        within the linger (the reader starts a new handler for the next frame)."""
        while True:
            while self._inbox:
                await self.handle(self._inbox.popleft())
            await self._linger.wait()
            if not self._inbox:
                break
        self._handler = self._inbox = None

    async def _read_until_closed(self) -> None:
        """Read in this task (the ASGI one) until the client goes, or until the writer ends the socket
        (session ended, slow client), whether or not the client still sends: the writer's end cancels
        the read. A reader task of its own, awaited together with the writer's end, cost an idle
        socket ~2 KiB (the task, its frame and the wait's futures and callbacks)."""
        reading = asyncio.current_task()
        assert reading is not None
        self._reading = reading
        finished = self.conn.finished()
        finished.add_done_callback(self._stop_reading)
        try:
            await self._read_loop()
        except asyncio.CancelledError:
            if not self._stopped_by_writer or reading.uncancel() > 0:
                raise  # the node is stopping (or both): not ours to swallow
        finally:
            self._reading = None  # from here on, the writer's end cancels nothing
            # The future (the connection's) would keep this session through the callback, a reference
            # cycle left to the garbage collector when the client, not the writer, ended the socket.
            finished.remove_done_callback(self._stop_reading)

    def _stop_reading(self, _: asyncio.Future[None]) -> None:
        if self._reading is not None:
            self._stopped_by_writer = True
            self._reading.cancel()

    async def _read_loop(self) -> None:
        """Keep reading while frames are handled elsewhere: a handler waiting on the database must not
        leave the client's pongs unread (the server would then drop the socket as unresponsive)."""
        socket = self.conn.socket
        while not self.conn.ended:
            try:
                event = await socket.receive()
            except WebSocketDisconnect:
                return
            if event["type"] == "websocket.disconnect":
                return
            data = event.get("text")
            if not isinstance(data, str):
                self.conn.offer(frames.error_frame("VALIDATION", "binary frames are not supported; send JSON text"))
                continue
            if len(data) > self.limits.max_frame_bytes:
                self.conn.close(CLOSE_TOO_BIG, f"frames are limited to {self.limits.max_frame_bytes} bytes")
                await self.conn.finished()  # read nothing more; the writer sends the close frame
                return
            if self._inbox is None:
                self._inbox = deque()
            elif len(self._inbox) >= MAX_FRAMES_IN_FLIGHT:
                self._refuse_frame(data)
                continue
            self._inbox.append(data)
            if self._handler is None:
                self._handler = asyncio.create_task(self._handle_queued())
            else:
                self._linger.poke()

    def _refuse_frame(self, data: str) -> None:
        """The client has more frames waiting than we accept; this one is answered, not dropped."""
        try:
            ref = _ref_of(frames.decode(data))
        except frames.FrameError:
            ref = None
        message = f"more than {MAX_FRAMES_IN_FLIGHT} frames waiting; slow down and send it again"
        self.conn.offer(frames.error_frame("RATE_LIMITED", message, ref))

    async def handle(self, data: str) -> None:
        ref: str | None = None
        if self.conn.session_expired():
            # Not one more frame on an expired session (the sweep closes idle ones within a second).
            self.conn.end(CLOSE_SESSION_ENDED, "session expired: reconnect with a new token")
            return
        try:
            frame = frames.decode(data)
            ref = _ref_of(frame)
            await self._dispatch(frame)
        except frames.FrameError as exc:
            self.conn.offer(frames.error_frame("VALIDATION", exc.message, ref))
        except DomainError as exc:
            self.conn.offer(frames.domain_error_frame(exc, ref))
        except Exception as exc:
            error_ref = ref or uuid.uuid4().hex[:12]
            if is_unavailable(exc):
                log.warning("frame of user %s not handled (ref %s): %r", self.conn.user_id, error_ref, exc)
                message = "the database is unreachable; retry (a send with the same client_msg_id)"
                self.conn.offer(frames.error_frame("UNAVAILABLE", message, error_ref))
                return
            log.exception("frame failed for user %s (ref %s)", self.conn.user_id, error_ref)
            self.conn.offer(frames.error_frame("INTERNAL", "internal error", error_ref))

    async def _dispatch(self, frame: frames.ClientFrame) -> None:
        match frame:
            case frames.Join():
                await self._join(frame)
            case frames.Leave(conversation_id=cid):
                self.node.hub.unsubscribe(self.conn, cid)
                self.conn.offer(frames.encode(frames.Left(conversation_id=cid)))
            case frames.Send():
                await self._send(frame)
            case frames.Read(conversation_id=cid, seq=seq):
                cmd = commands.MarkRead(conversation_id=cid, user_id=self.conn.user_id, seq=seq)
                await handlers.mark_read(cmd, self.services.uow(), self.services.clock)
                await apply_read_cursor(self.services, cid, self.conn.user_id)
            case frames.Typing(conversation_id=cid, active=active):
                if cid not in self.conn.cursors:
                    raise Forbidden("join the conversation before sending typing")
                await publish_signal(
                    self.services.redis,
                    Signal(kind="typing", user_id=str(self.conn.user_id), conversation_ids=[str(cid)], active=active),
                )
            case frames.Cancel(reply_id=reply_id):
                await reply_of(self.services, reply_id, self.conn.user_id)
                await replies.request_cancel(self.services.redis, reply_id)
            case frames.Resume(reply_id=reply_id, from_index=from_index):
                await reply_of(self.services, reply_id, self.conn.user_id)
                self.node.hub.follow_reply(self.conn, reply_id)
                self.conn.offer(ReplyResume(reply_id, from_index))
            case frames.Ping():
                self.conn.offer(frames.encode(frames.Pong()))
            case frames.Refresh(access_token=token):
                await self._refresh(token)

    async def _refresh(self, token: str) -> None:
        """Move the socket onto a new access token of the same user; it then lives until that one expires."""
        claims = await self.services.auth.authenticate(token)
        if claims.user_id != self.conn.user_id:
            raise Unauthorized("the new token belongs to another user")
        self.conn.session = claims
        expires_in = max(0, int(claims.expires_at.timestamp() - time.time()))
        self.conn.offer(frames.encode(frames.Refreshed(expires_in=expires_in)))

    async def _join(self, frame: frames.Join) -> None:
        cid = frame.conversation_id
        if cid not in self.conn.cursors and len(self.conn.cursors) >= self.limits.joins_per_socket:
            raise TooLarge(f"at most {self.limits.joins_per_socket} joined conversations per socket; leave one first")
        found = await views.membership(self.services.pg, cid, self.conn.user_id)
        if not found.exists:
            raise NotFound("conversation not found")
        if found.role is None:
            raise NotAParticipant()
        last_seq = found.last_seq
        hub = self.node.hub
        hub.seen_seq[cid] = max(hub.seen_seq.get(cid, 0), last_seq)
        start = last_seq if frame.after_seq is None else min(frame.after_seq, last_seq)
        hub.subscribe(self.conn, cid, start)
        self.conn.offer(frames.encode(frames.Joined(conversation_id=cid, last_seq=last_seq)))
        if start < last_seq:
            self.conn.offer(CatchUp(cid))

    async def _send(self, frame: frames.Send) -> None:
        started = time.perf_counter()
        await self.services.send_limiter.check(self.conn.user_id)
        cmd = commands.PostMessage(
            conversation_id=frame.conversation_id,
            sender_id=self.conn.user_id,
            client_msg_id=frame.client_msg_id,
            text=frame.text,
        )
        result = await self.services.posts.post(cmd)  # group commit: answered once the message is durable
        self.conn.offer(
            frames.encode(
                frames.Ack(
                    client_msg_id=frame.client_msg_id,
                    status="duplicate" if result.duplicate else "accepted",
                    id=result.message.id,
                    seq=result.message.seq,
                    conversation_id=frame.conversation_id,
                )
            )
        )
        metrics.ACK_SECONDS.observe(time.perf_counter() - started)


def _ref_of(frame: frames.ClientFrame) -> str | None:
    if isinstance(frame, frames.Send):
        return frame.client_msg_id
    conversation_id = getattr(frame, "conversation_id", None) or getattr(frame, "reply_id", None)
    return None if conversation_id is None else str(conversation_id)
