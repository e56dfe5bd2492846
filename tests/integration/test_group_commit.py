"""Flow 1 -> 2 under load: group commit (concurrent posts share transactions) and the API node's own
outbox publisher, with the relay as the safety net. Real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from domain import commands, events, handlers
from domain.errors import InvalidInput, NotAParticipant
from domain.limits import Limits
from infrastructure.bootstrap import Services, asyncpg_dsn
from infrastructure.db import outbox as db_outbox
from infrastructure.db.group_commit import GroupCommit
from infrastructure.db.tables import messages, outbox, participants, users
from infrastructure.db.unit_of_work import SqlUnitOfWork
from infrastructure.embedded import free_port
from infrastructure.outbox_publisher import OutboxPublisher
from infrastructure.redis import streams
from tests.factories import StartConversationFactory
from workers.outbox_relay import OutboxRelay


async def _users(services: Services, count: int) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(count)]
    async with services.engine.begin() as conn:
        await conn.execute(
            sa.insert(users), [{"id": u, "email": f"{u}@example.com", "name": "u", "password_hash": "x"} for u in ids]
        )
    return ids


async def _conversation(services: Services, owner: uuid.UUID, *members: uuid.UUID) -> uuid.UUID:
    cmd = StartConversationFactory.build(owner_id=owner, participant_ids=list(members))
    return (await handlers.start_conversation(cmd, services.uow(), services.clock, Limits())).id


async def _published_conversations(services: Services, count: int) -> tuple[uuid.UUID, uuid.UUID, list[uuid.UUID]]:
    """An owner, a member and ``count`` conversations of theirs, whose creation events the relay has
    published already (the streams then hold only what the test writes)."""
    owner, member = await _users(services, 2)
    convs = [await _conversation(services, owner, member) for _ in range(count)]
    await OutboxRelay(services).drain()
    return owner, member, convs


def _send(conv: uuid.UUID, sender: uuid.UUID, client_msg_id: str | None = None) -> commands.PostMessage:
    return commands.PostMessage(
        conversation_id=conv, sender_id=sender, client_msg_id=client_msg_id or uuid.uuid4().hex, text="hi"
    )


async def _scalar(services: Services, stmt: Any) -> Any:
    async with services.engine.connect() as conn:
        return (await conn.execute(stmt)).scalar_one()


def _batches() -> tuple[float, float]:
    count = REGISTRY.get_sample_value("parley_post_batch_size_count") or 0.0
    posts = REGISTRY.get_sample_value("parley_post_batch_size_sum") or 0.0
    return count, posts


def _timed() -> tuple[float, float]:
    """Posts timed waiting for a transaction, transactions timed."""
    queued = REGISTRY.get_sample_value("parley_post_queue_seconds_count") or 0.0
    transactions = REGISTRY.get_sample_value("parley_post_transaction_seconds_count") or 0.0
    return queued, transactions


async def _stream_seqs(services: Services) -> dict[uuid.UUID, list[int]]:
    seqs: defaultdict[uuid.UUID, list[int]] = defaultdict(list)
    for stream in streams.all_streams(services.settings.redis.shard_count):
        for _id, fields in await services.redis.xrange(stream):
            event = events.decode(fields[b"data"])
            if isinstance(event, events.MessagePosted):
                seqs[event.message.conversation_id].append(event.message.seq)
    return dict(seqs)


@pytest.mark.parametrize("in_flight", [1, 4], ids=["one transaction at a time", "four in flight"])
async def test_concurrent_posts_share_transactions_and_each_conversation_gets_gapless_seqs_in_arrival_order(
    services: Services, in_flight: int
) -> None:
    owner, *members = await _users(services, 4)
    convs = [await _conversation(services, owner, *members) for _ in range(3)]
    batches_before, posts_before = _batches()
    queued_before, transactions_before = _timed()
    group = GroupCommit(services.uow, Limits(), max_in_flight=in_flight)

    results = await asyncio.gather(*(group.post(_send(convs[i % 3], [owner, *members][i % 4])) for i in range(300)))

    batches, posts = _batches()
    assert posts - posts_before == 300
    assert batches - batches_before < 300, "no two posts shared a transaction"
    queued, transactions = _timed()
    assert (queued - queued_before, transactions - transactions_before) == (300, batches - batches_before)
    by_conversation: defaultdict[uuid.UUID, list[int]] = defaultdict(list)
    for r in results:  # in the order the posts arrived
        by_conversation[r.message.conversation_id].append(r.message.seq)
    assert by_conversation == {c: list(range(1, 101)) for c in convs}
    stored = await _scalar(services, sa.select(sa.func.count()).select_from(messages))
    rows = await _scalar(
        services, sa.select(sa.func.count()).select_from(outbox).where(outbox.c.event_type == "message_posted")
    )
    assert stored == rows == 300


async def test_a_stranger_in_a_batch_is_refused_alone_and_the_others_are_stored(services: Services) -> None:
    owner, member, stranger = await _users(services, 3)
    conv = await _conversation(services, owner, member)

    outcomes = await asyncio.gather(
        *(services.posts.post(_send(conv, sender)) for sender in [owner, stranger, member] * 20),
        return_exceptions=True,
    )

    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(refused) == 20 and all(isinstance(o, NotAParticipant) for o in refused)
    stored = sorted(o.message.seq for o in outcomes if isinstance(o, handlers.PostResult))
    assert stored == list(range(1, 41))
    latest = max(
        o.message.seq for o in outcomes if isinstance(o, handlers.PostResult) and o.message.sender_id == member
    )
    cursor = sa.select(participants.c.last_read_seq).where(
        participants.c.conversation_id == conv, participants.c.user_id == member
    )
    assert await _scalar(services, cursor) == latest  # a sender's own messages are read


async def test_bad_input_is_refused_before_it_joins_a_batch(services: Services) -> None:
    owner, member = await _users(services, 2)
    conv = await _conversation(services, owner, member)

    with pytest.raises(InvalidInput):
        await services.posts.post(
            commands.PostMessage(conversation_id=conv, sender_id=owner, client_msg_id="x", text=" ")
        )

    assert await _scalar(services, sa.select(sa.func.count()).select_from(messages)) == 0


async def test_the_same_client_msg_id_sent_concurrently_is_stored_once(services: Services) -> None:
    owner, member = await _users(services, 2)
    conv = await _conversation(services, owner, member)

    results = await asyncio.gather(*(services.posts.post(_send(conv, owner, "same-id")) for _ in range(30)))

    assert len({r.message.id for r in results}) == 1 and sum(not r.duplicate for r in results) == 1
    assert await _scalar(services, sa.select(sa.func.count()).select_from(messages)) == 1


async def _post_while_locked(
    services: Services, cmd: commands.PostMessage, meanwhile: Callable[[asyncpg.Connection], Awaitable[Any]]
) -> Any:
    """Hold the conversation's row lock in another transaction, start the post (it waits for the lock),
    run ``meanwhile`` in that transaction and commit it; the post's outcome (result or DomainError)."""
    async with services.pg.acquire() as other, other.transaction():
        await other.execute("SELECT 1 FROM conversations WHERE id = $1 FOR UPDATE", cmd.conversation_id)
        post = asyncio.create_task(services.posts.post(cmd))
        await asyncio.sleep(0.3)  # the post is now waiting for the lock, its statement's snapshot taken
        assert not post.done()
        await meanwhile(other)
    try:
        return await post
    except Exception as exc:
        return exc


