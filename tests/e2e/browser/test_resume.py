"""A reply that was streaming when the browser's node died resumes where it stopped: the browser
reconnects, asks `resume` from the first delta it lacks, and ends with exactly the stored answer."""

from __future__ import annotations

import asyncio
from typing import Any

from playwright.async_api import expect

from tests.e2e.browser.conftest import Open, Person, start_conversation
from tests.e2e.browser.test_assistant import record_frames, stored_messages
from tests.e2e.cluster import Cluster


async def test_an_answer_cut_by_a_node_crash_resumes_where_it_stopped(people: Open, web_cluster: Cluster) -> None:
    ann: Person = await people("Ann", node=1)
    sent: list[dict[str, Any]] = []
    frames = record_frames(ann, sent)
    await ann.page.reload()
    conversation_id = await start_conversation(ann, "Interrupted", assistant=True)
    await ann.say("Tell me about resuming.")
    bubble = ann.page.locator("article.streaming .body")
    await expect(bubble).to_contain_text("stand-in")
    node = web_cluster.nodes[1]
    node.kill()
    shown_at_crash = await bubble.inner_text()
    seen_before_crash = len([f for f in frames if f["type"] == "stream"])
    await asyncio.to_thread(node.start)
    answer = ann.page.locator(".messages article.assistant")
    await expect(answer).to_have_count(1, timeout=40_000)
    await expect(ann.page.locator("article.streaming")).to_have_count(0)

    deltas = [f for f in frames if f["type"] == "stream"]
    indexes = [f["index"] for f in deltas]
    assert sorted(set(indexes)) == list(range(max(indexes) + 1)), "no delta missing across the crash"
    messages = await stored_messages(ann, web_cluster.nodes[0].base_url, conversation_id)
    stored = [m["text"] for m in messages if m["role"] == "assistant"]
    on_screen = (await answer.locator(".body").inner_text()).strip()
    assert stored == [on_screen] and on_screen.startswith(shown_at_crash.strip())
    resumes = [f for f in sent if f["type"] == "resume"]
    assert resumes and resumes[0]["from_index"] >= seen_before_crash - 1, "asked from where it stopped, not from 0"
