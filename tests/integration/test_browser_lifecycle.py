"""The message lifecycle in the web demo, in Chromium (issue 16, items 8 and 9).

Two pages, alice and bob, in one room of the demo on the real stack: an edit shows at
bob's with its mark, bob's reaction shows at alice's as a chip, bob's reply in a thread
shows at alice's as the root's reply count and in the thread view, a PNG alice uploads
loads as an image at bob's (from a signed URL), a deleted message leaves a tombstone and
its text nowhere in bob's page, and a mention chosen with the composer's autocomplete
arrives highlighted; bob mutes the room from its header. And the room-state reducer (gateway/web/roomstate.js) on its own, in
the same browser: events applied twice, or replayed over a history page, change nothing.
Everything waits on what the pages show, with timeouts; screenshots go to
``test-artifacts/browser/``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser import ROOT, PageLog, chromium, shot
from tests.conftest import Vhost
from tests.integration.conftest import Running, Stack, Start
from tests.unit.test_uploads import png

pytestmark = pytest.mark.integration
T = 30_000  # ms: what a page may take to show something, on a busy 2-core machine


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


# The reducer's cases, run in the page; each returns what the Python side asserts.
REDUCER = """
const { RoomState } = await import("data:text/javascript;charset=utf-8," + encodeURIComponent(SOURCE));
const m = (seq, id, sender, body, extra = {}) => ({ type: "message", room: "r", seq, id, sender,
  client_id: `c${seq}`, ts: seq * 1000, body, ...extra });
const ev = (type, seq, target, sender, extra = {}) => ({ type, room: "r", seq, id: `e${seq}`,
  sender, client_id: `e${seq}`, ts: seq * 1000, target, ...extra });
const events = [
  m(1, "a", "alice", "hi"),
  ev("edit", 2, "a", "alice", { body: "hello", edit_count: 1 }),
  ev("reaction", 3, "a", "bob", { emoji: "👍", op: "add" }),
  ev("reaction", 4, "a", "carol", { emoji: "👍", op: "add" }),
  ev("reaction", 5, "a", "carol", { emoji: "👍", op: "add" }),  // again: changes nothing
  m(6, "b", "bob", "yes", { reply_to: "a", thread: "a" }),
  m(7, "c", "alice", "secret @bob", { mentions: { users: ["bob"] } }),
  ev("reaction", 8, "a", "dave", { emoji: "👍", op: "remove" }),  // not there: nothing
  ev("reaction", 9, "c", "carol", { emoji: "🎉", op: "add" }),
  ev("delete", 10, "c", "alice", { deleted_by: "alice" }),
  ev("reaction", 11, "a", "carol", { emoji: "👍", op: "remove" }),
];
const live = new RoomState("bob");
const thumbs = (state) => state.get("a")?.reactions.find((r) => r.emoji === "👍")?.count ?? 0;
const counts = events.map((e) => { live.apply(e); return thumbs(live); });
const once = JSON.stringify(live.list());
events.forEach((e) => live.apply(e));  // every event again, as a buggy resume would
live.apply(events[3]);  // and an old one alone: carol's 👍, taken back since
const twice = JSON.stringify(live.list());
// a reader that loaded history at seq 7 (messages in their current state, and the
// change events) and then resumed from 5 (replays 6 and 7 again, then the rest)
const paged = new RoomState("bob");
paged.load([
  { ...m(1, "a", "alice", "hello"), edit_count: 1, edited_at: 2000, reply_count: 1,
    last_reply: { seq: 6, id: "b", sender: "bob", ts: 6000 },
    reactions: [{ emoji: "👍", count: 2, me: true }] },
  ...events.slice(1, 5),
  { ...m(6, "b", "bob", "yes", { reply_to: "a", thread: "a" }), reactions: [] },
  { ...m(7, "c", "alice", "secret @bob", { mentions: { users: ["bob"] } }), reactions: [] },
]);
const mentioned = paged.get("c").mentionsMe;
paged.seq = 5;
events.slice(5).forEach((e) => paged.apply(e));
const a = live.get("a"), c = live.get("c");
return { once, twice, counts, paged: JSON.stringify(paged.list()), mentioned,
  a: [a.body, a.edit_count, a.edited_at, a.reply_count, a.reactions],
  c: [c.deleted, c.body, c.deleted_by, c.reactions.length, c.mentionsMe, JSON.stringify(c).includes("secret")],
  replies: live.replies("a").map((r) => r.id) };
