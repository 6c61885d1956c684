"""Backend events (docs/events.md) as pure values: the envelope and the stable ids, the
selection of types (``BURROW_EVENTS``, ``BURROW_WEBHOOK_EVENTS``), the webhook signature,
and the broker rights and topology that carry them."""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from burrow.core import events, webhook_signing
from burrow.core.envelopes import Stored
from burrow.core.mentions import Mentions
from burrow.runtime.settings import ConfigError, Settings
from consumers.webhooks import request, retry_after
from queues import definitions, topology

SECRET = b"k" * 32


def test_a_stored_message_is_an_event_with_the_documented_fields() -> None:
    stored = Stored("m1", "lobby", 7, "alice", "c1", "hi @bob", 1765092000000,
                    mentions=Mentions(("bob",), False), reply_to="m0", thread="m0")
    assert events.message(stored) == {
        "schema": "burrow.event/1", "id": "message.stored:lobby:7", "type": "message.stored",
        "at": 1765092000000, "room": "lobby", "seq": 7, "message": "m1", "sender": "alice",
        "body": "hi @bob", "reply_to": "m0", "thread": "m0",
        "mentions": {"users": ["bob"]}}


def test_the_id_is_the_same_for_the_same_room_and_seq_and_changes_have_their_types() -> None:
    first = Stored("m1", "lobby", 7, "alice", "c1", "x" * 1500, 1)
    again = Stored("m1", "lobby", 7, "alice", "c1", "x" * 1500, 1)
    assert events.message(first) == events.message(again)
    event = events.message(first)
    assert event is not None and len(event["body"]) == events.BODY_CHARS and event["truncated"]
    edit = events.message(Stored("e1", "lobby", 8, "alice", "c2", "fixed", 2, kind="edit",
                                 target="m1"))
    assert edit is not None and (edit["type"], edit["id"], edit["target"], edit["body"]) == (
        "message.edited", "message.edited:lobby:8", "m1", "fixed")
    delete = events.message(Stored("d1", "lobby", 9, "bob", "c3", "", 3, kind="delete",
                                   target="m1"))
    assert delete is not None and (delete["type"], delete["target"], delete["sender"]) == (
        "message.deleted", "m1", "bob")
    assert "body" not in delete
    # reactions are not backend events
    assert events.message(Stored("r1", "lobby", 10, "bob", "c4", "", 4, kind="reaction",
                                 target="m1", emoji="+1", op="add")) is None


def test_presence_reports_and_pushes_have_stable_ids() -> None:
    offline = events.presence("alice", False, 12, 5)
    assert (offline["type"], offline["id"], offline["user"], offline["version"]) == (
        "user.offline", "user.offline:alice:12", "alice", 12)
    assert events.presence("alice", True, 11, 5)["id"] == "user.online:alice:11"
    doc = {"_id": "r1", "room": "lobby", "message": "m1", "reporter": "bob",
           "reason": "spam", "note": "secret note", "snapshot": {"body": "x"},
           "created_at": datetime.now(UTC),
           "resolution": {"action": "removed", "by": "alice", "note": "", "at": 1}}
    filed = events.report(events.REPORT_FILED, doc, 1)
    assert filed == {"schema": "burrow.event/1", "id": "report.filed:r1",
                     "type": "report.filed", "at": 1, "report": "r1", "room": "lobby",
                     "message": "m1", "reporter": "bob", "reason": "spam"}
    resolved = events.report(events.REPORT_RESOLVED, doc, 2)
    assert (resolved["id"], resolved["action"], resolved["by"]) == (
        "report.resolved:r1", "removed", "alice")
    sent = events.push(True, "room:lobby:bob:7", "bob", "d1", "apns", 3)
    assert sent["id"] == "push.sent:room:lobby:bob:7:d1" and "reason" not in sent
    failed = events.push(False, "n1", "bob", "d1", "fcm", 3, reason="UNAVAILABLE",
                         final=False, attempt=1)
    assert (failed["id"], failed["final"], failed["attempt"]) == ("push.failed:n1:d1:1",
                                                                  False, 1)
    banned = events.member(events.MEMBER_BANNED, "lobby", "eve", 4, "a1", by="alice",
                           reason="spam")
    assert (banned["id"], banned["by"], banned["reason"]) == (
        "member.banned:lobby:eve:a1", "alice", "spam")
    with pytest.raises(ValueError):
        events.event("user.away", "x", 1)


@pytest.mark.parametrize(("raw", "wanted", "not_wanted"), [
    ("#", events.TYPES, ()),
    ("none", (), events.TYPES),
    ("user.*, report.filed", ("user.online", "user.offline", "report.filed"),
     ("report.resolved", "message.stored")),
    ("*.failed,member.#", ("push.failed", "member.banned"), ("push.sent",)),
])
def test_a_selection_matches_like_amqp_topics(raw: str, wanted: tuple[str, ...],
                                              not_wanted: tuple[str, ...]) -> None:
    selection = events.Selection.parse(raw)
    assert all(selection.wants(t) for t in wanted)
    assert not any(selection.wants(t) for t in not_wanted)