async def test_a_member_removed_while_a_post_waits_for_the_lock_is_refused(services: Services) -> None:
    owner, member = await _users(services, 2)
    conv = await _conversation(services, owner, member)

    async def remove(other: asyncpg.Connection) -> None:
        await other.execute("DELETE FROM participants WHERE conversation_id = $1 AND user_id = $2", conv, member)

    outcome = await _post_while_locked(services, _send(conv, member), remove)

    assert isinstance(outcome, NotAParticipant)
    assert await _scalar(services, sa.select(sa.func.count()).select_from(messages)) == 0


async def test_a_send_committed_while_its_retry_waits_for_the_lock_is_found_as_the_original(
    services: Services,
) -> None:
    owner, member = await _users(services, 2)
    conv = await _conversation(services, owner, member)
    original_id = uuid.uuid4()

    async def store_original(other: asyncpg.Connection) -> None:
        await other.execute(
            """INSERT INTO messages (id, conversation_id, seq, sender_id, role, text, client_msg_id)
               VALUES ($1, $2, 1, $3, 'user', 'hi', 'retried')""",
            original_id, conv, member,
        )  # fmt: skip
        await other.execute("UPDATE conversations SET last_seq = 1 WHERE id = $1", conv)

    outcome = await _post_while_locked(services, _send(conv, member, "retried"), store_original)

    assert outcome.duplicate and outcome.message.id == original_id and outcome.message.seq == 1
    assert await _scalar(services, sa.select(sa.func.count()).select_from(messages)) == 1


async def test_the_node_publishes_its_commits_in_order_without_the_relay(services: Services) -> None:
    owner, _, convs = await _published_conversations(services, 4)
    publisher = services.start_publisher()

    await asyncio.gather(*(services.posts.post(_send(convs[i % 4], owner)) for i in range(200)))
    await publisher.close()  # the publishes handed over by the last commits

    assert await _stream_seqs(services) == {c: list(range(1, 51)) for c in convs}
    assert await _scalar(services, sa.select(sa.func.count()).select_from(outbox)) == 0


