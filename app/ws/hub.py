"""The node's registry of local sockets (owned by ``app.state``, never a module global) and the
routing of events and signals to them."""

from __future__ import annotations

import logging
from collections import defaultdict
from uuid import UUID

from app.ws import frames, metrics
from app.ws.connection import CatchUp, Connection, Live
from app.ws.replies import ReplyLive, reply_frame
from domain import events
from infrastructure.redis.replies import ReplyEnd, ReplyEntry

log = logging.getLogger("parley.ws.hub")


class Hub:
    def __init__(self) -> None:
        self.connections: set[Connection] = set()
        self._by_conversation: defaultdict[UUID, set[Connection]] = defaultdict(set)
        self._by_user: defaultdict[UUID, set[Connection]] = defaultdict(set)
        #: Highest seq this node has seen on the stream per conversation (for the lag safety net).
        self.seen_seq: dict[UUID, int] = {}
        #: Sockets that resumed a reply (joined or not) -> they get its entries until its end.
        self._reply_followers: defaultdict[UUID, set[Connection]] = defaultdict(set)

    # -- registry --------------------------------------------------------------------------------

    def register(self, conn: Connection) -> None:
        self.connections.add(conn)
        self._by_user[conn.user_id].add(conn)
        metrics.CONNECTIONS.set(len(self.connections))

    def unregister(self, conn: Connection) -> None:
        self.connections.discard(conn)
        metrics.CONNECTIONS.set(len(self.connections))
        self._discard(self._by_user, conn.user_id, conn)
        for conversation_id in list(conn.cursors):
            self.unsubscribe(conn, conversation_id)
        for reply_id in conn.replies.followed:
            self._discard(self._reply_followers, reply_id, conn)

    def subscribe(self, conn: Connection, conversation_id: UUID, cursor: int) -> None:
        conn.cursors[conversation_id] = cursor
        self._by_conversation[conversation_id].add(conn)

    def unsubscribe(self, conn: Connection, conversation_id: UUID) -> None:
        conn.cursors.pop(conversation_id, None)
        self._discard(self._by_conversation, conversation_id, conn)
        if conversation_id not in self._by_conversation:
            self.seen_seq.pop(conversation_id, None)

    def joined_conversations(self) -> list[UUID]:
        return list(self._by_conversation)

    def sockets_of(self, user_id: UUID) -> int:
        return len(self._by_user.get(user_id, ()))

    @staticmethod
    def _discard(index: defaultdict[UUID, set[Connection]], key: UUID, conn: Connection) -> None:
        members = index.get(key)
        if members is not None:
            members.discard(conn)
            if not members:
                del index[key]

    # -- delivery --------------------------------------------------------------------------------

    def on_event(self, event: events.Event) -> None:
        """Route one durable event to the local sockets it concerns."""
        match event:
            case events.MessagePosted(message=message):
                self.seen_seq[message.conversation_id] = max(self.seen_seq.get(message.conversation_id, 0), message.seq)
                subscribers = self._by_conversation.get(message.conversation_id)
                if subscribers:
                    live = Live(message.conversation_id, message.seq, frames.message_frame(message))
                    for conn in list(subscribers):
                        conn.offer(live)
            case events.ReadCursorMoved(conversation_id=cid, user_id=uid, seq=seq):
                self.to_conversation(cid, frames.encode(frames.ReadReceipt(conversation_id=cid, user_id=uid, seq=seq)))
            case events.ParticipantRemoved(conversation_id=cid, user_id=uid):
                self._evict(cid, {uid}, "removed from the conversation")
            case events.ConversationDeleted(conversation_id=cid, participant_ids=uids):
                self._evict(cid, set(uids), "conversation deleted")
            case _:
                pass

    def follow_reply(self, conn: Connection, reply_id: UUID) -> None:
        conn.replies.followed.add(reply_id)
        self._reply_followers[reply_id].add(conn)

    def on_reply(self, entry: ReplyEntry) -> None:
        """A reply delta or end: to the sockets joined to its conversation and those that resumed it."""
        targets = set(self._by_conversation.get(entry.conversation_id, ()))
        if isinstance(entry, ReplyEnd):
            followers = self._reply_followers.pop(entry.reply_id, set())
            for conn in followers:
                conn.replies.followed.discard(entry.reply_id)
            targets |= followers
        else:
            targets |= self._reply_followers.get(entry.reply_id, set())
        if targets:
            live = ReplyLive(entry, reply_frame(entry))
            for conn in targets:
                conn.offer(live)

    def to_conversation(self, conversation_id: UUID, data: str, *, except_user: UUID | None = None) -> None:
        for conn in list(self._by_conversation.get(conversation_id, ())):
            if conn.user_id != except_user:
                conn.offer(data)

    def to_user(self, user_id: UUID, data: str) -> None:
        """Every local socket of the user, joined to anything or not (conversation-list changes)."""
        for conn in list(self._by_user.get(user_id, ())):
            conn.offer(data)

    def to_users_in(self, conversation_ids: list[UUID], data: str, *, except_user: UUID | None = None) -> None:
        """Once per socket joined to any of these conversations (presence of a shared member)."""
        targets: set[Connection] = set()
        for cid in conversation_ids:
            targets.update(self._by_conversation.get(cid, ()))
        for conn in targets:
            if conn.user_id != except_user:
                conn.offer(data)

    def resync(self, conversation_id: UUID) -> None:
        """Have every local subscriber catch up from Postgres (events may have been lost)."""
        for conn in list(self._by_conversation.get(conversation_id, ())):
            conn.offer(CatchUp(conversation_id))

    def resync_all(self) -> None:
        for conversation_id in self.joined_conversations():
            self.resync(conversation_id)

    def _evict(self, conversation_id: UUID, user_ids: set[UUID], reason: str) -> None:
        for conn in list(self._by_conversation.get(conversation_id, ())):
            if conn.user_id in user_ids:
                self.unsubscribe(conn, conversation_id)
                conn.offer(frames.encode(frames.Left(conversation_id=conversation_id, reason=reason)))
