"""The domain's rules through its handlers, over the in-memory fakes: no database, no Redis, milliseconds."""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest

from domain import commands, events, handlers
from domain.errors import Forbidden, InvalidInput, NotAParticipant, NotFound, TooLarge, Unauthorized
from domain.limits import Limits, clean_client_msg_id, clean_text, clean_title
from domain.model import Conversation, next_read_cursor
from domain.values import MemberRole, MessageRole
from tests.unit.fakes import FakeClock, FakeUnitOfWork

OWNER, MEMBER, STRANGER, OTHER = uuid4(), uuid4(), uuid4(), uuid4()
LIMITS = Limits()


@pytest.fixture
def uow() -> FakeUnitOfWork:
    return FakeUnitOfWork(users={OWNER, MEMBER, STRANGER, OTHER})


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def start(uow: FakeUnitOfWork, clock: FakeClock, *members: UUID) -> Conversation:
    cmd = commands.StartConversation(owner_id=OWNER, title=" room ", participant_ids=list(members))
    return await handlers.start_conversation(cmd, uow, clock, LIMITS)


async def post(
    uow: FakeUnitOfWork, clock: FakeClock, conv: Conversation, sender: UUID, text: str = "hi", cmid: str | None = None
) -> handlers.PostResult:
    cmd = commands.PostMessage(conversation_id=conv.id, sender_id=sender, client_msg_id=cmid or uuid4().hex, text=text)
    return await handlers.post_message(cmd, uow, clock, LIMITS)


def of_type(uow: FakeUnitOfWork, kind: type) -> list[events.Event]:
    return [e for e in uow.outbox if isinstance(e, kind)]


# -- starting and posting --------------------------------------------------------------------------------


async def test_starting_a_conversation_makes_the_creator_owner_and_records_one_event(
    uow: FakeUnitOfWork, clock: FakeClock
) -> None:
    conv = await start(uow, clock, MEMBER, MEMBER, OWNER)

    assert uow.committed and conv.title == "room"
    roles = {uid: p.role for (_, uid), p in uow.participants.rows.items()}
    assert roles == {OWNER: MemberRole.OWNER, MEMBER: MemberRole.MEMBER}
    [created] = uow.outbox
    assert isinstance(created, events.ConversationCreated) and created.participant_ids == [OWNER, MEMBER]


async def test_starting_with_an_unknown_participant_commits_nothing(uow: FakeUnitOfWork, clock: FakeClock) -> None:
    with pytest.raises(InvalidInput):
        await start(uow, clock, MEMBER, uuid4())

    assert not uow.committed and uow.outbox == [] and uow.conversations.rows == {}


async def test_starting_a_conversation_for_an_account_that_no_longer_exists_is_unauthorized(
    clock: FakeClock,
) -> None:
    uow = FakeUnitOfWork(users={MEMBER})

    with pytest.raises(Unauthorized):
        await start(uow, clock, MEMBER)

    assert not uow.committed and uow.conversations.rows == {}


async def test_seqs_increment_from_one_and_each_post_records_its_event(uow: FakeUnitOfWork, clock: FakeClock) -> None:
    conv = await start(uow, clock, MEMBER)

    seqs = [(await post(uow, clock, conv, sender)).message.seq for sender in (OWNER, MEMBER, OWNER)]

    assert seqs == [1, 2, 3]
    assert uow.conversations.rows[conv.id].last_seq == 3
    assert [e.message.seq for e in of_type(uow, events.MessagePosted)] == [1, 2, 3]  # type: ignore[attr-defined]
    assert [m.seq for m in uow.messages.rows] == [1, 2, 3]


async def test_a_repeated_client_msg_id_returns_the_original_and_records_nothing(
    uow: FakeUnitOfWork, clock: FakeClock
) -> None:
    conv = await start(uow, clock)
    first = await post(uow, clock, conv, OWNER, text="once", cmid="same")
    outbox_before = list(uow.outbox)

    again = await post(uow, clock, conv, OWNER, text="twice", cmid="same")

    assert not first.duplicate and again.duplicate
    assert again.message == first.message
    assert not uow.committed and uow.outbox == outbox_before
    assert len(uow.messages.rows) == 1 and uow.conversations.rows[conv.id].last_seq == 1


async def test_the_same_client_msg_id_from_another_sender_is_a_new_message(
    uow: FakeUnitOfWork, clock: FakeClock
) -> None:
    conv = await start(uow, clock, MEMBER)

    results = [await post(uow, clock, conv, sender, cmid="same") for sender in (OWNER, MEMBER)]

    assert [(r.duplicate, r.message.seq) for r in results] == [(False, 1), (False, 2)]


