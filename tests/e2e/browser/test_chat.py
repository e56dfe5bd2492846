"""Two people chat in two browsers, each served by a different API node: messages arrive live, in
order, once; the conversation list and its unread badges move; hostile text stays text."""

from __future__ import annotations

import asyncio

from playwright.async_api import expect

from tests.e2e.browser.conftest import Open, Person, start_conversation


async def wait_for_count(person: Person, count: int) -> list[tuple[int, str]]:
    await expect(person.history()).to_have_count(count)
    return await person.texts()


async def test_two_people_see_each_others_messages_live_in_order_once(people: Open) -> None:
    ann: Person = await people("Ann", node=0)
    bob: Person = await people("Bob", node=1)
    await start_conversation(ann, "Weekend plans", bob)
    await expect(bob.conversation("Weekend plans")).to_be_visible()  # the list moved by itself
    await bob.open("Weekend plans")

    # Both type at once, interleaved, without waiting for each other.
    async def chat(person: Person, n: int) -> None:
        for i in range(n):
            await person.say(f"{person.name} says {i}")
            await asyncio.sleep(0.05)

    await asyncio.gather(chat(ann, 8), chat(bob, 8))
    seen_by_ann = await wait_for_count(ann, 16)
    seen_by_bob = await wait_for_count(bob, 16)
    assert [seq for seq, _ in seen_by_ann] == list(range(1, 17)), "in seq order, no gap, no duplicate"
    assert seen_by_ann == seen_by_bob, "both see the same history"
    for name in ("Ann", "Bob"):
        assert [t for _, t in seen_by_ann if t.startswith(name)] == [f"{name} says {i}" for i in range(8)]
    await expect(ann.page.locator(".pending")).to_have_count(0)
    assert ann.console_errors == [] and bob.console_errors == []


async def test_unread_badges_and_previews_move_and_reading_clears_them(people: Open) -> None:
    ann: Person = await people("Ann", node=0)
    bob: Person = await people("Bob", node=1)
    await start_conversation(ann, "Badges", bob)
    await expect(bob.conversation("Badges")).to_be_visible()
    for i in range(3):
        await ann.say(f"unread {i}")
    entry = bob.page.get_by_role("link", name="Badges, 3 unread", exact=True)
    await expect(entry).to_be_visible()
    await expect(entry.locator(".preview")).to_have_text("unread 2")
    await expect(entry.locator(".badge")).to_have_text("3")

    await entry.click()  # reading the conversation marks it read
    await expect(bob.page.get_by_role("link", name="Badges", exact=True)).to_be_visible()
    await ann.say("one more, while Bob is reading")
    await expect(bob.history()).to_have_count(4)
    await expect(bob.page.get_by_role("link", name="Badges", exact=True)).to_be_visible()

    await bob.page.reload()  # the server agrees: nothing unread
    await expect(bob.page.get_by_role("link", name="Badges", exact=True)).to_be_visible()


PAYLOADS = [
    '<img src=x onerror="window.__pwned = 1; alert(1)">',
    "<script>window.__pwned = 2; alert(2)</script>",
    "[click me](javascript:window.__pwned=3;alert(3))",
    '<a href="javascript:alert(4)">html link</a> and <iframe src="javascript:alert(5)"></iframe>',
    "![x](javascript:alert(6)) **bold** `code`",
]


async def test_hostile_text_renders_as_text_and_nothing_runs(people: Open) -> None:
    ann: Person = await people("Ann", node=0)
    bob: Person = await people("Bob", node=1)
    await start_conversation(ann, "Hostile", bob)
    await expect(bob.conversation("Hostile")).to_be_visible()
    await bob.open("Hostile")
    for payload in PAYLOADS:
        await ann.say(payload)
    for person in (ann, bob):
        texts = [t for _, t in await wait_for_count(person, len(PAYLOADS))]
        assert '<img src=x onerror="window.__pwned = 1; alert(1)">' in texts[0]
        assert "<script>window.__pwned = 2; alert(2)</script>" in texts[1]
        assert "javascript:window.__pwned=3;alert(3)" in texts[2]
        bodies = person.page.locator(".messages .body")
        assert await bodies.locator("img, script, iframe, [onerror]").count() == 0
        assert await person.page.locator('a[href^="javascript:" i]').count() == 0
        await expect(bodies.nth(4).locator("strong")).to_have_text("bold")  # Markdown still renders
        assert await person.page.evaluate("window.__pwned") is None
        assert await person.ran() == []
        assert person.console_errors == []


async def test_a_person_adds_someone_by_email_and_sees_who_is_online_and_typing(people: Open) -> None:
    ann: Person = await people("Ann", node=0)
    bob: Person = await people("Bob", node=1)
    await start_conversation(ann, "Later")
    await ann.page.get_by_role("button", name="Add people").click()
    dialog = ann.page.get_by_role("dialog", name="Add people")
    await dialog.get_by_label("Emails").fill("nobody@example.com")
    await dialog.get_by_role("button", name="Add").click()
    await expect(dialog.get_by_role("alert")).to_contain_text("no account for nobody@example.com")
    await dialog.get_by_label("Emails").fill(bob.email)
    await dialog.get_by_role("button", name="Add").click()
    people_list = ann.page.get_by_role("list", name="People")
    await expect(people_list.get_by_text("Bob")).to_have_attribute("data-online", "true")
    await expect(bob.conversation("Later")).to_be_visible()
    await bob.open("Later")
    await bob.message_box().press_sequentially("thinking about it", delay=20)
    await expect(ann.page.get_by_text("Bob is typing…")).to_be_visible()
    await bob.message_box().press("Enter")
    await expect(ann.page.get_by_text("Bob is typing…")).to_be_hidden()
    await bob.page.close()  # Bob's only socket closes: he goes offline
    await expect(people_list.get_by_text("Bob")).to_have_attribute("data-online", "false")
