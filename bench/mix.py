"""The mixed workload: sends, reactions, edits and deletes (``--mix``), issue 16.

``./dev bench --mix send=80,react=10,edit=5,delete=5``: operation k of the schedule
(:func:`bench.driver.paced`, the same rate and round-robin over the clients as the plain
run) is drawn by weight with a seeded RNG (:class:`Mix`; the targets from another). Its client subscribes with
protocol v2 (docs/protocol.md, "Changes") and keeps a view of its room
(:class:`bench.views.RoomView`), from which a change takes its target:

- ``edit``: one of the client's own messages it has received (stored) and not deleted;
- ``delete``: the same, and never a message whose delete it already sent;
- ``react``: any message of the room it has received and not seen deleted, an emoji of
  :data:`EMOJI`, toggling: removed if the client's reaction is there, else added.

A change with no target yet (the client has no message of its own at the start) is sent
as a message instead, and counted (``fallbacks``). Changes travel like sends: a
``client_id`` of the same shape (``<client>-<k>:<send time>``), resent with it after a
``timeout`` or a reconnect; an error frame in place of the ack (``not_found``: a
reaction raced with the target's delete) marks it refused. Every change frame received
is a delivery like a ``message`` frame, so loss, duplicates, gaps and order are checked
over messages and changes together. At the end :meth:`MixWorkload.converge` reads every
room back through ``GET /v1/rooms/{room}/messages?v=2`` and compares each client's view
with it (:func:`bench.views.converge`).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Sequence
from itertools import accumulate
from typing import Any

import orjson
from websockets.exceptions import ConnectionClosed

from bench import accounts, load
from bench.load import BODY_BYTES, RETRYABLE, Delivery, LoadResult
from bench.views import DELIVERED, Member, RoomView, converge
from burrow.core import tokens

KINDS = ("send", "react", "edit", "delete")
EMOJI = ("👍", "❤️", "😂", "🎉", "👀")
HISTORY_PAGE = 500  # the history API's largest page


def parse(text: str) -> tuple[tuple[str, int], ...]:
    """``send=80,react=10,edit=5,delete=5`` -> ``(("send", 80), ...)``; ValueError when
    a kind is unknown or repeated, a weight not an integer >= 0, or sends weigh 0 (the
    changes need messages to target)."""
    pairs: dict[str, int] = {}
    for part in text.split(","):
        kind, sep, weight = part.strip().partition("=")
        if not sep or kind not in KINDS:
            raise ValueError(f"{part.strip()!r}: expected KIND=WEIGHT, KIND one of "
                             f"{', '.join(KINDS)}")
        if kind in pairs:
            raise ValueError(f"{kind} given twice")
        if not weight.isdigit():
            raise ValueError(f"{kind}={weight}: the weight is an integer >= 0")
        pairs[kind] = int(weight)
    if not pairs.get("send"):
        raise ValueError("send must weigh more than 0: changes target stored messages")
    return tuple(pairs.items())


class Mix:
    """Draws the kind of the next operation by weight, from a seeded RNG."""

    def __init__(self, weights: Sequence[tuple[str, int]]) -> None:
        self.kinds = [kind for kind, _ in weights]
        self.cumulative = list(accumulate(weight for _, weight in weights))

    def choose(self, rng: random.Random) -> str:
        return rng.choices(self.kinds, cum_weights=self.cumulative)[0]


class MixClient(load.Client):
    """A client that subscribes with v2, keeps its room's view and sends changes."""

    def __init__(self, index: int, room: str, result: LoadResult, urls: Sequence[str],
                 token: str, handshakes: asyncio.Semaphore) -> None:
        super().__init__(index, room, result, urls, token, handshakes)
        self.view = RoomView(f"u{index}")
        self.frames: dict[str, str] = {}  # client_id -> the change frame (for resends)

    def subscribe_frame(self, since: int) -> str:
        return orjson.dumps({"type": "subscribe", "room": self.room, "since": since,
                             "v": 2}).decode()

    def frame_of(self, client_id: str) -> str:
        frame = self.frames.get(client_id)
        return super().frame_of(client_id) if frame is None else frame

    def unacked(self) -> list[str]:
        """Refused changes are answered: they are not waiting for an ack."""
        refused = self.result.refused
        return [client_id for client_id in super().unacked() if client_id not in refused]

    def change(self, kind: str, client_id: str, sent: float, rng: random.Random
               ) -> str | None:
        """The frame of a change of *kind*, or None when the view holds no target."""
        view = self.view
        if kind == "react":
            target = view.alive.pick(rng)
            if target is None:
                return None
            emoji = EMOJI[rng.randrange(len(EMOJI))]
            frame: dict[str, Any] = {"type": "react", "emoji": emoji,
                                     "remove": view.reacted(target, emoji)}
        else:
            target = view.own.pick(rng)
            if target is None:
                return None
            frame = {"type": kind}
            if kind == "edit":
                head = f"{sent:.6f} edit {client_id} "
                frame["body"] = head + "e" * (BODY_BYTES - len(head))
            else:
                view.retire(target)  # nothing targets it from now on
        frame.update(room=self.room, client_id=client_id, id=target)
        return orjson.dumps(frame).decode()

    async def read(self) -> None:
        """:meth:`bench.load.Client.read`, for every frame that takes a seq, applied to
        the view; refusals of changes recorded."""
        ws = self.ws
        assert ws is not None
        result, index, loads, now = self.result, self.index, orjson.loads, time.time
        deliveries, apply = result.deliveries, self.view.apply
        try:
            async for raw in ws:
                frame = loads(raw)
                kind = frame["type"]
                if kind in DELIVERED:
                    received = now()
                    client_id = frame["client_id"]
                    deliveries.append(Delivery(index, frame["room"], frame["seq"], client_id,
                                               float(client_id[client_id.index(":") + 1:]),
                                               received))
                    result.last_received = received
                    apply(frame)
                elif kind == "ack":
                    client_id = frame["client_id"]
                    result.acks[client_id] = now() - float(client_id.split(":", 1)[1])
                    result.acked_seq[client_id] = (frame["room"], frame["seq"])
                elif kind == "subscribed":
                    self.subscribed.set()
                elif kind == "error":
                    self.last_seq = self.view.last_seq
                    self._on_error(frame)
                    client_id = frame.get("client_id")
                    if frame.get("code") not in RETRYABLE and client_id in result.kinds:
                        result.refused.setdefault(client_id, str(frame.get("code")))
        except ConnectionClosed:
            pass
        finally:
            self.last_seq = self.view.last_seq
        result.closed += 1


