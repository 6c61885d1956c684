"""Regenerate ``docs/demo.png``: the web demo as alice sees it, chatting with bob.

    .venv/bin/python -m tests.screenshot                  # on a private stack of its own
    .venv/bin/python -m tests.screenshot --url http://127.0.0.1:8000   # a running ./dev up

Without ``--url`` it starts a private stack on free loopback ports (a RabbitMQ node, the
embedded database, a sequencer and a gateway in development mode: :class:`bench.stack.BenchStack`)
and removes it afterwards, so the picture shows only this conversation. With ``--url``
it uses that gateway, which must run in development mode; alice's and bob's other rooms
there show in the sidebar, and the room must not exist yet (``--room``).

Two browser pages (Debian's Chromium through Playwright, as in the browser tests) log in
as alice and bob; alice creates the room with bob in it through the demo's form; they
exchange a few messages, each page waiting for the other to show it; then the message
lifecycle shows: bob reacts to one message and alice to another, alice edits one, bob
answers one in its thread; bob starts typing the next one, and alice's page is saved,
"bob is typing..." and all. The reactions are emoji: without a colour emoji font
(Debian's ``fonts-noto-color-emoji``) Chromium draws them as boxes.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from playwright.async_api import Browser, Locator, Page, ViewportSize, expect

from tests.browser import ROOT, PageLog, chromium, messages

T = 30_000  # ms: what a page may take to show something
VIEWPORT: ViewportSize = {"width": 1100, "height": 700}
CONVERSATION = [
    ("alice", "Hey! Are we still on for the hike on Saturday?"),
    ("bob", "Definitely. The forecast says sunny, 18 °C."),
    ("alice", "Great. Shall we meet at the station at 8:30?"),
    ("bob", "Works for me. I'll bring the map and some snacks."),
    ("alice", "Perfect. I'll book the train tickets tonight."),
    ("bob", "Thanks! Which trail: the lake loop or the ridge?"),
    ("alice", "The ridge, if your knee is up to it."),
]
REACTIONS = [("bob", 3, "👍"), ("alice", 4, "🎉")]  # (who, message number, emoji)
EDIT = (5, "Perfect. I'll book the train tickets tonight, two returns.")
THREAD = ("bob", 7, "It is. Ridge it is!")  # (who, root's number, reply)
TYPING = ("bob", "See you at")  # typed, not sent: alice's page says "bob is typing..."


async def open_page(browser: Browser, url: str, user: str) -> tuple[Page, PageLog]:
    context = await browser.new_context(viewport=VIEWPORT)
    page = await context.new_page()
    log = PageLog(page, user)
    await page.goto(f"{url}/demo/?user={user}")
    await page.wait_for_selector("#state[data-state=connected]", timeout=T)
    return page, log


async def open_room(page: Page, room: str) -> None:
    await page.click(f"#rooms li[data-room='{room}']", timeout=T)
    await page.wait_for_selector(f"#room-title:text-is('{room}')", timeout=T)


def message(page: Page, body: str) -> Locator:
    """The main list's message whose body is *body*."""
    return page.locator("#messages li.message").filter(
        has=page.locator(".body", has_text=body))


async def lifecycle(pages: dict[str, Page]) -> None:
    """Reactions, an edit and a thread reply, each waited for on alice's page."""
    alice = pages["alice"]
    for user, number, emoji in REACTIONS:
        body = CONVERSATION[number - 1][1]
        await asyncio.sleep(1.0)
        target = message(pages[user], body)
        await target.get_by_role("button", name="add a reaction").click(timeout=T)
        await target.get_by_role("button", name=f"react with {emoji}").click(timeout=T)
        await expect(message(alice, body).locator(f".chip[data-emoji='{emoji}']")
                     ).to_have_text(f"{emoji} 1", timeout=T)
    number, text = EDIT
    old = message(alice, CONVERSATION[number - 1][1])
    await old.get_by_role("button", name="edit this message").click(timeout=T)
    box = alice.get_by_role("textbox", name="edit the message")
    await box.fill(text)
    await box.press("Enter")
    await expect(message(alice, text).locator(".edited")).to_have_text("(edited)", timeout=T)
    user, number, reply = THREAD
    root = CONVERSATION[number - 1][1]
    await asyncio.sleep(1.5)
    await message(pages[user], root).locator("button.thread").click(timeout=T)
    await pages[user].fill("#thread-body", reply)
    await pages[user].press("#thread-body", "Enter")
    await expect(message(alice, root).locator("button.thread")).to_have_text(
        "1 reply", timeout=T)
    await expect(message(alice, reply)).to_have_count(1, timeout=T)


async def capture(url: str, room: str, out: Path) -> None:
    async with chromium() as browser:
        alice, alice_log = await open_page(browser, url, "alice")
        try:
            await alice.fill("#create-id", room)
            await alice.fill("#create-members", "bob")
            await alice.click("#create button")
            await alice.wait_for_selector(f"#room-title:text-is('{room}'), #create-error:not(:empty)",
                                          timeout=T)
            if error := await alice.text_content("#create-error"):
                raise SystemExit(f"screenshot: cannot create room {room}: {error} "
                                 f"(choose another with --room)")
            bob, _ = await open_page(browser, url, "bob")
            await open_room(bob, room)
            pages = {"alice": alice, "bob": bob}
            for page, other in ((alice, "bob"), (bob, "alice")):
                await page.wait_for_selector(f"#members li[data-user={other}].online",
                                             timeout=T)
            for count, (user, body) in enumerate(CONVERSATION, start=1):
                await asyncio.sleep(1.5)  # people take a moment to answer
                await pages[user].fill("#compose-body", body)
                await pages[user].press("#compose-body", "Enter")
                for page in pages.values():
                    await page.wait_for_function(
                        "n => document.querySelectorAll('#messages li.message').length >= n"
                        " && document.querySelectorAll('#pending li').length === 0",
                        arg=count, timeout=T)
            shown = await messages(alice)
            assert [(s, b) for _, s, b in shown] == CONVERSATION, shown
            await lifecycle(pages)
            await bob.click("#compose-body")  # back in the room from the thread
            await alice.click("#refresh")  # bob's read pointer, without the 10 s wait
            await alice.wait_for_selector("#members li[data-user=bob] .read", timeout=T)
            user, draft = TYPING
            await pages[user].type("#compose-body", draft, delay=80)
            await alice.wait_for_selector(f"#typing:has-text('{user} is typing')", timeout=T)
            await alice.focus("#compose-body")
            out.parent.mkdir(parents=True, exist_ok=True)
            await alice.screenshot(path=str(out))
        except Exception:  # what the page said helps; not after a clear SystemExit
            print(alice_log, file=sys.stderr)
            raise
    print(f"screenshot: wrote {out}")


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m tests.screenshot", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="a gateway in development mode (default: start a "
                   "private stack)")
    p.add_argument("--room", default="weekend-hike", help="default %(default)s")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "demo.png",
                   help="default docs/demo.png")
    args = p.parse_args()
    if args.url:
        asyncio.run(capture(args.url.rstrip("/"), args.room, args.out))
        return
    from bench.stack import BenchStack  # only here: --url needs no broker or database

    print("screenshot: starting a private stack (RabbitMQ node, database, sequencer, "
          "gateway in development mode)")
    with BenchStack(gateways=1, notifications=False,
                    extra_env={"BURROW_DEV_MODE": "true"}) as stack:
        asyncio.run(capture(stack.gateways[0].http_url, args.room, args.out))


if __name__ == "__main__":
    main()
