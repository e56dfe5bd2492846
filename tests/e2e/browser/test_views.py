"""The views as a person meets them: usable by keyboard alone, every control named for screen readers
(and for these tests), light and dark, desktop and phone width; the admin page for admins only.

With ``PARLEY_SCREENSHOTS=docs/screenshots`` the screenshots in the README are taken again."""

from __future__ import annotations

import re

from playwright.async_api import Page, expect

from tests.e2e.browser.conftest import PHONE, Open, Person, shoot, start_conversation
from tests.e2e.cluster import Cluster

CONTROLS = {"button", "link", "textbox", "searchbox", "combobox", "checkbox", "tab", "dialog", "navigation", "log"}

SAMPLE = [
    ("Ann", "Shall we ship the **release** on Friday? Checklist:\n- tests green\n- changelog written"),
    ("Bob", "Yes. The migration is one line:\n```sql\nALTER TABLE messages ADD COLUMN edited_at timestamptz;\n```"),
    ("Ann", "Great, see https://example.com/release-notes for the notes."),
]


async def unnamed_controls(page: Page) -> list[str]:
    """Controls and landmarks without an accessible name, read off Chromium's accessibility tree."""
    tree = await page.locator("body").aria_snapshot()
    missing = []
    for line in tree.splitlines():
        found = re.match(r'\s*- (\w+)( "(.*?)")?', line)
        if found and found.group(1) in CONTROLS and not (found.group(3) or "").strip():
            missing.append(line.strip())
    return missing


async def set_theme(person: Person, theme: str) -> None:
    button = person.page.get_by_role("button", name="Dark theme")
    if (await button.get_attribute("aria-pressed") == "true") != (theme == "dark"):
        await button.click()


async def test_a_person_can_do_everything_by_keyboard(people: Open) -> None:
    ann: Person = await people("Ann")
    page = ann.page
    for _ in range(12):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.textContent") == "New conversation":
            break
    await page.keyboard.press("Enter")
    await page.keyboard.type("Keyboard only")  # the dialog focuses its first field
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name="Keyboard only")).to_be_visible()
    await expect(ann.message_box()).to_be_focused()  # an opened conversation focuses its composer
    await page.keyboard.type("typed without a mouse")
    await page.keyboard.press("Enter")
    await expect(ann.history()).to_have_count(1)
    assert await ann.texts() == [(1, "typed without a mouse")]


async def test_every_view_names_its_controls_in_both_themes_and_at_phone_width(
    people: Open, web_cluster: Cluster
) -> None:
    ann: Person = await people("Ann", node=0)
    bob: Person = await people("Bob", node=1)
    await start_conversation(ann, "Release", bob)
    await start_conversation(ann, "Design review", bob)
    await expect(bob.conversation("Release")).to_be_visible()
    await bob.open("Release")
    await ann.open("Release")
    for who, text in SAMPLE:
        await (ann if who == "Ann" else bob).say(text)
        await expect(ann.history()).to_have_count(SAMPLE.index((who, text)) + 1)
    await bob.conversation("Design review").click()
    await ann.conversation("Design review").click()
    await ann.say("Can you look at the new sidebar?")
    await ann.conversation("Release").click()
    await expect(ann.history()).to_have_count(3)

    page = ann.page
    await shoot(page, "chat-light-desktop")
    assert await unnamed_controls(page) == []
    await set_theme(ann, "dark")
    await shoot(page, "chat-dark-desktop")
    await page.set_viewport_size(PHONE)
    await shoot(page, "chat-dark-phone")
    await page.get_by_role("link", name="Back to conversations").click()
    await expect(page.get_by_role("navigation", name="Conversations")).to_be_visible()
    await shoot(page, "list-dark-phone")
    assert await unnamed_controls(page) == []
    await set_theme(ann, "light")
    await ann.conversation("Release").click()
    await shoot(page, "chat-light-phone")
    assert await unnamed_controls(page) == []

    await bob.page.get_by_role("button", name="Sign out").click()
    await expect(bob.page.get_by_role("tab", name="Sign in")).to_be_visible()
    await shoot(bob.page, "sign-in")
    assert await unnamed_controls(bob.page) == []


async def test_the_admin_page_is_for_admins(people: Open, web_cluster: Cluster) -> None:
    admin: Person = await people("Ada", email=web_cluster.env["PARLEY_ADMIN_EMAILS"])
    await admin.page.get_by_role("link", name="Admin", exact=True).click()
    await expect(admin.page.get_by_role("heading", name="Streams and lag")).to_be_visible()
    await expect(admin.page.locator("table").first).to_be_visible()
    await shoot(admin.page, "admin")
    assert await unnamed_controls(admin.page) == []

    someone: Person = await people("Sam")
    await expect(someone.page.get_by_role("link", name="Admin", exact=True)).to_have_count(0)
    await someone.page.goto("/#/admin")
    await expect(someone.page.get_by_text("Administrators only.").first).to_be_visible()
