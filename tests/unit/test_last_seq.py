"""The last-seq search: exact for every history size, in a bounded number of rounds."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from burrow import last_seq


def search(stored: int) -> tuple[int, int, int]:
    """(answer, rounds, most keys asked in a round) for a room holding seqs 1..stored."""
    low, high, rounds, widest = 0, None, 0, 0
    while asked := last_seq.probes(low, high):
        rounds, widest = rounds + 1, max(widest, len(asked))
        low, high = last_seq.narrow(low, high, asked, {p for p in asked if p <= stored})
    return low, rounds, widest


@given(st.integers(min_value=0, max_value=10**15))
def test_the_search_finds_the_last_seq_in_a_few_small_rounds(stored: int) -> None:
    answer, rounds, widest = search(stored)
    assert answer == stored
    assert widest <= last_seq.POINTS
    # one round of powers of two, then each round divides the gap by ~64
    assert rounds <= 2 + math.ceil(math.log(max(stored, 2), last_seq.POINTS))


def test_small_and_boundary_rooms() -> None:
    for stored in (0, 1, 2, 3, 63, 64, 65, 127, 128, 129, 4095, 4096, 4097, 10**6):
        assert search(stored)[0] == stored
    assert search(10**6)[1] <= 5
    assert search(10)[1] <= 2
