"""Running a job queue: bounded concurrency, retry tiers, dead letters with a reason.

Every worker queue (``notify.messages``, ``push.due``, ``digest.due``, ``email.due``) is
consumed the same way, so the rules live here once:

- a payload that does not parse is parked in the family's dead queue at once, with the
  reason in the ``x-burrow-error`` header: a malformed job never crashes a worker and is
  never retried (retrying cannot fix it);
- :exc:`RetryLater` moves the job to the next back-off tier (the tier at least as long as
  the provider's ``Retry-After``), and after the last tier to the dead queue;
- :exc:`Permanent` parks the job with its reason;
- a database error holds the job and tries again after the reconnect interval (an outage
  must not burn the job's delivery limit);
- any other exception is a bug or a poison job: nack with requeue, and the quorum queue's
  ``x-delivery-limit`` dead-letters it after 10 deliveries.

Publishes wait for the broker's confirm before the delivery is acked: a crash between the
two repeats the job, which every handler tolerates (idempotent by design).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import aio_pika
import orjson
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from pymongo.errors import PyMongoError

from burrow.runtime import metrics
from burrow.runtime.broker import BROKER_ERRORS, stop_step
from burrow.runtime.settings import Settings
from queues import topology

log = logging.getLogger(__name__)

ERROR_HEADER = "x-burrow-error"
ATTEMPT_HEADER = "x-burrow-attempt"
SOURCE_HEADER = "x-burrow-queue"


class Permanent(Exception):
    """The job can never succeed as it is: park it in the dead queue with this reason."""


class RetryLater(Exception):
    """Try the job (or what is left of it: *body*) again after a back-off tier."""

    def __init__(self, reason: str, body: Mapping[str, Any] | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.body = body
        self.retry_after = retry_after


@dataclass(frozen=True)
class Job:
    body: dict[str, Any]
    attempt: int  # 0 the first time, n after n retry tiers
    message_id: str | None
    headers: Mapping[str, Any] = field(default_factory=dict)
    # The exchange it was delivered from, as the broker says (a publisher cannot forge
    # it): a handler may trust a job only from the exchanges its publisher may reach.
    exchange: str = ""


Handler = Callable[[Job], Awaitable[None]]
T = TypeVar("T")


def parse(message: AbstractIncomingMessage) -> Job:
    """The job in *message*; raises :exc:`Permanent` if it is not a JSON object."""
    try:
        body = orjson.loads(message.body)
    except orjson.JSONDecodeError as exc:
        raise Permanent(f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise Permanent("body is not a JSON object")
    headers = dict(message.headers or {})
    attempt = headers.get(ATTEMPT_HEADER, 0)
    return Job(body, attempt if isinstance(attempt, int) and attempt >= 0 else 0,
               message.message_id, headers, message.exchange or "")


def next_tier(retries: tuple[int, ...], attempt: int, retry_after: float | None) -> int | None:
    """Index of the tier a job enters after *attempt* tries, None when they are used up.

    Tiers only get longer: when the provider asks for more patience than the next tier
    gives, the job skips ahead to the first tier that is long enough.
    """
    if attempt >= len(retries):
        return None
    for index in range(attempt, len(retries)):
        if retry_after is None or retries[index] >= retry_after:
            return index
    return len(retries) - 1


class JobQueue:
    """Consumes one queue of a family with at most *concurrency* jobs at once."""

    def __init__(self, queue: str, dead: str, retries: tuple[int, ...], retry_queue:
                 Callable[[int], str] | None, handler: Handler, *, prefetch: int,
                 concurrency: int, hold_interval: float) -> None:
        self.name = queue
        self.dead = dead
        self.retries = retries
        self.retry_queue = retry_queue
        self.handler = handler
        self.prefetch = prefetch
        self.hold_interval = hold_interval
        self.slots = asyncio.Semaphore(concurrency)
        self.tasks: set[asyncio.Task[None]] = set()
        self.channel: AbstractChannel | None = None
        self.jobs: AbstractExchange | None = None
        self.queue: AbstractQueue | None = None
        self.tag: str | None = None

    @classmethod
    def configured(cls, settings: Settings, queue: str, dead: str, retries: tuple[int, ...],
                   retry_queue: Callable[[int], str] | None, handler: Handler) -> JobQueue:
        """A queue with the worker settings' prefetch, concurrency and hold interval."""
        return cls(queue, dead, retries, retry_queue, handler,
                   prefetch=settings.worker_prefetch, concurrency=settings.worker_concurrency,
                   hold_interval=settings.reconnect_interval)

    async def start(self, connection: AbstractRobustConnection,
                    arguments: Mapping[str, Any]) -> None:
        self.channel = await connection.channel()  # publisher confirms on
        await self.channel.set_qos(prefetch_count=self.prefetch)
        self.jobs = await self.channel.get_exchange(topology.JOBS, ensure=False)
        self.queue = await self.channel.declare_queue(self.name, durable=True,
                                                      arguments=dict(arguments))
        self.tag = await self.queue.consume(self._deliver)

    async def _deliver(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.create_task(self._run(message))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, message: AbstractIncomingMessage) -> None:
        async with self.slots:
            try:
                await self._process(message)
            except BROKER_ERRORS as exc:
                # The channel went away: the broker redelivers the job to someone.
                log.warning("%s: job left unacked (%s); it will be redelivered", self.name, exc)

    async def _process(self, message: AbstractIncomingMessage) -> None:
        try:
            job = parse(message)
        except Permanent as exc:
            await self._park(message, message.body, str(exc), 0)
            metrics.JOBS.labels(self.name, "dead").inc()
            return
        started = time.perf_counter()
        while True:
            try:
                await self.handler(job)
            except Permanent as exc:
                await self._park(message, orjson.dumps(job.body), str(exc), job.attempt)
                outcome = "dead"
            except RetryLater as exc:
                outcome = await self._retry(message, job, exc)
            except PyMongoError as exc:
                log.warning("%s: database unavailable, holding job (%s)", self.name, exc)
                await asyncio.sleep(self.hold_interval)
                continue
            except Exception:
                log.exception("%s: job failed; requeued (the delivery limit parks it)",
                              self.name)
                await message.nack(requeue=True)
                outcome = "requeued"
            else:
                await message.ack()
                outcome = "done"
            metrics.JOB_SECONDS.labels(self.name).observe(time.perf_counter() - started)
            metrics.JOBS.labels(self.name, outcome).inc()
            return

    async def _retry(self, message: AbstractIncomingMessage, job: Job, exc: RetryLater) -> str:
        """Into the next tier, or the dead queue after the last; returns which."""
        body = orjson.dumps(dict(exc.body) if exc.body is not None else job.body)
        tier = next_tier(self.retries, job.attempt, exc.retry_after)
        if tier is None or self.retry_queue is None:
            await self._park(message, body, f"gave up after {job.attempt + 1} attempts: {exc}",
                             job.attempt)
            return "dead"
        await self._publish(self.retry_queue(self.retries[tier]), body, message,
                            {ATTEMPT_HEADER: tier + 1, ERROR_HEADER: str(exc)})
        log.info("%s: retry %d in %ds: %s", self.name, tier + 1, self.retries[tier], exc)
        await message.ack()
        return "retried"

    async def _park(self, message: AbstractIncomingMessage, body: bytes, reason: str,
                    attempt: int) -> None:
        log.warning("%s: job parked in %s: %s", self.name, self.dead, reason)
        await self._publish(self.dead, body, message,
                            {ERROR_HEADER: reason[:1000], SOURCE_HEADER: self.name,
                             ATTEMPT_HEADER: attempt})
        await message.ack()

    async def _publish(self, queue: str, body: bytes, original: AbstractIncomingMessage,
                       headers: dict[str, Any]) -> None:
        assert self.jobs is not None
        await self.jobs.publish(aio_pika.Message(
            body, content_type="application/json", message_id=original.message_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            headers={**(original.headers or {}), **headers}), routing_key=queue)

    async def drain(self, timeout: float) -> None:
        """Stop taking jobs, let the running ones finish (up to *timeout*), close.

        Within seconds whatever the broker's state (:func:`stop_step`): with the channel
        gone, the running jobs are cancelled at once, since they could ack nothing and
        the broker has requeued them already."""
        await self._stop_consuming()
        await self._finish(set(self.tasks), timeout)
        await self._close_channel()

    async def _stop_consuming(self) -> None:
        if self.queue is not None and self.tag is not None:
            queue, tag = self.queue, self.tag
            await stop_step(lambda: queue.cancel(tag), f"cancel {self.name}", self.channel)

    async def _close_channel(self) -> None:
        channel = self.channel
        if channel is not None and not channel.is_closed:
            await stop_step(channel.close, f"close {self.name}'s channel")

    async def _finish(self, tasks: set[asyncio.Task[None]], timeout: float) -> None:
        """Wait up to *timeout* for *tasks*; cancel the late ones (their jobs stay
        unacked and are redelivered). No wait when the channel is closed: a job could
        not ack, and its publishes would wait for a reconnect that may never come."""
        if not tasks:
            return
        if self.channel is not None and self.channel.is_closed:
            timeout = 0
        _, late = await asyncio.wait(tasks, timeout=timeout)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)