@pytest.mark.parametrize("raw", ["", " , ", "user.away", "User.*", "message..stored",
                                 "message.stored;rm"])
def test_a_selection_that_matches_nothing_or_is_malformed_is_refused(raw: str) -> None:
    with pytest.raises(ValueError):
        events.Selection.parse(raw)
    if raw.strip(" ,"):  # (empty is the default: #)
        with pytest.raises(ConfigError, match="BURROW_EVENTS"):
            Settings.from_env({"BURROW_AMQP_URL": "amqp://u:p@h/v", "BURROW_EVENTS": raw})


def test_a_signature_verifies_and_refuses_tampering_replays_and_junk() -> None:
    body = b'{"id":"x"}'
    header = webhook_signing.header(SECRET, 1000, body)
    # what docs/events.md tells receivers to compute, independently of the module
    assert header == "t=1000,v1=" + hmac.new(SECRET, b"1000." + body, hashlib.sha256).hexdigest()
    assert webhook_signing.verify(SECRET, header, body, now=1100)
    assert not webhook_signing.verify(SECRET, header, body + b" ", now=1100)  # tampered
    assert not webhook_signing.verify(b"j" * 32, header, body, now=1100)  # other secret
    assert not webhook_signing.verify(SECRET, header, body, now=1000 + 301)  # too old
    for junk in ("", "v1=00", "t=1000", "t=abc,v1=00", "t=1000,v1=" + "0" * 64):
        assert not webhook_signing.verify(SECRET, junk, body, now=1000)
    # while a secret rotates a sender may sign twice: one match is enough
    rotating = header + ",v1=" + webhook_signing.signature(b"o" * 32, 1000, body)
    assert webhook_signing.verify(SECRET, rotating, body, now=1000)


def test_the_worker_request_is_signed_over_the_exact_body_it_sends() -> None:
    event = events.presence("alice", False, 3, 7)
    body, headers = request(SECRET, event, now=2000.5)
    assert orjson.loads(body) == event
    assert webhook_signing.verify(SECRET, headers["Burrow-Signature"], body, now=2000)
    assert (headers["Burrow-Event-Id"], headers["Burrow-Event-Type"]) == (
        "user.offline:alice:3", "user.offline")


def test_retry_after_takes_seconds_only() -> None:
    import httpx
    assert retry_after(httpx.Response(503, headers={"Retry-After": "120"})) == 120
    assert retry_after(httpx.Response(503, headers={"Retry-After": "Wed, 21 Oct"})) is None
    assert retry_after(httpx.Response(503)) is None


def topic(user: str, exchange: str) -> definitions.Topic:
    [found] = [t for t in definitions.role(user).topics if t.exchange == exchange]
    return found


@pytest.mark.parametrize(("user", "key", "may"), [
    ("burrow-gateway", "user.offline", True), ("burrow-gateway", "report.filed", True),
    ("burrow-gateway", "member.banned", True), ("burrow-gateway", "message.stored", False),
    ("burrow-gateway", "push.sent", False), ("burrow-sequencer", "message.stored", True),
    ("burrow-sequencer", "user.offline", False), ("burrow-notifier", "push.failed", True),
    ("burrow-notifier", "message.stored", False), ("burrow-backend", "user.offline", False),
    ("burrow-webhooks", "user.offline", False),
])
def test_each_publisher_publishes_only_its_own_event_types(user: str, key: str,
                                                           may: bool) -> None:
    assert bool(re.search(topic(user, topology.EVENTS).write, key)) is may


def test_backends_and_the_webhooks_worker_only_bind_to_the_events() -> None:
    for user in ("burrow-backend", "burrow-webhooks"):
        role = definitions.role(user)
        assert re.fullmatch(role.read, topology.EVENTS)
        assert not re.fullmatch(role.write, topology.EVENTS)
    for user in ("burrow-gateway", "burrow-sequencer", "burrow-notifier"):
        assert re.fullmatch(definitions.role(user).write, topology.EVENTS)
    assert not re.fullmatch(definitions.role("burrow-digester").write, topology.EVENTS)


