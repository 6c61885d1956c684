"""When a publisher channel is to be replaced: a streak of broker nacks for one destination.

RabbitMQ 3.10 keeps a quorum-queue client state per channel and queue (the enqueuer: its
idea of the queue's leader, its overflow state). After a node loss that state can stay
wrong for good on a live channel: every publish of that channel to that one queue is
answered ``Basic.Nack`` while other channels' publishes to the same queue are accepted
(the cluster fault bench saw it, docs/deploy.md "What a node failure looks like to
Burrow"). A fresh channel resolves the leader anew, so the remedy is to replace the
channel. A single nack is normal (a leader election in progress, a queue briefly without
quorum), hence a streak: :data:`RENEW_AFTER` nacks in a row for the same routing key
(a room: it always lands on the same shard queue) with no ack for it in between.

Streaks are per key, not per channel: a channel stuck for one shard still gets acks for
the others, which must not hide the stuck one. Renewals are at most one per
:data:`MIN_INTERVAL` seconds, so a broker that refuses everything (a full queue with
``reject-publish``) costs a channel open and close a second, not one per send.
"""

from __future__ import annotations

from dataclasses import dataclass, field

RENEW_AFTER = 3
"""Nacks in a row for one key before the channel is replaced (1-2: an election)."""

MIN_INTERVAL = 1.0
"""Seconds between two renewals at least."""

MAX_KEYS = 10_000
"""Streaks kept at most; past it they are all forgotten (a lost streak only delays a
renewal by :data:`RENEW_AFTER` more nacks)."""


@dataclass
class NackStreaks:
    """Per-key nack streaks of one publisher channel and the decision to replace it."""

    renew_after: int = RENEW_AFTER
    min_interval: float = MIN_INTERVAL
    streaks: dict[str, int] = field(default_factory=dict)
    last_renewal: float | None = None

    def acked(self, key: str) -> None:
        """A publish for *key* was confirmed: its streak is over."""
        self.streaks.pop(key, None)

    def nacked(self, key: str, now: float) -> bool:
        """A publish for *key* was nacked at *now* (monotonic seconds); True when the
        channel is to be replaced now (the caller then calls :meth:`renewed`)."""
        if key not in self.streaks and len(self.streaks) >= MAX_KEYS:
            self.streaks.clear()
        count = self.streaks[key] = self.streaks.get(key, 0) + 1
        if count < self.renew_after:
            return False
        return self.last_renewal is None or now - self.last_renewal >= self.min_interval

    def renewed(self, now: float) -> None:
        """The channel was replaced at *now*: the new one starts with no streaks."""
        self.streaks.clear()
        self.last_renewal = now
