"""burrow.js on its own, in Chromium: what the demo does not show on screen.

A token that expires on an open connection (4401) is replaced through ``token()`` and
the rooms resume; a refused token and a room the user is not in fail with clear errors
on both transports; the SSE parser and the back-off hold on awkward input. The module is
loaded from the gateway (``/client/burrow.js``) into a page of the demo's origin.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from playwright.async_api import Browser, Page

from tests.browser import ROOT, PageLog, chromium, web_app
from tests.conftest import Vhost
from tests.integration.conftest import Running, Stack, Start
from tests.unit.test_uploads import png

pytestmark = pytest.mark.integration

# In the page: a client for *user* whose tokens come from the dev login with *ttl*.
SETUP = """
window.lib = await import("/client/burrow.js");
window.minted = 0;
window.makeClient = (user, ttl, transport = "auto", token) => {
  const client = new lib.BurrowClient({
    url: location.origin, transport, backoff: { initial: 100, max: 400 },
    token: token ?? (async () => {
      minted += 1;
      const r = await fetch("/v1/dev/token", { method: "POST",
        headers: { "Content-Type": "application/json" }, body: JSON.stringify({ user, ttl }) });
      return (await r.json()).token;
    }),
  });
  client.seen = { states: [], disconnects: [], messages: [] };
  client.on("state", (s) => client.seen.states.push(s));
  client.on("disconnect", (d) => client.seen.disconnects.push(d.code));
  client.on("message", (m) => client.seen.messages.push([m.room, m.seq, m.body]));
  return client;
};
window.until = (client, state, ms = 20000) => new Promise((resolve, reject) => {
  if (client.state === state) return resolve();
  const timer = setTimeout(() => reject(new Error(`no ${state} in ${ms} ms: ${client.seen.states}`)), ms);
  const off = client.on("state", (s) => { if (s === state) { clearTimeout(timer); off(); resolve(); } });
});
window.failure = async (promise) => {
  try { await promise; return null; } catch (err) { return [err.name, err.code, err.status]; }
};
"""


@dataclass
class Lab:
    browser: Browser
    gateway: Running
    page: Page  # a page of the gateway's own origin with SETUP run
    app: str  # the origin of a web app the gateway allows (BURROW_CORS_ORIGINS)
    other: str  # the same web server by another name: an origin it does not allow


@pytest.fixture
async def lab(vhost: Vhost, mongo_url: str, start: Start) -> AsyncIterator[Lab]:
    web = ROOT / "gateway" / "web"
    files = {"/burrow.js": ("text/javascript", (web / "burrow.js").read_bytes()),
             "/roomstate.js": ("text/javascript", (web / "roomstate.js").read_bytes()),
             "/": ("text/html", b"<!doctype html><title>an app</title>")}
    with web_app(files) as port:
        app, other = f"http://localhost:{port}", f"http://127.0.0.1:{port}"
        stack = Stack(start, vhost, mongo_url)
        stack.add_sequencer()
        gateway = stack.add_gateway(BURROW_DEV_MODE="true", BURROW_CORS_ORIGINS=app)
        stack.room("theirs", "dave")  # a room carol is not in
        async with chromium() as browser:
            page = await new_page(browser)
            log = PageLog(page, "page")
            await page.goto(gateway.url("/demo/"))
            await page.evaluate(f"async () => {{ {SETUP} }}")
            yield Lab(browser, gateway, page, app, other)
            assert log.errors == [], log


@pytest.fixture
def page(lab: Lab) -> Page:
    return lab.page


async def new_page(browser: Browser) -> Page:
    return await (await browser.new_context()).new_page()


async def run(page: Page, body: str, seconds: int = 60) -> Any:
    """Run *body* in the page; a client that never gets there fails it clearly."""
    return await page.evaluate(f"""() => Promise.race([
        (async () => {{ {body} }})(),
        new Promise((_, reject) => setTimeout(
            () => reject(new Error("not done within {seconds} s")), {seconds * 1000}))])""")


async def test_a_token_that_expires_on_the_connection_is_refreshed_and_rooms_resume(
        page: Page) -> None:
    result = await run(page, """
        const client = makeClient("carol", 2);  // each token lives 2 s
        await client.connect();
        await client.createRoom("refresh");
        await client.subscribe("refresh", { since: 0 });
        const first = await client.send("refresh", "before");
        await until(client, "reconnecting");     // the gateway closed it: 4401
        await until(client, "resumed");
        const second = await client.send("refresh", "after");
        await new Promise((r) => setTimeout(r, 0));
        while (client.seen.messages.length < 2) await new Promise((r) => setTimeout(r, 50));
        client.close();
        return { first: first.seq, second: second.seq, minted, seen: client.seen };
    """)
    assert (result["first"], result["second"]) == (1, 2)
    assert 4401 in result["seen"]["disconnects"]
    assert result["minted"] >= 2  # a fresh token for the reconnect
    assert result["seen"]["messages"] == [["refresh", 1, "before"], ["refresh", 2, "after"]]
    states = result["seen"]["states"]
    assert states[:2] == ["connecting", "connected"] and "resumed" in states
    assert states[-1] == "closed"


async def test_the_websocket_url_carries_a_one_time_ticket_never_the_token(
        page: Page) -> None:
    urls: list[str] = []
    page.on("websocket", lambda ws: urls.append(ws.url))
    token = await run(page, """
        const client = makeClient("carol", 60, "websocket");
        await client.connect();
        const token = client.token;
        client.close();
        return token;
    """)
    assert len(urls) == 1, urls
    assert "?ticket=" in urls[0] and "access_token" not in urls[0]
    assert token.split(".")[2] not in urls[0]


@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_refused_tokens_and_rooms_fail_clearly(page: Page, transport: str) -> None:
    result = await run(page, f"""
        const bad = makeClient("carol", 60, "{transport}", () => "not-a-token");
        const refused = await failure(bad.connect());
        const client = makeClient("carol", 60, "{transport}");
        await client.connect();
        await client.createRoom("mine");
        const room = await failure(client.subscribe("theirs", {{ since: 0 }}));
        const send = await failure(client.send("theirs", "let me in"));
        const badRoom = await failure(client.send("no spaces allowed", "x"));
        // the refusals cost nothing else: my own room still works
        await client.subscribe("mine", {{ since: 0 }});
        const ack = await client.send("mine", "still here");
        client.close();
        return {{ refused, badState: bad.state, room, send, badRoom, ack: ack.seq,
                 transport: client.transport }};
    """)
    assert result["refused"][:2] == ["ChatError", "unauthorized"]
    assert result["badState"] == "closed"
    assert result["room"][:2] == ["ChatError", "forbidden"]
    assert result["send"][:2] == ["ChatError", "forbidden"]
    assert result["badRoom"][:2] == ["ChatError", "bad_room"]
    assert (result["ack"], result["transport"]) == (1, transport)


async def test_changes_uploads_replies_and_threads_on_both_transports(page: Page) -> None:
    """Edits, reactions, deletes, replies with attachments: frames on the WebSocket, the
    HTTP routes with an Idempotency-Key on SSE; acked alike, and seen as "change"
    events in seq order by the sender's own subscription."""
    picture = base64.b64encode(png(4, 3)).decode()
    result = await run(page, f"""
        const out = {{}};
        for (const transport of ["websocket", "sse"]) {{
          const room = `life-${{transport}}`;
          const client = makeClient("carol", 60, transport);
          const changes = [];
          client.on("change", (c) => changes.push([c.type, c.seq, c.target, c.body ?? c.emoji ?? null]));
          await client.connect();
          await client.createRoom(room);
          await client.subscribe(room, {{ since: 0 }});
          const first = await client.send(room, "first");
          await client.edit(room, first.id, "first!");
          await client.react(room, first.id, "👍");
          await client.unreact(room, first.id, "👍");
          const bytes = Uint8Array.from(atob("{picture}"), (c) => c.charCodeAt(0));
          const file = await client.upload(room, new Blob([bytes], {{ type: "image/png" }}), "dot.png");
          const options = {{ replyTo: first.id, attachments: [file.id], clientId: `r-${{transport}}` }};
          const reply = await client.send(room, "", options);
          const again = await client.send(room, "", options);  // a retry: stored once
          const image = await (await fetch(await client.attachmentUrl(room, file.id))).blob();
          const thread = (await client.thread(room, first.id)).map((m) => [m.id, m.attachments[0].name]);
          await client.delete(room, first.id);
          const late = await failure(client.edit(room, first.id, "too late"));
          while (changes.length < 4) await new Promise((r) => setTimeout(r, 50));
          const state = new lib.RoomState("carol");
          state.load(await client.history(room, {{ before: 2 ** 53 }}));
          // a moderation event (docs/moderation.md) holds a seq and changes no message
          const lock = {{ type: "moderation", room, seq: 7, id: "mod-7", sender: "carol", ts: 0, action: "lock" }};
          const skipped = [state.apply(lock), state.seq];
          const paged = new lib.RoomState("carol");
          paged.load([{{ ...lock, seq: 1 }}]);
          out[`${{transport}}-moderation`] = [...skipped, paged.seq, paged.list().length];
          out[transport] = {{ changes: changes.map(([t, seq, target, x]) => [t, seq, target === first.id, x]),
            reply: [reply.seq, again.seq, again.id === reply.id], thread: [thread.length, thread[0][0] === reply.id, thread[0][1]],
            image: [image.type, image.size], late, file: [file.width, file.height],
            state: state.list().map((m) => [m.seq, m.deleted, m.body, m.reply_to === first.id, m.attachments.length]),
            transport: client.transport }};
          client.close();
        }}
        return out;
    """)
    for transport in ("websocket", "sse"):
        got = result[transport]
        assert got["transport"] == transport
        assert got["changes"] == [["edit", 2, True, "first!"], ["reaction", 3, True, "👍"],
                                  ["reaction", 4, True, "👍"], ["delete", 6, True, None]]
        assert got["reply"] == [5, 5, True]
        assert got["thread"] == [1, True, "dot.png"]
        assert got["image"] == ["image/png", len(png(4, 3))]
        assert got["file"] == [4, 3]
        assert got["late"][:3] == ["ChatError", "not_found", 404 if transport == "sse" else 0]
        assert got["state"] == [[1, True, "", False, 0], [5, False, "", True, 1]]
        assert result[f"{transport}-moderation"] == [None, 7, 1, 0]


