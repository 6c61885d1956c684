"""The demo's moderator actions in Chromium (issue 17, items 1 and 7), on the real stack.

Three pages in one room: alice (the owner) promotes bob from the member list; bob, now a
moderator, gets the member actions and mutes carol with a reason (markup, shown as
text): carol's page shows the moderation line and "muted for N s", and her send is
refused with the notice and burrow.js's ``retryAfterMs`` (nothing stored: the history
says so); bob unmutes her and locks the room (the lock's first answer is lost: burrow.js
retries with the same Idempotency-Key, and there is one lock event): carol's page says
read-only, alice still sends; bob bans carol: her page loses the room at once (the
``unsubscribed`` frame, not a reload); the audit panel of bob's page lists every action
with its reason, and the pages show the moderation lines in the room's order among the
messages. The server side of each rule:
tests/integration/test_moderation.py and test_moderation_enforcement.py.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Page, Route, expect

from tests.browser import PageLog, chromium, shot
from tests.conftest import Vhost
from tests.integration.conftest import Running, Stack, Start

pytestmark = pytest.mark.integration
T = 30_000  # ms: what a page may take to show something, on a busy 2-core machine
HOSTILE = "<img src=x onerror=window.pwned=1>flood"
MUTED = re.compile(r"^muted for (600|59\d) s$")  # a 10-minute mute, counting down


@pytest.fixture
async def demo(vhost: Vhost, mongo_url: str, start: Start) -> AsyncIterator[Stack]:
    stack = Stack(start, vhost, mongo_url)
    stack.add_sequencer()
    stack.add_gateway(BURROW_DEV_MODE="true")
    yield stack


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


async def open_page(browser: Browser, gateway: Running, user: str) -> tuple[Page, PageLog]:
    context = await browser.new_context(viewport={"width": 1300, "height": 800})
    page = await context.new_page()
    log = PageLog(page, user)
    await page.goto(gateway.url(f"/demo/?user={user}"))
    await page.wait_for_selector("#room-title:has-text('lobby')", timeout=T)
    return page, log


def line(page: Page, action: str) -> object:
    """The timeline's system line of the moderation event *action*."""
    return page.locator(f"#messages li.system[data-action={action}]")


def bodies(stack: Stack) -> list[str]:
    status, answer = stack.http("GET", "/v1/rooms/lobby/messages?v=2&before=9999&limit=200",
                                "alice")
    assert status == 200, answer
    return [m.get("body", "") for m in answer["messages"] if m["type"] == "message"]


async def test_moderators_act_from_the_demo(demo: Stack, browser: Browser) -> None:
    demo.room("lobby", "alice", "bob", "carol")
    gateway = demo.gateways[0]
    pages = [await open_page(browser, gateway, user) for user in ("alice", "bob", "carol")]
    (alice, _), (bob, _), (carol, _) = pages
    try:
        await moderate(demo, alice, bob, carol)
    except BaseException:
        print(*(log for _, log in pages), sep="\n")
        raise
    for page, log in pages:
        assert log.errors == [], log
        assert await page.evaluate("() => window.burrowDemo.client.violations") == []
        assert await page.evaluate("() => window.pwned") is None