class BatchJobQueue(JobQueue, Generic[T]):
    """Consumes a queue in batches: whatever has arrived, up to *batch* jobs, is handled
    in one call and acked together.

    For jobs that cost less per batch than one by one (``notify.messages``: one read of
    the memberships of every room in the batch instead of several queries per message).
    *convert* checks one job and makes it what the handler takes; a job it refuses
    (:exc:`Permanent`) is parked alone. The handler either succeeds (the batch is acked),
    meets a database error (the batch is held and tried again after the hold interval),
    or fails otherwise (the batch is requeued; the delivery limit parks a poison job).
    The handler must be idempotent for the whole batch: a crash repeats all of it.

    *linger*: after the first job of a batch arrives, wait up to this long for more
    (until *batch* are in hand). Worth it where the work is cheaper per batch and nobody
    waits on a job: a push is delayed by tens of seconds anyway, and one batch a second
    costs the database a fraction of many small ones.
    """

    def __init__(self, queue: str, dead: str, convert: Callable[[Job], T],
                 handler: Callable[[list[T]], Awaitable[None]], *, batch: int,
                 hold_interval: float, linger: float = 0.0) -> None:
        super().__init__(queue, dead, (), None, self._not_per_job, prefetch=batch,
                         concurrency=1, hold_interval=hold_interval)
        self.convert = convert
        self.batch_handler = handler
        self.linger = linger
        self.inbox: asyncio.Queue[AbstractIncomingMessage | None] = asyncio.Queue()
        self.runner: asyncio.Task[None] | None = None

    @staticmethod
    async def _not_per_job(job: Job) -> None:
        raise AssertionError("a batch queue handles batches")

    async def start(self, connection: AbstractRobustConnection,
                    arguments: Mapping[str, Any]) -> None:
        await super().start(connection, arguments)
        self.runner = asyncio.create_task(self._loop(), name=f"batches-{self.name}")

    async def _deliver(self, message: AbstractIncomingMessage) -> None:
        self.inbox.put_nowait(message)  # bounded by the prefetch count

    async def _loop(self) -> None:
        """Handle batches until :meth:`drain` puts ``None`` (stop) into the inbox."""
        stopping = False
        while not stopping:
            first = await self.inbox.get()
            if first is None:
                return
            batch = [first]
            deadline = asyncio.get_running_loop().time() + self.linger
            while len(batch) < self.prefetch:
                if self.inbox.empty():
                    left = deadline - asyncio.get_running_loop().time()
                    if left <= 0:
                        break
                    try:
                        message = await asyncio.wait_for(self.inbox.get(), left)
                    except TimeoutError:
                        break
                else:
                    message = self.inbox.get_nowait()
                if message is None:
                    stopping = True
                    break
                batch.append(message)
            try:
                await self._batch(batch)
            except BROKER_ERRORS as exc:
                log.warning("%s: batch of %d left unacked (%s); it will be redelivered",
                            self.name, len(batch), exc)

    async def _batch(self, messages: list[AbstractIncomingMessage]) -> None:
        kept: list[AbstractIncomingMessage] = []
        items: list[T] = []
        for message in messages:
            try:
                items.append(self.convert(parse(message)))
            except Permanent as exc:
                await self._park(message, message.body, str(exc), 0)
                metrics.JOBS.labels(self.name, "dead").inc()
                continue
            kept.append(message)
        if not kept:
            return
        started = time.perf_counter()
        while True:
            try:
                await self.batch_handler(items)
            except PyMongoError as exc:
                log.warning("%s: database unavailable, holding a batch of %d (%s)",
                            self.name, len(kept), exc)
                await asyncio.sleep(self.hold_interval)
                continue
            except BROKER_ERRORS:
                raise
            except Exception:
                log.exception("%s: batch of %d failed; requeued (the delivery limit parks "
                              "a poison job)", self.name, len(kept))
                await kept[-1].nack(multiple=True, requeue=True)  # parked ones are acked
                outcome = "requeued"
            else:
                await kept[-1].ack(multiple=True)  # batches run one after the other
                outcome = "done"
            each = (time.perf_counter() - started) / len(kept)
            for _ in kept:
                metrics.JOB_SECONDS.labels(self.name).observe(each)
            metrics.JOBS.labels(self.name, outcome).inc(len(kept))
            return

    async def drain(self, timeout: float) -> None:
        """Stop taking jobs, finish the batch in hand and what was prefetched, close."""
        await self._stop_consuming()
        if self.runner is not None:
            self.inbox.put_nowait(None)
            await self._finish({self.runner}, timeout)
        await self._close_channel()


async def publish_job(exchange: AbstractExchange, queue: str, body: Mapping[str, Any],
                      message_id: str) -> None:
    """Put a job into *queue* (a due, delay or retry queue) through ``burrow.jobs``."""
    await exchange.publish(aio_pika.Message(
        orjson.dumps(body), content_type="application/json", message_id=message_id,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=queue)
