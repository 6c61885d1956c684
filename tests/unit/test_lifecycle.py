"""Message changes decided and planned in the pure core (burrow.core.lifecycle)."""

from __future__ import annotations

from datetime import timedelta

import orjson
import pytest

from burrow.core import lifecycle
from burrow.core.envelopes import EPOCH, Send, Stored, v1_frame
from burrow.core.lifecycle import Refused, Target, apply, change_event, decide, valid_emoji
from burrow.storage.rooms import MEMBER, OWNER

NOW = 1_000_000_000


def target(**kw: object) -> Target:
    base: dict[str, object] = {"id": "m1", "room": "r", "sender": "alice", "ts": NOW - 1000}
    base.update(kw)
    return Target(**base)  # type: ignore[arg-type]


def change(kind: str, sender: str = "alice", **kw: object) -> Send:
    return Send("r", sender, kw.pop("client_id", "c1"), str(kw.pop("body", "")),  # type: ignore[arg-type]
                kind=kind, target="m1", **kw)  # type: ignore[arg-type]


def refusal(send: Send, t: Target | None, role: str | None = MEMBER, window: int = 0,
            most: int = 20) -> str:
    with pytest.raises(Refused) as exc:
        decide(send, t, role, NOW, window, most)
    return exc.value.code


def test_owner_constant_is_the_rooms_one() -> None:
    assert lifecycle.OWNER == OWNER


def test_edit_by_the_sender_counts_edits() -> None:
    t = target()
    first = decide(change("edit", body="b1"), t, MEMBER, NOW, 0, 20)
    second = decide(change("edit", body="b2", client_id="c2"), t, MEMBER, NOW, 0, 20)
    assert (first.edit_count, second.edit_count, t.edit_count) == (1, 2, 2)


@pytest.mark.parametrize(("send", "t", "role", "window", "code"), [
    (change("edit", sender="bob"), target(), OWNER, 0, "forbidden"),
    (change("edit", admin=True, sender="bob"), target(), MEMBER, 0, "forbidden"),
    (change("edit"), target(ts=NOW - 61_000), MEMBER, 60, "edit_window"),
    (change("edit"), target(deleted=True), MEMBER, 0, "not_found"),
    (change("edit"), target(kind="edit"), MEMBER, 0, "not_found"),
    (change("edit"), target(room="other"), MEMBER, 0, "not_found"),
    (change("edit"), None, MEMBER, 0, "not_found"),
    (change("delete", sender="bob"), target(), MEMBER, 0, "forbidden"),
    (change("delete", sender="bob"), target(), None, 0, "forbidden"),
    (change("delete"), target(deleted=True), MEMBER, 0, "not_found"),
    (change("reaction", emoji=""), target(), MEMBER, 0, "bad_frame"),
    (change("reaction", emoji="x" * 65), target(), MEMBER, 0, "bad_frame"),
    (change("reaction", emoji="a\x07"), target(), MEMBER, 0, "bad_frame"),
    (change("reaction", emoji="ok"), target(deleted=True), MEMBER, 0, "not_found"),
    (change("reaction", emoji="ok"), target(kind="reaction"), MEMBER, 0, "not_found"),
])
def test_every_refusal(send: Send, t: Target | None, role: str | None, window: int,
                       code: str) -> None:
    assert refusal(send, t, role, window) == code


def test_edit_window_zero_is_always_and_inside_is_fine() -> None:
    old = target(ts=0)
    assert decide(change("edit"), old, MEMBER, NOW, 0, 20).edit_count == 1
    assert decide(change("edit"), target(ts=NOW - 59_000), MEMBER, NOW, 60, 20)


@pytest.mark.parametrize(("sender", "role", "admin"), [
    ("alice", MEMBER, False), ("bob", OWNER, False), ("bob", None, True)])
def test_delete_by_sender_owner_or_admin(sender: str, role: str | None, admin: bool) -> None:
    t = target()
    decide(change("delete", sender=sender, admin=admin), t, role, NOW, 0, 20)
    assert t.deleted
    # and after it nothing else applies in the same batch
    assert refusal(change("edit", client_id="c9"), t) == "not_found"


