"""A replay asked for while another replay of the same subscription runs is not dropped.

Found by the cluster fault bench (`./dev bench --faults --cluster 3`, acked but lost
600 deliveries): a gateway whose broker node went away caught up after the reconnect
(bind every room, then replay every subscription from the database), but a subscription
whose gap fill was still reading the database skipped that replay. The running replay
had read before the messages fanned out during the outage were stored, so they reached
that gateway's members only when the room's next message showed the gap; in a room that
went quiet, never. Against the real database: the first replay is held after its read
(an event, no sleep) while a message is stored and the catch-up asks again.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from pymongo.asynchronous.database import AsyncDatabase

from burrow.core.envelopes import Stored
from burrow.core.seam import Cursor
from burrow.storage.messages import MessageStore
from gateway.connection import Connection, Subscription
from gateway.subscriptions import Subscriptions

Db = AsyncDatabase[dict[str, Any]]
ROOM = "quiet"


def message(seq: int) -> Stored:
    return Stored(f"m{seq}", ROOM, seq, "ann", f"c{seq}", f"hello {seq}", 1000 * seq)


class Frames:
    """A transport that keeps what the connection writes."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.grew = asyncio.Event()

    async def send(self, frame: str) -> None:
        self.frames.append(orjson.loads(frame))
        self.grew.set()

    async def close(self, code: int, reason: str) -> None:
        raise AssertionError(f"closed {code}: {reason}")

    def seqs(self) -> list[int]:
        return [f["seq"] for f in self.frames if f.get("type") == "message"]


class HeldAfterRead(MessageStore):
    """The real store; the first history read returns only once :attr:`go` is set,
    as a read that a busy database answered late."""

    def __init__(self, db: Db) -> None:
        super().__init__(db)
        self.read = asyncio.Event()
        self.go = asyncio.Event()

    async def history(self, room: str, after: int | None = None, before: int | None = None,
                      limit: int = 100) -> list[Stored]:
        page = await super().history(room, after=after, before=before, limit=limit)
        if not self.read.is_set():
            self.read.set()
            await self.go.wait()
        return page


class Subscribers:
    """What :meth:`Subscriptions.replay_all` reads of the bindings."""

    def __init__(self, sub: Subscription) -> None:
        self.subscribers = {ROOM: {sub}}


async def test_a_catch_up_during_a_running_replay_replays_again(db: Db) -> None:
    store = HeldAfterRead(db)
    await store.ensure_indexes()
    await store.insert([message(1)])
    out = Frames()
    conn = Connection("c1", "bob", False, out, buffer=100)
    sub = Subscription(conn, ROOM, Cursor(0))
    subs = Subscriptions(link=None, bindings=Subscribers(sub),  # type: ignore[arg-type]
                         members=None, messages=store)  # type: ignore[arg-type]
    conn.subscriptions[ROOM] = sub

    subs.replay_all()  # a gap fill, say: reads seq 1 and is held there
    await asyncio.wait_for(store.read.wait(), 10)
    await store.insert([message(2)])  # stored (and fanned out) while the link was down
    subs.replay_all()  # the catch-up after the reconnect: a replay is running
    store.go.set()
    while out.seqs() != [1, 2]:
        out.grew.clear()
        await asyncio.wait_for(out.grew.wait(), 10)  # fails here without the second replay
    assert sub.replay is not None
    await asyncio.wait_for(sub.replay, 10)
    assert out.seqs() == [1, 2] and not sub.replay_again
    assert sub.cursor.last == 2 and not sub.cursor.replaying
