"""The development mailbox (:mod:`burrow.devstack.mailbox`): ``./dev up``'s SMTP catcher and
its page, as a developer meets them.

The mailbox runs as the launcher runs it, ``python -m burrow.devstack.mailbox`` as a child
process on free ports. Mails go in over real SMTP (aiosmtplib, the digester's own client,
or raw bytes on a socket for what no client would send) and are read back from the
pages a browser gets. Waits are on the mailbox's own long poll (``/api/mails?wait=``),
never a sleep. Under the whole launcher, docs/mailbox.md is followed (set an address,
follow the verification link from the mailbox page, get a digest) by
:func:`an_address_is_verified_from_the_mailbox_and_gets_a_digest`, which
tests/integration/test_launcher.py runs in its first run of the launcher.
"""

from __future__ import annotations

import asyncio
import html
import os
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import httpx
import orjson
import pytest
from playwright.async_api import Dialog

from burrow.core import tokens
from burrow.devstack import mailbox, ports
from burrow.devstack.__main__ import DEV_SECRET
from burrow.devstack.mailbox import pages, store
from burrow.devstack.processes import AppProcess, wait_status
from burrow.mail import verification
from tests.browser import PageLog, chromium
from tests.integration import test_launcher
from tests.integration.test_launcher import Launcher

pytestmark = pytest.mark.integration
launcher = test_launcher.launcher  # its fixture: the whole stack on free ports
KEPT = 20  # --max-mails of the module's mailbox: small, so eviction is cheap to see


@dataclass
class Box:
    """A running mailbox: its options, its process, and a browser's view of it."""

    options: mailbox.Options
    process: AppProcess | None = None  # None: the launcher's child

    def get(self, path: str, host: str | None = None,
            timeout: float = 10) -> tuple[int, dict[str, str], str]:
        request = urllib.request.Request(self.options.url + path.lstrip("/"))
        if host is not None:
            request.add_header("Host", host)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, dict(response.headers), response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read().decode()

    def mails(self, after: int = 0, wait: float = 0) -> list[dict[str, Any]]:
        status, _, text = self.get(f"/api/mails?after={after}&wait={wait:g}",
                                   timeout=wait + 10)
        assert status == 200, text
        found: list[dict[str, Any]] = orjson.loads(text)
        return found

    def newest_id(self) -> int:
        return max((m["id"] for m in self.mails()), default=0)

    def wait_mail(self, after: int, timeout: float = 10) -> dict[str, Any]:
        """The first mail newer than *after*, waited for on the mailbox's long poll."""
        found = self.mails(after, wait=timeout)
        assert found, f"no mail after {after} within {timeout}s"
        return found[-1]

    async def send(self, message: EmailMessage | bytes, sender: str = "app@burrow.test",
                   recipients: tuple[str, ...] = ("dev@example.test",)) -> str:
        """Deliver over SMTP; the server's final reply (raises on an SMTP error)."""
        if isinstance(message, EmailMessage):
            _, reply = await aiosmtplib.send(message, hostname=pages.HOST,
                                             port=self.options.smtp_port, timeout=10)
        else:
            _, reply = await aiosmtplib.send(message, sender=sender, recipients=recipients,
                                             hostname=pages.HOST,
                                             port=self.options.smtp_port, timeout=10)
        return reply


def two_free_ports() -> tuple[int, int]:
    first = ports.free_port()
    while (second := ports.free_port()) == first:
        pass
    return first, second


@pytest.fixture(scope="module")
def box() -> Iterator[Box]:
    http, smtp = two_free_ports()
    options = mailbox.Options(http, smtp, max_mails=KEPT)
    process = options.process({**{k: v for k, v in os.environ.items()
                                  if not k.startswith("BURROW_")}, "PYTHONUNBUFFERED": "1"})
    process.start()
    try:
        status, answer = wait_status(options.url + "readyz", 200, timeout=30, alive=process)
        assert status == 200, (answer, process.exited)
        yield Box(options, process)
        assert process.exited is None, "the mailbox died during the tests"
    finally:
        code = process.stop()
    assert code == 0  # SIGTERM, as the launcher stops it: a clean exit
    ports.ensure_free(http, "the mailbox page", "BURROW_DEV_MAILBOX_PORT")
    ports.ensure_free(smtp, "the mailbox's SMTP", "BURROW_DEV_SMTP_PORT")