async def moderate(demo: Stack, alice: Page, bob: Page, carol: Page) -> None:
    # a plain member has no moderation tools; the owner has them
    await expect(alice.locator("#mod-tools")).to_be_visible(timeout=T)
    assert await carol.locator("#members button.mod").count() == 0
    assert await carol.locator("#mod-tools").is_hidden()

    # alice promotes bob: bob's page gets the moderator's actions on carol (not on alice)
    await alice.locator("#members li[data-user=bob] button.mod-promote").click()
    await expect(line(bob, "promote")).to_have_text("alice made bob a moderator", timeout=T)
    await expect(bob.locator("#members li[data-user=carol] button.mod-mute")).to_be_visible(
        timeout=T)
    assert await bob.locator("#members li[data-user=alice] button.mod").count() == 0

    # bob mutes carol with a reason: carol sees the line and the notice; her send is refused
    await bob.fill("#mod-reason", HOSTILE)
    await bob.locator("#members li[data-user=carol] button.mod-mute").click()
    await expect(line(carol, "mute")).to_have_text(f"bob muted carol for 10 min: {HOSTILE}",
                                                   timeout=T)
    await expect(carol.locator("#compose-notice")).to_have_text(MUTED, timeout=T)
    await carol.fill("#compose-body", "let me talk")
    await carol.press("#compose-body", "Enter")
    await expect(carol.locator("#room-error")).to_contain_text("not sent: muted", timeout=T)
    await expect(carol.locator("#pending li")).to_have_count(0)
    await expect(carol.locator("#compose-notice")).to_have_text(MUTED)
    # burrow.js surfaces the refusal's retry_after_ms (what the notice counts down from)
    code, wait = await carol.evaluate(
        "() => window.burrowDemo.client.send('lobby', 'still me')"
        ".then(() => ['stored', 0], (e) => [e.code, e.retryAfterMs])")
    assert code == "muted" and 500_000 < wait <= 600_000, (code, wait)
    assert not {"let me talk", "still me"} & set(bodies(demo))

    # bob unmutes her (the button turned to Unmute) and locks the room: carol is read-only,
    # alice (the owner) still sends
    await bob.locator("#members li[data-user=carol] button.mod-unmute").click()
    await expect(line(carol, "unmute")).to_have_count(1, timeout=T)
    # the lock's first answer is lost on the way back (taken, then a 503): burrow.js
    # retries with the same Idempotency-Key, and the room gets one lock event
    keys: list[str] = []
    retried = asyncio.Event()

    async def lose_first_answer(route: Route) -> None:
        keys.append(route.request.headers["idempotency-key"])
        if len(keys) > 1:
            await route.continue_()
            retried.set()
            return
        taken = await route.fetch()
        assert taken.status == 200, await taken.text()
        await route.fulfill(status=503, json={"error": {"code": "unavailable", "message": "x"}})

    await bob.route("**/v1/rooms/lobby/moderation", lose_first_answer)
    await bob.click("#mod-lock")
    await expect(line(carol, "lock")).to_have_text("bob locked the room", timeout=T)
    await asyncio.wait_for(retried.wait(), T / 1000)
    await bob.unroute("**/v1/rooms/lobby/moderation")
    assert len(keys) == 2 and keys[0] == keys[1], keys
    await expect(carol.locator("#compose-notice")).to_have_text(
        "read-only: the room is locked", timeout=T)
    await expect(bob.locator("#mod-lock")).to_have_text("Unlock", timeout=T)
    await expect(bob.locator("#room-error")).to_have_text("")  # the retry succeeded
    await alice.fill("#compose-body", "the owner still speaks")
    await alice.press("#compose-body", "Enter")
    await expect(carol.locator("#messages li.message .body")).to_have_text(
        ["the owner still speaks"], timeout=T)

    # bob bans carol: her page loses the room at once
    await bob.fill("#mod-reason", "spam")
    await bob.locator("#members li[data-user=carol] button.mod-ban").click()
    await expect(carol.locator("#room")).to_be_hidden(timeout=T)
    await expect(carol.locator("#rooms li[data-room=lobby]")).to_have_count(0)
    await expect(carol.locator("#room-gone")).to_have_text(
        "You are no longer a member of lobby.")
    assert demo.http("GET", "/v1/rooms/lobby/bans", "alice")[1]["bans"][0]["reason"] == "spam"

    # the audit panel lists the actions with their reasons, newest first; every page shows
    # the lines in the room's order among the messages
    await expect(line(alice, "ban")).to_have_text("bob banned carol: spam", timeout=T)
    await expect(bob.locator("#audit li .what")).to_have_text([
        "bob banned carol: spam", "bob locked the room", "bob unmuted carol",
        f"bob muted carol for 10 min: {HOSTILE}", "alice made bob a moderator"], timeout=T)
    for page in (alice, bob):
        timeline = await page.eval_on_selector_all(
            "#messages li[data-seq]", "items => items.map(li => [Number(li.dataset.seq),"
            " li.dataset.action ?? 'message'])")
        assert [kind for _, kind in timeline] == [
            "promote", "mute", "unmute", "lock", "message", "ban"], timeline
        seqs = [seq for seq, _ in timeline]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), timeline
    assert await bob.locator("#audit img").count() == 0
    await shot(bob, "moderation-bob")
    await shot(carol, "moderation-carol")
