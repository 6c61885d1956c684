"""Spreading the shard queues over the live sequencer processes (the I/O of it).

Every sequencer subscribes to every shard queue ``chat.seq.N``; the broker makes one
subscriber of each the single active consumer and keeps the others waiting, so a killed
process's shards move to a waiting one at once. Which one is up to the broker (RabbitMQ
3.10 has no single-active-consumer priorities), so the processes even it out themselves:

* :class:`ShardSlot`: one shard's channel, consumer and inbox. It knows it is active
  from its first delivery (AMQP does not announce the activation) and can
  :meth:`~ShardSlot.hand_over`: finish the batch in hand (the sequencer holds
  :attr:`~ShardSlot.lock` while it processes one), close the channel (its prefetched,
  unacked messages go back to the head of the queue, ahead of newer ones), forget the
  rooms it numbered, and subscribe again on a new channel, now as a waiting consumer.
  The broker activates the next waiting consumer.
* :class:`Balancer`: every ``BURROW_SEQUENCER_HEARTBEAT`` seconds, once every shard
  consumer is registered, announces ``{id, shards}`` on the fanout exchange
  ``chat.sequencers`` (each process binds an exclusive queue ``chat.sequencers.<hex>``),
  keeps a :class:`~burrow.core.shard_plan.Roster` of what the others announce, and hands
  over the shards the plan gives to another member. A goodbye on a graceful stop lets
  the others plan without it at once.

A process that is not the plan's owner and receives a shard hands it over in turn; the
unique (room, seq) index still fences any writer that believes it is active.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)

from burrow.core.shard_plan import EXPIRY, Roster
from burrow.runtime import metrics
from burrow.runtime.broker import BROKER_ERRORS, stop_step
from queues import topology

log = logging.getLogger(__name__)

Inbox = asyncio.Queue[tuple[int, AbstractIncomingMessage] | None]
BEAT_ERRORS: tuple[type[Exception], ...] = (TimeoutError, *BROKER_ERRORS)


class ShardSlot:
    """One shard queue as this process consumes it (see the module docstring)."""

    def __init__(self, index: int, queue: topology.Queue, prefetch: int,
                 on_inactive: Callable[[int], None]) -> None:
        self.index = index
        self.spec = queue
        self.prefetch = prefetch
        self.on_inactive = on_inactive
        # (generation, delivery); None asks the batch task to stop (drain)
        self.inbox: Inbox = asyncio.Queue()
        self.generation = 0  # bumped by a handover: older deliveries are not processed
        self.lock = asyncio.Lock()  # held by the sequencer while it processes a batch
        self.rooms: set[str] = set()  # rooms numbered from this shard (forgotten on leaving)
        self.active = False
        self.since = 0.0  # monotonic time of the first delivery since the channel opened
        self.channel: AbstractRobustChannel | None = None
        self.queue: AbstractQueue | None = None
        self.tag = ""
        self.connection: AbstractRobustConnection | None = None
        self.handing_over = False

    async def open(self, connection: AbstractRobustConnection) -> None:
        """Open a channel and subscribe: active at once, or waiting behind another."""
        self.connection = connection
        generation = self.generation
        channel = await connection.channel()
        channel.close_callbacks.add(lambda *_: self._closed(generation))
        self.channel = channel  # strong reference: the connection keeps a WeakSet
        await channel.set_qos(prefetch_count=self.prefetch)
        queue = await channel.declare_queue(self.spec.name, durable=True,
                                            arguments=dict(self.spec.arguments))
        gauge = metrics.SEQUENCER_SHARD_ACTIVE.labels(str(self.index))

        async def deliver(message: AbstractIncomingMessage) -> None:
            if generation != self.generation:
                return  # the old channel's: it went back to the queue when that closed
            if not self.active:  # the broker delivers to the active consumer only
                self.active, self.since = True, time.monotonic()
                gauge.set(1)
            self.inbox.put_nowait((generation, message))  # bounded by the prefetch count

        self.tag = await queue.consume(deliver)
        self.queue = queue

    def _closed(self, generation: int) -> None:
        if generation == self.generation:
            self.inactive()

    def inactive(self) -> None:
        """Another consumer may be active now (the channel closed or the connection was
        lost): no longer counted as active here until the next delivery."""
        self.active = False
        self.on_inactive(self.index)

    def current(self, item: tuple[int, AbstractIncomingMessage]) -> bool:
        """Whether an inbox item came on the current channel (else: dropped, requeued)."""
        return item[0] == self.generation

    async def hand_over(self, forget: Callable[[set[str]], None]) -> None:
        """Let another waiting consumer take this shard (see the module docstring);
        *forget* drops the shard's rooms from the numbering before it subscribes again
        (the broker may make it active again at once: its last seqs must be read anew)."""
        assert self.connection is not None
        self.handing_over = True
        try:
            async with self.lock:  # the batch in hand is finished and acked first
                self.generation += 1
                self.inactive()
                old = self.channel
                if old is not None:
                    await stop_step(old.close, f"close {self.spec.name} to hand it over", old)
                while not self.inbox.empty():  # old deliveries: requeued by the close
                    item = self.inbox.get_nowait()
                    if item is None:  # draining meanwhile: keep the stop request
                        self.inbox.put_nowait(None)
                        break
                forget(self.rooms)
                self.rooms = set()
                await self.open(self.connection)
        finally:
            self.handing_over = False

    async def cancel(self) -> None:
        """Stop taking deliveries (drain), bounded like every broker step of a stop."""
        if self.queue is not None and self.tag:
            await stop_step(lambda: self.queue.cancel(self.tag),  # type: ignore[union-attr]
                            f"cancel {self.spec.name}", self.channel)

    async def close(self) -> None:
        if self.channel is not None:
            await stop_step(self.channel.close, "close a sequencer channel", self.channel)


class Balancer:
    """Heartbeats and handovers for the shard slots of one sequencer process."""

    def __init__(self, slots: list[ShardSlot], interval: float,
                 forget: Callable[[set[str]], None]) -> None:
        self.slots = slots
        self.interval = interval
        self.forget = forget  # drop a handed-over shard's rooms from the numbering
        self.me = uuid.uuid4().hex
        self.roster = Roster(self.me, len(slots), interval)
        self.channel: AbstractRobustChannel | None = None
        self.exchange: aio_pika.abc.AbstractExchange | None = None
        self.task: asyncio.Task[None] | None = None
        self.moving: set[asyncio.Task[None]] = set()

    async def start(self, connection: AbstractRobustConnection) -> None:
        """Bind this process's heartbeat queue and start announcing (call once every
        shard consumer is registered: a member must be able to receive every shard)."""
        channel = await connection.channel(publisher_confirms=False)  # a lost beat is harmless
        self.channel = channel
        self.exchange = await channel.get_exchange(topology.SEQUENCERS, ensure=False)
        queue = await channel.declare_queue(topology.SEQUENCERS_PREFIX + self.me,
                                            exclusive=True, auto_delete=True)
        await queue.bind(topology.SEQUENCERS)
        await queue.consume(self._heard, no_ack=True)
        self.task = asyncio.create_task(self._beat(), name="sequencer-heartbeat")

    async def _heard(self, message: AbstractIncomingMessage) -> None:
        try:
            beat: Any = orjson.loads(message.body)
            member, shards, bye = beat["id"], beat["shards"], bool(beat.get("bye"))
            if not isinstance(member, str) or not isinstance(shards, list) \
                    or not all(isinstance(s, int) for s in shards):
                raise TypeError("bad field types")
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            log.warning("ignoring a malformed sequencer heartbeat: %s", exc)
            return
        self.roster.heard(member, shards, time.monotonic(), bye=bye)

    def _mine(self) -> list[int]:
        """Shards this process is active on (not being handed over), and the roster told."""
        for slot in self.slots:
            if slot.active and not slot.handing_over:
                self.roster.became_active(slot.index, slot.since)
            else:
                self.roster.left(slot.index)
        return sorted(self.roster.mine)

    async def _announce(self, bye: bool = False) -> None:
        assert self.exchange is not None
        body = orjson.dumps({"id": self.me, "shards": [] if bye else self._mine(), "bye": bye})
        await self.exchange.publish(
            aio_pika.Message(body, content_type="application/json",
                             expiration=EXPIRY * self.interval),
            routing_key="", mandatory=False)

    async def _beat(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.interval):  # never hold up the next beat
                    await self._announce()
            except BEAT_ERRORS as exc:  # reconnecting: a beat missed
                log.debug("heartbeat not sent: %s", exc)
            now = time.monotonic()
            metrics.SEQUENCER_MEMBERS.set(len(self.roster.members()))
            for index in self.roster.handovers(now):
                slot = self.slots[index]
                if slot.handing_over or not slot.active:
                    continue
                slot.handing_over = True  # reported as left from now on
                self.roster.handing_over(index, now)
                task = asyncio.create_task(self._move(slot), name=f"handover-{index}")
                self.moving.add(task)
                task.add_done_callback(self.moving.discard)
            await asyncio.sleep(self.interval)

    async def _move(self, slot: ShardSlot) -> None:
        started = time.monotonic()
        try:
            await slot.hand_over(self.forget)
        except BROKER_ERRORS as exc:  # the connection went: it restores the new channel
            log.warning("handing over %s: %s", slot.spec.name, exc)
            return
        except Exception:  # a bug: the other shards and the heartbeats go on
            log.exception("handing over %s failed", slot.spec.name)
            return
        metrics.SEQUENCER_HANDOVERS.inc()
        log.info("handed %s over in %.3f s", slot.spec.name, time.monotonic() - started)

    async def stop(self) -> None:
        """Say goodbye (the others take over at once), stop beating and handing over."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        for task in list(self.moving):
            task.cancel()
        await asyncio.gather(*self.moving, return_exceptions=True)
        if self.channel is not None and self.exchange is not None:
            await stop_step(lambda: self._announce(bye=True), "say goodbye", self.channel)
            await stop_step(self.channel.close, "close the heartbeat channel", self.channel)
