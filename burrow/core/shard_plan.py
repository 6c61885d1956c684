"""Which live sequencer should be active on which shard, and when to hand a shard over.

Every sequencer process subscribes to every shard queue; the broker makes one of them the
single active consumer of each (``x-single-active-consumer``). Left alone, the first one
to subscribe is active everywhere and the others only stand by. To spread the shards,
the processes tell each other through heartbeats which shards they are active on
(consumers/shard_balance.py), and a process active on a shard :func:`plan` gives to
another member lets it go: the broker then activates the next waiting consumer.

Why the plan looks at who holds what, not only at the member ids: a pure function of the
sorted ids cannot be both balanced (each member floor/ceil(S/N)) and stable (a join
moves only the joiner's share, a leave only the leaver's). Rendezvous hashing with
capacities moved a third more shards than needed on joins in a simulation (random ids,
up to 16 shards and 6 members); with the current holders as input, every holder keeps
what its quota allows and only the surplus and the orphans move: the fewest moves there
are. Every member computes the same plan from the same view (ties broken by id and a
hash, never by arrival order), and views agree once heartbeats have been seen.

:class:`Roster` is the membership view a process keeps from heartbeats, clock injected,
and :meth:`Roster.handovers` the decision: which of my shards to let go now. It acts only
on a settled view (every member heard recently, the member set unchanged for a while)
and never on a shard it became active on within a hold-down, so one late heartbeat or a
process killed a moment ago does not make shards ping-pong. No I/O here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# Multiples of the heartbeat interval (BURROW_SEQUENCER_HEARTBEAT).
EXPIRY = 3.0     # a member not heard for this long is gone
FRESH = 1.5      # the view is settled only if every member was heard within this
SETTLE = 2.0     # ...and the member set has not changed for this long
HOLD_DOWN = 1.0  # a shard is kept at least this long after it became active here
# A shard this process handed over and got back (nobody else could take it: a member
# whose consumer is missing) is kept this long before it is tried again: each handover
# returns the prefetched messages, which counts towards the queue's delivery limit.
BACKOFF = 10.0


def score(shard: int, member: str) -> int:
    """Rendezvous weight of *member* for *shard*: the same on every process."""
    digest = hashlib.blake2b(f"{shard}:{member}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def quotas(shards: int, members: Iterable[str], holders: Mapping[int, str]) -> dict[str, int]:
    """How many shards each member should hold: floor(S/N) or ceil(S/N), the ceil going
    to the members that hold the most now (then by id), so that as few shards as
    possible move."""
    live = sorted(set(members))
    if not live:
        return {}
    low, extra = divmod(shards, len(live))
    held = {m: 0 for m in live}
    for shard, member in holders.items():
        if member in held and 0 <= shard < shards:
            held[member] += 1
    ranked = sorted(live, key=lambda m: (-held[m], m))
    return {m: low + (1 if i < extra else 0) for i, m in enumerate(ranked)}


def plan(shards: int, members: Iterable[str], holders: Mapping[int, str]) -> dict[int, str]:
    """The desired owner of every shard ``0..shards-1`` among *members*.

    *holders*: the member active on each shard as far as it is known (shards nobody is
    known to hold are left out). A holder that is a member keeps its shards up to its
    quota (those it weighs most, :func:`score`); the rest go, shard by shard, to the
    member with room that weighs the shard most. Empty without members.
    """
    quota = quotas(shards, members, holders)
    if not quota:
        return {}
    owners: dict[int, str] = {}
    for member in sorted(quota):
        mine = sorted((s for s, m in holders.items() if m == member and 0 <= s < shards),
                      key=lambda s: (-score(s, member), s))
        for shard in mine[:quota[member]]:
            owners[shard] = member
    load = {m: sum(1 for o in owners.values() if o == m) for m in quota}
    for shard in range(shards):
        if shard in owners:
            continue
        best = max((m for m in quota if load[m] < quota[m]),
                   key=lambda m: (score(shard, m), m))
        owners[shard] = best
        load[best] += 1
    return owners


@dataclass
class Member:
    """What the last heartbeat of another process said, and when it came."""

    seen: float
    shards: frozenset[int]


@dataclass
class Roster:
    """One process's view of the live sequencers and of its own active shards.

    Feed it :meth:`heard` (heartbeats and goodbyes of the others), :meth:`became_active`
    and :meth:`left` (its own shards); ask :meth:`handovers`. *interval* is the
    heartbeat interval in seconds; times are a monotonic clock's.
    """

    me: str
    shards: int
    interval: float
    others: dict[str, Member] = field(default_factory=dict)
    mine: dict[int, float] = field(default_factory=dict)  # shard -> when it became active
    handed: dict[int, float] = field(default_factory=dict)  # shard -> when I let it go
    changed: float = 0.0  # when the member set last changed

    def heard(self, member: str, shards: Iterable[int], now: float, bye: bool = False) -> None:
        """A heartbeat (or, with *bye*, a goodbye) from *member*."""
        if member == self.me:
            return
        if bye:
            if self.others.pop(member, None) is not None:
                self.changed = now
            return
        if member not in self.others:
            self.changed = now
        self.others[member] = Member(now, frozenset(s for s in shards if 0 <= s < self.shards))

    def expire(self, now: float) -> None:
        """Drop members not heard for :data:`EXPIRY` intervals."""
        gone = [m for m, info in self.others.items()
                if now - info.seen > EXPIRY * self.interval]
        for member in gone:
            del self.others[member]
        if gone:
            self.changed = now

    def became_active(self, shard: int, now: float) -> None:
        self.mine.setdefault(shard, now)

    def left(self, shard: int) -> None:
        self.mine.pop(shard, None)

    def handing_over(self, shard: int, now: float) -> None:
        """I am letting *shard* go (see :data:`BACKOFF`)."""
        self.handed[shard] = now
        self.mine.pop(shard, None)

    def members(self) -> list[str]:
        return sorted([self.me, *self.others])

    def holders(self) -> dict[int, str]:
        """Who holds each shard, as far as known: my own shards are certain; of two
        others claiming one, the one heard last is the more recent news."""
        found: dict[int, str] = {}
        for member, info in sorted(self.others.items(), key=lambda kv: kv[1].seen):
            for shard in info.shards:
                found[shard] = member
        for shard in self.mine:
            found[shard] = self.me
        return found

    def settled(self, now: float) -> bool:
        """Every member heard within :data:`FRESH` intervals and the member set
        unchanged for :data:`SETTLE` intervals."""
        return (now - self.changed >= SETTLE * self.interval
                and all(now - info.seen <= FRESH * self.interval
                        for info in self.others.values()))

    def handovers(self, now: float) -> list[int]:
        """My shards that another live member should hold, that I have held for at least
        the hold-down and not handed over within the backoff; none while the view is not
        settled."""
        self.expire(now)
        if not self.others or not self.settled(now):
            return []
        owners = plan(self.shards, self.members(), self.holders())
        return sorted(shard for shard, since in self.mine.items()
                      if owners.get(shard) != self.me
                      and now - since >= HOLD_DOWN * self.interval
                      and now - self.handed.get(shard, -1e18) >= BACKOFF * self.interval)
