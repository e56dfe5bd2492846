"""Search from the web app and jump to a hit: the conversation opens around the hit, highlighted, even
when it is far back in the history; snippets show their marks and nothing else as markup."""

from __future__ import annotations

import asyncio

import httpx
from playwright.async_api import expect

from tests.e2e.browser.conftest import Open, Person, shoot, start_conversation
from tests.e2e.cluster import Cluster


async def post(person: Person, base_url: str, conversation_id: str, texts: list[str]) -> None:
    token = await person.page.evaluate("JSON.parse(localStorage.getItem('parley.session')).access_token")
    async with httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {token}"}) as http:
        for i, text in enumerate(texts):
            body = {"client_msg_id": f"seed-{i}", "text": text}
            response = await http.post(f"/api/conversations/{conversation_id}/messages", json=body)
            while response.status_code == 429:  # 10 messages/s per user: wait as told
                await asyncio.sleep(float(response.json()["error"]["details"]["retry_after"]))
                response = await http.post(f"/api/conversations/{conversation_id}/messages", json=body)
            assert response.status_code == 201, response.text


async def test_a_hit_far_back_opens_its_conversation_there(people: Open, web_cluster: Cluster) -> None:
    ann: Person = await people("Ann")
    conversation_id = await start_conversation(ann, "Trip")
    texts = ["The <b>ferry</b> to Zanzibar leaves at nine"] + [f"filler message {i}" for i in range(70)]
    await post(ann, web_cluster.nodes[0].base_url, conversation_id, texts)

    await ann.page.get_by_role("link", name="Search", exact=True).click()
    await ann.page.get_by_role("searchbox", name="Search messages").fill("zanzibar")
    await ann.page.get_by_role("combobox", name="Search mode").select_option("text")
    await ann.page.get_by_role("button", name="Search", exact=True).click()
    results = ann.page.get_by_role("list", name="Results")
    hit = results.get_by_role("link").first
    await expect(hit).to_contain_text("Trip · #1")
    await expect(hit.locator("mark")).to_have_text("Zanzibar")
    await expect(hit).to_contain_text("ferry</b>")  # the message's markup is text in the snippet too
    assert await results.locator("b").count() == 0
    await shoot(ann.page, "search")

    await hit.click()
    target = ann.page.locator('.messages article.msg[data-seq="1"]')
    await expect(target).to_have_class("msg mine user highlight")
    await expect(target).to_be_in_viewport()
    await expect(ann.page.get_by_role("button", name="Jump to latest")).to_be_visible()
    await ann.page.get_by_role("button", name="Jump to latest").click()
    await expect(ann.page.locator('.messages article.msg[data-seq="71"]')).to_be_visible()
    assert ann.console_errors == []
