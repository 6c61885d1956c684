from __future__ import annotations

from burrow.core.health import Readiness


def test_ready_only_when_every_dependency_answers() -> None:
    assert Readiness({"broker": True, "database": True}).status == 200
    down = Readiness({"broker": False, "database": True})
    assert down.status == 503
    assert down.body() == {"ready": False, "checks": {"broker": "down", "database": "up"}}


def test_no_checks_is_not_ready() -> None:
    assert Readiness({}).status == 503
