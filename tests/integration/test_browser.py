"""The web demo and burrow.js in a real browser (Debian's Chromium, driven by Playwright).

Two pages as two users chat in one room: both show the same messages in the same order,
typing and presence show; then the gateway is killed (``kill -9``) and started again on
the same port while one page keeps sending, and both pages show ``reconnecting``, then
``resumed``, with every message once and no gap. The same again with the WebSocket
broken in the page, where the client falls back to SSE + HTTP sends. Screenshots go to
``test-artifacts/browser/``.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page

from tests.browser import NO_WEBSOCKET, PageLog, chromium, messages, shot
from tests.conftest import Vhost
from tests.integration.conftest import Running, Stack, Start

pytestmark = pytest.mark.integration
T = 30_000  # ms: what a page may take to show something, on a busy 2-core machine
DEV = {"BURROW_DEV_MODE": "true"}


@pytest.fixture
async def demo(vhost: Vhost, mongo_url: str, start: Start) -> AsyncIterator[Stack]:
    """A sequencer and one gateway in development mode (the demo and its dev login)."""
    stack = Stack(start, vhost, mongo_url)
    stack.add_sequencer()
    stack.add_gateway(**DEV)
    yield stack


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


class Person:
    """One user's page of the demo, in a browser context (cookies, storage) of its own."""

    def __init__(self, context: BrowserContext, page: Page, user: str) -> None:
        self.context, self.page, self.user = context, page, user
        self.log = PageLog(page, user)

    @classmethod
    async def open(cls, browser: Browser, gateway: Running, user: str,
                   init_script: str | None = None) -> Person:
        context = await browser.new_context(viewport={"width": 1100, "height": 700})
        if init_script:
            await context.add_init_script(init_script)
        page = await context.new_page()
        person = cls(context, page, user)
        await page.goto(gateway.url(f"/demo/?user={user}"))
        await person.state("connected")
        return person

    async def state(self, state: str) -> None:
        await self.page.wait_for_selector(f"#state[data-state={state}]", timeout=T)

    async def send(self, body: str) -> None:
        await self.page.fill("#compose-body", body)
        await self.page.press("#compose-body", "Enter")

    async def shows(self, count: int) -> list[tuple[int, str, str]]:
        """Wait until the page lists *count* messages and nothing is still sending."""
        await self.page.wait_for_function(
            "n => document.querySelectorAll('#messages li.message').length >= n &&"
            " document.querySelectorAll('#pending li').length === 0", arg=count, timeout=T)
        return await messages(self.page)

    async def demo(self, expression: str) -> Any:
        return await self.page.evaluate(f"() => window.burrowDemo.{expression}")


def stored(stack: Stack, room: str) -> list[tuple[int, str, str]]:
    status, body = stack.http("GET", f"/v1/rooms/{room}/messages?limit=500", "alice",
                              gateway=len(stack.gateways) - 1)
    assert status == 200, body
    return [(m["seq"], m["sender"], m["body"]) for m in body["messages"]]


@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_two_pages_chat_and_resume_across_a_gateway_restart(
        demo: Stack, browser: Browser, transport: str) -> None:
    blocked = NO_WEBSOCKET if transport == "sse" else None
    gateway = demo.gateways[0]
    alice = await Person.open(browser, gateway, "alice", blocked)
    try:
        await run_the_chat(demo, browser, gateway, alice, blocked, transport)
    except BaseException:
        print(alice.log)
        raise


async def run_the_chat(stack: Stack, browser: Browser, gateway: Running, alice: Person,
                       blocked: str | None, transport: str) -> None:
    page = alice.page
    await page.fill("#create-id", "lobby")
    await page.fill("#create-members", "bob")
    await page.click("#create button")
    await page.wait_for_selector("#room-title:has-text('lobby')", timeout=T)
    bob = await Person.open(browser, gateway, "bob", blocked)
    for person in (alice, bob):
        assert (await person.page.text_content("#transport") or "").startswith(transport)
    await bob.page.wait_for_selector("#room-title:has-text('lobby')", timeout=T)

    # presence: each sees the other online (alice by the event, bob by the fetch)
    await page.wait_for_selector("#members li[data-user=bob].online", timeout=T)
    await bob.page.wait_for_selector("#members li[data-user=alice].online", timeout=T)
    # interleaved sends from both pages: one order, the same on both
    for person, body in ((alice, "a1"), (bob, "b1"), (alice, "a2"), (bob, "b2")):
        await person.send(body)
    hostile = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
    await alice.send(hostile)
    seen = await alice.shows(5)
    assert seen == await bob.shows(5) == stored(stack, "lobby")
    assert [seq for seq, _, _ in seen] == [1, 2, 3, 4, 5]
    assert sorted(body for _, _, body in seen) == sorted(["a1", "b1", "a2", "b2", hostile])
    # a message body is text, never markup
    assert await bob.page.locator("#messages img, #messages script").count() == 0
    assert await bob.page.evaluate("() => window.pwned") is None
    # typing: bob types, alice is told; bob's message clears it
    await bob.page.type("#compose-body", "hel")
    await page.wait_for_selector("#typing:has-text('bob is typing')", timeout=T)
    await shot(page, f"{transport}-alice")
    await shot(bob.page, f"{transport}-bob")
    await bob.page.fill("#compose-body", "")
    await bob.send("b3")
    await page.wait_for_selector("#typing:text-is('')", timeout=T)
    assert (await alice.shows(6))[-1][1:] == ("bob", "b3")

    # the gateway dies while alice keeps sending; it comes back on the same port
    sends = [f"r{i}" for i in range(10)]
    restart: asyncio.Task[Running] | None = None
    for i, body in enumerate(sends):
        await alice.send(body)
        if i == 3:
            gateway.app.signal(signal.SIGKILL)
            await alice.state("reconnecting")
            await bob.state("reconnecting")
            await shot(page, f"{transport}-reconnecting")
            restart = asyncio.create_task(asyncio.to_thread(
                stack.add_gateway, port=gateway.port, **DEV))
        await asyncio.sleep(0.1)  # a person typing, not a wait for an outcome
    assert restart is not None
    await restart
    await alice.state("resumed")
    await bob.state("resumed")
    total = 6 + len(sends)
    after = await alice.shows(total)
    assert after == await bob.shows(total) == stored(stack, "lobby")
    assert [seq for seq, _, _ in after] == list(range(1, total + 1))  # no gap, no repeat
    assert sorted(body for _, _, body in after[6:]) == sorted(sends)  # each once
    for person in (alice, bob):
        states = await person.demo("states")
        assert states[0] == "connecting" and "connected" in states
        assert states.index("reconnecting") < len(states) - 1 - states[::-1].index("resumed")
        assert await person.demo("client.violations") == []
        assert person.log.errors == [], person.log
    await shot(page, f"{transport}-resumed")
