"""Use cases: one short function per command, over the ports only.

Workers call these too (the assistant posts its answer through ``post_message``), so they live here,
not in ``app/``. A handler either commits everything it did or raises and commits nothing;
``post_messages`` (group commit) commits the posts that succeeded and reports each refusal apart.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from domain import commands
from domain.errors import DomainError, InvalidInput, NotAParticipant, NotFound, Unauthorized
from domain.limits import Limits, clean_client_msg_id, clean_text, clean_title
from domain.model import Conversation
from domain.ports import Clock, SendKey, UnitOfWork
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


def prepare_post(cmd: commands.PostMessage, limits: Limits) -> commands.PostMessage:
    """Check and clean a post's input before it joins a batch: bad input fails here, alone, and changes
    nothing (the text is trimmed, its length checked, the client id validated)."""
    if cmd.role is MessageRole.ASSISTANT:
        text = clean_text(cmd.text, limits, max_chars=limits.max_assistant_text_chars)
    else:
        text = clean_text(cmd.text, limits)
    client_msg_id = None if cmd.client_msg_id is None else clean_client_msg_id(cmd.client_msg_id)
    return msgspec.structs.replace(cmd, text=text, client_msg_id=client_msg_id)


#: What one post in a batch came to: stored (or found stored before), or refused on its own.
PostOutcome = PostResult | DomainError


async def post_messages(cmds: Sequence[commands.PostMessage], uow: UnitOfWork, clock: Clock) -> list[PostOutcome]:
    """Group commit: every post in one transaction, each with its own outcome (same order as ``cmds``).

    ``cmds`` come from ``prepare_post``. The conversations are locked first (in id order, so batches
    running at once on other connections or nodes never deadlock); membership and earlier sends with
    the same ``client_msg_id`` are read under those locks, so a repeated send finds the original even
    when both raced, also inside one batch. A sender who is not a member, or a conversation that does
    not exist, fails that post only. Seqs are assigned per conversation in the order of ``cmds``.
    Returns after the commit: every ``PostResult`` in it is durable.
    """
    async with uow:
        state = await uow.conversations.lock_for_posting(
            sorted({c.conversation_id for c in cmds}),
            members=[
                (c.conversation_id, c.sender_id) for c in cmds if c.role is MessageRole.USER and c.sender_id is not None
            ],
            sends=[(c.conversation_id, c.sender_id, c.client_msg_id) for c in cmds if c.client_msg_id is not None],
        )
        convs, roles = state.conversations, state.roles
        sent: dict[SendKey, Message] = dict(state.sent)  # and what this batch stores, as it goes
        now = clock.now()
        outcomes: list[PostOutcome] = []
        posted: list[Message] = []
        for cmd in cmds:
            conv = convs.get(cmd.conversation_id)
            if conv is None:
                outcomes.append(_conversation_not_found())
                continue
            key = None if cmd.client_msg_id is None else (cmd.conversation_id, cmd.sender_id, cmd.client_msg_id)
            if key is not None and key in sent:
                outcomes.append(PostResult(sent[key], duplicate=True))
                continue
            try:
                message = conv.post(
                    sender_id=cmd.sender_id,
                    sender_role=None if cmd.sender_id is None else roles.get((conv.id, cmd.sender_id)),
                    role=cmd.role,
                    text=cmd.text,
                    client_msg_id=cmd.client_msg_id,
                    now=now,
                )
            except DomainError as exc:
                outcomes.append(exc)
                continue
            if key is not None:
                sent[key] = message
            posted.append(message)
            outcomes.append(PostResult(message, duplicate=False))
        if posted:
            await uow.messages.add_many(posted)
            for cid in dict.fromkeys(m.conversation_id for m in posted):
                await uow.conversations.save(convs[cid])
            # Your own message is never unread to you: the sender's cursor moves to their latest post.
            cursors = {(m.conversation_id, m.sender_id): m.seq for m in posted if m.sender_id is not None}
            for (cid, uid), seq in cursors.items():
                await uow.participants.move_read_cursor(cid, uid, seq)
            await uow.commit()
    return outcomes


async def post_message(cmd: commands.PostMessage, uow: UnitOfWork, clock: Clock, limits: Limits) -> PostResult:
    """One post in its own transaction (the batch of one); a repeated client_msg_id writes nothing."""
    (outcome,) = await post_messages([prepare_post(cmd, limits)], uow, clock)
    if isinstance(outcome, DomainError):
        raise outcome
    return outcome


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