async def test_a_non_member_cannot_post_and_nothing_is_committed(uow: FakeUnitOfWork, clock: FakeClock) -> None:
    conv = await start(uow, clock, MEMBER)
    outbox_before = list(uow.outbox)

    with pytest.raises(NotAParticipant):
        await post(uow, clock, conv, STRANGER)

    assert not uow.committed and uow.outbox == outbox_before
    assert uow.messages.rows == [] and uow.conversations.rows[conv.id].last_seq == 0


async def test_posting_to_an_unknown_conversation_is_not_found(uow: FakeUnitOfWork, clock: FakeClock) -> None:
    cmd = commands.PostMessage(conversation_id=uuid4(), sender_id=OWNER, client_msg_id="x", text="hi")

    with pytest.raises(NotFound):
        await handlers.post_message(cmd, uow, clock, LIMITS)


async def test_the_assistant_posts_without_being_a_member(uow: FakeUnitOfWork, clock: FakeClock) -> None:
    conv = await start(uow, clock)
    cmd = commands.PostMessage(
        conversation_id=conv.id, sender_id=None, client_msg_id=None, text="beep", role=MessageRole.ASSISTANT
    )

    result = await handlers.post_message(cmd, uow, clock, LIMITS)

    assert result.message.seq == 1 and result.message.sender_id is None and uow.committed


async def test_posting_moves_the_senders_read_cursor_but_no_one_elses(uow: FakeUnitOfWork, clock: FakeClock) -> None:
    conv = await start(uow, clock, MEMBER)

    await post(uow, clock, conv, OWNER)
    await post(uow, clock, conv, OWNER)

    cursors = {uid: p.last_read_seq for (_, uid), p in uow.participants.rows.items()}
    assert cursors == {OWNER: 2, MEMBER: 0}


# -- group commit: several posts in one transaction -----------------------------------------------------


def send(conv: Conversation, sender: UUID | None, cmid: str | None = None, text: str = "hi") -> commands.PostMessage:
    return handlers.prepare_post(
        commands.PostMessage(conversation_id=conv.id, sender_id=sender, client_msg_id=cmid, text=text), LIMITS
    )


async def test_a_batch_assigns_seqs_per_conversation_in_arrival_order_and_commits_once(
    uow: FakeUnitOfWork, clock: FakeClock
) -> None:
    a, b = await start(uow, clock, MEMBER), await start(uow, clock, MEMBER)
    uow.outbox.clear()

    outcomes = await handlers.post_messages(
        [send(a, OWNER), send(b, MEMBER), send(a, MEMBER), send(b, OWNER), send(a, OWNER)], uow, clock
    )

    assert uow.committed
    seqs = [(o.message.conversation_id, o.message.seq) for o in outcomes if isinstance(o, handlers.PostResult)]
    assert seqs == [(a.id, 1), (b.id, 1), (a.id, 2), (b.id, 2), (a.id, 3)]
    posted = [(e.message.conversation_id, e.message.seq) for e in of_type(uow, events.MessagePosted)]
    assert [s for c, s in posted if c == a.id] == [1, 2, 3] and [s for c, s in posted if c == b.id] == [1, 2]
    assert uow.conversations.rows[a.id].last_seq == 3 and uow.conversations.rows[b.id].last_seq == 2
    assert uow.participants.rows[(a.id, MEMBER)].last_read_seq == 2  # a sender's cursor: their latest post


async def test_a_refused_post_fails_alone_and_the_rest_of_its_batch_commits(
    uow: FakeUnitOfWork, clock: FakeClock
) -> None:
    conv = await start(uow, clock, MEMBER)
    missing = Conversation.start(
        title="x", owner_id=OWNER, participant_ids=[], assistant=conv.assistant, now=clock.now()
    )[0]

    outcomes = await handlers.post_messages(
        [send(conv, STRANGER), send(conv, OWNER), send(missing, OWNER), send(conv, MEMBER)], uow, clock
    )

    assert isinstance(outcomes[0], NotAParticipant) and isinstance(outcomes[2], NotFound)
    assert [o.message.seq for o in outcomes if isinstance(o, handlers.PostResult)] == [1, 2]
    assert uow.committed and uow.conversations.rows[conv.id].last_seq == 2


async def test_a_client_id_repeated_inside_one_batch_is_stored_once(uow: FakeUnitOfWork, clock: FakeClock) -> None:
    conv = await start(uow, clock, MEMBER)

    first, again, other_sender = await handlers.post_messages(
        [send(conv, OWNER, "same", "one"), send(conv, OWNER, "same", "two"), send(conv, MEMBER, "same")], uow, clock
    )

    assert isinstance(first, handlers.PostResult) and isinstance(again, handlers.PostResult)
    assert not first.duplicate and again.duplicate and again.message == first.message
    assert isinstance(other_sender, handlers.PostResult) and other_sender.message.seq == 2
    assert len(uow.messages.rows) == 2


