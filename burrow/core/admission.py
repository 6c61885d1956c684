"""Who an add makes a member and who it only invites (``BURROW_INVITES``). Pure code.

``off`` (the default: every add makes a member, as before invitations existed),
``strangers`` (adding a user who shares no room with the adder makes an invitation they
accept or decline), ``all`` (every add of someone else is an invitation). Admins (the
token's ``roles: [admin]``: an operator or a backend provisioning rooms) always add
directly, and nobody invites themself. docs/moderation.md, "Users protect themselves".
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final, Literal, get_args

Mode = Literal["off", "strangers", "all"]
MODES: Final[tuple[str, ...]] = get_args(Mode)


def parse_mode(raw: str) -> Mode:
    """``BURROW_INVITES``'s value; ValueError for anything else."""
    if raw not in MODES:
        raise ValueError(f"expected one of {', '.join(MODES)}")
    return raw  # type: ignore[return-value]


def asks_strangers(mode: str, is_admin: bool) -> bool:
    """Whether deciding needs to know which users share no room with the adder (a read
    worth skipping when the answer cannot change anything)."""
    return mode == "strangers" and not is_admin


def invited(mode: str, *, adder: str, users: Collection[str], is_admin: bool,
            strangers: Collection[str] = ()) -> set[str]:
    """Those of *users* whom *adder* invites rather than adds; *strangers*: those of
    them who share no room with *adder* (needed for ``strangers`` only)."""
    if mode == "off" or is_admin:
        return set()
    others = set(users) - {adder}
    if mode == "all":
        return others
    return others & set(strangers)
