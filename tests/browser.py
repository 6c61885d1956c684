"""Debian's Chromium driven by Playwright, for the tests of the web demo and burrow.js.

Playwright's own browser download cannot work on these machines (and is not wanted):
the browser is the system's ``/usr/bin/chromium``, which ``./dev test`` installs. The
flags keep it off the network it cannot reach (background updates, sync, QUIC), and
``--no-sandbox`` because the tests run as root.
"""

from __future__ import annotations

import http.server
import os
import shutil
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("BURROW_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "browser"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-dev-shm-usage"]

# Breaks the WebSocket as a proxy that strips upgrades would: every attempt fails before
# it opens, while plain HTTP goes through. The client must notice and fall back to SSE.
NO_WEBSOCKET = """
window.WebSocket = class BlockedWebSocket extends EventTarget {
  static OPEN = 1;
  constructor(url) {
    super();
    this.url = url;
    this.readyState = 0;
    setTimeout(() => {
      this.readyState = 3;
      this.onerror?.(new Event("error"));
      this.onclose?.({ code: 1006, reason: "", wasClean: false });
    }, 20);
  }
  send() { throw new Error("not open"); }
  close() {}
};
"""


def executable() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(path):
        pytest.fail("chromium is not installed: ./dev test installs Debian's chromium")
    return path


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable(), args=FLAGS)
        try:
            yield browser
        finally:
            await browser.close()


class PageLog:
    """What a page said on its console and threw: shown when a test fails, and checked
    (a demo that throws is broken even when its screen looks right)."""

    def __init__(self, page: Page, name: str) -> None:
        self.name = name
        self.lines: list[str] = []
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def _console(self, message: ConsoleMessage) -> None:
        self.lines.append(f"{self.name} {message.type}: {message.text}")

    def __str__(self) -> str:
        return "\n".join(self.lines + [f"{self.name} threw: {e}" for e in self.errors])


async def shot(page: Page, name: str) -> Path:
    """Save a screenshot as a test artifact (``test-artifacts/browser/NAME.png``)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path))
    return path


async def messages(page: Page) -> list[tuple[int, str, str]]:
    """The page's message list as (seq, sender, body), top to bottom."""
    rows: Any = await page.eval_on_selector_all(
        "#messages li.message",
        "items => items.map(li => [Number(li.dataset.seq), li.dataset.sender,"
        " li.querySelector('.body').textContent])")
    return [(int(seq), str(sender), str(body)) for seq, sender, body in rows]


@contextmanager
def web_app(files: Mapping[str, tuple[str, bytes]]) -> Iterator[int]:
    """A static web server on loopback for pages of *another* origin than the gateway:
    ``{path: (content type, body)}``; yields its port. A real server, not a Playwright
    route: Chromium keeps pages of no known address from calling loopback (Local Network
    Access), and a web app and the gateway are both on loopback here."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = files.get(self.path)
            if found is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", found[0])
            self.send_header("Content-Length", str(len(found[1])))
            self.end_headers()
            self.wfile.write(found[1])

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
