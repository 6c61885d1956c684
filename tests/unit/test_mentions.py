"""Mentions (issue 16, item 6), the pure parts: the one shape checker the gateway and the
sequencer share, the membership decision, the envelope and frame forms (absent means
no key at all), who a notify batch pushes at once, the push text, and the digest mark."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Any

import orjson
import pytest

from burrow.client import Ack, cli
from burrow.client.cli import output
from burrow.core.envelopes import EnvelopeError, Send, Stored
from burrow.core.mentions import MAX_MENTIONS, BadMentions, Mentions, parse, refusal
from burrow.core.notify_plan import (
    MemberState,
    Notice,
    mention_key,
    mention_text,
    plan_mentions,
)
from burrow.mail.digest import Digest, DigestMessage, DigestRoom, render
from gateway.protocol import ProtocolError
from gateway.protocol import parse as parse_frame


@pytest.mark.parametrize("value", [
    "bob", ["bob"], 7, True,                                   # not an object
    {"users": "bob"}, {"users": {"bob": 1}},                   # users not a list
    {"users": [f"u{i}" for i in range(MAX_MENTIONS + 1)]},     # 33 users
    {"users": ["bob", "bob"]},                                 # duplicates
    {"users": [""]}, {"users": [7]}, {"users": [None]},        # bad ids
    {"users": ["bo\nb"]}, {"users": ["x" * 129]},              # unprintable, huge
    {"users": [["bob"]]}, {"users": [{"id": "bob"}]},          # nested junk
    {"room": "true"}, {"room": 1}, {"room": None},             # non-bool room
    {"users": ["bob"], "everyone": True}, {"x" * 10_000: 1},   # unknown keys
])
def test_malformed_mentions_are_refused_with_a_reason(value: Any) -> None:
    with pytest.raises(BadMentions) as exc:
        parse(value)
    assert len(str(exc.value)) < 200  # says what is wrong, never echoes a huge value


def test_well_formed_mentions() -> None:
    assert parse(None) is None
    assert parse({}) is None and parse({"users": [], "room": False}) is None
    most = [f"u{i}" for i in range(MAX_MENTIONS)]
    assert parse({"users": most}) == Mentions(tuple(most))
    assert parse({"room": True}) == Mentions((), True)
    found = parse({"users": ["bob", "alice"], "room": True})
    assert found == Mentions(("bob", "alice"), True)
    assert found.to_json() == {"users": ["bob", "alice"], "room": True}
    assert Mentions(("bob",)).to_json() == {"users": ["bob"]}  # only what says something


def test_the_sender_is_dropped_silently() -> None:
    assert Mentions(("alice", "bob")).without("alice") == Mentions(("bob",))
    assert Mentions(("alice",)).without("alice") is None
    assert Mentions(("alice",), True).without("alice") == Mentions((), True)


def test_refusal_names_a_non_member_and_bounds_room() -> None:
    bob = Mentions(("bob", "carol"))
    assert refusal(bob, {"bob", "carol"}, 2, 100) is None
    code, message = refusal(bob, {"bob"}, 1, 100) or ("", "")
    assert code == "bad_mention" and "carol" in message
    everyone = Mentions((), True)
    assert refusal(everyone, set(), 3, 3) is None
    assert (refusal(everyone, set(), 4, 3) or ("",))[0] == "room_too_large"
    assert refusal(everyone, set(), 1000, 1000) is None


def send_json(**extra: Any) -> bytes:
    return orjson.dumps({"room": "r", "sender": "alice", "client_id": "c1", "body": "hi",
                         **extra})


def test_the_sequencer_parse_checks_and_drops_self_mentions() -> None:
    send = Send.from_json(send_json(mentions={"users": ["alice", "bob"]}), 100)
    assert send.mentions == Mentions(("bob",))
    assert Send.from_json(send.to_json(), 100) == send  # round trip
    assert Send.from_json(send_json(mentions={"users": ["alice"]}), 100).mentions is None
    assert b"mentions" not in Send.from_json(send_json(), 100).to_json()
    for bad in ({"users": "bob"}, {"room": "yes"}, [1]):
        with pytest.raises(EnvelopeError):
            Send.from_json(send_json(mentions=bad), 100)
    with pytest.raises(EnvelopeError, match="only a message"):
        Send.from_json(send_json(kind="edit", target="m1", mentions={"room": True}), 100)


def test_frames_history_and_documents_carry_mentions_only_when_present() -> None:
    plain = Stored("m1", "r", 1, "alice", "c1", "hi", 1000)
    assert "mentions" not in orjson.loads(plain.frame())
    assert "mentions" not in plain.to_document()
    marked = Stored("m1", "r", 1, "alice", "c1", "hi", 1000,
                    mentions=Mentions(("bob",), True))
    wire = {"users": ["bob"], "room": True}
    assert orjson.loads(marked.frame())["mentions"] == wire
    doc = marked.to_document()
    assert doc["mentions"] == wire
    assert Stored.from_document(doc) == marked
    edited = Stored.from_document({**doc, "edit_count": 1, "edited_at": doc["ts"]})
    for v in (1, 2):  # an edit does not change them
        assert orjson.loads(edited.frame(v))["mentions"] == wire
    deleted = Stored.from_document({**doc, "deleted_at": doc["ts"], "deleted_by": "alice"})
    assert "mentions" not in orjson.loads(deleted.frame())  # a tombstone tells nobody


def test_the_gateway_refuses_malformed_mentions_before_publishing() -> None:
    frame = {"type": "send", "room": "r", "client_id": "c1", "body": "hi"}
    parsed = parse_frame(orjson.dumps({**frame, "mentions": {"users": ["bob"]}}).decode(),
                         100)
    assert getattr(parsed, "mentions", None) == Mentions(("bob",))
    with pytest.raises(ProtocolError) as exc:
        parse_frame(orjson.dumps({**frame, "mentions": {"users": ["b"] * 2}}).decode(), 100)
    assert exc.value.code == "bad_frame" and exc.value.client_id == "c1"


def member(user: str, read_seq: int = 0, room: str = "r") -> MemberState:
    return MemberState(room, user, read_seq)


def test_plan_mentions_who_is_pushed_at_once() -> None:
    members = [member("alice"), member("bob"), member("carol", read_seq=5),
               member("dan"), member("erin", room="other"), member("gil", read_seq=8)]
    notices = [Notice("r", "alice", 3, "m3", mentions=Mentions(("bob", "carol"))),
               Notice("r", "bob", 4, "m4"),  # no mentions
               Notice("r", "alice", 6, "m6", mentions=Mentions(("carol", "zed"))),
               Notice("r", "carol", 7, "m7", mentions=Mentions(("carol",)))]
    # bob: his newest mention; carol: read up to 5 (seq 3 read), 6 unread; her own 7 is
    # no mention of herself; zed is not a member; dan not mentioned; erin another room
    assert plan_mentions(notices, members) == {("r", "bob"): 3, ("r", "carol"): 6}
    # @room: every member but the sender who has not read it (gil read up to 8)
    at_room = [Notice("r", "dan", 8, "m8", mentions=Mentions((), True))]
    assert plan_mentions(at_room, members) == {
        ("r", u): 8 for u in ("alice", "bob", "carol")}
    # changes never push; a batch without mentions plans nothing
    assert plan_mentions([Notice("r", "alice", 9, change=True,
                                 mentions=Mentions(("bob",)))], members) == {}
    assert plan_mentions([Notice("r", "alice", 9)], members) == {}
    # a redelivered batch (in any order) plans the same jobs, with the same ids
    again = plan_mentions(list(reversed(notices)), list(reversed(members)))
    assert again == plan_mentions(notices, members)
    assert mention_key("r", "bob", 3) == "mention:r:bob:3"


def test_the_push_text_marks_the_mention() -> None:
    assert mention_text("alice", "look here", room=False) == "alice mentioned you: look here"
    assert mention_text("alice", "all", room=True) == "alice mentioned @room: all"
    assert mention_text("alice", None, room=False) == "alice mentioned you"


def text_and_html(mail: EmailMessage) -> tuple[str, str]:
    parts = [p.get_content() for p in mail.walk() if p.get_content_maintype() == "text"]
    return parts[0], parts[1]


def test_the_digest_marks_messages_that_mention_the_reader() -> None:
    room = DigestRoom("r", "Planning", 3, [
        DigestMessage(1, "alice", "plain <b>", 1000),
        DigestMessage(2, "alice", "over to you", 2000, mention="user"),
        DigestMessage(3, "carol", "everyone look", 3000, mention="room")])
    digest = Digest("bob", "bob@example.test", [room], "https://x.test/u?t=1", None,
                    "<d1@x.test>")
    text, html = text_and_html(render(digest, "burrow@x.test", previews=True))
    lines = text.splitlines()
    assert any(line.endswith("alice: plain <b>") for line in lines)
    assert any(line.endswith("alice: over to you  (@ mentioned you)") for line in lines)
    assert any(line.endswith("carol: everyone look  (@ mentioned @room)") for line in lines)
    assert "(3 unread, 2 mentioning you)" in text
    assert "over to you <span" in html and "@ mentioned you</span>" in html
    assert "plain &lt;b&gt;</p>" in html  # unmarked, and still escaped
    hidden, hidden_html = text_and_html(render(digest, "burrow@x.test", previews=False))
    assert "2 mentioning you" in hidden and "2 mentioning you" in hidden_html
    assert "over to you" not in hidden + hidden_html


class FakeClient:
    """Records what the CLI asks ChatClient.send for."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send(self, room: str, body: str, **kwargs: Any) -> Ack:
        self.sent.append({"body": body, **kwargs})
        return Ack(room, len(self.sent), f"m{len(self.sent)}", f"c{len(self.sent)}")


class FakeTarget:
    as_json = False

    def __init__(self) -> None:
        self.lines: list[str] = []

    def print(self, line: str) -> None:
        self.lines.append(line)


async def test_the_cli_mentions_on_the_first_message_and_shows_mentions() -> None:
    args = cli.parser().parse_args(["send", "team", "--mention", "bob", "--mention", "carol",
                                    "--mention-room"])
    client, target = FakeClient(), FakeTarget()
    for line in ("one", "two"):
        await cli.send_line(client, args, line, target, [])  # type: ignore[arg-type]
    assert [(s["mentions"], s["mention_room"]) for s in client.sent] == [
        (["bob", "carol"], True), ((), False)]
    assert output.mentions_text({"mentions": {"users": ["bob"], "room": True}}) == "@bob @room"
    assert output.mentions_text({"mentions": ("bob",), "mention_room": False}) == "@bob"
    assert output.mentions_text({"body": "plain"}) == ""