async def test_the_sse_parser_and_the_back_off(page: Page) -> None:
    result = await run(page, r"""
        const parser = new lib.SseParser();
        const events = [];
        // split mid-line and mid-CRLF, a comment, multi-line data, no space after colon
        for (const chunk of ["retry: 2000\n\nid: a:1\r", "\nevent: message\ndata: {\"x\"",
                             ":1}\n\n: keepalive\n\nevent:typing\ndata:line1\ndata: line2\n",
                             "\nevent: close\n", "data: {}\n\n"]) {
          events.push(...parser.feed(chunk));
        }
        const waits = [0, 1, 2, 3, 10].map((n) => [lib.backoff(n, 500, 8000, () => 0),
                                                   lib.backoff(n, 500, 8000, () => 0.999)]);
        return { events, waits, expiry: lib.tokenExpiry("x.eyJleHAiOjE3fQ.y"),
                 garbage: lib.tokenExpiry("garbage") };
    """)
    assert result["events"] == [
        {"event": "message", "data": '{"x":1}', "id": "a:1"},
        {"event": "comment", "data": " keepalive", "id": None},
        {"event": "typing", "data": "line1\nline2", "id": None},
        {"event": "close", "data": "{}", "id": None},
    ]
    assert [low for low, _ in result["waits"]] == [250, 500, 1000, 2000, 4000]
    assert [round(high) for _, high in result["waits"]] == [750, 1499, 2998, 5996, 11992]
    assert (result["expiry"], result["garbage"]) == (17, None)