def test_reactions_are_bounded_by_distinct_emoji() -> None:
    t = target()
    for i in range(3):
        decide(change("reaction", emoji=f"e{i}", client_id=f"c{i}"), t, MEMBER, NOW, 0, 3)
    assert refusal(change("reaction", emoji="new", sender="bob"), t, most=3) == \
        "too_many_reactions"
    # joining an existing emoji always works, and a removal frees a place
    decide(change("reaction", emoji="e0", sender="bob"), t, MEMBER, NOW, 0, 3)
    assert t.reactions["e0"] == {"alice", "bob"}
    decide(change("reaction", emoji="e1", remove=True), t, MEMBER, NOW, 0, 3)
    decide(change("reaction", emoji="new", sender="bob"), t, MEMBER, NOW, 0, 3)
    assert set(t.reactions) == {"e0", "e2", "new"}


@pytest.mark.parametrize("emoji", ["👍", "🏳️‍🌈", "x" * 64, "é" * 32])
def test_valid_emoji(emoji: str) -> None:
    assert valid_emoji(emoji)


@pytest.mark.parametrize("emoji", ["", "é" * 33, "\n", "a\x00", "\ud800", 1, None, ["x"]])
def test_invalid_emoji(emoji: object) -> None:
    assert not valid_emoji(emoji)


def event(kind: str, seq: int, **kw: object) -> Stored:
    send = change(kind, client_id=f"c{seq}", **kw)
    return change_event(send, f"e{seq}", seq, NOW + seq)


def message_doc() -> dict[str, object]:
    return {"_id": "m1", "room": "r", "seq": 1, "sender": "alice", "body": "original",
            "ts": EPOCH + timedelta(milliseconds=NOW)}


def test_apply_edit_keeps_the_original_once_and_is_idempotent() -> None:
    doc = message_doc()
    e2 = event("edit", 2, body="b2", edit_count=1)
    e3 = event("edit", 3, body="b3", edit_count=2)
    w2 = apply(doc, e2)
    assert w2 is not None and w2.set["original_body"] == "original"
    w3 = apply(doc, e3)
    assert w3 is not None and "original_body" not in w3.set
    assert doc["body"] == "b3" and doc["changed_seq"] == 3
    # again, or the older one after the newer: nothing
    assert apply(doc, e3) is None
    assert apply(doc, e2) is None
    assert doc["body"] == "b3"


def test_apply_delete_is_absorbing() -> None:
    doc = message_doc()
    apply(doc, event("edit", 2, body="b2", edit_count=1))
    delete = event("delete", 3)
    write = apply(doc, delete)
    assert write is not None and write.always and write.purge_edits
    assert write.set["body"] == "" and "original_body" in write.unset
    assert doc["body"] == "" and "original_body" not in doc
    again = apply(doc, delete)
    assert again == write  # the same fixed values: applying twice is applying once
    # an edit stored before the delete but applied after it does not resurrect text
    assert apply(doc, event("edit", 2, body="b2", edit_count=1)) is None
    assert doc["body"] == ""


def test_change_frames_v2_and_v1() -> None:
    edit = event("edit", 5, body="new", edit_count=1)
    v2 = orjson.loads(edit.frame(2))
    assert v2 == {"type": "edit", "room": "r", "seq": 5, "id": "e5", "sender": "alice",
                  "client_id": "c5", "ts": NOW + 5, "target": "m1", "body": "new",
                  "edit_count": 1}
    v1 = orjson.loads(edit.frame(1))
    assert (v1["type"], v1["seq"], v1["body"], v1["kind"]) == ("message", 5, "* new", "edit")
    react = orjson.loads(event("reaction", 6, emoji="👍").frame(2))
    assert (react["type"], react["emoji"], react["op"]) == ("reaction", "👍", "add")
    assert v1_frame(orjson.loads(event("delete", 7).frame(2)))["body"] == ""


def test_change_envelope_round_trip() -> None:
    send = Send("r", "alice", "c1", "", kind="reaction", target="m1", emoji="👍",
                remove=True, admin=True)
    assert Send.from_json(send.to_json(), 100) == send
    plain = Send("r", "alice", "c1", "hi")
    assert orjson.loads(plain.to_json()) == {"room": "r", "sender": "alice",
                                             "client_id": "c1", "body": "hi"}


def test_stored_document_round_trip_of_an_event() -> None:
    stored = event("edit", 4, body="x", edit_count=3)
    assert Stored.from_document(stored.to_document()) == stored