"""


async def test_the_room_state_reducer_is_idempotent_and_converges(browser: Browser) -> None:
    page = await (await browser.new_context()).new_page()
    log = PageLog(page, "page")
    source = (ROOT / "gateway" / "web" / "roomstate.js").read_text()
    got: Any = await page.evaluate(f"async (SOURCE) => {{ {REDUCER} }}", source)
    # bob's 👍, carol's, carol's again (nothing), dave takes back one he never gave
    # (nothing), carol takes hers back
    assert got["counts"] == [0, 0, 1, 2, 2, 2, 2, 2, 2, 2, 1]
    assert got["once"] == got["twice"]  # the same events again change nothing
    assert got["paged"] == got["once"]  # a history page plus a replay converge
    assert got["a"] == ["hello", 1, 2000, 1, [{"emoji": "👍", "count": 1, "me": True}]]
    assert got["c"] == [True, "", "alice", 0, False, False]  # a tombstone, text gone
    assert got["mentioned"] is True
    assert got["replies"] == ["b"]
    assert log.errors == [], log


class Person:
    """One user's page of the demo."""

    def __init__(self, page: Page, user: str) -> None:
        self.page, self.user = page, user
        self.log = PageLog(page, user)

    @classmethod
    async def open(cls, browser: Browser, gateway: Running, user: str) -> Person:
        context = await browser.new_context(viewport={"width": 1300, "height": 800})
        page = await context.new_page()
        person = cls(page, user)
        await page.goto(gateway.url(f"/demo/?user={user}"))
        await page.wait_for_selector("#state[data-state=connected]", timeout=T)
        return person

    def message(self, text: str) -> Any:
        """The main list's message whose body is *text*."""
        return self.page.locator("#messages li.message").filter(
            has=self.page.locator(".body", has_text=text))

    async def send(self, body: str) -> None:
        await self.page.fill("#compose-body", body)
        await self.page.press("#compose-body", "Enter")
        await expect(self.message(body)).to_have_count(1, timeout=T)


@pytest.fixture
async def demo(vhost: Vhost, mongo_url: str, start: Start) -> AsyncIterator[Stack]:
    stack = Stack(start, vhost, mongo_url)
    stack.add_sequencer()
    stack.add_gateway(BURROW_DEV_MODE="true")
    yield stack


async def test_two_users_edit_react_reply_upload_delete_and_mention(
        demo: Stack, browser: Browser) -> None:
    demo.room("plans", "alice", "bob")
    gateway = demo.gateways[0]
    alice = await Person.open(browser, gateway, "alice")
    bob = await Person.open(browser, gateway, "bob")
    try:
        await lifecycle(alice, bob)
    except BaseException:
        print(alice.log, bob.log, sep="\n")
        raise
    for person in (alice, bob):
        assert person.log.errors == [], person.log
        assert await person.page.evaluate("() => window.burrowDemo.client.violations") == []


