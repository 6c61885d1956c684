"""The pure parts of job handling: tier choice, payload checks, notification encoding."""

from __future__ import annotations

import pytest

from burrow.push import Notification
from consumers.notifier import (
    notification_from_json,
    notification_to_json,
    preview,
)
from queues.jobs import Permanent, next_tier

TIERS = (5, 30, 300)


@pytest.mark.parametrize(("attempt", "retry_after", "tier"), [
    (0, None, 0), (1, None, 1), (2, None, 2), (3, None, None),
    (0, 5, 0), (0, 6, 1), (0, 31, 2), (0, 3600, 2),  # never beyond the last tier
    (2, 1, 2), (4, None, None),
])
def test_next_tier_follows_attempts_and_respects_retry_after(
        attempt: int, retry_after: float | None, tier: int | None) -> None:
    assert next_tier(TIERS, attempt, retry_after) == tier


def test_no_tiers_means_no_retry() -> None:
    assert next_tier((), 0, None) is None


def test_a_notification_survives_its_trip_through_a_retry_job() -> None:
    n = Notification("room:r:u:3", "general", "alice: hi", "room:r", {"room": "r"}, 2)
    assert notification_from_json(notification_to_json(n)) == n


@pytest.mark.parametrize("raw", [
    None, [], "x", {"id": "i", "title": "t", "body": "b"},  # collapse_key missing
    {"id": "i", "title": "t", "body": "b", "collapse_key": "c" * 65},
    {"id": "i", "title": "t", "body": "b", "collapse_key": "c", "data": {"k": 1}},
    {"id": "i", "title": "t", "body": "b", "collapse_key": "c", "badge": "3"},
    {"id": "", "title": "t", "body": "b", "collapse_key": "c"},
])
def test_a_malformed_notification_is_permanent(raw: object) -> None:
    with pytest.raises(Permanent):
        notification_from_json(raw)


def test_previews_are_one_line_and_bounded() -> None:
    assert preview("a\n\n b\tc") == "a b c"
    long = preview("x" * 500)
    assert len(long) == 120 and long.endswith("…")