def _node(services: Services, publisher: OutboxPublisher | None) -> GroupCommit:
    """Another process's posting path on the same database: a node (with its publisher) or a worker."""
    shards = services.settings.redis.shard_count
    return GroupCommit(
        lambda: SqlUnitOfWork(services.pg, shard_count=shards, publisher=publisher), Limits(), max_in_flight=2
    )


async def test_two_nodes_a_worker_and_the_relay_racing_publish_each_event_once_in_seq_order(
    services: Services,
) -> None:
    _, member, convs = await _published_conversations(services, 6)
    publishers = [OutboxPublisher(services.pg, services.redis, maxlen=100_000) for _ in range(2)]
    writers = [_node(services, publishers[0]), _node(services, publishers[1]), _node(services, None)]
    done = asyncio.Event()

    async def write(writer: GroupCommit, n: int) -> None:
        for _ in range(n):  # a post to every conversation at once
            await asyncio.gather(*(writer.post(_send(conv, member)) for conv in convs))

    async def relay() -> None:
        while not done.is_set():
            await OutboxRelay(services, batch_size=5).drain()
            await asyncio.sleep(0)

    relaying = asyncio.create_task(relay())
    try:
        await asyncio.gather(write(writers[0], 10), write(writers[1], 10), write(writers[2], 10))
        for publisher in publishers:
            await publisher.close()
    finally:
        done.set()
        await relaying
    await OutboxRelay(services).drain()  # what the worker committed last

    # Every event exactly once, in seq order: no node published another's conversation out of turn,
    # and the relay never took a row a node was publishing.
    assert await _stream_seqs(services) == {c: list(range(1, 31)) for c in convs}
    assert await _scalar(services, sa.select(sa.func.count()).select_from(outbox)) == 0


async def test_the_next_writer_of_a_conversation_publishes_what_a_worker_left_first(services: Services) -> None:
    owner, member, (conv,) = await _published_conversations(services, 1)
    worker, node = _node(services, None), _node(services, OutboxPublisher(services.pg, services.redis, maxlen=1000))

    await worker.post(_send(conv, owner))  # committed, left for a relay that is not running
    await node.post(_send(conv, member))
    async with asyncio.timeout(5):
        while await _stream_seqs(services) != {conv: [1, 2]}:  # noqa: ASYNC110 - polls Redis
            await asyncio.sleep(0.01)

    assert await _scalar(services, sa.select(sa.func.count()).select_from(outbox)) == 0


async def test_while_redis_refuses_a_node_leaves_its_commits_to_the_relay_and_holds_no_keys(
    services: Services,
) -> None:
    owner, member, (conv,) = await _published_conversations(services, 1)
    unreachable = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    services.publisher = broken = OutboxPublisher(services.pg, unreachable, maxlen=1000)

    await services.posts.post(_send(conv, owner))  # acked: committed; its publish fails
    await broken.close()
    assert not broken.healthy
    async with asyncio.timeout(10):  # would hang if the failed publish had kept the conversation's key
        for _ in range(2):
            await services.posts.post(_send(conv, owner))  # no publisher meanwhile: NOTIFY the relay
    assert await _scalar(services, sa.select(sa.func.count()).select_from(outbox)) == 3
    working = services.start_publisher()
    await services.posts.post(_send(conv, member))  # publishes what it finds of its key first
    await working.close()
    await OutboxRelay(services).drain()
    await unreachable.aclose()

    assert await _stream_seqs(services) == {conv: [1, 2, 3, 4]}
    assert await _scalar(services, sa.select(sa.func.count()).select_from(outbox)) == 0


async def test_a_stopped_holder_of_a_publish_key_loses_it_after_the_lease(services: Services) -> None:
    _, member, (conv,) = await _published_conversations(services, 1)
    publisher = services.start_publisher()
    stopped = await asyncpg.connect(asyncpg_dsn(services.settings))
    try:
        # What a node's connection holds between its commit and its release, then it goes silent.
        await db_outbox.KeyLocks(services.settings.redis.shard_count).take(stopped, [conv])

        async with asyncio.timeout(db_outbox.LEASE_MS / 1000 + 5):
            await services.posts.post(_send(conv, member))  # waits for the key until PostgreSQL ends that session
        await publisher.close()

        assert await _stream_seqs(services) == {conv: [1]}
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)):
            await stopped.fetchval("SELECT 1")
    finally:
        await stopped.close(timeout=1)
