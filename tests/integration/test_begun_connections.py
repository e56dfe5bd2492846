"""A post's BEGIN sent ahead (infrastructure/db/begun.py): the publisher leaves its connection begun for
the next unit of work, which starts on it; one that waits too long, or that PostgreSQL closed, never
reaches a unit of work or the pool in a transaction. Real PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import sqlalchemy as sa
from prometheus_client import REGISTRY

from domain import commands, handlers
from domain.limits import Limits
from infrastructure.bootstrap import Services
from infrastructure.db.begun import BegunConnections
from infrastructure.db.tables import messages, users
from tests.factories import StartConversationFactory


def _count(outcome: str) -> float:
    return REGISTRY.get_sample_value("parley_db_begun_ahead_total", {"outcome": outcome}) or 0.0


async def _conversation(services: Services) -> tuple[uuid.UUID, uuid.UUID]:
    owner = uuid.uuid4()
    async with services.engine.begin() as conn:
        row = {"id": owner, "email": f"{owner}@example.com", "name": "o", "password_hash": "x"}
        await conn.execute(sa.insert(users), [row])
    cmd = StartConversationFactory.build(owner_id=owner, participant_ids=[])
    return owner, (await handlers.start_conversation(cmd, services.uow(), services.clock, Limits())).id


def _send(conv: uuid.UUID, sender: uuid.UUID) -> commands.PostMessage:
    return commands.PostMessage(conversation_id=conv, sender_id=sender, client_msg_id=uuid.uuid4().hex, text="hi")


async def _idle_in_transaction(pool: asyncpg.Pool) -> int:
    count = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle in transaction'"
    )
    return int(count)


async def test_a_post_starts_on_the_connection_the_publisher_left_begun(services: Services) -> None:
    owner, conv = await _conversation(services)
    publisher = services.start_publisher()
    assert services.begun is not None

    first = await services.posts.post(_send(conv, owner))
    await publisher.close()  # its publish step over, the connection waits with its BEGIN sent
    assert services.begun.ready == 1
    assert await _idle_in_transaction(services.pg) == 1
    # ... holding no snapshot and no transaction id: it holds back neither vacuum nor anyone's locks.
    holding = await services.pg.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle in transaction'"
        " AND (backend_xmin IS NOT NULL OR backend_xid IS NOT NULL)"
    )
    assert holding == 0
    used = _count("used")

    second = await services.posts.post(_send(conv, owner))

    assert _count("used") == used + 1
    assert (first.message.seq, second.message.seq) == (1, 2)
    async with services.engine.connect() as conn:  # committed: another session sees both
        seqs = (await conn.execute(sa.select(messages.c.seq).order_by(messages.c.seq))).scalars().all()
    assert seqs == [1, 2]


async def test_a_connection_waiting_too_long_is_rolled_back_and_given_back(services: Services) -> None:
    begun = BegunConnections(services.pg, ready_seconds=0.2)
    expired = _count("expired")
    await begun.keep(await services.pg.acquire())
    assert begun.ready == 1 and await _idle_in_transaction(services.pg) == 1

    await asyncio.sleep(0.5)

    assert begun.ready == 0 and _count("expired") == expired + 1
    assert await _idle_in_transaction(services.pg) == 0
    assert begun.take() is None
    await begun.close()


async def test_a_connection_closed_while_waiting_is_not_handed_out(services: Services) -> None:
    begun = BegunConnections(services.pg)
    conn = await services.pg.acquire()
    pid = conn.get_server_pid()
    gone = asyncio.Event()
    conn.add_termination_listener(lambda _: gone.set())
    await begun.keep(conn)

    await services.pg.fetchval("SELECT pg_terminate_backend($1)", pid)
    async with asyncio.timeout(5):
        await gone.wait()

    assert begun.take() is None
    await begun.close()
    async with services.pg.acquire() as fresh:  # the pool still serves
        assert await fresh.fetchval("SELECT 1") == 1


async def test_one_connection_waits_at_most_and_close_rolls_it_back(services: Services) -> None:
    begun = BegunConnections(services.pg)
    await begun.keep(await services.pg.acquire())
    await begun.keep(await services.pg.acquire())  # one waits already: back to the pool, not begun

    assert begun.ready == 1 and await _idle_in_transaction(services.pg) == 1
    await begun.close()
    assert begun.ready == 0 and await _idle_in_transaction(services.pg) == 0

    await begun.keep(await services.pg.acquire())  # closed: kept no more
    assert begun.ready == 0
