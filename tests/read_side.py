"""Helpers for read-side tests: seed conversations through the real handlers, snapshot the read models,
and recompute what they must hold straight from the write tables (independently of the projector's SQL)."""

from __future__ import annotations

import random
from typing import Any
from uuid import UUID

import asyncpg

from domain import handlers
from domain.values import User
from infrastructure.bootstrap import Services
from tests.factories import PostMessageFactory, StartConversationFactory, UserFactory


async def seed_users(pool: asyncpg.Pool, count: int) -> list[User]:
    users = UserFactory.batch(count)
    await pool.executemany(
        "INSERT INTO users (id, email, name, password_hash, role, created_at) VALUES ($1, $2, $3, 'x', $4, $5)",
        [(u.id, u.email, u.name, u.role.value, u.created_at) for u in users],
    )
    return users


async def seed_rooms(services: Services, users: list[User], *, rooms: int, members: int) -> dict[UUID, list[UUID]]:
    """``rooms`` conversations of ``members`` users each (owner first); conversation id -> member ids."""
    out: dict[UUID, list[UUID]] = {}
    for _ in range(rooms):
        chosen = random.sample(users, members)
        cmd = StartConversationFactory.build(owner_id=chosen[0].id, participant_ids=[u.id for u in chosen[1:]])
        conv = await handlers.start_conversation(cmd, services.uow(), services.clock, services.settings.limits)
        out[conv.id] = [u.id for u in chosen]
    return out


async def post_burst(services: Services, rooms: dict[UUID, list[UUID]], *, messages: int) -> None:
    """``messages`` posts by random members of random rooms, through the write path."""
    for _ in range(messages):
        cid = random.choice(list(rooms))
        cmd = PostMessageFactory.build(conversation_id=cid, sender_id=random.choice(rooms[cid]))
        await handlers.post_message(cmd, services.uow(), services.clock, services.settings.limits)


async def snapshot(pool: asyncpg.Pool) -> dict[str, list[tuple[Any, ...]]]:
    """Every read model as sorted tuples (unread totals of zero and bookkeeping times left out)."""
    queries = {
        "list": "SELECT * FROM read_conversation_list ORDER BY user_id, conversation_id",
        "totals": "SELECT user_id, total FROM read_unread_totals WHERE total <> 0 ORDER BY user_id",
        "state": "SELECT conversation_id, applied_seq FROM projection_state ORDER BY conversation_id",
        "activity": "SELECT * FROM stats_daily_activity ORDER BY day, conversation_id, actor_id",
    }
    return {name: [tuple(r) for r in await pool.fetch(sql)] for name, sql in queries.items()}


_EXPECTED = """
    SELECT p.user_id, c.id AS conversation_id, c.title, c.last_seq,
           (SELECT count(*) FROM messages m WHERE m.conversation_id = c.id AND m.seq > p.last_read_seq
              AND m.sender_id IS DISTINCT FROM p.user_id) AS unread_count,
           (SELECT left(m.text, 140) FROM messages m WHERE m.conversation_id = c.id AND m.seq = c.last_seq) AS preview
    FROM participants p JOIN conversations c ON c.id = p.conversation_id
    ORDER BY p.user_id, c.id
"""


async def expected_lists(pool: asyncpg.Pool) -> list[tuple[Any, ...]]:
    """(user, conversation, title, last seq, unread, preview) for every membership, from the write tables."""
    return [tuple(r) for r in await pool.fetch(_EXPECTED)]


async def projected_lists(pool: asyncpg.Pool) -> list[tuple[Any, ...]]:
    rows = await pool.fetch(
        """SELECT user_id, conversation_id, title, last_seq, unread_count, last_preview
           FROM read_conversation_list ORDER BY user_id, conversation_id"""
    )
    return [tuple(r) for r in rows]


async def totals_agree(pool: asyncpg.Pool) -> bool:
    """read_unread_totals equals the sum of the list's unread counts for every user."""
    diff = await pool.fetchval(
        """SELECT count(*) FROM (
               SELECT user_id, sum(unread_count) AS total FROM read_conversation_list GROUP BY user_id
           ) s FULL JOIN read_unread_totals t USING (user_id)
           WHERE coalesce(s.total, 0) <> coalesce(t.total, 0)"""
    )
    return int(diff) == 0
