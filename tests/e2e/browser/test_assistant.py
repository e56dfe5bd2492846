"""The assistant in the browser: its answer grows token by token on screen and ends equal to the
message stored; the stop button stops it, for real, and says so. (The worker runs the offline
stand-in model, slowed to ~8 words a second, see conftest.)"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import httpx
from playwright.async_api import TimeoutError as PlaywrightTimeoutError
from playwright.async_api import WebSocket, expect

from tests.e2e.browser.conftest import Open, Person, shoot, start_conversation
from tests.e2e.cluster import Cluster


def record_frames(person: Person, sent: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Every frame the page's sockets receive (and, into ``sent``, send), decoded."""
    frames: list[dict[str, Any]] = []

    def on_socket(ws: WebSocket) -> None:
        ws.on("framereceived", lambda payload: frames.append(json.loads(payload)))
        if sent is not None:
            ws.on("framesent", lambda payload: sent.append(json.loads(payload)))

    person.page.on("websocket", on_socket)
    return frames


async def stored_messages(person: Person, base_url: str, conversation_id: str) -> list[dict[str, Any]]:
    token = await person.page.evaluate("JSON.parse(localStorage.getItem('parley.session')).access_token")
    async with httpx.AsyncClient(base_url=base_url) as http:
        page = await http.get(
            f"/api/conversations/{conversation_id}/messages?limit=50", headers={"Authorization": f"Bearer {token}"}
        )
    items: list[dict[str, Any]] = page.json()["items"]
    return items


async def readings_while_streaming(person: Person) -> list[str]:
    """The streaming answer's text, read off the DOM every 150 ms until it stops changing state."""
    bubble = person.page.locator("article.streaming").last
    await expect(bubble).to_be_visible()
    readings: list[str] = []
    while await bubble.count():
        try:
            # Short timeouts: the answer may end between two of these reads, and then there is no
            # streaming bubble left to wait for (the default 30 s wait for it failed this test).
            if await bubble.get_attribute("aria-busy", timeout=1000) != "true":
                break
            text = await bubble.locator(".body").inner_text(timeout=1000)
        except PlaywrightTimeoutError:
            break
        readings.append(text.strip())
        await asyncio.sleep(0.15)
    return readings


async def test_the_answer_streams_in_and_ends_equal_to_the_stored_message(people: Open, web_cluster: Cluster) -> None:
    ann: Person = await people("Ann")
    frames = record_frames(ann)
    await ann.page.reload()  # so the recorder sees the socket from its start
    conversation_id = await start_conversation(ann, "Ask the assistant", assistant=True)
    await ann.say("What is Parley? Answer with a `code` sample, please.")
    await expect(ann.page.get_by_role("button", name="Stop")).to_be_visible()
    await expect(ann.page.locator("article.streaming .body")).to_contain_text("language model")
    await shoot(ann.page, "assistant-streaming")
    readings = [r for r in await readings_while_streaming(ann) if r]
    assert len(set(readings)) >= 3, f"the text should grow across DOM reads: {readings}"
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(readings))

    answer = ann.page.locator(".messages article.assistant")
    await expect(answer).to_have_count(1)
    await expect(ann.page.get_by_role("button", name="Stop")).to_be_hidden()
    await expect(ann.page.locator("article.streaming")).to_have_count(0)
    deltas = [f for f in frames if f["type"] == "stream"]
    assert [f["index"] for f in deltas] == list(range(len(deltas))), "each delta once, in order"
    streamed = "".join(f["delta"] for f in deltas)
    messages = await stored_messages(ann, web_cluster.nodes[0].base_url, conversation_id)
    assert [m["text"] for m in messages if m["role"] == "assistant"] in ([streamed], [streamed.strip()])
    on_screen = (await answer.locator(".body").inner_text()).strip()
    await expect(answer.locator(".body code")).to_have_text("code")  # Markdown: `code` became <code>
    assert on_screen == streamed.strip().replace("`", "") and on_screen.startswith(readings[-1])
    assert ann.console_errors == []


async def test_stop_ends_the_answer_and_says_so(people: Open, web_cluster: Cluster) -> None:
    ann: Person = await people("Ann")
    frames = record_frames(ann)
    await ann.page.reload()
    conversation_id = await start_conversation(ann, "Stop it", assistant=True)
    await ann.say("Tell me everything, slowly.")
    stop = ann.page.get_by_role("button", name="Stop")
    await expect(stop).to_be_visible()
    bubble = ann.page.locator("article.streaming .body")
    await expect(bubble).to_contain_text("stand-in")  # a few words in
    await stop.click()
    await expect(ann.page.locator("article.msg.assistant .note")).to_have_text("Stopped.")
    await expect(stop).to_be_hidden()

    ends = [f for f in frames if f["type"] == "stream_end"]
    assert len(ends) == 1 and ends[0]["cancelled"] is True
    shown = await ann.page.locator("article.msg.assistant").last.locator(".body").inner_text()
    await asyncio.sleep(1.0)  # nothing more arrives after a stop
    assert await ann.page.locator("article.msg.assistant").last.locator(".body").inner_text() == shown
    assert not [f for f in frames if f["type"] == "stream" and frames.index(f) > frames.index(ends[0])]
    streamed = "".join(f["delta"] for f in frames if f["type"] == "stream")
    assert len(streamed.split()) < 40, "stopped well before the whole answer (~45 words)"
    messages = await stored_messages(ann, web_cluster.nodes[0].base_url, conversation_id)
    stored = [m["text"] for m in messages if m["role"] == "assistant"]
    assert stored in ([], [streamed], [streamed.strip()]), "at most what was streamed before the stop is kept"