async def test_a_batch_with_nothing_to_store_commits_nothing(uow: FakeUnitOfWork, clock: FakeClock) -> None:
    conv = await start(uow, clock, MEMBER)
    await handlers.post_messages([send(conv, OWNER, "once")], uow, clock)
    uow.outbox.clear()

    (outcome,) = await handlers.post_messages([send(conv, OWNER, "once")], uow, clock)

    assert isinstance(outcome, handlers.PostResult) and outcome.duplicate
    assert not uow.committed and uow.outbox == []


# -- text limits -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "cleaned"),
    [("hi", "hi"), ("  hi \n", "hi"), ("a  b", "a  b"), ("x" * 4000, "x" * 4000), (" " + "é" * 4000 + " ", "é" * 4000)],
)
def test_clean_text_trims_and_keeps_texts_up_to_the_limit(text: str, cleaned: str) -> None:
    assert clean_text(text, LIMITS) == cleaned


@pytest.mark.parametrize(
    ("text", "error"), [("", InvalidInput), (" \t\n ", InvalidInput), ("a\x00b", InvalidInput), ("x" * 4001, TooLarge)]
)
def test_clean_text_refuses_empty_and_too_long_texts(text: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        clean_text(text, LIMITS)


def test_nul_characters_are_refused_in_titles_and_client_msg_ids() -> None:
    with pytest.raises(InvalidInput):
        clean_title("a\x00b", LIMITS)
    with pytest.raises(InvalidInput):
        clean_client_msg_id("id\x00")


def test_clean_text_follows_a_configured_limit() -> None:
    small = Limits(max_text_chars=5)

    assert clean_text(" 12345 ", small) == "12345"
    with pytest.raises(TooLarge):
        clean_text("123456", small)


async def test_a_post_stores_the_trimmed_text_and_a_too_long_one_writes_nothing(
    uow: FakeUnitOfWork, clock: FakeClock
) -> None:
    conv = await start(uow, clock)

    stored = await post(uow, clock, conv, OWNER, text="\n  hello  \n")
    with pytest.raises(TooLarge):
        await post(uow, clock, conv, OWNER, text="x" * 4001)

    assert stored.message.text == "hello" and [m.text for m in uow.messages.rows] == ["hello"]


# -- read cursors ----------------------------------------------------------------------------------------


async def mark(uow: FakeUnitOfWork, clock: FakeClock, conv: Conversation, user: UUID, seq: int) -> int:
    return await handlers.mark_read(commands.MarkRead(conversation_id=conv.id, user_id=user, seq=seq), uow, clock)


async def test_a_read_cursor_moves_forward_only(uow: FakeUnitOfWork, clock: FakeClock) -> None:
    conv = await start(uow, clock, MEMBER)
    for _ in range(3):
        await post(uow, clock, conv, OWNER)

    assert await mark(uow, clock, conv, MEMBER, 2) == 2 and uow.committed
    assert await mark(uow, clock, conv, MEMBER, 1) == 2 and not uow.committed
    assert await mark(uow, clock, conv, MEMBER, 2) == 2 and not uow.committed
    assert await mark(uow, clock, conv, MEMBER, 3) == 3

    assert [e.seq for e in of_type(uow, events.ReadCursorMoved)] == [2, 3]  # type: ignore[attr-defined]
    assert uow.participants.rows[(conv.id, MEMBER)].last_read_seq == 3


async def test_a_read_cursor_beyond_the_last_message_is_refused(uow: FakeUnitOfWork, clock: FakeClock) -> None:
    conv = await start(uow, clock, MEMBER)
    await post(uow, clock, conv, OWNER)

    with pytest.raises(InvalidInput):
        await mark(uow, clock, conv, MEMBER, 2)
    with pytest.raises(NotAParticipant):
        await mark(uow, clock, conv, STRANGER, 1)

    assert uow.participants.rows[(conv.id, MEMBER)].last_read_seq == 0


@pytest.mark.parametrize(
    ("current", "requested", "last_seq", "moved"),
    [(0, 1, 5, 1), (3, 5, 5, 5), (3, 3, 5, None), (3, 1, 5, None), (0, 0, 0, None)],
)
def test_next_read_cursor(current: int, requested: int, last_seq: int, moved: int | None) -> None:
    assert next_read_cursor(current, requested, last_seq) == moved


@pytest.mark.parametrize(("requested", "last_seq"), [(6, 5), (1, 0), (-1, 5)])
def test_next_read_cursor_refuses_impossible_seqs(requested: int, last_seq: int) -> None:
    with pytest.raises(InvalidInput):
        next_read_cursor(0, requested, last_seq)


# -- ownership and membership ----------------------------------------------------------------------------


async def test_only_the_owner_can_update(uow: FakeUnitOfWork, clock: FakeClock) -> None:
    conv = await start(uow, clock, MEMBER)

    def update(actor: UUID) -> commands.UpdateConversation:
        return commands.UpdateConversation(conversation_id=conv.id, actor_id=actor, title="new")

    with pytest.raises(Forbidden) as by_member:
        await handlers.update_conversation(update(MEMBER), uow, clock, LIMITS)
    with pytest.raises(NotAParticipant):
        await handlers.update_conversation(update(STRANGER), uow, clock, LIMITS)
    assert not isinstance(by_member.value, NotAParticipant)
    assert uow.conversations.rows[conv.id].title == "room"

    await handlers.update_conversation(update(OWNER), uow, clock, LIMITS)
    assert uow.conversations.rows[conv.id].title == "new" and len(of_type(uow, events.ConversationUpdated)) == 1


@pytest.mark.parametrize(("actor", "is_admin", "allowed"), [(MEMBER, False, False), (STRANGER, False, False),
                                                            (OWNER, False, True), (STRANGER, True, True)])  # fmt: skip
async def test_only_the_owner_or_an_admin_can_delete(
    uow: FakeUnitOfWork, clock: FakeClock, actor: UUID, is_admin: bool, allowed: bool
) -> None:
    conv = await start(uow, clock, MEMBER)
    cmd = commands.DeleteConversation(conversation_id=conv.id, actor_id=actor, actor_is_admin=is_admin)

    if allowed:
        await handlers.delete_conversation(cmd, uow, clock)
        [deleted] = of_type(uow, events.ConversationDeleted)
        assert set(deleted.participant_ids) == {OWNER, MEMBER}  # type: ignore[attr-defined]
        assert conv.id not in uow.conversations.rows and uow.participants.rows == {}
    else:
        with pytest.raises(Forbidden):
            await handlers.delete_conversation(cmd, uow, clock)
        assert conv.id in uow.conversations.rows and of_type(uow, events.ConversationDeleted) == []


def remove(conv: Conversation, actor: UUID, user: UUID) -> commands.RemoveParticipant:
    return commands.RemoveParticipant(conversation_id=conv.id, actor_id=actor, user_id=user)


async def test_the_owner_cannot_leave_but_a_member_can(uow: FakeUnitOfWork, clock: FakeClock) -> None:
    conv = await start(uow, clock, MEMBER)

    with pytest.raises(InvalidInput):
        await handlers.remove_participant(remove(conv, OWNER, OWNER), uow, clock)
    await handlers.remove_participant(remove(conv, MEMBER, MEMBER), uow, clock)

    assert set(await uow.participants.member_ids(conv.id)) == {OWNER}
    [removed] = of_type(uow, events.ParticipantRemoved)
    assert removed.user_id == MEMBER  # type: ignore[attr-defined]


async def test_removing_someone_else_takes_the_owner(uow: FakeUnitOfWork, clock: FakeClock) -> None:
    conv = await start(uow, clock, MEMBER, OTHER)

    with pytest.raises(Forbidden):
        await handlers.remove_participant(remove(conv, MEMBER, OTHER), uow, clock)
    await handlers.remove_participant(remove(conv, OWNER, OTHER), uow, clock)
    with pytest.raises(NotFound):
        await handlers.remove_participant(remove(conv, OWNER, OTHER), uow, clock)

    assert set(await uow.participants.member_ids(conv.id)) == {OWNER, MEMBER}


async def test_members_add_members_skipping_those_already_in(uow: FakeUnitOfWork, clock: FakeClock) -> None:
    conv = await start(uow, clock, MEMBER)

    def add(actor: UUID, *users: UUID) -> commands.AddParticipants:
        return commands.AddParticipants(conversation_id=conv.id, actor_id=actor, user_ids=list(users))

    added = await handlers.add_participants(add(MEMBER, OTHER, OWNER, OTHER), uow, clock, LIMITS)
    with pytest.raises(NotAParticipant):
        await handlers.add_participants(add(STRANGER, STRANGER), uow, clock, LIMITS)
    with pytest.raises(InvalidInput):
        await handlers.add_participants(add(OWNER, uuid4()), uow, clock, LIMITS)
    with pytest.raises(InvalidInput):
        await handlers.add_participants(add(OWNER), uow, clock, LIMITS)

    assert [p.user_id for p in added] == [OTHER]
    assert set(await uow.participants.member_ids(conv.id)) == {OWNER, MEMBER, OTHER}
    assert [e.user_id for e in of_type(uow, events.ParticipantAdded)] == [OTHER]  # type: ignore[attr-defined]
