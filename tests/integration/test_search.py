"""``GET /api/search`` over real PostgreSQL + pgvector with the real local model: text, semantic and hybrid
ranking, membership enforced in the SQL, hostile queries, paging."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

import pytest
from litestar.testing import AsyncTestClient

from infrastructure.bootstrap import Services
from infrastructure.embeddings.store import embed_messages, unembedded_page
from tests.integration.conftest import MakeConversation, MakeUser, TestUser, assert_error

PARAPHRASE = "The feline is sleeping on the couch"
LITERAL = "Invoice 4471 lists a sofa delivery fee in its footer"
NOISE = [
    "Quarterly revenue grew twelve percent year over year",
    "The deployment failed because the migration timed out",
    "Let's meet at the train station at nine",
    "Please review my pull request before lunch",
    "The weather in Oslo is cold and rainy this week",
    "I booked a table for four at the Italian place",
    "Our flight to Reykjavik departs at dawn",
    "Remember to renew the TLS certificate next month",
]
SECRET = "canary: the launch code is HONEYBADGER-5521"


async def post_all(client: AsyncTestClient[Any], user: TestUser, conversation_id: str, texts: list[str]) -> None:
    for text in texts:
        response = await client.post(
            f"/api/conversations/{conversation_id}/messages",
            json={"client_msg_id": str(uuid.uuid4()), "text": text},
            headers=user.headers,
        )
        assert response.status_code == 201, response.text


async def embed_all(services: Services) -> None:
    ids, _ = await unembedded_page(services.pg, limit=10_000)
    await embed_messages(services.pg, services.embeddings, ids)


async def search(client: AsyncTestClient[Any], user: TestUser, q: str, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/api/search", params={"q": q, **params}, headers=user.headers)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def texts(hits: list[dict[str, Any]]) -> list[str]:
    return [h["message"]["text"] for h in hits]


@pytest.fixture
async def corpus(
    client: AsyncTestClient[Any], services: Services, make_user: MakeUser, make_conversation: MakeConversation
) -> dict[str, Any]:
    """Alice's room with a paraphrase, a literal word and noise; Bob's room holding a canary."""
    alice, bob = await make_user(), await make_user()
    room = await make_conversation(alice, title="Household")
    await post_all(client, alice, room["id"], [PARAPHRASE, LITERAL, *NOISE])
    bobs = await make_conversation(bob, title="Bob only")
    await post_all(client, bob, bobs["id"], [SECRET])
    await embed_all(services)
    return {"alice": alice, "bob": bob, "room": room, "bobs": bobs}


async def test_a_paraphrase_ranks_first_in_semantic_and_hybrid_and_is_absent_in_text(
    client: AsyncTestClient[Any], corpus: dict[str, Any]
) -> None:
    alice = corpus["alice"]
    q = "a cat napping"

    assert texts(await search(client, alice, q, mode="semantic"))[0] == PARAPHRASE
    assert texts(await search(client, alice, q, mode="hybrid"))[0] == PARAPHRASE
    assert PARAPHRASE not in texts(await search(client, alice, q, mode="text"))


async def test_a_unique_word_is_found_by_text_exactly_once_with_a_highlight(
    client: AsyncTestClient[Any], corpus: dict[str, Any]
) -> None:
    hits = await search(client, corpus["alice"], "sofa", mode="text")

    assert texts(hits) == [LITERAL]
    hit = hits[0]
    assert "<mark>sofa</mark>" in hit["snippet"]
    assert hit["conversation_id"] == corpus["room"]["id"]
    assert hit["conversation_title"] == "Household"
    assert hit["seq"] == hit["message"]["seq"] == 2
    assert hit["distance"] is None


async def test_hybrid_ranks_the_paraphrase_and_the_literal_word_near_the_top(
    client: AsyncTestClient[Any], corpus: dict[str, Any]
) -> None:
    hits = await search(client, corpus["alice"], "cat napping on the sofa", mode="hybrid")

    top = texts(hits)[:3]
    assert PARAPHRASE in top and LITERAL in top
    assert all(h["distance"] is not None for h in hits)


async def test_a_canary_never_reaches_another_user_in_any_mode(
    client: AsyncTestClient[Any], corpus: dict[str, Any]
) -> None:
    for mode in ("text", "semantic", "hybrid"):
        for q in ("HONEYBADGER", "launch code", SECRET, "canary"):
            hits = await search(client, corpus["alice"], q, mode=mode, limit=50)
            assert all("HONEYBADGER" not in t for t in texts(hits)), (mode, q)
            assert {h["conversation_id"] for h in hits} <= {corpus["room"]["id"]}
    assert texts(await search(client, corpus["bob"], "HONEYBADGER", mode="text")) == [SECRET]


async def test_a_removed_member_stops_finding_the_conversation_at_once(
    client: AsyncTestClient[Any], corpus: dict[str, Any], make_user: MakeUser
) -> None:
    alice, carol = corpus["alice"], await make_user()
    room = corpus["room"]["id"]
    added = await client.post(
        f"/api/conversations/{room}/participants", json={"user_id": str(carol.id)}, headers=alice.headers
    )
    assert added.status_code == 201, added.text
    for mode in ("text", "semantic", "hybrid"):
        assert LITERAL in texts(await search(client, carol, "sofa invoice", mode=mode))

    removed = await client.delete(f"/api/conversations/{room}/participants/{carol.id}", headers=alice.headers)
    assert removed.status_code in (200, 204), removed.text

    for mode in ("text", "semantic", "hybrid"):
        assert await search(client, carol, "sofa invoice", mode=mode) == []
    assert_error(
        await client.get("/api/search", params={"q": "sofa", "conversation_id": room}, headers=carol.headers),
        403,
        "FORBIDDEN",
    )


async def test_results_page_by_cursor_without_repeats(client: AsyncTestClient[Any], corpus: dict[str, Any]) -> None:
    alice = corpus["alice"]
    seen: list[str] = []
    params: dict[str, Any] = {"q": "the", "mode": "semantic", "limit": 3}
    for _ in range(10):
        response = await client.get("/api/search", params=params, headers=alice.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        seen += [h["message"]["id"] for h in body["items"]]
        if not body["has_more"]:
            break
        params["cursor"] = body["next_cursor"]
    assert len(seen) == len(set(seen)) == 2 + len(NOISE)

    other = await client.get("/api/search", params={"q": "other", "cursor": params["cursor"]}, headers=alice.headers)
    assert_error(other, 400, "VALIDATION")


HOSTILE_QUERIES = [
    "' OR 1=1--",
    "'; DROP TABLE messages; --",
    "& | ! (",
    "!!!",
    ")(",
    "<->",
    ":*",
    '"unterminated',
    "-",
    "or",
    "a & b | !c <-> d:* ''",
    "\\",
    "%",
    "😀🔥 中文 ü",
    "x" * 1000,
    "word " * 200,
    "\u202e\u200b",
]


@pytest.mark.parametrize("mode", ["text", "semantic", "hybrid"])
async def test_hostile_queries_get_answers_not_errors(
    client: AsyncTestClient[Any], corpus: dict[str, Any], mode: str
) -> None:
    for q in HOSTILE_QUERIES:
        response = await client.get("/api/search", params={"q": q, "mode": mode}, headers=corpus["alice"].headers)
        assert response.status_code == 200, (q, response.text)
        assert all("HONEYBADGER" not in t for t in texts(response.json()["items"]))


@pytest.mark.parametrize(
    ("query_string", "status", "code"),
    [
        ("q=" + "x" * 10_240, 400, "VALIDATION"),
        ("q=ok&limit=1e9", 400, "VALIDATION"),
        ("q=ok&limit=1000000000", 400, "VALIDATION"),
        ("q=ok&limit=0", 400, "VALIDATION"),
        ("q=ok&limit=-1", 400, "VALIDATION"),
        ("q=", 400, "VALIDATION"),
        ("q=%20%20", 400, "VALIDATION"),
        ("", 400, "VALIDATION"),
        ("q=a%00b", 400, "VALIDATION"),
        ("q=ok&mode=sql", 400, "VALIDATION"),
        ("q=ok&conversation_id=' OR 1=1--", 400, "VALIDATION"),
        ("q=ok&cursor=!!!", 400, "VALIDATION"),
        ("q=ok&cursor=" + quote("WzEwMDAwMDAsMV0"), 400, "VALIDATION"),
        ("q=ok&conversation_id=00000000-0000-0000-0000-000000000000", 404, "NOT_FOUND"),
    ],
)
async def test_bad_parameters_get_a_4xx_envelope(
    client: AsyncTestClient[Any], make_user: MakeUser, query_string: str, status: int, code: str
) -> None:
    user = await make_user()
    response = await client.get(f"/api/search?{query_string}", headers=user.headers)
    assert_error(response, status, code)


async def test_search_needs_a_login(client: AsyncTestClient[Any]) -> None:
    assert_error(await client.get("/api/search", params={"q": "x"}), 401, "UNAUTHORIZED")


async def test_the_index_path_keeps_to_the_callers_messages_and_falls_back_to_exact(
    client: AsyncTestClient[Any],
    services: Services,
    corpus: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Callers who see many messages go through the HNSW index (forced here with small thresholds): when
    the table's nearest vectors are someone else's, the caller still gets their own best match."""
    from infrastructure.search import queries

    monkeypatch.setattr(queries, "EXACT_SCAN_MAX_ROWS", 0)
    monkeypatch.setattr(queries, "ANN_MIN_CANDIDATES", 3)
    monkeypatch.setattr(queries, "ANN_MAX_CANDIDATES", 3)
    bob = corpus["bob"]
    await post_all(
        client, bob, corpus["bobs"]["id"], [f"my cat naps on the sofa every afternoon ({i})" for i in range(8)]
    )
    await embed_all(services)

    for mode in ("semantic", "hybrid"):
        hits = await search(client, corpus["alice"], "a cat napping", mode=mode)
        assert texts(hits)[0] == PARAPHRASE, mode
        assert {h["conversation_id"] for h in hits} == {corpus["room"]["id"]}, mode
    bobs_hits = await search(client, bob, "a cat napping", mode="semantic")
    assert "my cat naps on the sofa" in texts(bobs_hits)[0]
