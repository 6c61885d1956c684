"""Device ids are safe as command-line arguments (``burrow device remove ID``)."""

from __future__ import annotations

import re

from burrow.storage.devices import new_id


def test_device_ids_never_look_like_an_option() -> None:
    # 2,000 draws: the old ids started with "-" once in 64 (all but certain to show here)
    ids = [new_id() for _ in range(2000)]
    assert all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{15}", i) for i in ids)
    assert len(set(ids)) == len(ids)
