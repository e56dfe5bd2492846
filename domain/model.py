"""The Conversation aggregate.

The aggregate owns the per-conversation sequence: every message gets ``last_seq + 1``. Writers hold
the conversation's row lock while they use it (``ConversationRepository.get_for_update``), which is
what orders concurrent posts. Behaviour methods check the rules and record events in
``self.events``; the unit of work turns those into outbox rows in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID, uuid4

from domain import events
from domain.errors import Forbidden, InvalidInput, NotAParticipant
from domain.values import AssistantSettings, MemberRole, Message, MessageRole, Participant

__all__ = ["Conversation", "next_read_cursor"]


@dataclass
class Conversation:
    """Aggregate root, loaded from the point of view of one user (``viewer_role`` None: not a member)."""

    id: UUID
    title: str
    owner_id: UUID
    last_seq: int
    assistant: AssistantSettings
    created_at: datetime
    updated_at: datetime
    viewer_role: MemberRole | None = None
    events: list[events.Event] = field(default_factory=list)

    @classmethod
    def start(
        cls, *, title: str, owner_id: UUID, participant_ids: list[UUID], assistant: AssistantSettings, now: datetime
    ) -> tuple[Conversation, list[Participant]]:
        conv = cls(
            id=uuid4(),
            title=title,
            owner_id=owner_id,
            last_seq=0,
            assistant=assistant,
            created_at=now,
            updated_at=now,
            viewer_role=MemberRole.OWNER,
        )
        others = [uid for uid in dict.fromkeys(participant_ids) if uid != owner_id]
        members = [Participant.new(conv.id, owner_id, MemberRole.OWNER, now)]
        members += [Participant.new(conv.id, uid, MemberRole.MEMBER, now) for uid in others]
        conv.events.append(
            events.ConversationCreated(
                event_id=uuid4(),
                occurred_at=now,
                conversation_id=conv.id,
                title=title,
                owner_id=owner_id,
                participant_ids=[m.user_id for m in members],
            )
        )
        return conv, members

    # -- rules -----------------------------------------------------------------------------------

    def require_member(self) -> MemberRole:
        if self.viewer_role is None:
            raise NotAParticipant()
        return self.viewer_role

    def require_owner(self, *, is_admin: bool = False) -> None:
        if is_admin:
            return
        if self.require_member() is not MemberRole.OWNER:
            raise Forbidden("only the conversation's owner may do this")

    # -- behaviour -------------------------------------------------------------------------------

    def post(
        self,
        *,
        sender_id: UUID | None,
        sender_role: MemberRole | None,
        role: MessageRole,
        text: str,
        client_msg_id: str | None,
        now: datetime,
    ) -> Message:
        """Append a message with the next seq. A user's message needs its sender to be a member
        (``sender_role``, read under the row lock); assistant and system messages have no sender to check."""
        if role is MessageRole.USER and sender_role is None:
            raise NotAParticipant()
        now = max(now, self.updated_at)  # a conversation's clock never runs backwards
        self.last_seq += 1
        self.updated_at = now
        message = Message(
            id=uuid4(),
            conversation_id=self.id,
            seq=self.last_seq,
            sender_id=sender_id,
            role=role,
            text=text,
            client_msg_id=client_msg_id,
            created_at=now,
        )
        self.events.append(events.MessagePosted(event_id=uuid4(), occurred_at=now, message=message))
        return message

    def update(self, *, title: str | None, assistant: AssistantSettings | None, now: datetime) -> None:
        self.require_owner()
        if title is not None:
            self.title = title
        if assistant is not None:
            self.assistant = assistant
        self.updated_at = now
        self.events.append(
            events.ConversationUpdated(
                event_id=uuid4(), occurred_at=now, conversation_id=self.id, title=self.title, assistant=self.assistant
            )
        )

    def delete(self, *, member_ids: list[UUID], is_admin: bool, now: datetime) -> None:
        self.require_owner(is_admin=is_admin)
        self.events.append(
            events.ConversationDeleted(
                event_id=uuid4(), occurred_at=now, conversation_id=self.id, participant_ids=member_ids
            )
        )

    def add_participant(self, user_id: UUID, *, by: UUID, now: datetime) -> Participant:
        """Members add members (protocol.md); the new member can read the whole history."""
        self.require_member()
        self.events.append(
            events.ParticipantAdded(
                event_id=uuid4(), occurred_at=now, conversation_id=self.id, user_id=user_id, added_by=by
            )
        )
        return Participant.new(self.id, user_id, MemberRole.MEMBER, now)

    def remove_participant(self, user_id: UUID, *, by: UUID, is_admin: bool, now: datetime) -> None:
        """Anyone may leave; removing someone else takes the owner. The owner cannot leave their own room."""
        if user_id != by:
            self.require_owner(is_admin=is_admin)
        elif self.require_member() is MemberRole.OWNER:
            raise InvalidInput("the owner cannot leave; delete the conversation or transfer it first")
        self.events.append(
            events.ParticipantRemoved(
                event_id=uuid4(), occurred_at=now, conversation_id=self.id, user_id=user_id, removed_by=by
            )
        )

    def mark_read(self, *, user_id: UUID, current: int, requested: int, now: datetime) -> int | None:
        self.require_member()
        moved = next_read_cursor(current, requested, self.last_seq)
        if moved is not None:
            self.events.append(
                events.ReadCursorMoved(
                    event_id=uuid4(), occurred_at=now, conversation_id=self.id, user_id=user_id, seq=moved
                )
            )
        return moved


def next_read_cursor(current: int, requested: int, last_seq: int) -> int | None:
    """Where a read cursor moves to, or None when it stays.

    Cursors only move forward and never past the last message: a stale client marking an older
    seq is a no-op, and a seq beyond ``last_seq`` is a client bug we reject instead of storing.
    """
    if requested < 0:
        raise InvalidInput("seq must be zero or positive")
    if requested > last_seq:
        raise InvalidInput(f"seq {requested} is beyond the conversation's last message ({last_seq})")
    return requested if requested > current else None
