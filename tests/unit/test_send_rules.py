"""The moderation rules a gateway enforces a send and a typing frame with
(burrow/core/send_rules.py): mute, lock, slow mode, who is exempt, and the documents
they are read from."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from burrow.core import send_rules
from burrow.core.send_rules import Member, Refusal, RoomRules
from burrow.storage import rooms

NOW = 1_800_000_000_000  # epoch ms
MEMBER = Member("member")
MUTED = Member("member", NOW + 90_000)
OPEN = RoomRules()
LOCKED = RoomRules(locked=True)
SLOW = RoomRules(slow_mode_s=30)
# (kind, remove): a message, an edit, a reaction added / removed, a delete
ADDING = [(None, False), ("edit", False), ("reaction", False)]
TAKING_BACK = [("delete", False), ("reaction", True)]


def refuse(member: Member, room: RoomRules, kind: str | None = None, remove: bool = False,
           is_admin: bool = False, now: int = NOW) -> Refusal | None:
    return send_rules.refuse_send(member, room, is_admin, kind, remove, now)


def test_the_exempt_roles_are_the_stores_roles() -> None:
    assert send_rules.EXEMPT_ROLES == {rooms.OWNER, getattr(rooms, "MODERATOR", "moderator")}


@pytest.mark.parametrize(("kind", "remove"), ADDING)
def test_a_muted_member_adds_nothing_and_learns_when_the_mute_ends(
        kind: str | None, remove: bool) -> None:
    refusal = refuse(MUTED, OPEN, kind, remove)
    assert refusal is not None
    assert (refusal.code, refusal.retry_after_ms) == ("muted", 90_000)


@pytest.mark.parametrize(("kind", "remove"), TAKING_BACK)
def test_a_muted_member_may_take_their_words_back(kind: str, remove: bool) -> None:
    assert refuse(MUTED, OPEN, kind, remove) is None
    assert refuse(MUTED, LOCKED, kind, remove) is None


def test_a_mute_ends_by_itself_at_its_time() -> None:
    until = NOW + 90_000
    last = refuse(MUTED, OPEN, now=until - 1)
    assert last is not None and last.retry_after_ms == 1
    assert refuse(MUTED, OPEN, now=until) is None
    assert refuse(MUTED, OPEN, now=until + 5) is None
    assert send_rules.may_type(MUTED, OPEN, False, until)
    assert not send_rules.may_type(MUTED, OPEN, False, until - 1)


@pytest.mark.parametrize("role", ["owner", "moderator"])
def test_a_mute_holds_whoever_is_muted(role: str) -> None:
    """Exemption is from lock and slow mode only: a muted moderator is muted."""
    muted = Member(role, NOW + 1000)
    refusal = refuse(muted, OPEN, is_admin=True)
    assert refusal is not None and refusal.code == "muted"
    assert not send_rules.may_type(muted, OPEN, True, NOW)


@pytest.mark.parametrize(("kind", "remove"), ADDING)
def test_a_locked_room_refuses_members_what_adds(kind: str | None, remove: bool) -> None:
    refusal = refuse(MEMBER, LOCKED, kind, remove)
    assert refusal is not None
    assert (refusal.code, refusal.retry_after_ms) == ("locked", None)


@pytest.mark.parametrize(("member", "is_admin"), [
    (Member("owner"), False), (Member("moderator"), False), (MEMBER, True)])
def test_owner_moderators_and_admins_send_in_a_locked_room(member: Member,
                                                           is_admin: bool) -> None:
    for kind, remove in ADDING + TAKING_BACK:
        assert refuse(member, LOCKED, kind, remove, is_admin) is None
    assert send_rules.may_type(member, LOCKED, is_admin, NOW)
    assert send_rules.slow_mode_seconds(member, SLOW, is_admin, None) == 0


def test_mute_is_told_before_lock() -> None:
    refusal = refuse(MUTED, LOCKED)
    assert refusal is not None and refusal.code == "muted"


def test_slow_mode_counts_new_messages_of_plain_members_only() -> None:
    assert send_rules.slow_mode_seconds(MEMBER, SLOW, False, None) == 30
    for kind in ("edit", "delete", "reaction", "moderation"):
        assert send_rules.slow_mode_seconds(MEMBER, SLOW, False, kind) == 0
    assert send_rules.slow_mode_seconds(MEMBER, OPEN, False, None) == 0
    assert refuse(MEMBER, SLOW) is None  # slow mode is the limiter's, not a refusal here


def test_typing_is_dropped_when_muted_or_locked_out_only() -> None:
    assert send_rules.may_type(MEMBER, OPEN, False, NOW)
    assert send_rules.may_type(MEMBER, SLOW, False, NOW)
    assert not send_rules.may_type(MUTED, OPEN, False, NOW)
    assert not send_rules.may_type(MEMBER, LOCKED, False, NOW)


def test_server_kinds_are_not_refused_here() -> None:
    assert refuse(MUTED, LOCKED, "moderation") is None


def test_documents_are_read_leniently() -> None:
    until = datetime(2027, 1, 1, tzinfo=UTC)
    ms = int(until.timestamp() * 1000)
    assert send_rules.member_of({"role": "member", "muted_until": until}) == Member(
        "member", ms)
    naive = until.replace(tzinfo=None)  # a client without tz_aware reads naive UTC
    assert send_rules.member_of({"role": "member", "muted_until": naive}).muted_until_ms == ms
    assert send_rules.member_of({"role": "owner"}) == Member("owner")
    assert send_rules.member_of({"role": "member", "muted_until": "soon"}) == MEMBER
    assert send_rules.member_of({"role": "member", "muted_until": None}) == MEMBER
    assert send_rules.member_of({"role": "m", "muted_until": ms}).muted_until_ms == ms
    assert send_rules.rules_of(None) == OPEN == send_rules.rules_of({})
    assert send_rules.rules_of({"slow_mode_s": 30, "locked": True}) == RoomRules(30, True)
    for bad in ({"slow_mode_s": True}, {"slow_mode_s": -5}, {"slow_mode_s": "30"},
                {"locked": "yes"}, {"locked": 1}):
        assert send_rules.rules_of(bad) == OPEN, bad


def test_a_mute_in_the_past_is_no_mute() -> None:
    past = Member("member", int((datetime.now(UTC) - timedelta(hours=1)).timestamp() * 1000))
    assert send_rules.muted_for_ms(past, int(datetime.now(UTC).timestamp() * 1000)) == 0
