"""The last-seq search: exact for every history size, in a bounded number of rounds."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from burrow.core import last_seq


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


def test_probes_are_powers_of_two_above_low_then_evenly_spaced_points() -> None:
    assert last_seq.probes(0, None) == [1 << k for k in range(62)]  # all below LIMIT
    assert last_seq.probes(4, None)[:2] == [8, 16]  # low is known stored: not asked again
    assert last_seq.probes(0, 1000) == list(range(16, 1000, 16))  # ceil(1000 / 64) apart
    assert last_seq.probes(5, 6) == []


def test_narrow_moves_high_down_to_the_first_probe_not_found() -> None:
    assert last_seq.narrow(0, None, [1, 2, 4, 8], {1, 2}) == (2, 4)
    assert last_seq.narrow(2, 4, [3], set()) == (2, 3)
    assert last_seq.narrow(0, None, [1, 2], {1, 2}) == (2, None)
