"""The notification rules (burrow.core.notify_rules): levels, snoozes and quiet hours,
with ``now`` injected (docs/devices-and-settings.md, rules)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from burrow.core.mentions import Mentions
from burrow.core.notify_rules import Kind, QuietHours, decide, kind_of, stored_quiet_hours, told


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def ms(text: str) -> int:
    return int(at(text).timestamp() * 1000)


def test_levels_tell_what_they_promise() -> None:
    assert [told("all", k) for k in Kind] == [True, True, True]
    assert [told("mentions", k) for k in Kind] == [True, True, False]
    assert [told("nothing", k) for k in Kind] == [False, False, False]
    assert told("garbled", Kind.OTHER)  # an unknown stored level is the default, all


def test_mentions_and_replies_to_me_override_mentions_only() -> None:
    now = at("2026-06-01T12:00:00")
    assert decide("mentions", [Kind.OTHER], now=now) == decide("nothing", [], now=now)
    assert not decide("mentions", [Kind.OTHER, Kind.OTHER], now=now).push
    for kind in (Kind.MENTION, Kind.REPLY):
        verdict = decide("mentions", [Kind.OTHER, kind], now=now)
        assert verdict.push and verdict.digest
    assert decide("all", [Kind.OTHER], now=now).push


def test_nothing_beats_a_mention() -> None:
    verdict = decide("nothing", [Kind.MENTION, Kind.REPLY], now=at("2026-06-01T12:00:00"))
    assert not verdict.push and not verdict.digest


def test_kind_of_a_message() -> None:
    bob = Mentions(users=("bob",))
    everyone = Mentions(room=True)
    assert kind_of("bob", "alice", bob, None, set()) is Kind.MENTION
    assert kind_of("bob", "alice", everyone, None, set()) is Kind.MENTION
    assert kind_of("carol", "alice", bob, None, set()) is Kind.OTHER
    assert kind_of("bob", "alice", None, "m1", {"m1"}) is Kind.REPLY
    assert kind_of("bob", "alice", None, "m2", {"m1"}) is Kind.OTHER
    assert kind_of("bob", "bob", everyone, "m1", {"m1"}) is Kind.OTHER  # my own message


def test_snoozes_hold_pushes_not_digests_mentions_included() -> None:
    now = at("2026-06-01T12:00:00")
    later, earlier = ms("2026-06-01T13:00:00"), ms("2026-06-01T11:00:00")
    for snooze in ({"user_snooze": later}, {"room_snooze": later}):
        verdict = decide("all", [Kind.MENTION], now=now, **snooze)  # type: ignore[arg-type]
        assert not verdict.push and verdict.digest
    assert decide("all", [Kind.OTHER], user_snooze=earlier, room_snooze=earlier, now=now).push
    assert decide("all", [Kind.OTHER], user_snooze=ms("2026-06-01T12:00:00"), now=now).push


@pytest.mark.parametrize(("utc", "quiet"), [
    # Paris, summer (UTC+2): 22:00-07:00 local is 20:00-05:00 UTC
    ("2026-06-01T19:59:00", False), ("2026-06-01T20:00:00", True),
    ("2026-06-01T23:30:00", True), ("2026-06-02T04:59:00", True),
    ("2026-06-02T05:00:00", False), ("2026-06-02T12:00:00", False),
])
def test_quiet_hours_across_midnight_in_the_users_zone(utc: str, quiet: bool) -> None:
    hours = QuietHours("22:00", "07:00", "Europe/Paris")
    assert hours.covers(at(utc)) is quiet
    verdict = decide("all", [Kind.MENTION], quiet=hours, now=at(utc))
    assert verdict.push is not quiet and verdict.digest


@pytest.mark.parametrize(("utc", "quiet"), [
    # New York (UTC-5 in January): 09:00-17:30 local is 14:00-22:30 UTC
    ("2026-01-15T13:59:00", False), ("2026-01-15T14:00:00", True),
    ("2026-01-15T22:29:00", True), ("2026-01-15T22:30:00", False),
])
def test_quiet_hours_within_a_day_in_another_zone(utc: str, quiet: bool) -> None:
    assert QuietHours("09:00", "17:30", "America/New_York").covers(at(utc)) is quiet


def test_quiet_hours_follow_the_clocks_on_a_dst_change_day() -> None:
    # Paris springs forward on 2026-03-29 at 02:00 local (01:00 UTC): UTC+1 before,
    # UTC+2 after. Quiet 01:00-06:00 local ends at 05:00 UTC that morning, 06:00 UTC
    # the day before: a fixed offset would get one of them wrong.
    hours = QuietHours("01:00", "06:00", "Europe/Paris")
    assert hours.covers(at("2026-03-28T04:30:00"))      # 05:30 local (UTC+1)
    assert not hours.covers(at("2026-03-28T05:30:00"))  # 06:30 local
    assert hours.covers(at("2026-03-29T03:30:00"))      # 05:30 local (UTC+2)
    assert not hours.covers(at("2026-03-29T04:30:00"))  # 06:30 local (UTC+1 would say 05:30)
    assert hours.covers(at("2026-03-29T00:00:00"))      # 01:00 local (UTC+1)
    assert hours.covers(at("2026-03-29T01:30:00"))      # 03:30 local: 02:xx never exists
    assert not hours.covers(at("2026-03-28T23:59:00"))  # 00:59 local
    # the same wall-clock window in New York, which changes on another day (Mar 8)
    new_york = QuietHours("01:00", "06:00", "America/New_York")
    assert new_york.covers(at("2026-03-29T09:30:00"))      # 05:30 local (UTC-4)
    assert not new_york.covers(at("2026-03-29T04:30:00"))  # 00:30 local


def test_quiet_hours_refused_when_malformed() -> None:
    for bad in ({"start": "22:00", "end": "22:00", "tz": "UTC"},
                {"start": "24:00", "end": "07:00", "tz": "UTC"},
                {"start": "7:00", "end": "08:00", "tz": "UTC"},
                {"start": "22:00", "end": "07:00", "tz": "Mars/Olympus"},
                {"start": "22:00", "end": "07:00", "tz": "../../etc/passwd"},
                {"start": "22:00", "end": "07:00", "tz": 1},
                {"start": "22:00", "end": "07:00"},
                {"start": "22:00", "end": "07:00", "tz": "UTC", "x": 1},
                "22:00-07:00"):
        with pytest.raises(ValueError):
            QuietHours.from_json(bad)
        assert stored_quiet_hours(bad) is None  # as stored: ignored, never a crash
    assert QuietHours.from_json(None) is None
