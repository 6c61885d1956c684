"""Connection caps: a user, and an address, never hold more than their cap, and what is
released can be taken again; nothing is counted for a refused connection."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.caps import ConnectionCaps

USERS = st.sampled_from(["alice", "bob", "carol"])
ADDRESSES = st.sampled_from(["10.0.0.1", "10.0.0.2"])


@given(st.lists(st.tuples(st.booleans(), USERS, ADDRESSES), max_size=200))
def test_caps_hold_whatever_the_order(steps: list[tuple[bool, str, str]]) -> None:
    caps = ConnectionCaps(per_user=3, per_address=5)
    open_: list[tuple[str, str]] = []
    for opening, user, address in steps:
        if opening:
            refused = caps.admit(user, address)
            users = sum(1 for u, _ in open_ if u == user)
            addresses = sum(1 for _, a in open_ if a == address)
            expected = "user" if users >= 3 else "address" if addresses >= 5 else None
            assert refused == expected
            if refused is None:
                open_.append((user, address))
        elif (user, address) in open_:
            open_.remove((user, address))
            caps.release(user, address)
        for u in ("alice", "bob", "carol"):
            assert caps.users[u] == sum(1 for x, _ in open_ if x == u) <= 3
        for a in ("10.0.0.1", "10.0.0.2"):
            assert caps.addresses[a] == sum(1 for _, x in open_ if x == a) <= 5


def test_a_released_connection_frees_its_place() -> None:
    caps = ConnectionCaps(per_user=1, per_address=10)
    assert caps.admit("alice", "a") is None
    assert caps.admit("alice", "b") == "user"
    assert caps.full("bob", "a") is None
    caps.release("alice", "a")
    assert caps.admit("alice", "b") is None
    assert dict(caps.users) == {"alice": 1} and dict(caps.addresses) == {"b": 1}
