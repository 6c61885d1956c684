"""Deliver one room's messages to one subscriber exactly once and in seq order.

Messages reach a subscriber two ways: replayed from the database (resume with ``since``,
or filling a gap) and live from the broker. The gateway binds to the room *before* it
reads the database, so the two overlap and together miss nothing (persist-then-fan-out);
:class:`Cursor` merges them: it holds live messages while a replay runs, drops what was
already delivered, and reports a gap when a live message skips ahead (a broker outage
lost some, or the subscriber fell behind), so the gateway replays the missing range.
This is G4's seam, pure: values in, frames out.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

F = TypeVar("F")  # a frame, as the transport wants it


class TooFarBehind(Exception):
    """More live messages are held than the bound allows: the subscriber must resume."""


class Cursor:
    """A subscriber's position in a room: the last seq delivered.

    Starts replaying (live messages are held); call :meth:`replayed` with the database's
    messages, then :meth:`caught_up`. Feed live messages to :meth:`live`. After each call,
    :attr:`needs_replay` says whether a gap must be filled from the database.
    """

    def __init__(self, last: int, max_held: int = 10_000) -> None:
        self.last = last
        self.replaying = True
        self.max_held = max_held
        self._held: dict[int, object] = {}

    @property
    def needs_replay(self) -> bool:
        """True when live messages wait behind a gap and no replay is running."""
        return not self.replaying and bool(self._held)

    def start_replay(self) -> None:
        self.replaying = True

    def live(self, seq: int, frame: F) -> list[F]:
        """Offer a live message; return the frames to deliver now, in order."""
        if seq <= self.last or seq in self._held:
            return []
        if self.replaying or seq != self.last + 1:
            if len(self._held) >= self.max_held:
                raise TooFarBehind(f"{len(self._held)} messages held after seq {self.last}")
            self._held[seq] = frame
            return []
        self.last = seq
        return [frame, *self._drain()]

    def replayed(self, messages: Iterable[tuple[int, F]]) -> list[F]:
        """Offer messages read from the database (ascending seq); return those to deliver."""
        out: list[F] = []
        for seq, frame in messages:
            if seq == self.last + 1:
                self.last = seq
                self._held.pop(seq, None)
                out.append(frame)
        return out

    def caught_up(self) -> list[F]:
        """End the replay: deliver the held live messages that now follow on."""
        self.replaying = False
        return self._drain()

    def _drain(self) -> list[F]:
        out: list[F] = []
        while self.last + 1 in self._held:
            self.last += 1
            out.append(self._held.pop(self.last))  # type: ignore[arg-type]
        for seq in [s for s in self._held if s <= self.last]:
            del self._held[seq]
        return out