async def lifecycle(alice: Person, bob: Person) -> None:
    a, b = alice.page, bob.page
    for page in (a, b):
        await page.wait_for_selector("#room-title:has-text('plans')", timeout=T)
    # alice sends, bob sees it; alice edits it in place, bob sees the new text and a mark
    await alice.send("hike on Saturday?")
    await expect(bob.message("hike on Saturday?")).to_have_count(1, timeout=T)
    await alice.message("hike on Saturday?").get_by_role("button", name="edit this message").click()
    await a.get_by_role("textbox", name="edit the message").fill("hike on Sunday?")
    await a.get_by_role("textbox", name="edit the message").press("Enter")
    edited = bob.message("hike on Sunday?")
    await expect(edited.locator(".edited")).to_have_text("(edited)", timeout=T)
    await expect(bob.message("Saturday")).to_have_count(0)

    # bob reacts: alice sees the chip with count 1, bob's chip is marked his
    await edited.get_by_role("button", name="add a reaction").click()
    await edited.get_by_role("button", name="react with 👍").click()
    await expect(alice.message("hike on Sunday?").locator(".chip[data-emoji='👍']")).to_have_text(
        "👍 1", timeout=T)
    await expect(alice.message("hike on Sunday?").locator(".chip")).to_have_attribute(
        "aria-pressed", "false")
    await expect(edited.locator(".chip[data-emoji='👍']")).to_have_attribute(
        "aria-pressed", "true", timeout=T)

    # bob replies in the thread: alice sees the reply count and the reply in the thread
    await edited.locator("button.thread").click()
    await b.fill("#thread-body", "Sunday works")
    await b.press("#thread-body", "Enter")
    root = alice.message("hike on Sunday?")
    await expect(root.locator("button.thread")).to_have_text("1 reply", timeout=T)
    await root.locator("button.thread").click()
    await expect(a.locator("#thread-replies li.message .body")).to_have_text(
        ["Sunday works"], timeout=T)
    await expect(a.locator("#thread-root .body")).to_have_text("hike on Sunday?")
    await expect(alice.message("Sunday works").locator(".quote")).to_have_text(
        "↪ alice: hike on Sunday?")

    # alice uploads a PNG with a message: bob's page loads it from a signed URL; its
    # name is text, never markup
    hostile = "<img src=x onerror=window.pwned=1>map.png"
    await a.set_input_files("#compose-file", files=[
        {"name": hostile, "mimeType": "image/png", "buffer": png(4, 3)}])
    await alice.send("the trail map")
    image = bob.message("the trail map").locator("img.thumb")
    await expect(image).to_have_attribute("alt", hostile, timeout=T)
    await b.wait_for_function(
        "() => { const i = document.querySelector('#messages img.thumb');"
        " return i && i.complete && i.naturalWidth === 4 && i.naturalHeight === 3"
        " && i.src.includes('/v1/files/'); }", timeout=T)

    # alice deletes a message: bob sees the tombstone, its text is nowhere in his page
    assert await b.locator("#messages img").count() == 1
    assert await b.evaluate("() => window.pwned") is None
    await alice.send("my phone number is 555-0199")
    await expect(bob.message("555-0199")).to_have_count(1, timeout=T)
    await alice.message("555-0199").get_by_role("button", name="delete this message").click()
    await expect(b.locator("#messages li.deleted .tombstone")).to_have_text(
        "message deleted", timeout=T)
    assert "555-0199" not in await b.content()

    # a mention chosen with the autocomplete arrives highlighted at bob's only
    await a.click("#compose-body")
    await a.keyboard.type("see you there @b")
    await expect(a.locator("#mention-list li")).to_have_text(["@bob"], timeout=T)
    await a.keyboard.press("Enter")  # chooses bob, does not send
    await expect(a.locator("#compose-body")).to_have_value("see you there @bob ")
    await a.keyboard.press("Enter")
    await expect(bob.message("see you there @bob")).to_have_class(
        "message mention", timeout=T)
    await expect(alice.message("see you there @bob")).to_have_class("message mine")

    # bob mutes the room from its header: stored as his rule, shown again on reload
    await expect(b.locator("#room-notify")).to_have_value("all", timeout=T)
    async with b.expect_response(lambda r: r.url.endswith("/v1/me/rooms/plans/notifications")
                                 and r.request.method == "PUT", timeout=T) as put:
        await b.select_option("#room-notify", "nothing")
    assert (await put.value).status == 200
    await b.reload()
    await b.wait_for_selector("#room-title:has-text('plans')", timeout=T)
    await expect(b.locator("#room-notify")).to_have_value("nothing", timeout=T)
    await shot(a, "lifecycle-alice")
    await shot(b, "lifecycle-bob")

