"""The development mailbox's decisions, without a socket: whether ``./dev up`` runs one and
where, what the workers are told, how much it keeps, how text becomes a page
(the server itself: tests/integration/test_mailbox.py)."""

from __future__ import annotations

import pytest

from burrow.devstack import mailbox
from burrow.devstack.mailbox import pages, store
from burrow.mail.smtp_url import parse_smtp_url
from burrow.runtime.settings import ConfigError, Settings


def test_dev_up_runs_one_on_mailpits_ports_unless_mail_goes_elsewhere() -> None:
    options, _ = mailbox.for_launcher({}, wanted=True)
    assert options is not None
    assert (options.url, options.smtp_url) == ("http://127.0.0.1:8025/", "smtp://127.0.0.1:1025")
    assert [(p, v) for p, _, v in options.needed_ports()] == [
        (8025, "BURROW_DEV_MAILBOX_PORT"), (1025, "BURROW_DEV_SMTP_PORT")]
    moved, _ = mailbox.for_launcher({"BURROW_DEV_MAILBOX_PORT": "18025",
                                     "BURROW_DEV_SMTP_PORT": "11025"}, wanted=True)
    assert moved is not None and (moved.http_port, moved.smtp_port) == (18025, 11025)
    # the developer's own relay or catcher wins, and so does --no-mailbox
    assert mailbox.for_launcher({"BURROW_SMTP_URL": "smtp://127.0.0.1:2525"}, True) == (
        None, "BURROW_SMTP_URL is set")
    assert mailbox.for_launcher({}, wanted=False) == (None, "--no-mailbox")


@pytest.mark.parametrize("env", [{"BURROW_DEV_MAILBOX_PORT": "http"},
                                 {"BURROW_DEV_SMTP_PORT": "70000"},
                                 {"BURROW_DEV_MAILBOX_PORT": "2525",
                                  "BURROW_DEV_SMTP_PORT": "2525"}])
def test_bad_ports_are_refused_before_anything_starts(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="BURROW_DEV_"):
        mailbox.for_launcher(env, wanted=True)


def test_the_workers_take_its_url_as_a_relay_without_tls() -> None:
    options = mailbox.Options(8025, 1025)
    target = parse_smtp_url(options.smtp_url)
    assert (target.host, target.port, target.use_tls, target.start_tls) == (
        "127.0.0.1", 1025, False, False)
    # what the servers check at start (the launcher's BURROW_DEV_* stay out of it)
    Settings.from_env({"BURROW_AMQP_URL": "amqp://x@127.0.0.1/burrow",
                       "BURROW_SMTP_URL": options.smtp_url})


def test_it_keeps_the_newest_mails_within_its_byte_budget() -> None:
    box = store.Mailbox(max_mails=10, max_bytes=1000)
    for n in range(3):
        box.add("a@x.test", ("b@x.test",), f"Subject: {n}\r\n\r\n".encode() + b"x" * 390)
    assert [m.subject for m in box.newest_first()] == ["2", "1"]
    assert box.size <= 1000
    big = box.add("a@x.test", ("b@x.test",), b"Subject: big\r\n\r\n" + b"x" * 5000)
    assert box.newest_first() == [big]  # the newest is kept even alone over the budget
    assert box.get(1) is None and box.wait_newer(big.id, timeout=0.01) == []


def test_text_is_escaped_and_only_web_links_become_links() -> None:
    text = "go to https://a.test/v?t=1&u=<2>. or javascript:alert(1) <b>x</b>"
    assert pages.linked(text) == (
        'go to <a href="https://a.test/v?t=1&amp;u=" target="_blank" '
        'rel="noopener noreferrer">https://a.test/v?t=1&amp;u=</a>&lt;2&gt;. '
        "or javascript:alert(1) &lt;b&gt;x&lt;/b&gt;")


def test_the_html_parts_links_open_a_new_tab() -> None:
    assert pages.framed_html('<html><HEAD lang="en"><title>t</title>') == (
        '<html><HEAD lang="en"><base target="_blank"><title>t</title>')
    assert pages.framed_html("<p>no head</p>") == '<base target="_blank"><p>no head</p>'


def test_what_a_parser_kept_as_surrogates_is_shown_as_text() -> None:
    raw = "caf\u00e9 \u202eevil\x1b[31m".encode() + b" \xff"
    assert store.clean(raw.decode("utf-8", "surrogateescape")) == (
        "caf\u00e9 \ufffdevil\ufffd[31m \ufffd")
    assert store.clean("line\r\nnext") == "line\nnext"
    assert store.one_line("a\n  b\tc " + "z" * 400, limit=10) == "a b c zzz\u2026"
