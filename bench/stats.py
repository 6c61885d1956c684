"""The few statistics every report uses (:mod:`bench.report`, :mod:`bench.kinds`)."""

from __future__ import annotations

from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted *values* (None when empty)."""
    if not values:
        return None
    rank = max(0, min(len(values) - 1, int(q / 100 * len(values) + 0.999999) - 1))
    return values[rank]


def ms(value: float | None) -> float | None:
    """Seconds as milliseconds, 2 decimals (None stays None)."""
    return None if value is None else round(value * 1000, 2)


def s(value: float | None) -> float | None:
    """Seconds, 2 decimals (None stays None)."""
    return None if value is None else round(value, 2)
