"""Who may do what to whom in a room (burrow.core.moderation, docs/moderation.md): the
whole table of actor role x target role x action, and the request body's checks."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from burrow.core import moderation as rules
from burrow.core.envelopes import EnvelopeError, Send, Stored, v1_frame
from burrow.core.lifecycle import Refused, decide
from burrow.core.moderation_event import MODERATION

ADMIN = "admin"  # an admin token, not a member of the room
ACTORS = (rules.OWNER, rules.MODERATOR, rules.MEMBER, None, ADMIN)
TARGETS = (rules.OWNER, rules.MODERATOR, rules.MEMBER, None)

# (actor, target, action) -> the refusal's code, for every refused combination in a
# room where the target is neither banned nor muted and the room is not locked.
# Everything not listed is allowed.
REFUSED: dict[tuple[str | None, str | None, str], str] = {}
for actor, target, action in itertools.product(ACTORS, TARGETS, rules.ACTIONS):
    on_room = action in rules.ROOM_ACTIONS
    if on_room and target is not None:
        continue  # room actions name no target: one row is enough
    code = None
    if actor in (rules.MEMBER, None):
        code = "forbidden"  # members and strangers moderate nothing
    elif action in ("promote", "demote", "transfer") and actor == rules.MODERATOR:
        code = "forbidden"  # the owner's (or an admin's) alone
    elif on_room:
        code = "already" if action == "unlock" else None  # the room is not locked
    elif target is None and action not in ("ban", "unban"):
        code = "not_member"
    elif actor == rules.MODERATOR and target in (rules.OWNER, rules.MODERATOR):
        code = "forbidden"  # a moderator acts on members only
    elif target == rules.OWNER:
        code = "already" if action in ("transfer", "unmute") else "owner_stays"
    elif (action, target) in (("promote", rules.MODERATOR), ("demote", rules.MEMBER)):
        code = "already"
    elif action in ("unban", "unmute"):
        code = "already"  # neither banned nor muted
    if code is not None:
        REFUSED[(actor, target, action)] = code

CASES = [(a, t, x) for a, t, x in itertools.product(ACTORS, TARGETS, rules.ACTIONS)
         if not (x in rules.ROOM_ACTIONS and t is not None)]


def act(action: str) -> rules.Action:
    if action in rules.ROOM_ACTIONS:
        return rules.Action(action, None, 60 if action == "slow_mode" else None)
    return rules.Action(action, "target", 60 if action == "mute" else None)


@pytest.mark.parametrize(("actor", "target", "action"), CASES)
def test_the_table_of_who_may_do_what_to_whom(actor: str | None, target: str | None,
                                              action: str) -> None:
    state = rules.State(None if actor == ADMIN else actor, actor == ADMIN, target)
    expected = REFUSED.get((actor, target, action))
    if expected is None:
        rules.check(act(action), state)
        return
    with pytest.raises(rules.Refusal) as refused:
        rules.check(act(action), state)
    assert refused.value.code == expected
    assert refused.value.status == {"forbidden": 403, "not_member": 404}.get(expected, 409)


def test_the_owner_is_never_removed_muted_banned_or_demoted_by_anyone() -> None:
    for actor in (rules.OWNER, rules.MODERATOR, ADMIN):
        for action in ("remove", "mute", "ban", "demote"):
            assert (actor, rules.OWNER, action) in REFUSED


def test_state_decides_already() -> None:
    owner = rules.State(rules.OWNER, target_role=rules.MEMBER, target_banned=True,
                        target_muted=True, locked=True)
    for action, code in (("ban", "already"), ("lock", "already")):
        with pytest.raises(rules.Refusal) as refused:
            rules.check(act(action), owner)
        assert refused.value.code == code
    for action in ("unban", "unmute", "unlock", "mute", "slow_mode"):
        rules.check(act(action), owner)


@pytest.mark.parametrize(("body", "field"), [
    ({}, "action"),
    ({"action": "kick", "user": "bob"}, "action"),
    ({"action": "ban"}, "user"),
    ({"action": "ban", "user": ""}, "user"),
    ({"action": "ban", "user": 7}, "user"),
    ({"action": "lock", "user": "bob"}, "user"),
    ({"action": "mute", "user": "bob"}, "seconds"),
    ({"action": "mute", "user": "bob", "seconds": 0}, "seconds"),
    ({"action": "mute", "user": "bob", "seconds": 30 * 86400 + 1}, "seconds"),
    ({"action": "mute", "user": "bob", "seconds": True}, "seconds"),
    ({"action": "mute", "user": "bob", "seconds": 1.5}, "seconds"),
    ({"action": "slow_mode", "seconds": 3601}, "seconds"),
    ({"action": "slow_mode", "seconds": -1}, "seconds"),
    ({"action": "ban", "user": "bob", "seconds": 5}, "seconds"),
    ({"action": "ban", "user": "bob", "reason": "x" * 501}, "reason"),
    ({"action": "ban", "user": "bob", "reason": ["spam"]}, "reason"),
])
def test_malformed_requests_name_their_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(rules.BadRequest) as bad:
        rules.parse(body)
    assert bad.value.field == field


def test_well_formed_requests() -> None:
    assert rules.parse({"action": "mute", "user": "bob", "seconds": 30 * 86400,
                        "reason": "r" * 500}) == rules.Action("mute", "bob", 30 * 86400,
                                                              "r" * 500)
    assert rules.parse({"action": "slow_mode", "seconds": 0}) == rules.Action(
        "slow_mode", None, 0)
    assert rules.parse({"action": "unlock"}) == rules.Action("unlock")


def test_a_moderation_event_is_sequenced_only_from_a_trusted_publisher() -> None:
    """The sequencer refuses a moderation send without ``admin`` (which only the
    moderation route and backend services set); its envelope and frames round-trip."""
    details = {"action": "mute", "user": "bob", "seconds": 60, "until": 1_000, "reason": "x"}
    raw = Send("r", "olga", "k1", "", kind=MODERATION, moderation=details).to_json()
    send = Send.from_json(raw, 100)
    assert (send.kind, send.moderation, send.admin) == (MODERATION, details, False)
    with pytest.raises(Refused) as refused:
        decide(send, None, None, 0, 0, 20)
    assert refused.value.code == "forbidden"
    trusted = Send.from_json(Send("r", "olga", "k1", "", kind=MODERATION, admin=True,
                                  moderation=details).to_json(), 100)
    assert decide(trusted, None, None, 0, 0, 20) is trusted
    for bad in ({"action": "mute", "extra": 1}, {"action": "x y"}, {"action": "a", "user": ""},
                {"action": "mute", "seconds": -1}, {"action": "a", "reason": "x" * 501}, None):
        with pytest.raises(EnvelopeError):
            Send.from_json(Send("r", "o", "k", "", kind=MODERATION, admin=True,
                                moderation=bad).to_json(), 100)  # type: ignore[arg-type]
    stored = Stored("id1", "r", 3, "olga", "k1", "", 5, kind=MODERATION, moderation=details)
    frame = stored.fields()
    assert frame == {"type": "moderation", "room": "r", "seq": 3, "id": "id1",
                     "sender": "olga", "client_id": "k1", "ts": 5, **details}
    assert Stored.from_document(stored.to_document()).fields() == frame
    old = v1_frame(frame)
    assert (old["type"], old["seq"], old["kind"], old["body"]) == (
        "message", 3, "moderation", "* olga mute bob (60 s): x")


def test_the_cli_takes_and_shows_moderation() -> None:
    from burrow.client.cli import parser
    from burrow.client.cli.output import message_line

    args = parser().parse_args(["moderate", "lobby", "mute", "bob", "--seconds", "60",
                                "--reason", "flood"])
    assert (args.room, args.action, args.user, args.seconds, args.reason) == (
        "lobby", "mute", "bob", 60, "flood")
    line = message_line({"type": "moderation", "room": "lobby", "seq": 4, "sender": "mia",
                         "ts": 0, "action": "mute", "user": "bob", "seconds": 60,
                         "reason": "flood"}, False)
    assert line.endswith("lobby #4 mia mute bob (60 s): flood"), line
