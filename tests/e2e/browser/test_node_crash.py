"""The API node serving a browser is killed (SIGKILL) and restarted while its person keeps typing:
what they typed waits in the browser's queue, goes out with its original client_msg_id on reconnect,
and both people end with the same history, nothing lost and nothing doubled."""

from __future__ import annotations

import asyncio
from collections import Counter

from playwright.async_api import expect

from tests.e2e.browser.conftest import Open, Person, start_conversation
from tests.e2e.cluster import Cluster


async def test_killing_the_node_of_someone_typing_loses_and_doubles_nothing(people: Open, web_cluster: Cluster) -> None:
    ann: Person = await people("Ann", node=0)
    bob: Person = await people("Bob", node=1)
    await start_conversation(ann, "Outage", bob)
    await expect(bob.conversation("Outage")).to_be_visible()
    await bob.open("Outage")
    typed: list[str] = []

    async def type_lines(prefix: str, n: int) -> None:
        for i in range(n):
            typed.append(f"{prefix} {i}")
            await ann.say(typed[-1])
            await asyncio.sleep(0.1)

    await type_lines("before", 4)
    node = web_cluster.nodes[0]
    node.kill()
    connection = ann.page.get_by_role("status", name="Connection")
    await expect(connection).not_to_have_text("Connected")
    await type_lines("while down", 4)
    await expect(ann.page.locator(".pending")).to_have_count(4)
    await expect(connection).to_contain_text("4 waiting to send")

    restart = asyncio.create_task(asyncio.to_thread(node.start))
    await type_lines("while restarting", 4)
    await restart
    await expect(connection).to_have_text("Connected", timeout=40_000)
    await type_lines("after", 4)

    for person in (ann, bob):
        await expect(person.history()).to_have_count(len(typed), timeout=20_000)
    await expect(ann.page.locator(".pending")).to_have_count(0)
    live_ann, live_bob = await ann.texts(), await bob.texts()
    assert live_ann == live_bob
    assert [seq for seq, _ in live_ann] == list(range(1, len(typed) + 1))
    assert Counter(t for _, t in live_ann) == Counter(typed), "each line exactly once"
    assert [t for _, t in live_ann] == typed, "the queue goes out in the order it was typed"

    # What the server stored is what both saw live.
    for person in (ann, bob):
        await person.page.reload()
        await person.open("Outage")
        await expect(person.history()).to_have_count(len(typed))
        assert await person.texts() == live_ann
