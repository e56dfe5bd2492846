"""The assistant's retrieval: the most similar earlier messages of ONE conversation, never another's."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from domain import handlers
from domain.limits import Limits
from domain.values import Message
from infrastructure.bootstrap import Services
from infrastructure.db.tables import users
from infrastructure.embeddings.store import embed_messages, unembedded_page
from infrastructure.search.retrieval import similar_messages
from tests.factories import PostMessageFactory, StartConversationFactory

CANARY = "the vault combination is 7731 and the spare key hides under the blue flowerpot"


async def new_user(services: Services) -> uuid.UUID:
    user_id = uuid.uuid4()
    async with services.engine.begin() as conn:
        await conn.execute(sa.insert(users).values(id=user_id, email=f"{user_id}@x.io", name="u", password_hash="x"))
    return user_id


async def new_conversation(services: Services, owner: uuid.UUID, texts: list[str]) -> tuple[uuid.UUID, list[Message]]:
    conv = await handlers.start_conversation(
        StartConversationFactory.build(owner_id=owner), services.uow(), services.clock, Limits()
    )
    posted = []
    for text in texts:
        result = await handlers.post_message(
            PostMessageFactory.build(conversation_id=conv.id, sender_id=owner, text=text),
            services.uow(),
            services.clock,
            Limits(),
        )
        posted.append(result.message)
    return conv.id, posted


async def embed_everything(services: Services) -> None:
    ids, _ = await unembedded_page(services.pg, limit=10_000)
    await embed_messages(services.pg, services.embeddings, ids)


async def test_retrieval_never_returns_another_conversations_canary(services: Services) -> None:
    alice, bob = await new_user(services), await new_user(services)
    room, _ = await new_conversation(
        services,
        alice,
        ["lunch at noon?", "the quarterly report is due friday", "who has the office keys", "ok thanks"],
    )
    await new_conversation(services, alice, [CANARY])  # Alice's other conversation
    await new_conversation(services, bob, [CANARY.replace("7731", "9902")])  # someone else's
    await embed_everything(services)

    for query in ("what is the vault combination", "where is the spare key hidden", CANARY):
        recalled = await similar_messages(
            services.pg, services.embeddings, conversation_id=room, query_text=query, k=10
        )
        assert recalled, query
        assert all("vault" not in r.text and "flowerpot" not in r.text for r in recalled), query
        assert len(recalled) == 4


async def test_retrieval_ranks_by_meaning_with_distances_nearest_first(services: Services) -> None:
    owner = await new_user(services)
    room, posted = await new_conversation(
        services,
        owner,
        [
            "my flight to lisbon leaves at 7 in the morning",
            "the database migration failed on the staging server",
            "can someone water the plants while I'm away",
        ],
    )
    await embed_everything(services)

    recalled = await similar_messages(
        services.pg, services.embeddings, conversation_id=room, query_text="the schema upgrade broke on staging", k=3
    )

    assert recalled[0].message_id == posted[1].id
    distances = [r.distance for r in recalled]
    assert distances == sorted(distances)
    assert 0 <= distances[0] < distances[1] <= 2


async def test_retrieval_skips_the_recent_window_and_later_messages(services: Services) -> None:
    owner = await new_user(services)
    texts = [f"note {i}: the release train leaves on thursday" for i in range(6)]
    room, posted = await new_conversation(services, owner, texts)
    await embed_everything(services)

    recalled = await similar_messages(
        services.pg,
        services.embeddings,
        conversation_id=room,
        query_text="when does the release train leave",
        k=10,
        exclude_ids=[posted[3].id, posted[4].id],
        before_seq=posted[5].seq,
    )

    assert sorted(r.seq for r in recalled) == [posted[0].seq, posted[1].seq, posted[2].seq]


async def test_messages_not_yet_embedded_are_not_candidates(services: Services) -> None:
    owner = await new_user(services)
    room, _ = await new_conversation(services, owner, ["an old message about invoices"])
    await embed_everything(services)
    await handlers.post_message(
        PostMessageFactory.build(conversation_id=room, sender_id=owner, text="a fresh message about invoices"),
        services.uow(),
        services.clock,
        Limits(),
    )

    recalled = await similar_messages(services.pg, services.embeddings, conversation_id=room, query_text="invoices")
    assert [r.text for r in recalled] == ["an old message about invoices"]
