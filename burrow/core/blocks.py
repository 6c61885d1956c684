"""Blocks: which messages a user who blocked their sender is not told of. Pure code.

A user blocks another (``PUT /v1/me/blocks/{user}``, docs/devices-and-settings.md,
blocks): the blocked user's messages are not pushed to them (room pushes and mentions)
nor listed in their e-mail digest. Delivery itself is untouched: the room's stream is
one numbered sequence that every member reads whole (G4: no gaps), so the client hides
what its user blocked, from the list it reads once (``GET /v1/me/blocks``).

The notifier decides for a batch of stored messages at once: it reads the blocks that
matter to the batch in one query (those naming one of the batch's senders,
:meth:`burrow.storage.blocks.BlockStore.blockers_of`), and the batch's plan
(:mod:`burrow.core.notify_plan`) skips, per member, the messages :func:`is_blocked`
says they blocked; the push and the digest, when due, leave out the senders their one
user blocks (:func:`unblocked`, or the same condition in their query).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Protocol, TypeVar

#: Blocks one user may hold; more are refused (409): a cap keeps the reads here and the
#: ``$nin`` of the notifier's queries bounded.
MAX_BLOCKS = 1000

Blocks = Mapping[str, Collection[str]]  # blocker -> the users they block


class Sent(Protocol):
    @property
    def sender(self) -> str: ...


S = TypeVar("S", bound=Sent)


def blocked_pairs(rows: Iterable[tuple[str, str]]) -> dict[str, frozenset[str]]:
    """``(blocker, blocked)`` rows as read -> blocker -> the users they block."""
    found: dict[str, set[str]] = {}
    for blocker, blocked in rows:
        found.setdefault(blocker, set()).add(blocked)
    return {user: frozenset(users) for user, users in found.items()}


def unblocked(messages: Iterable[S], blocked: Collection[str]) -> list[S]:
    """*messages* without those whose sender is in *blocked* (one reader's blocks)."""
    if not blocked:
        return list(messages)
    return [m for m in messages if m.sender not in blocked]


def is_blocked(blocks: Blocks, reader: str, sender: str) -> bool:
    return sender in blocks.get(reader, ())
