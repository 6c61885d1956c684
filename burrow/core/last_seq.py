"""Finding a room's last seq in a bounded number of index probes, whatever its history.

The sequencer asks for a room's highest stored seq the first time it sees the room
(after a start or a failover). ``find({room}).sort(seq, -1).limit(1)`` is one index step
on mongod, but the embedded database fetches and sorts every message of the room:
22 ms for a room of 1,000 messages, ~2 s for 100,000 (measured, bench/RESULTS.md), on
the path of the first message after a failover.

A room's seqs are dense (1..N, G2: assigned in order, inserted with ordered writes, a
batch cut short keeps a prefix), so "seq x is stored" means "x <= N". The search asks
for a set of up to :data:`POINTS` seqs at once (one ``$in`` query on the (room, seq)
index, which examines only those keys) and narrows the interval to the gap after the
highest one found: powers of two first, then evenly spaced points. A room of 10^6
messages takes 5 rounds of at most 64 keys, a room of 10 takes 2. The caller ends with
one forward range read above the answer, so that a room whose seqs are not dense (a
history imported by hand) still gets its true last seq, only more slowly.
"""

from __future__ import annotations

POINTS = 64
LIMIT = 1 << 62  # above any seq (the sequencer's seqs are int64)


def probes(low: int, high: int | None) -> list[int]:
    """The seqs to ask for next: *low* is stored (or 0), *high* is not (None: unknown).

    Empty once nothing lies between them: *low* is the answer.
    """
    if high is None:
        return [p for p in (1 << k for k in range(62)) if p > low]
    if high - low <= 1:
        return []
    step = -(-(high - low) // POINTS)  # ceil: at most POINTS - 1 points inside
    return list(range(low + step, high, step))


def narrow(low: int, high: int | None, asked: list[int], found: set[int]
           ) -> tuple[int, int | None]:
    """The new (low, high) after asking for *asked* and finding *found* among them."""
    best = max(found, default=low)
    above = [p for p in asked if p > best]
    return max(low, best), (min(above) if above else high)
