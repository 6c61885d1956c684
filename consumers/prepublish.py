"""The sequencer's pre-publish moderation (docs/moderation.md, "Pre-publish hook").

:meth:`Prepublish.check` takes a batch's sends (after the change, thread and mention
checks, before uploads are claimed and anything is numbered) and returns those to store,
some with a replaced body, and those refused (``rejected`` with the reason, or the
retryable ``moderation_unavailable``), which the sequencer answers with an error frame
in place of an ack: nothing stored, no seq used. Messages and edits are checked (an edit
carries new text); deletes and reactions are not.

Three sources, in this order: the global blocklist (``BURROW_FILTER_WORDS``,
``BURROW_FILTER_FILE``, ``BURROW_FILTER_ACTION``), the room's own filter, then the
backend moderation service (``BURROW_MODERATION_HOOK``: every room, or the rooms whose
filter asks), asked once per batch over AMQP with the messages still allowed. The rooms'
filters are read from the database every ``BURROW_FILTER_REFRESH`` seconds by a
background task, never per batch: with no global blocklist, the hook off and no room
filter, a batch costs one attribute test here and no broker or database work.

A send stored already (a redelivery, a client retrying its client_id) is never refused:
it is answered with its stored seq, as dedup promises. Only the refused sends are looked
up (one read, in a batch that refuses something): a read of every checked batch's keys
(one query per sender on the embedded database) cost more than the checks themselves. A refused send is not stored, so its retry (same client_id) is checked
again and may pass: a blocklist or the service may have changed meanwhile.

The service: a request on ``moderation.ask`` (routed to the quorum queue
``moderation.hook``) with ``reply_to`` = this sequencer's own answer queue and a fresh
``correlation_id``; the service answers on ``moderation.answer`` with that routing key
and correlation id. One request per batch, bounded by ``BURROW_MODERATION_HOOK_TIMEOUT_MS``
(publish and answer together; the request expires in the queue after that too). An
answer after that finds no one waiting and is dropped. A timeout, a publish the broker
refuses or cannot route (no queue, a full one), or an unusable answer applies
``BURROW_MODERATION_HOOK_FAILURE`` to every message asked about; a missing or malformed
decision for one message, to that message.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from pathlib import Path
from typing import Any, TypeVar

import aio_pika
import orjson
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)
from pymongo.errors import PyMongoError

from burrow.core import prepublish
from burrow.core.envelopes import Send
from burrow.core.lifecycle import Refused
from burrow.core.prepublish import ALLOW, Blocklist, Decision, FilterError, RoomFilter
from burrow.core.sequencing import dedup_key
from burrow.runtime.broker import BROKER_ERRORS
from burrow.runtime.settings import ConfigError, Settings
from burrow.storage.messages import MessageStore
from burrow.storage.room_filters import RoomFilterStore
from queues import topology

log = logging.getLogger(__name__)

R = TypeVar("R")
REJECTED = "rejected"
UNAVAILABLE = "moderation_unavailable"
CHECKED_KINDS = (None, "edit")  # a message, or an edit (new text)
#: What fail-closed makes of an undecided message (told apart by identity: a service's
#: own reject never is this object, whatever its reason says).
FAILED_CLOSED = Decision("reject", UNAVAILABLE)


def global_blocklist(settings: Settings) -> Blocklist:
    """The deployment's blocklist; raises :exc:`ConfigError` naming the bad entry."""
    try:
        text = Path(settings.filter_file).read_text() if settings.filter_file else ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"BURROW_FILTER_FILE: cannot read {settings.filter_file}: "
                          f"{exc}") from None
    try:
        return Blocklist.parse(settings.filter_words, text)
    except FilterError as exc:
        raise ConfigError(f"BURROW_FILTER_FILE {settings.filter_file}: {exc}") from None


