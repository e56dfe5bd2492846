"""Use cases: one short function per command, over the ports only.

Workers call these too (the assistant posts its answer through ``post_message``), so they live here,
not in ``app/``. A handler either commits everything it did or raises and commits nothing.
"""

from __future__ import annotations

import msgspec

from domain import commands
from domain.errors import InvalidInput, NotAParticipant, NotFound, Unauthorized
from domain.limits import Limits, clean_client_msg_id, clean_text, clean_title
from domain.model import Conversation
from domain.ports import Clock, UnitOfWork
from domain.values import Message, MessageRole, Participant


class PostResult(msgspec.Struct, frozen=True):
    message: Message
    duplicate: bool


def _conversation_not_found() -> NotFound:
    return NotFound("conversation not found")


async def start_conversation(
    cmd: commands.StartConversation, uow: UnitOfWork, clock: Clock, limits: Limits
) -> Conversation:
    title = clean_title(cmd.title, limits)
    if len(cmd.participant_ids) > limits.max_participants_per_request:
        raise InvalidInput(f"at most {limits.max_participants_per_request} participants at once")
    async with uow:
        known = await uow.users.existing([cmd.owner_id, *cmd.participant_ids])
        if cmd.owner_id not in known:  # a valid token can outlive its account
            raise Unauthorized("the caller's account no longer exists")
        unknown = set(cmd.participant_ids) - known
        if unknown:
            raise InvalidInput("unknown participant ids", details={"user_ids": sorted(map(str, unknown))})
        conv, members = Conversation.start(
            title=title,
            owner_id=cmd.owner_id,
            participant_ids=cmd.participant_ids,
            assistant=cmd.assistant,
            now=clock.now(),
        )
        await uow.conversations.add(conv)
        for member in members:
            await uow.participants.add(member)
        await uow.commit()
    return conv


async def post_message(cmd: commands.PostMessage, uow: UnitOfWork, clock: Clock, limits: Limits) -> PostResult:
    """Lock-and-bump ``last_seq``, insert the message and its event; a repeated client_msg_id writes nothing.

    Duplicates are found by the insert itself (``ON CONFLICT DO NOTHING`` on the unique index), after
    the row lock is held: two identical posts racing each other are serialized by the lock, the
    second one's insert finds the first's row, and it returns that message without committing.
    """
    if cmd.role is MessageRole.ASSISTANT:
        text = clean_text(cmd.text, limits, max_chars=limits.max_assistant_text_chars)
    else:
        text = clean_text(cmd.text, limits)
    client_msg_id = None if cmd.client_msg_id is None else clean_client_msg_id(cmd.client_msg_id)
    async with uow:
        conv = await uow.conversations.get_for_update(cmd.conversation_id, viewer_id=cmd.sender_id)
        if conv is None:
            raise _conversation_not_found()
        if cmd.role is MessageRole.USER:
            conv.require_member()
        elif client_msg_id is not None:
            # The assistant's answer: NULL senders never collide in the unique index, so the row lock
            # held here is what makes a second write of the same reply find the first one instead.
            existing = await uow.messages.by_client_msg_id(conv.id, None, client_msg_id)
            if existing is not None:
                return PostResult(existing, duplicate=True)
        message = conv.post(
            sender_id=cmd.sender_id, role=cmd.role, text=text, client_msg_id=client_msg_id, now=clock.now()
        )
        if not await uow.messages.add(message):
            # This sender already used this client_msg_id here: answer with the original and leave
            # without committing, so the seq bump and the event are rolled back with the transaction.
            assert cmd.sender_id is not None and client_msg_id is not None  # NULLs never conflict
            existing = await uow.messages.by_client_msg_id(conv.id, cmd.sender_id, client_msg_id)
            assert existing is not None
            return PostResult(existing, duplicate=True)
        await uow.conversations.save(conv)
        if cmd.sender_id is not None:  # your own message is never unread to you
            await uow.participants.move_read_cursor(conv.id, cmd.sender_id, message.seq)
        await uow.commit()
    return PostResult(message, duplicate=False)


async def update_conversation(
    cmd: commands.UpdateConversation, uow: UnitOfWork, clock: Clock, limits: Limits
) -> Conversation:
    title = None if cmd.title is None else clean_title(cmd.title, limits)
    async with uow:
        conv = await uow.conversations.get_for_update(cmd.conversation_id, viewer_id=cmd.actor_id)
        if conv is None:
            raise _conversation_not_found()
        conv.update(title=title, assistant=cmd.assistant, now=clock.now())
        await uow.conversations.save(conv)
        await uow.commit()
    return conv


async def delete_conversation(cmd: commands.DeleteConversation, uow: UnitOfWork, clock: Clock) -> None:
    async with uow:
        conv = await uow.conversations.get_for_update(cmd.conversation_id, viewer_id=cmd.actor_id)
        if conv is None:
            raise _conversation_not_found()
        members = await uow.participants.member_ids(conv.id)
        conv.delete(member_ids=members, is_admin=cmd.actor_is_admin, now=clock.now())
        await uow.conversations.delete(conv.id)
        await uow.commit()


async def add_participants(
    cmd: commands.AddParticipants, uow: UnitOfWork, clock: Clock, limits: Limits
) -> list[Participant]:
    """Add members; those already in are skipped. Returns the members that were added."""
    if not cmd.user_ids or len(cmd.user_ids) > limits.max_participants_per_request:
        raise InvalidInput(f"give 1 to {limits.max_participants_per_request} user ids")
    async with uow:
        conv = await uow.conversations.get_for_update(cmd.conversation_id, viewer_id=cmd.actor_id)
        if conv is None:
            raise _conversation_not_found()
        conv.require_member()
        unknown = set(cmd.user_ids) - await uow.users.existing(cmd.user_ids)
        if unknown:
            raise InvalidInput("unknown user ids", details={"user_ids": sorted(map(str, unknown))})
        already = set(await uow.participants.member_ids(conv.id))
        added = [
            conv.add_participant(uid, by=cmd.actor_id, now=clock.now())
            for uid in dict.fromkeys(cmd.user_ids)
            if uid not in already
        ]
        for participant in added:
            await uow.participants.add(participant)
        await uow.commit()
    return added


async def remove_participant(cmd: commands.RemoveParticipant, uow: UnitOfWork, clock: Clock) -> None:
    async with uow:
        conv = await uow.conversations.get_for_update(cmd.conversation_id, viewer_id=cmd.actor_id)
        if conv is None:
            raise _conversation_not_found()
        conv.remove_participant(cmd.user_id, by=cmd.actor_id, is_admin=cmd.actor_is_admin, now=clock.now())
        if not await uow.participants.remove(conv.id, cmd.user_id):
            raise NotFound("that user is not a participant")
        await uow.commit()


async def mark_read(cmd: commands.MarkRead, uow: UnitOfWork, clock: Clock) -> int:
    """Move the caller's read cursor forward; returns the cursor as it stands afterwards."""
    async with uow:
        conv = await uow.conversations.get(cmd.conversation_id, viewer_id=cmd.user_id)
        if conv is None:
            raise _conversation_not_found()
        participant = await uow.participants.get(conv.id, cmd.user_id)
        if participant is None:
            raise NotAParticipant()
        moved = conv.mark_read(
            user_id=cmd.user_id, current=participant.last_read_seq, requested=cmd.seq, now=clock.now()
        )
        if moved is None:
            return participant.last_read_seq
        await uow.participants.move_read_cursor(conv.id, cmd.user_id, moved)
        await uow.commit()
    return moved