async def app_page(lab: Lab, origin: str) -> Page:
    """A page of *origin* (not the gateway's) that imports burrow.js from its own origin,
    as a web app that bundles the client does; it talks to the gateway cross-origin."""
    page = await new_page(lab.browser)
    await page.goto(f"{origin}/")
    setup = SETUP.replace('import("/client/burrow.js")', f'import("{origin}/burrow.js")')
    setup = setup.replace('fetch("/v1/dev/token"', f'fetch("{lab.gateway.url("/v1/dev/token")}"')
    setup = setup.replace("url: location.origin", f'url: "{lab.gateway.url("")}"')
    await page.evaluate(f"async () => {{ {setup} }}")
    return page


@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_a_web_app_on_an_allowed_origin_chats_and_others_are_kept_out(
        lab: Lab, transport: str) -> None:
    app = await app_page(lab, lab.app)
    result = await run(app, f"""
        const client = makeClient("erin", 60, "{transport}");
        await client.connect();
        await client.createRoom("cross");
        await client.subscribe("cross", {{ since: 0 }});
        const ack = await client.send("cross", "from another origin");
        while (client.seen.messages.length < 1) await new Promise((r) => setTimeout(r, 50));
        const rooms = (await client.listRooms()).map((r) => r.id);
        client.close();
        return {{ ack: ack.seq, messages: client.seen.messages, rooms, origin: location.origin }};
    """)
    assert result == {"ack": 1, "messages": [["cross", 1, "from another origin"]],
                      "rooms": ["cross"], "origin": lab.app}
    # a page of an origin not in BURROW_CORS_ORIGINS cannot read the API's answers
    other = await app_page(lab, lab.other)
    rooms = lab.gateway.url("/v1/rooms")
    refused = await run(other, f"""
        try {{
          await fetch("{rooms}", {{ headers: {{ Authorization: "Bearer x" }} }});
          return "read";
        }} catch (err) {{ return err.name; }}
    """)
    assert refused == "TypeError"
