"""Browser tests: Debian's Chromium driven by Playwright against real Parley processes (two API nodes
and a relay, from ``tests/e2e/cluster.py``). Playwright never downloads a browser here: it launches
``/usr/bin/chromium`` (``make test`` installs Debian's package when it is missing).

Every page gets an init script that records ``alert``/``confirm``/``prompt`` calls and errors, so a
test can say "nothing ran" about more than what it looked at.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, Playwright, async_playwright, expect

from infrastructure.embedded import EmbeddedPostgres, start_redis
from tests.conftest import TEST_JWT_SECRET, migrated_database
from tests.e2e.cluster import Cluster

CHROMIUM = os.environ.get("PARLEY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "correct horse battery staple"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

#: Records what page code tried to run: dialogs, and the errors it reported.
WATCH_SCRIPT = """
window.__ran = [];
for (const name of ["alert", "confirm", "prompt", "print"]) {
  window[name] = (...args) => { window.__ran.push([name, String(args[0])]); };
}
"""

expect.set_options(timeout=15_000)

#: ``PARLEY_SCREENSHOTS=docs/screenshots`` retakes the README's screenshots while the tests run.
SHOTS = os.environ.get("PARLEY_SCREENSHOTS")


async def shoot(page: Page, name: str) -> None:
    if SHOTS:
        await page.screenshot(path=os.path.join(SHOTS, f"{name}.png"))  # makes the folder


@pytest.fixture(scope="package")
def web_database_url(postgres: EmbeddedPostgres | None, database_url: str) -> str:
    """A database of its own: the browser tests' conversations stay out of other tests' checks."""
    return migrated_database(postgres, database_url, "parley_web")


@pytest.fixture(scope="package")
def web_cluster(web_database_url: str, tmp_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two API nodes, the relay, a projector and a worker (the offline stand-in LLM, slowed so an answer
    visibly streams for a few seconds), on a Redis of their own: this worker must not take the jobs of
    other end-to-end tests' workers, which share a consumer group name. Stopped after the package."""
    redis = start_redis(tmp_root / "web-redis")
    built = Cluster.build(
        database_url=web_database_url,
        redis_url=redis.url,
        log_dir=tmp_path_factory.mktemp("web-logs"),
        jwt_secret=TEST_JWT_SECRET,
        projectors=1,
        with_worker=True,
        PARLEY_ADMIN_EMAILS=f"admin-{uuid.uuid4().hex[:8]}@example.com",
        LLM_PROVIDER="offline",
        LLM_OFFLINE_DELAY="0.12",
    )
    built.start()
    try:
        yield built
    finally:
        built.stop()
        redis.stop()


@pytest.fixture(scope="package")
async def playwright() -> AsyncIterator[Playwright]:
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 (once per session)
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (apt-get install chromium)")
    async with async_playwright() as pw:
        yield pw


@pytest.fixture(scope="package")
async def browser(playwright: Playwright) -> AsyncIterator[Browser]:
    launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield launched
    await launched.close()


@dataclass
class Person:
    """One person in a browser context of their own, signed up through the UI."""

    name: str
    email: str
    context: BrowserContext
    page: Page
    console_errors: list[str] = field(default_factory=list)

    async def ran(self) -> list[Any]:
        result: list[Any] = await self.page.evaluate("window.__ran")
        return result

    def message_box(self) -> Any:
        return self.page.get_by_role("textbox", name="Message", exact=True)

    async def say(self, text: str) -> None:
        box = self.message_box()
        await box.fill(text)
        await box.press("Enter")

    def history(self) -> Any:
        return self.page.locator(".messages article.msg")

    async def texts(self) -> list[tuple[int, str]]:
        """(seq, text) of every stored message on screen, in screen order."""
        rows: list[list[Any]] = await self.page.eval_on_selector_all(
            ".messages article.msg", "els => els.map(e => [Number(e.dataset.seq), e.querySelector('.body').innerText])"
        )
        return [(int(seq), text.strip()) for seq, text in rows]

    def conversation(self, title: str) -> Any:
        """The list entry of a conversation (named "Title" or "Title, N unread")."""
        name = re.compile(rf"^{re.escape(title)}(, \d+ unread)?$")
        return self.page.get_by_role("navigation", name="Conversations").get_by_role("link", name=name)

    async def open(self, title: str) -> None:
        await self.conversation(title).click()
        await expect(self.page.get_by_role("heading", name=title)).to_be_visible()


Open = Any  # the factory below: await people("Ann", node=0)


@pytest.fixture
async def people(browser: Browser, web_cluster: Cluster) -> AsyncIterator[Open]:
    made: list[Person] = []

    async def open_person(
        name: str, node: int = 0, viewport: dict[str, int] | None = None, email: str | None = None, **kw: Any
    ) -> Person:
        context = await browser.new_context(
            base_url=web_cluster.nodes[node].base_url,
            viewport=viewport or DESKTOP,
            **kw,  # type: ignore[arg-type]
        )
        await context.add_init_script(WATCH_SCRIPT)
        page = await context.new_page()
        person = Person(name, email or f"{name.lower()}-{uuid.uuid4().hex[:8]}@example.com", context, page)
        page.on("console", lambda m: person.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: person.console_errors.append(f"pageerror: {e}"))
        made.append(person)
        await sign_up(person)
        return person

    yield open_person
    for person in made:
        await person.context.close()


async def sign_up(person: Person) -> None:
    page = person.page
    await page.goto("/")
    await page.get_by_role("tab", name="Register").click()
    await page.get_by_label("Name").fill(person.name)
    await page.get_by_label("Email").fill(person.email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Create account").click()
    await expect(page.get_by_role("status", name="Connection")).to_have_text("Connected")


async def start_conversation(owner: Person, title: str, *others: Person, assistant: bool = False) -> str:
    """Through the UI; returns the new conversation's id."""
    page = owner.page
    await page.get_by_role("button", name="New conversation").click()
    dialog = page.get_by_role("dialog", name="New conversation")
    await dialog.get_by_label("Title").fill(title)
    await dialog.get_by_label("Add people (emails)").fill(", ".join(p.email for p in others))
    if assistant:
        await dialog.get_by_label("Assistant in this conversation").check()
    await dialog.get_by_role("button", name="Create").click()
    await expect(page.get_by_role("heading", name=title)).to_be_visible()
    await expect(dialog).to_have_count(0)
    return page.url.split("#/c/")[1]
