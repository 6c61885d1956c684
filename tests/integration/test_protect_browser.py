"""The demo's blocks in a real browser (Debian's Chromium, as tests/integration/
test_browser.py): alice blocks bob beside his name, and his messages, the ones already
shown and the ones that come live, collapse to "a message from bob, whom you block";
the block is stored (GET /v1/me/blocks); unblocking shows them again. The server side
of blocks: tests/integration/test_protect.py."""

from __future__ import annotations

import httpx
import pytest

from tests.browser import PageLog, chromium, shot
from tests.integration.conftest import Stack
from tests.integration.test_browser import DEV, T

pytestmark = pytest.mark.integration


async def send_as(stack: Stack, user: str, body: str, key: str) -> None:
    async with httpx.AsyncClient() as http:
        answer = await http.post(stack.gateways[-1].url("/v1/rooms/lobby/messages"),
                                 json={"body": body}, headers={
                                     "Authorization": f"Bearer {stack.token(user)}",
                                     "Idempotency-Key": key})
    assert answer.status_code == 201, answer.text


async def test_the_demo_collapses_a_blocked_users_messages(stack: Stack) -> None:
    gateway = stack.add_gateway(**DEV)
    stack.room("lobby", "alice", "bob")
    await send_as(stack, "bob", "before the block", "b1")
    async with chromium() as browser:
        page = await (await browser.new_context(
            viewport={"width": 1100, "height": 700})).new_page()
        log = PageLog(page, "alice")
        try:
            await page.goto(gateway.url("/demo/?user=alice"))
            await page.wait_for_selector("#room-title:has-text('lobby')", timeout=T)
            await page.wait_for_selector("#messages li.message:has-text('before the block')",
                                         timeout=T)
            await page.click("#members li[data-user=bob] button.block")
            await page.wait_for_selector("#messages li.blocked[data-sender=bob]", timeout=T)
            await page.wait_for_selector(
                "#members li[data-user=bob] button.block:has-text('Unblock')", timeout=T)
            assert stack.http("GET", "/v1/me/blocks", "alice")[1]["blocks"][0]["user"] == "bob"
            await send_as(stack, "bob", "after the block", "b2")
            await page.wait_for_function(
                "() => document.querySelectorAll('#messages li.blocked').length === 2",
                timeout=T)
            text = await page.text_content("#messages") or ""
            assert "before the block" not in text and "after the block" not in text
            assert "a message from bob, whom you block" in text
            await shot(page, "blocked")
            await page.click("#members li[data-user=bob] button.block")
            await page.wait_for_selector("#messages li:has-text('after the block')", timeout=T)
            assert await page.locator("#messages li.blocked").count() == 0
            assert stack.http("GET", "/v1/me/blocks", "alice")[1] == {"blocks": []}
        except BaseException:
            print(log)
            raise