class Prepublish:
    """Blocklists and the moderation service, for one sequencer process."""

    def __init__(self, settings: Settings, messages: MessageStore,
                 filters: RoomFilterStore) -> None:
        self.settings = settings
        self.messages = messages
        self.filters = filters
        self.blocklist = global_blocklist(settings)
        self.hook = settings.moderation_hook
        self.timeout = settings.moderation_hook_timeout_ms / 1000
        self.fail_open = settings.moderation_hook_failure == "open"
        self.rooms: dict[str, RoomFilter] = {}  # the rooms that have a filter
        self.channel: AbstractChannel | None = None
        self.ask: AbstractExchange | None = None
        self.answers = ""  # this process's answer queue (its routing key too)
        self.pending: dict[str, asyncio.Future[bytes]] = {}
        self._refresh: asyncio.Task[None] | None = None

    async def start(self, connection: AbstractRobustConnection) -> None:
        """Open the hook's channel and answer queue (if the hook may be asked) and start
        reading the rooms' filters."""
        if self.hook != "off":
            channel = await connection.channel(on_return_raises=True)  # unroutable raises
            self.channel = channel
            self.ask = await channel.get_exchange(topology.HOOK_ASK, ensure=False)
            self.answers = topology.HOOK_ANSWERS_PREFIX + uuid.uuid4().hex
            # Exclusive: gone with this process. A robust channel declares, binds and
            # consumes it again, under the same name, after a reconnect.
            queue = await channel.declare_queue(self.answers, exclusive=True,
                                                auto_delete=True, durable=False)
            await queue.bind(topology.HOOK_ANSWER, self.answers)
            await queue.consume(self._answered, no_ack=True)
        await self.load_filters()
        self._refresh = asyncio.create_task(self._refreshing(), name="room-filters")

    async def stop(self) -> None:
        if self._refresh is not None:
            self._refresh.cancel()
            await asyncio.gather(self._refresh, return_exceptions=True)
        for waiting in self.pending.values():
            waiting.cancel()

    async def load_filters(self) -> None:
        """Read every room's filter; keep the ones read before if the database fails.
        A filter that does not parse (edited by hand) is skipped with an error log."""
        try:
            docs = await self.filters.all()
        except PyMongoError as exc:
            log.warning("room filters not refreshed: %s", exc)
            return
        rooms: dict[str, RoomFilter] = {}
        for doc in docs:
            try:
                found = RoomFilter.from_document(doc)
            except FilterError as exc:
                log.error("room %s: its filter is skipped: %s", doc.get("_id"), exc)
                continue
            if found.blocklist or (found.hook and self.hook == "rooms"):
                rooms[str(doc["_id"])] = found
        self.rooms = rooms

    async def _refreshing(self) -> None:
        while True:
            await asyncio.sleep(self.settings.filter_refresh)
            await self.load_filters()

    def _off(self) -> bool:
        """Nothing to check in any room: no blocklist, no hook for every room, no filter."""
        return not self.blocklist and self.hook != "on" and not self.rooms

    async def check(self, sends: list[tuple[Send, R]]
                    ) -> tuple[list[tuple[Send, R]], list[tuple[Send, R, Refused]]]:
        """The sends to store (some with a new body) and the refused ones, in order."""
        if self._off():
            return sends, []
        plans: dict[int, tuple[list[tuple[Blocklist, str]], bool]] = {}
        for i, (send, _) in enumerate(sends):
            if send.kind not in CHECKED_KINDS:
                continue
            room = self.rooms.get(send.room)
            checks = [(self.blocklist, self.settings.filter_action)] if self.blocklist else []
            if room is not None and room.blocklist:
                checks.append((room.blocklist, room.action))
            ask = self.hook == "on" or (self.hook == "rooms" and room is not None and room.hook)
            if checks or ask:
                plans[i] = (checks, ask)
        if not plans:
            return sends, []
        decisions: dict[int, Decision] = {}
        asking: dict[int, str] = {}  # index -> the body the service is asked about
        for i, (checks, ask) in plans.items():
            send = sends[i][0]
            decision = prepublish.first_decision(send.body, checks)
            decisions[i] = decision
            if ask and decision.action != "reject":
                asking[i] = decision.body if decision.body is not None else send.body
        if asking:
            decisions.update(await self._ask(sends, asking))
        # A retry of a send stored before (under other rules, or before an outage) keeps
        # its seq: only refusals are looked up, so a batch nobody is refused in reads
        # nothing (a replaced body of a stored send is dropped by the dedup anyway).
        refusing = [i for i, decision in decisions.items() if decision.action == "reject"]
        if refusing:
            stored = await self.messages.existing([dedup_key(sends[i][0]) for i in refusing])
            decisions.update({i: ALLOW for i in refusing if dedup_key(sends[i][0]) in stored})
        allowed: list[tuple[Send, R]] = []
        refused: list[tuple[Send, R, Refused]] = []
        for i, (send, reply) in enumerate(sends):
            decision = decisions.get(i, ALLOW)
            if decision.action == "reject":
                refused.append((send, reply, Refused(
                    UNAVAILABLE, "the moderation service did not answer: retry")
                    if decision is FAILED_CLOSED else Refused(REJECTED, decision.reason)))
            elif decision.action == "replace" and decision.body is not None:
                allowed.append((dataclasses.replace(send, body=decision.body), reply))
            else:
                allowed.append((send, reply))
        return allowed, refused

    def _failed(self) -> Decision:
        """What the failure policy makes of a message the service did not decide."""
        return ALLOW if self.fail_open else FAILED_CLOSED

    async def _ask(self, sends: list[tuple[Send, Any]], asking: dict[int, str]
                   ) -> dict[int, Decision]:
        """The service's decisions for *asking* (index -> body), the failure policy's
        for any it did not give."""
        items = []
        for i, body in asking.items():
            send = sends[i][0]
            item: dict[str, Any] = {"ref": str(i), "room": send.room, "sender": send.sender,
                                    "client_id": send.client_id,
                                    "kind": send.kind or "message", "body": body}
            if send.kind == "edit":
                item["target"] = send.target
            items.append(item)
        refs = [str(i) for i in asking]
        try:
            raw = await self._request(orjson.dumps(prepublish.hook_request(items)))
            found = prepublish.parse_answer(raw, refs, self.settings.max_body_bytes)
        except (TimeoutError, FilterError) as exc:
            log.warning("moderation hook: %s for %d messages; failing %s",
                        exc or "no answer in time", len(asking),
                        "open" if self.fail_open else "closed")
            found = {}
        except BROKER_ERRORS as exc:  # the broker refused, could not route, or went away
            log.warning("moderation hook: %r for %d messages; failing %s", exc,
                        len(asking), "open" if self.fail_open else "closed")
            found = {}
        return {i: found.get(str(i)) or self._failed() for i in asking}

    async def _request(self, body: bytes) -> bytes:
        """Publish one request and wait for its answer, within the timeout."""
        assert self.ask is not None
        correlation = uuid.uuid4().hex
        waiting: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.pending[correlation] = waiting
        try:
            async with asyncio.timeout(self.timeout):
                await self.ask.publish(
                    aio_pika.Message(body, content_type="application/json",
                                     correlation_id=correlation, message_id=correlation,
                                     reply_to=self.answers, type=prepublish.SCHEMA,
                                     expiration=self.timeout),
                    topology.HOOK_QUEUE, mandatory=True)
                return await waiting
        finally:
            self.pending.pop(correlation, None)

    async def _answered(self, message: AbstractIncomingMessage) -> None:
        """An answer: to the request still waiting for it, else (late) dropped."""
        waiting = self.pending.get(message.correlation_id or "")
        if waiting is None or waiting.done():
            log.info("moderation hook: a late or unknown answer dropped (%s)",
                     message.correlation_id)
            return
        waiting.set_result(message.body)