class MixWorkload:
    """The mix's clients and operations (:class:`bench.load.Workload`), then the
    convergence check over the clients it made."""

    def __init__(self, weights: Sequence[tuple[str, int]], seed: int = 1) -> None:
        self.mix = Mix(weights)
        # two streams: the kinds drawn stay the same from run to run whatever the
        # targets (how many picks there were depends on what had arrived)
        self.rng = random.Random(seed)
        self.targets = random.Random(f"targets-{seed}")
        self.clients: list[MixClient] = []
        self.fallbacks = {kind: 0 for kind, _ in weights if kind != "send"}

    def client(self, index: int, room: str, result: LoadResult, urls: Sequence[str],
               token: str, handshakes: asyncio.Semaphore) -> MixClient:
        made = MixClient(index, room, result, urls, token, handshakes)
        self.clients.append(made)
        return made

    async def send(self, client: MixClient, k: int) -> None:
        """Operation k of the schedule, from *client*."""
        kind = self.mix.choose(self.rng)
        if kind != "send":
            sent = time.time()
            client_id = f"{client.index}-{k}:{sent:.6f}"
            frame = client.change(kind, client_id, sent, self.targets)
            if frame is not None:
                client.result.kinds[client_id] = kind
                client.frames[client_id] = frame
                await load.write(client, client.result, client_id, frame)
                return
            self.fallbacks[kind] += 1
        await load.send_message(client, k, client.result)

    def converge(self, gateway_http: Sequence[str], jwt_secret: str,
                 result: LoadResult) -> dict[str, Any]:
        """Read every room back (history v2, as its first member) and compare."""
        rooms: dict[str, list[MixClient]] = {}
        for client in self.clients:
            rooms.setdefault(client.room, []).append(client)
        stored: dict[str, list[dict[str, Any]]] = {}
        members: dict[str, list[Member]] = {}
        try:
            for n, (room, clients) in enumerate(sorted(rooms.items())):
                reader = min(clients, key=lambda c: c.index)
                first = n % len(gateway_http)
                stored[room] = history([*gateway_http[first:], *gateway_http[:first]], room,
                                       tokens.mint(jwt_secret, reader.view.user, 600))
                members[room] = [Member(c.index, c.view, c is reader) for c in clients]
        except (OSError, ValueError) as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        return converge(stored, members, result.acked_seq, result.refused)



def history(bases: Sequence[str], room: str, token: str) -> list[dict[str, Any]]:
    """Every entry of *room*, ascending seq, in pages (``GET .../messages?v=2&after=``),
    from the first of the gateways *bases* that answers (``--faults`` kills gateway-0)."""
    entries: list[dict[str, Any]] = []
    while True:
        after = entries[-1]["seq"] if entries else 0
        path = f"/v1/rooms/{room}/messages?v=2&after={after}&limit={HISTORY_PAGE}"
        for number, base in enumerate(bases):
            try:
                status, text = accounts.http(base + path, token, method="GET")
                break
            except OSError:
                if number == len(bases) - 1:
                    raise
        if status != 200:
            raise ValueError(f"GET history of {room}: {status} {text[:200]}")
        page = json.loads(text)["messages"]
        entries += page
        if len(page) < HISTORY_PAGE:
            return entries
