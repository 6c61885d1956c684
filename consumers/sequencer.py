"""The sequencer: consumes the shard queues ``chat.seq.N``, stores, fans out, acks.

For each shard it takes what the broker has delivered (up to ``BURROW_SEQUENCER_BATCH``
messages) as one batch: number per room and store with one ordered ``insert_many``,
deduplicating by (room, sender, client_id) when a unique index refuses a send
(:func:`burrow.core.sequencing.store_batch`), publish every message to ``chat.fanout`` and
the acks to each gateway through ``chat.reply`` (one message per gateway and batch),
wait for the broker's confirms, and only then ack the batch to the broker. A crash anywhere before
that ack means redelivery, which dedup turns into the same seqs: at-least-once inside,
idempotent at every step (G1, G3, G5).

Each shard queue has a single active consumer: every sequencer process subscribes to
every shard; the broker activates one and keeps the others waiting, to take over at once
when its connection drops (G2 under failover). The processes spread the shards among
themselves through heartbeats and handovers (:mod:`consumers.shard_balance`,
:mod:`burrow.core.shard_plan`). The unique (room, seq) index fences a writer that still
believes it is active.

Metrics are observed here, in the adapter (:mod:`burrow.core.sequencing` stays free of I/O):
batch sizes, store time, messages and duplicates, per-shard lag and shard ownership.
AMQP 0-9-1 does not tell a single-active consumer that it became active, so a shard
counts as active here from its first delivery until its channel closes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aio_pika
import orjson
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage, AbstractRobustChannel
from pymongo.errors import PyMongoError

from burrow.core import events, ids, lifecycle
from burrow.core.envelopes import (
    ACKS_TYPE,
    BATCHED_ACKS,
    CHANGE_KIND,
    STORED_AT,
    EnvelopeError,
    Send,
    encode_acks,
)
from burrow.core.lifecycle import Refused
from burrow.core.sequencing import Clash, Numbering, Plan, dedup_key, store_batch
from burrow.runtime import metrics
from burrow.runtime.broker import BROKER_ERRORS, stop_step
from burrow.runtime.process import Runtime
from burrow.runtime.settings import Settings
from burrow.storage import database
from burrow.storage.attachments import AttachmentStore, Limits
from burrow.storage.changes import ChangeStore
from burrow.storage.messages import MessageStore
from burrow.storage.room_filters import RoomFilterStore
from burrow.storage.rooms import RoomStore
from burrow.storage.s3attachments import attachment_store
from consumers import mention_check, prepublish, send_checks
from consumers.shard_balance import Balancer, ShardSlot
from queues import topology
from queues.events import EventPublisher

log = logging.getLogger(__name__)

A = TypeVar("A")
R = TypeVar("R")
LAG_INTERVAL = 1.0  # seconds between updates of burrow_sequencer_lag_seconds


@dataclass(frozen=True)
class Reply:
    """Where the ack of one send goes: the gateway's queue and the send's correlation id."""

    delivery: AbstractIncomingMessage
    reply_to: str | None
    correlation_id: str | None
    batched: bool  # the sender takes its acks batched (a gateway)

    @classmethod
    def to(cls, message: AbstractIncomingMessage) -> Reply:
        return cls(message, message.reply_to, message.correlation_id,
                   bool((message.headers or {}).get(BATCHED_ACKS)))


class Sequencer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.numbering = Numbering()
        self.channels: list[AbstractRobustChannel] = []  # the publisher's
        self.tasks: list[asyncio.Task[None]] = []
        self.slots: list[ShardSlot] = []  # per shard: channel, consumer, inbox
        self.balancer: Balancer | None = None
        self.store: MessageStore | None = None
        self.changes: ChangeStore | None = None
        self.rooms: RoomStore | None = None
        self.files: AttachmentStore | None = None
        self.fanout: AbstractExchange | None = None
        self.reply: AbstractExchange | None = None
        self.retry_interval = settings.reconnect_interval
        # Per shard index: when the oldest batch stored but not yet confirmed as fanned
        # out was stored.
        self.unconfirmed: dict[int, float] = {}
        self._lag: asyncio.Task[None] | None = None
        self.prepublish: prepublish.Prepublish | None = None  # blocklists and the hook
        self.events: EventPublisher | None = None  # message.* events (docs/events.md)

    async def start(self, runtime: Runtime) -> None:
        db = database.database(runtime.db)
        self.store = MessageStore(db)
        # GridFS or S3: a deleted message's files go from where they are
        self.files = attachment_store(db, Limits(self.settings.attachment_max_bytes,
                                                 self.settings.attachment_types,
                                                 self.settings.attachment_pending_max),
                                      self.settings.s3_config())
        self.changes = ChangeStore(db, self.files)
        self.rooms = RoomStore(db)
        self.prepublish = prepublish.Prepublish(self.settings, self.store, RoomFilterStore(db))
        await database.ensure_indexes([self.store, self.changes], self.retry_interval,
                                      "sequencer")
        connection = await runtime.broker.opened()
        await self.prepublish.start(connection)
        publisher = await connection.channel()  # publisher confirms are on by default
        if self.settings.events.patterns:
            events_out = EventPublisher.configured(self.settings, runtime.broker)
            self.events = events_out if events_out.wants_any("message.") else None
        self.channels.append(publisher)
        self.fanout = await publisher.get_exchange(topology.FANOUT, ensure=False)
        self.reply = await publisher.get_exchange(topology.REPLY, ensure=False)
        topo = topology.build(self.settings.shards)
        for index in range(self.settings.shards):
            slot = ShardSlot(index, topo.queue(topology.shard_queue(index)),
                             self.settings.sequencer_batch, self._inactive)
            self._inactive(index)
            self.slots.append(slot)
            await slot.open(connection)
            self.tasks.append(asyncio.create_task(self._run(slot),
                                                  name=f"sequencer-{slot.spec.name}"))
        self._lag = asyncio.create_task(self._export_lag(), name="sequencer-lag")
        # The shard channels may have closed with the connection without saying so: after
        # a reconnect this process may be a standby everywhere until deliveries say not.
        connection.reconnect_callbacks.add(self._reconnected)
        # every shard consumer registered: join the others (docs/scaling.md)
        self.balancer = Balancer(self.slots, self.settings.sequencer_heartbeat,
                                 self.numbering.forget)
        await self.balancer.start(connection)

    def _reconnected(self, *_: object) -> None:
        for slot in self.slots:
            slot.inactive()

    def _inactive(self, index: int) -> None:
        """Shard *index* may have another active consumer now (its channel closed)."""
        self.unconfirmed.pop(index, None)  # redelivered to whoever is active: theirs
        metrics.SEQUENCER_SHARD_ACTIVE.labels(str(index)).set(0)

    async def _export_lag(self) -> None:
        """Keep ``burrow_sequencer_lag_seconds`` current, also while a publish hangs."""
        while True:
            now = time.time()
            for index in range(self.settings.shards):
                stored_at = self.unconfirmed.get(index)
                metrics.SEQUENCER_LAG_SECONDS.labels(str(index)).set(
                    0.0 if stored_at is None else max(0.0, now - stored_at))
            await asyncio.sleep(LAG_INTERVAL)

    async def _run(self, slot: ShardSlot) -> None:
        """Process batches until :meth:`drain` puts ``None`` (stop) into the inbox.

        A batch is processed under the slot's lock: a handover waits for it to be acked.
        Deliveries of a channel closed since (a handover's) are skipped: the close gave
        them back to the queue, and whoever is active now stores them.
        """
        shard, inbox = slot.spec.name, slot.inbox
        stopping = False
        while not stopping:
            first = await inbox.get()
            if first is None:
                return
            async with slot.lock:
                if not slot.current(first):
                    continue
                batch = [first[1]]
                while len(batch) < self.settings.sequencer_batch and not inbox.empty():
                    item = inbox.get_nowait()
                    if item is None:
                        stopping = True
                        break
                    if slot.current(item):
                        batch.append(item[1])
                await self._batch(slot, shard, batch)

    async def _batch(self, slot: ShardSlot, shard: str,
                     batch: list[AbstractIncomingMessage]) -> None:
        """Process one batch; whatever goes wrong gives it back, and the shard goes on."""
        index = slot.index
        metrics.SEQUENCER_BATCH_SIZE.observe(len(batch))
        try:
            await self._process(batch, index, slot.rooms)
        except BROKER_ERRORS as exc:
            # A channel went away. If it was the shard's, the broker redelivers the
            # batch to whichever sequencer is active next; if only the publisher's,
            # the batch is given back here. Dedup makes either harmless.
            log.warning("%s: batch of %d given back: %s", shard, len(batch), exc)
            await self._give_back(batch)
        except Clash as exc:
            # Seqs taken attempt after attempt: another sequencer writes these rooms
            # (a split brain the unique index fences). Give the batch back and pause.
            log.error("%s: giving a batch of %d back: %s", shard, len(batch), exc)
            await self._give_back(batch)
            await asyncio.sleep(self.retry_interval)
        except Exception:
            # A bug. The shard must not stop for it: nothing else would take its
            # deliveries while this process holds them. Give the batch back and go on.
            log.exception("%s: batch of %d failed; given back", shard, len(batch))
            await self._give_back(batch)
            await asyncio.sleep(self.retry_interval)

    async def _give_back(self, batch: list[AbstractIncomingMessage]) -> None:
        try:
            await batch[-1].nack(multiple=True, requeue=True)
        except BROKER_ERRORS:
            pass  # the channel is gone: the broker requeues the batch anyway

    async def _process(self, batch: list[AbstractIncomingMessage], index: int,
                       rooms: set[str] | None = None) -> None:
        assert self.store is not None and self.files is not None  # started
        assert self.prepublish is not None
        sends: list[tuple[Send, Reply]] = []
        for message in batch:
            try:
                send = Send.from_json(message.body, self.settings.max_body_bytes)
            except EnvelopeError as exc:
                log.error("rejecting malformed send %s: %s", message.message_id, exc)
                await message.reject(requeue=False)  # dead-letters into chat.seq.dead
                continue
            sends.append((send, Reply.to(message)))
        refused: list[tuple[Send, Reply, Refused]] = []
        read: dict[str, dict[str, Any]] = {}  # the changes' targets, as _decide read them
        if any(send.kind is not None for send, _ in sends):  # changes: decide first
            sends, refused, read = await self._retrying(self._decide, sends)
        if any(send.reply_to for send, _ in sends):  # one check; no I/O without
            sends, orphans = await self._retrying(
                functools.partial(send_checks.thread, self.store), sends)
            refused += orphans
        if any(send.mentions for send, _ in sends):  # one check; no I/O without
            sends, unmentionable = await self._retrying(self._mentions, sends)
            refused += unmentionable
        # blocklists and the moderation hook (docs/moderation.md); no I/O when all off
        sends, moderated = await self._retrying(self.prepublish.check, sends)
        refused += moderated
        if refused and any(send.reply_to for send, _ in sends):  # in memory only
            sends, orphans = send_checks.orphans(sends, lifecycle.Lost(s for s, _, _ in refused))
            refused += orphans
        if any(send.attachments for send, _ in sends):  # one check; no I/O without
            sends, unclaimable = await self._retrying(
                functools.partial(send_checks.claim, self.store, self.files), sends)
            refused += unclaimable
        if sends:
            if rooms is not None:  # forgotten by the numbering if the shard is handed over
                rooms.update(send.room for send, _ in sends)
            plan = await self._store(sends)
            roots = {o.stored.thread for o in plan.outcomes if o.stored.thread}
            if roots:  # stored now or before: count again, guarded (MessageStore.count_replies)
                assert self.store is not None
                await self._retrying(self.store.count_replies, roots)
            changes = [o.stored for o in plan.outcomes if o.stored.kind is not None]
            if changes:  # stored now or before: (re)apply to their targets, guarded
                assert self.changes is not None
                await self._retrying(functools.partial(self.changes.apply, known=read),
                                     changes)
            self.unconfirmed.setdefault(index, time.time())  # an older given-back one stays
            metrics.SEQUENCER_MESSAGES.inc(len(plan.new))
            duplicates = sum(1 for outcome in plan.outcomes if outcome.duplicate)
            if duplicates:
                metrics.SEQUENCER_DUPLICATES.inc(duplicates)
            if log.isEnabledFor(logging.DEBUG):  # per message: only when asked for
                for outcome in plan.outcomes:
                    stored = outcome.stored
                    log.debug("duplicate dropped" if outcome.duplicate else "stored",
                              extra={"msg_id": stored.id, "room": stored.room,
                                     "seq": stored.seq, "client_id": stored.client_id,
                                     "user": stored.sender, "shard": index})
            if refused:
                await self._refuse(refused)
            await self._publish(plan)
            self.unconfirmed.pop(index, None)
        elif refused:
            await self._refuse(refused)
        await batch[-1].ack(multiple=True)

    async def _retrying(self, step: Callable[[A], Awaitable[R]], arg: A) -> R:
        """``step(arg)``, retried while the database is unreachable."""
        while True:
            try:
                return await step(arg)
            except PyMongoError as exc:
                log.warning("database unavailable, retrying: %s", exc)
                await asyncio.sleep(self.retry_interval)

    async def _decide(self, sends: list[tuple[Send, Reply]]
                      ) -> tuple[list[tuple[Send, Reply]], list[tuple[Send, Reply, Refused]],
                                 dict[str, dict[str, Any]]]:
        """Which changes of the batch are allowed (:func:`lifecycle.decide`), in order,
        and the target documents read for that (apply uses them: no second read).

        A change stored already (a redelivery, a retried client_id) is not decided
        again: it goes on to be found as a duplicate and answered with its seq. Its
        target is read all the same: the dedup lookup and the targets' reads go out
        together, in one round trip instead of four in a row.
        """
        assert self.store is not None and self.changes is not None and self.rooms is not None
        changes = [send for send, _ in sends if send.kind is not None]
        stored, read = await asyncio.gather(
            self.store.existing([dedup_key(s) for s in changes]),
            self.changes.read((s.target for s in changes if s.target),
                              (s.target for s in changes
                               if s.target and s.kind == "reaction")))
        targets = read.targets
        now_ms = int(time.time() * 1000)
        allowed: list[tuple[Send, Reply]] = []
        refused: list[tuple[Send, Reply, Refused]] = []
        for send, reply in sends:
            if send.kind is None or dedup_key(send) in stored:
                allowed.append((send, reply))
                continue
            target = targets.get(send.target or "")
            role = None
            if (send.kind == "delete" and target is not None and not send.admin
                    and target.sender != send.sender):
                role = await self.rooms.role(send.room, send.sender)
            try:
                allowed.append((lifecycle.decide(
                    send, target, role, now_ms, self.settings.edit_window,
                    self.settings.max_reactions), reply))
            except Refused as exc:
                refused.append((send, reply, exc))
        return allowed, refused, read.docs

    async def _mentions(self, sends: list[tuple[Send, Reply]]
                        ) -> tuple[list[tuple[Send, Reply]], list[tuple[Send, Reply, Refused]]]:
        """Refuse sends mentioning non-members, or @room in a large room (one read)."""
        assert self.rooms is not None and self.store is not None
        return await mention_check.check(self.rooms, self.store,
                                         self.settings.room_mention_max, sends)

    async def _store(self, sends: list[tuple[Send, Reply]]) -> Plan[Reply]:
        """Number and store *sends*, retrying while the database is unreachable."""
        assert self.store is not None
        while True:
            started = time.perf_counter()
            try:
                plan = await store_batch(self.numbering, sends, self.store,
                                         int(time.time() * 1000), lambda: uuid.uuid4().hex)
            except PyMongoError as exc:
                log.warning("database unavailable, retrying a batch of %d: %s", len(sends), exc)
                await asyncio.sleep(self.retry_interval)
                continue
            metrics.SEQUENCER_STORE_SECONDS.observe(time.perf_counter() - started)
            return plan

    async def _refuse(self, refused: Sequence[tuple[Send, Reply, Refused]]) -> None:
        """Answer each refused change (or unclaimable send) with an error frame in place
        of its ack (batched per gateway like acks), and wait for the confirms."""
        await asyncio.gather(*self._answers(
            (reply, orjson.dumps({"type": "error", "code": exc.code, "message": exc.message,
                                  "client_id": send.client_id, "room": send.room}))
            for send, reply, exc in refused))

    async def _publish(self, plan: Plan[Reply]) -> None:
        """Fan every message out, answer every sender, and wait for all the confirms.

        Each fan-out message carries the time it was stored (epoch seconds; this runs
        right after the store) in its ``STORED_AT`` header, for the gateways'
        store-to-delivery latency. The batch's ``message.*`` backend events
        (:mod:`queues.events`) go out with them, confirmed before the batch is acked
        (at least once), but a failed one is counted, never raised: an event never holds
        up or fails a send.
        """
        assert self.fanout is not None
        stored_at = time.time()
        publishes: list[Awaitable[object]] = []
        for outcome in plan.outcomes:
            stored = outcome.stored
            headers: dict[str, Any] = {"seq": stored.seq, STORED_AT: stored_at}
            if stored.kind is not None:
                headers[CHANGE_KIND] = stored.kind  # gateways show it to v1 receivers
            publishes.append(self.fanout.publish(
                aio_pika.Message(stored.frame(), content_type="application/json",
                                 headers=headers,
                                 message_id=stored.id,
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                ids.message_key(stored.room), mandatory=False))
        publishes += self._answers((o.ref, o.stored.ack_frame()) for o in plan.outcomes)
        if self.events is not None:  # confirmed with the batch, never raising (docs/events.md)
            publishes.append(self.events.publish(events.message(o.stored)
                                                 for o in plan.outcomes))
        await asyncio.gather(*publishes)

    def _answers(self, answers: Iterable[tuple[Reply, bytes]]) -> list[Awaitable[object]]:
        """The publishes that take each frame (an ack or an error) to its sender: one
        message per gateway for the whole batch (:func:`encode_acks`), one message per
        send to senders that did not ask for that (backend services)."""
        assert self.reply is not None
        publishes: list[Awaitable[object]] = []
        batched: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
        for reply, frame in answers:
            if not reply.reply_to:
                continue
            if reply.batched and reply.correlation_id:
                batched[reply.reply_to].append((reply.correlation_id, frame))
            else:
                publishes.append(self.reply.publish(
                    aio_pika.Message(frame, content_type="application/json",
                                     correlation_id=reply.correlation_id),
                    reply.reply_to, mandatory=False))
        for reply_to, frames in batched.items():
            publishes.append(self.reply.publish(
                aio_pika.Message(encode_acks(frames), content_type="text/plain",
                                 type=ACKS_TYPE),
                reply_to, mandatory=False))
        return publishes

    async def drain(self) -> None:
        """Stop taking deliveries, finish the batches in hand, and close the channels.

        Messages prefetched but not yet in a batch are processed too; whatever the broker
        has not delivered stays in the shard queue for the next active sequencer.
        """
        # Every broker step bounded or skipped (stop_step): the broker may be gone for
        # good, and a robust channel's call would wait for it. With the shard channels
        # closed, the batches in hand can ack nothing and are redelivered: cancel them.
        if self.balancer is not None:  # goodbye first: the others plan without us at once
            await self.balancer.stop()
        for slot in self.slots:
            await slot.cancel()
        for slot in self.slots:
            slot.inbox.put_nowait(None)
        if any(channel.is_closed for channel in self.channels) or any(
                slot.channel is not None and slot.channel.is_closed for slot in self.slots):
            for task in self.tasks:
                task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self._lag is not None:
            self._lag.cancel()
            await asyncio.gather(self._lag, return_exceptions=True)
        for slot in self.slots:
            slot.inactive()
            await slot.close()
        for channel in self.channels:
            await stop_step(channel.close, "close a sequencer channel", channel)
        if self.events is not None:
            await self.events.close()
        if self.prepublish is not None:
            await self.prepublish.stop()
        if self.files is not None:
            await self.files.close()
