"""A conversation of 5,000 messages opens as fast and as light as one of 50: the chat view loads one
page of history and pages back on demand. Prints the page weight and time to interactive of both
(the 50-message conversation is the baseline measured in the same run); asserts only sizes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
from playwright.async_api import Browser, Page, expect

from tests.e2e.browser.conftest import DESKTOP, Open, Person, start_conversation
from tests.e2e.cluster import Cluster

RESULTS = Path(__file__).resolve().parents[3] / "bench" / "results"
PAGE = 50  # the view's page size (ui/conversation.js)

MEASURE = """() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const resources = performance.getEntriesByType("resource");
  const ready = performance.getEntriesByName("parley:conversation-ready")[0];
  return {
    transferred_bytes: nav.transferSize + resources.reduce((n, r) => n + r.transferSize, 0),
    decoded_bytes: nav.decodedBodySize + resources.reduce((n, r) => n + r.decodedBodySize, 0),
    requests: 1 + resources.length,
    dom_content_loaded_ms: Math.round(nav.domContentLoadedEventEnd),
    interactive_ms: Math.round(ready.startTime),
    dom_messages: document.querySelectorAll(".messages article.msg").length,
    dom_nodes: document.getElementsByTagName("*").length,
    js_heap_bytes: performance.memory ? performance.memory.usedJSHeapSize : null,
  };
}"""


async def seed_history(database_url: str, conversation_id: str, sender: UUID, count: int) -> None:
    """History written straight to the table (the write path is tested elsewhere; this view only reads)."""
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg:", "postgresql:"))
    try:
        await conn.execute(
            """INSERT INTO messages (id, conversation_id, seq, sender_id, role, text, created_at)
               SELECT gen_random_uuid(), $1, g, $2, 'user',
                      'Message ' || g || ': the quick brown fox jumps over the lazy dog, **twice**.',
                      now() - make_interval(secs => $3 - g)
               FROM generate_series(1, $3::int) AS g""",
            UUID(conversation_id),
            sender,
            count,
        )
        await conn.execute("UPDATE conversations SET last_seq = $2 WHERE id = $1", UUID(conversation_id), count)
    finally:
        await conn.close()


async def open_chat(page: Page, conversation_id: str) -> dict[str, Any]:
    await page.goto(f"/#/c/{conversation_id}")
    # Polled from here: the page's CSP forbids the eval that wait_for_function uses.
    await expect(page.locator(".messages article.msg")).to_have_count(PAGE)
    ready = "performance.getEntriesByName('parley:conversation-ready').length"
    while not await page.evaluate(ready):  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    figures: dict[str, Any] = await page.evaluate(MEASURE)
    return figures


async def cold_and_warm(browser: Browser, person: Person, node_url: str, conversation_id: str) -> dict[str, Any]:
    """A new browser context (empty cache) with the person's session opens the conversation directly;
    then the same again from a new tab (assets from the cache: their URLs are immutable)."""
    state = await person.context.storage_state()
    context = await browser.new_context(base_url=node_url, viewport=DESKTOP, storage_state=state)  # type: ignore[arg-type]
    try:
        page = await context.new_page()
        cold = await open_chat(page, conversation_id)
        await page.get_by_role("button", name="Load older messages").click()
        await expect(page.locator(".messages article.msg")).to_have_count(2 * PAGE)  # paged back on demand
        await page.close()
        warm = await open_chat(await context.new_page(), conversation_id)
        return {"cold": cold, "warm": warm}
    finally:
        await context.close()


async def test_five_thousand_messages_open_with_one_page_of_dom(
    people: Open, browser: Browser, web_cluster: Cluster, web_database_url: str
) -> None:
    ann: Person = await people("Ann", node=0)
    me = await ann.page.evaluate("JSON.parse(localStorage.getItem('parley.session')).user.id")
    big = await start_conversation(ann, "Five thousand")
    small = await start_conversation(ann, "Fifty")
    await seed_history(web_database_url, big, UUID(me), 5000)
    await seed_history(web_database_url, small, UUID(me), 100)

    node_url = web_cluster.nodes[0].base_url
    small_figures = await cold_and_warm(browser, ann, node_url, small)
    big_figures = await cold_and_warm(browser, ann, node_url, big)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "webapp-history.json").write_text(json.dumps({"100": small_figures, "5000": big_figures}, indent=2))
    for label, figures in (("100", small_figures), ("5000", big_figures)):
        for cache in ("cold", "warm"):
            print(f"\nchat view, {label} messages, {cache} cache: {figures[cache]}")

    baseline, measured = small_figures["cold"], big_figures["cold"]
    assert measured["dom_messages"] == baseline["dom_messages"] == PAGE
    # The same bytes, give or take a poll of the list: nothing grows with the length of the history.
    assert abs(measured["transferred_bytes"] - baseline["transferred_bytes"]) < 16_000
    # Immutable assets are not fetched again: a return visit moves a fraction of the bytes.
    assert big_figures["warm"]["transferred_bytes"] < measured["transferred_bytes"] / 3

    # A jump into the middle shows the message there, highlighted, with its neighbours only.
    await ann.page.goto(f"/#/c/{big}/2500")
    hit = ann.page.locator('.messages article.msg[data-seq="2500"]')
    await expect(hit).to_have_class("msg mine user highlight")
    await expect(ann.page.get_by_role("button", name="Jump to latest")).to_be_visible()
