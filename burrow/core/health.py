"""Readiness as a pure decision: which dependencies answer, and what to tell a probe.

A process is ready when every dependency it needs answered its last check. The checks
themselves (an AMQP connection state, a database ping) live in the adapters; this module
only turns their answers into a status and a body, so it is tested without servers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Readiness:
    """The last answer of each dependency, by name (``broker``, ``database``)."""

    checks: Mapping[str, bool]

    @property
    def ready(self) -> bool:
        return bool(self.checks) and all(self.checks.values())

    @property
    def status(self) -> int:
        """HTTP status for ``/readyz``: 200 when ready, 503 (retry later) otherwise."""
        return 200 if self.ready else 503

    def body(self) -> dict[str, object]:
        return {"ready": self.ready,
                "checks": {name: "up" if up else "down" for name, up in self.checks.items()}}