def test_webhook_queues_exist_only_where_a_webhook_url_is_set() -> None:
    base = {"BURROW_AMQP_URL": "amqp://u:p@h/v"}
    assert not any(q.name.startswith("webhook.")
                   for q in topology.for_settings(Settings.from_env(base)).queues)
    topo = topology.for_settings(Settings.from_env({
        **base, "BURROW_WEBHOOK_URL": "https://hooks.example/burrow",
        "BURROW_WEBHOOK_EVENTS": "user.offline,report.*", "BURROW_WEBHOOK_RETRIES": "5,60"}))
    assert {q.name for q in topo.queues if q.name.startswith("webhook.")} == {
        "webhook.due", "webhook.dead", "webhook.retry.5s", "webhook.retry.1m"}
    assert {b.routing_key for b in topo.bindings if b.source == topology.EVENTS} == {
        "user.offline", "report.*"}
    part = topology.part(topo, "webhooks")
    assert part.expected_exchanges == (topology.EVENTS,)
    assert {e.name for e in topology.part(topo, "sequencer").exchanges} >= {topology.EVENTS}


class StubExchange:
    """Stands in for aio-pika's exchange: records publishes, fails those asked to."""

    def __init__(self, fail: set[str]) -> None:
        self.fail = fail
        self.published: list[tuple[str, str | None]] = []

    async def publish(self, message: Any, routing_key: str, **_: Any) -> None:
        if routing_key in self.fail:
            raise TimeoutError("no confirm")
        self.published.append((routing_key, message.message_id))


async def test_the_publisher_sends_only_what_is_selected_and_never_raises() -> None:
    from queues.events import EventPublisher

    publisher = EventPublisher(None, events.Selection.parse("user.*,report.filed"),  # type: ignore[arg-type]
                               timeout=1)
    stub = StubExchange(fail={"report.filed"})

    async def ready() -> Any:
        return stub
    publisher._ready = ready  # type: ignore[method-assign]
    wanted = [events.presence("alice", False, 2, 1), None,
              events.message(Stored("m1", "lobby", 1, "alice", "c", "x", 1)),
              events.report(events.REPORT_FILED, {"_id": "r1", "room": "lobby",
                                                  "message": "m1", "reporter": "bob",
                                                  "reason": "spam"}, 1)]
    assert await publisher.publish(wanted) == 1  # the report's publish failed: counted
    assert stub.published == [("user.offline", "user.offline:alice:2")]
    assert publisher.wants_any("user.") and not publisher.wants_any("message.")


def test_dev_up_runs_the_webhooks_worker_only_with_a_url() -> None:
    from burrow.devstack.__main__ import DevConfig, product_apps

    def workers(env: dict[str, str]) -> dict[str, tuple[list[str], dict[str, str]]]:
        config = DevConfig.from_env({"BURROW_DEV_DIR": "/nonexistent/burrow-dev", **env})
        apps = product_apps(config, env, lambda user, extra: {"user": user, **extra}, {}, {})
        return {app.name: (app.command[3:], app.env) for app in apps
                if app.command[2] == "consumers"}

    assert "webhooks" not in workers({})
    found = workers({"BURROW_WEBHOOK_URL": "http://127.0.0.1:8787/"})
    args, env = found["webhooks"]
    assert args == ["webhooks"] and env["user"] == "burrow-webhooks"
    ports = [e["BURROW_METRICS_PORT"] for _, e in found.values()]
    assert len(set(ports)) == len(ports) == 4  # a probe port of its own


def test_moderation_actions_become_member_events_with_the_audit_id() -> None:
    from types import SimpleNamespace

    from gateway import backend_events

    published: list[dict[str, Any]] = []
    node = SimpleNamespace(backend_events=SimpleNamespace(publish_soon=published.extend))
    at = datetime(2026, 12, 7, tzinfo=UTC)
    until = datetime(2026, 12, 8, tzinfo=UTC)
    for action in ("ban", "mute", "remove", "promote", "slow_mode"):
        backend_events.moderation(node, {  # type: ignore[arg-type]
            "_id": f"a-{action}", "room": "lobby", "action": action, "user": "eve",
            "by": "alice", "reason": "spam", "at": at,
            **({"until": until} if action == "mute" else {})})
    assert [(e["type"], e["id"]) for e in published] == [
        ("member.banned", "member.banned:lobby:eve:a-ban"),
        ("member.muted", "member.muted:lobby:eve:a-mute"),
        ("member.removed", "member.removed:lobby:eve:a-remove")]
    assert published[1]["until"] == int(until.timestamp() * 1000)
    assert all(e["at"] == int(at.timestamp() * 1000) and e["by"] == "alice"
               and e["reason"] == "spam" for e in published)


def test_message_events_are_off_by_default_and_the_rest_on() -> None:
    """docs/events.md: message.* costs the sequencer as much CPU as its fan-out, so the
    default leaves it out (the sequencer then holds no publisher at all)."""
    from queues.events import EventPublisher

    default = Settings.from_env({"BURROW_AMQP_URL": "amqp://u:p@h/v"}).events
    publisher = EventPublisher(None, default, timeout=1)  # type: ignore[arg-type]
    assert not publisher.wants_any("message.")
    assert all(default.wants(t) for t in events.TYPES if not t.startswith("message."))