def mail(subject: str, text: str, markup: str | None = None,
         sender: str = "Burrow <no-reply@burrow.test>", to: str = "ann@example.test"
         ) -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, to, subject
    message.set_content(text)
    if markup is not None:
        message.add_alternative(markup, subtype="html")
    return message


def listing_row(page: str, mail_id: int) -> str:
    [row] = [r for r in page.split("<tr>") if f'href="/mail/{mail_id}"' in r]
    return row


async def test_a_mail_sent_over_smtp_is_listed_newest_first_and_shown(box: Box) -> None:
    before = box.newest_id()
    verify = "http://127.0.0.1:8000/v1/settings/email/verify?token=abc.def-ghi_j"
    first = await box.send(mail("Confirm your address", f"Follow this link:\n\n{verify}\n",
                                f'<p>Hello <a href="{verify}">Confirm</a></p>'))
    second = await box.send(mail("Second one", "later", to="bob@example.test"))
    assert re.fullmatch(r"2\.0\.0 Ok: kept as mail \d+", first), first
    newer = box.mails(after=before)
    assert [m["subject"] for m in newer] == ["Second one", "Confirm your address"]
    one, two = newer[1]["id"], newer[0]["id"]
    assert (newer[1]["from"], newer[1]["to"]) == ("Burrow <no-reply@burrow.test>",
                                                  "ann@example.test")
    assert second.endswith(f"kept as mail {two}")

    status, headers, page = box.get("/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert page.index(f'href="/mail/{two}"') < page.index(f'href="/mail/{one}"')  # newest first
    row = listing_row(page, one)
    for shown in ("Burrow &lt;no-reply@burrow.test&gt;", "ann@example.test",
                  "Confirm your address", time.strftime("%Y-%m-%d")):
        assert shown in row, (shown, row)

    status, _, view = box.get(f"/mail/{one}")
    assert status == 200
    assert "Follow this link:" in view  # the text part
    # the link is clickable from the page: what a developer follows to verify an address
    assert (f'<a href="{html.escape(verify)}" target="_blank" rel="noopener noreferrer">'
            in view)
    # the HTML part: in a sandboxed frame of its own, its links opening a new tab
    assert (f'<iframe sandbox="{pages.SANDBOX}" referrerpolicy="no-referrer" '
            f'src="/mail/{one}/html"' in view)
    status, headers, part = box.get(f"/mail/{one}/html")
    assert status == 200 and f'<a href="{verify}">Confirm</a>' in part
    assert part.startswith('<base target="_blank">')
    status, _, raw = box.get(f"/mail/{one}/raw")
    assert status == 200 and "Subject: Confirm your address" in raw
    status, _, detail = box.get(f"/api/mails/{one}")
    assert status == 200 and orjson.loads(detail)["text"] == f"Follow this link:\n\n{verify}\n"


async def test_hostile_subjects_and_bodies_are_shown_escaped(box: Box) -> None:
    before = box.newest_id()
    subject = '<script>alert("subject")</script><img src=x onerror=alert(1)>'
    await box.send(mail(subject, "</pre><script>alert('text')</script> javascript:alert(3)",
                        "<p>hi</p><script>alert('html')</script><form action=/x></form>",
                        sender='"<b>Mallory</b>" <mallory@example.test>'))
    hostile = box.wait_mail(before)
    assert hostile["subject"] == subject  # kept as sent; the pages escape it

    _, headers, page = box.get("/")
    row = listing_row(page, hostile["id"])
    assert "&lt;script&gt;alert(&quot;subject&quot;)&lt;/script&gt;" in row
    assert "&lt;b&gt;Mallory&lt;/b&gt;" in row
    assert "<script" not in page and "<img" not in page and "<b>" not in page
    # and were escaping ever missed, the page's policy runs no script at all
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert "script-src" not in headers["Content-Security-Policy"]

    _, headers, view = box.get(f"/mail/{hostile['id']}")
    assert "<script" not in view and "<img" not in view and "<form" not in view
    assert "&lt;/pre&gt;&lt;script&gt;alert(&#x27;text&#x27;)&lt;/script&gt;" in view
    assert 'href="javascript' not in view  # only http(s) URLs become links
    # The HTML part is never inlined: only a frame without scripts, forms or same-origin.
    frame = re.search(r"<iframe [^>]*>", view)
    assert frame is not None
    assert "allow-scripts" not in frame.group(0) and "allow-same-origin" not in frame.group(0)
    assert "allow-forms" not in frame.group(0)
    # Opened directly, the part is sandboxed all the same.
    _, headers, part = box.get(f"/mail/{hostile['id']}/html")
    policy = headers["Content-Security-Policy"]
    assert policy.startswith("sandbox ") and "allow-scripts" not in policy
    assert "allow-same-origin" not in policy and "<script>alert('html')</script>" in part
    _, headers, _ = box.get(f"/mail/{hostile['id']}/raw")
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert headers["X-Content-Type-Options"] == "nosniff"


async def test_an_oversized_mail_is_refused_and_the_oldest_mails_make_room(box: Box) -> None:
    before = box.newest_id()
    huge = mail("huge", ("y" * 70 + "\n") * (store.MAX_MAIL_BYTES // 71 + 100))
    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        await box.send(huge)
    assert refused.value.code == 552  # too much mail data: nothing of it was kept
    assert box.mails(after=before) == []

    # At most MAX_RECIPIENTS per mail: beyond, RCPT is refused (452), the mail goes on.
    many = tuple(f"r{n}@example.test" for n in range(store.MAX_RECIPIENTS + 1))
    refused_rcpt, _ = await aiosmtplib.send(mail("many", "to many"), recipients=many,
                                            hostname=pages.HOST,
                                            port=box.options.smtp_port, timeout=10)
    assert {a: r.code for a, r in refused_rcpt.items()} == {many[-1]: 452}
    assert box.mails()[0]["envelope_to"] == list(many[:-1])

    # The mailbox keeps the newest KEPT mails: the oldest go, and are gone for good.
    async with aiosmtplib.SMTP(hostname=pages.HOST, port=box.options.smtp_port,
                               timeout=10) as client:
        for n in range(KEPT + 5):
            await client.send_message(mail(f"bulk {n}", f"number {n}"))
    kept = box.mails()
    assert len(kept) == KEPT
    assert [m["subject"] for m in kept] == [f"bulk {n}" for n in reversed(range(5, KEPT + 5))]
    gone = kept[-1]["id"] - 1
    assert box.get(f"/mail/{gone}")[0] == 404 and box.get(f"/api/mails/{gone}")[0] == 404
    _, _, page = box.get("/")
    assert page.count('<tr><td class="time">') == KEPT


async def test_malformed_and_non_utf8_mails_are_kept_and_shown(box: Box) -> None:
    before = box.newest_id()
    broken = (b"From: \xff\xfe Someone <x@example.test>\r\n"
              b"Subject: =?x-unknown?q?caf=E9?= d\xe9j\xe0 <b>vu</b>\r\n"
              b"Content-Type: multipart/mixed; boundary=\"never-closed\"\r\n\r\n"
              b"--never-closed\r\nContent-Type: text/plain; charset=x-bogus\r\n"
              b"Content-Transfer-Encoding: base64\r\n\r\n!!not base64\xff\xfe\r\n"
              b"--never-closed\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
              b"<p>caf\xc3\xa9 \xff</p>\r\n")
    no_headers = b"\x00\x01\x02 just bytes \xff\xfe\xfd\r\nno header at all\r\n"
    for raw in (broken, no_headers):
        assert "kept as mail" in await box.send(raw)
    kept = box.mails(after=before)
    assert [m["subject"] for m in kept] == ["", "caf\ufffd d\ufffdj\ufffd <b>vu</b>"]
    _, _, page = box.get("/")
    assert "caf\ufffd d\ufffdj\ufffd &lt;b&gt;vu&lt;/b&gt;" in page
    for found in kept:
        for path in (f"/mail/{found['id']}", f"/mail/{found['id']}/raw",
                     f"/api/mails/{found['id']}"):
            status, _, text = box.get(path)
            assert status == 200, (path, text)
    detail = orjson.loads(box.get(f"/api/mails/{kept[1]['id']}")[2])
    assert detail["text"] == "!!not base64\ufffd\ufffd"  # undecodable: shown as it came
    assert detail["html"] == "<p>caf\u00e9 \ufffd</p>"
    assert box.get(f"/mail/{kept[1]['id']}/html")[0] == 200

    # What no client should send is answered with an SMTP error, not a crash.
    too_long = b"Subject: " + b"z" * 2000 + b"\r\n\r\nbody\r\n"
    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        await box.send(too_long)
    assert refused.value.code == 500
    # A whole session by hand: a garbage command gets an SMTP error; 8-bit addresses
    # without SMTPUTF8 and an 8-bit body are taken, and shown with U+FFFD.
    reader, writer = await asyncio.open_connection(pages.HOST, box.options.smtp_port)
    try:
        writer.write(b"EHLO x\r\n\xff\xfe GARBAGE\r\nMAIL FROM:<\xff\xfe@example.test>\r\n"
                     b"RCPT TO:<d\xe9v@example.test>\r\nDATA\r\n"
                     b"Subject: by hand\r\n\r\n\xff body\r\n.\r\nQUIT\r\n")
        replies = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    codes = [line[:3] for line in replies.split(b"\r\n") if line[3:4] == b" "]
    assert codes == [b"220", b"250", b"500", b"250", b"250", b"354", b"250", b"221"], replies
    by_hand = box.mails()[0]
    assert (by_hand["subject"], by_hand["envelope_from"], by_hand["to"]) == (
        "by hand", "\ufffd\ufffd@example.test", "d\ufffdv@example.test")
    assert orjson.loads(box.get(f"/api/mails/{by_hand['id']}")[2])["text"] == "\ufffd body\n"
    assert box.process is not None and box.process.exited is None
    assert "kept as mail" in await box.send(mail("still here", "fine"))


async def test_in_a_browser_the_html_part_runs_no_script_and_its_links_open_a_tab(
        box: Box) -> None:
    """What a developer does in Chromium: open a mail from the list, click the link in its
    HTML part (a verification link: here a page of the mailbox's own stands in for the
    gateway's). The mail's script does not run, the link opens in a new tab."""
    before = box.newest_id()
    landing = box.options.url + "readyz"
    await box.send(mail("Please confirm <img src=x onerror=alert(1)>", "see the HTML part",
                        '<p id="said">as sent</p><img src=x onerror="alert(2)">'
                        "<script>document.getElementById('said').textContent='script ran'"
                        f'</script><p><a href="{landing}">Confirm this address</a></p>'))
    box.wait_mail(before)
    async with chromium() as browser:
        page = await browser.new_page()
        log = PageLog(page, "mailbox")
        dialogs: list[str] = []

        async def dismissed(dialog: Dialog) -> None:
            dialogs.append(dialog.message)
            await dialog.dismiss()

        page.on("dialog", dismissed)
        await page.goto(box.options.url)
        await page.get_by_role("link", name="Please confirm <img src=x onerror=alert(1)>").click()
        part = page.frame_locator("iframe")
        await part.get_by_text("as sent").wait_for(timeout=10_000)
        async with page.context.expect_page(timeout=10_000) as opened:
            await part.get_by_role("link", name="Confirm this address").click()
        tab = await opened.value
        await tab.wait_for_load_state()
        assert tab.url == landing and "ready" in await tab.content()
        assert await part.locator("#said").inner_text() == "as sent"  # no script ran
        assert dialogs == [] and log.errors == [], (dialogs, log.errors)


def test_the_pages_answer_only_to_loopback_names(box: Box) -> None:
    """A web page in the developer's browser cannot read the mails by pointing its own
    host name at 127.0.0.1 (DNS rebinding)."""
    port = box.options.http_port
    for host in (f"rebind.attacker.example:{port}", "127.0.0.1", f"127.0.0.1:{port}.evil"):
        for path in ("/", "/api/mails", "/mail/1"):
            status, _, text = box.get(path, host=host)
            assert status == 403 and "only to 127.0.0.1 or localhost" in text
    assert box.get("/", host=f"localhost:{port}")[0] == 200


# -- under the launcher ------------------------------------------------------------------

def test_the_launcher_checks_the_mailbox_ports_unless_it_runs_none(launcher: Launcher) -> None:
    """A taken mailbox port stops ./dev up before anything starts, naming its variable;
    with --no-mailbox, or BURROW_SMTP_URL set, no mailbox runs and its port is no concern
    (the next check, a bad setting, is what stops these runs, still before anything)."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", launcher.port("BURROW_DEV_MAILBOX_PORT")))
        squatter.listen()
        runs: list[tuple[tuple[str, ...], dict[str, str]]] = [
            ((), {}), (("--no-mailbox",), {"BURROW_SHARDS": "many"}),
            ((), {"BURROW_SMTP_URL": "smtp://127.0.0.1:2525", "BURROW_SHARDS": "many"})]
        for args, extra in runs:
            launcher.env.update(extra)
            launcher.start(*args)
            assert launcher.process is not None and launcher.process.wait(60) != 0
            for name in extra:
                del launcher.env[name]
            text = launcher.log.read_text()[launcher.offset:]
            assert "starting RabbitMQ" not in text
            if extra:
                assert "BURROW_SHARDS" in text and "is taken" not in text, text
            else:
                assert (f"port {launcher.port('BURROW_DEV_MAILBOX_PORT')} for the mailbox page"
                        in text and "set BURROW_DEV_MAILBOX_PORT to another port" in text), text


def auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens.mint(DEV_SECRET, user)}"}


def an_address_is_verified_from_the_mailbox_and_gets_a_digest(launcher: Launcher) -> None:
    """docs/mailbox.md, step by step, on a launcher that is up with a short digest period
    (``BURROW_DIGEST_HOURLY=2``): set an address, open the mailbox, follow the link, miss a
    message, read the digest. Run by tests/integration/test_launcher.py's first run: a
    run of the launcher of its own would take ~15 s more."""
    options = mailbox.Options(launcher.port("BURROW_DEV_MAILBOX_PORT"),
                              launcher.port("BURROW_DEV_SMTP_PORT"))
    assert (f"mailbox        {options.url}  (every mail the stack sends, caught on "
            f"{options.smtp_url}" in launcher.log.read_text())
    box = Box(options)  # the launcher's child
    gateway = f"http://127.0.0.1:{launcher.port('BURROW_PORT')}"
    with httpx.Client(timeout=10) as http:
        changed = http.put(f"{gateway}/v1/me/settings", headers=auth("bob"),
                           json={"email": "bob@example.test", "digest": "hourly"})
        assert changed.status_code == 200, changed.text
        assert changed.json()["email_verified"] is False

        asked = box.wait_mail(0, timeout=30)
        assert (asked["to"], asked["subject"]) == ("bob@example.test", verification.SUBJECT)
        _, _, view = box.get(f"/mail/{asked['id']}")
        [href] = re.findall(r'<a href="([^"]*/v1/settings/email/verify\?token=[^"]+)"', view)
        link = html.unescape(href)
        assert link.startswith(f"{gateway}/v1/settings/email/verify?token=")  # this gateway
        opened = http.get(link)
        assert opened.status_code == 200 and "Confirm this address" in opened.text
        confirmed = http.post(link)
        assert confirmed.status_code == 200 and "Address confirmed" in confirmed.text
        assert http.get(f"{gateway}/v1/me/settings",
                        headers=auth("bob")).json()["email_verified"] is True

        # Bob is not connected; alice writes in a room they share.
        created = http.post(f"{gateway}/v1/rooms", headers=auth("alice"),
                            json={"id": "lunch", "members": ["bob"]})
        assert created.status_code == 201, created.text
        sent = http.post(f"{gateway}/v1/rooms/lunch/messages",
                         headers={**auth("alice"), "Idempotency-Key": "lunch-1"},
                         json={"body": "noon at <the usual place>?"})
        assert sent.status_code == 201, sent.text

        digest = box.wait_mail(asked["id"], timeout=60)
        assert (digest["to"], digest["subject"]) == ("bob@example.test",
                                                     "1 unread message in 1 room")
        _, _, view = box.get(f"/mail/{digest['id']}")
        assert "noon at &lt;the usual place&gt;?" in view and "<the usual place>" not in view
