"""The notifier: schedules pushes for stored messages and sends them when they are due.

``notify.messages`` receives every stored message (bound to ``chat.fanout``). The
notifier takes them in batches (up to ``BURROW_NOTIFY_BATCH``) and decides for the whole
batch from one read of its rooms' memberships (:mod:`burrow.core.notify_plan`): for each
member other than the sender who has not read it and has no push waiting for the room,
it puts a job into ``push.delay.<BURROW_PUSH_DELAY>``; later messages of the room ride
along with that job (collapse). A member mentioned by a message (by name or @room) gets
a job straight into ``push.due`` as well, neither delayed nor swallowed by that claim
(:func:`burrow.core.notify_plan.plan_mentions`); it marks the member pushed up to the
mention, so the room's delayed push does not tell the same message again. A busy room whose members all have a push waiting costs
that one read per batch and nothing else. A member who blocks a message's sender is
neither scheduled nor, when the push is due, told of it (one read per batch of the
blocks naming its senders; :mod:`burrow.core.blocks`). It schedules for members who look online too:
whether a push is wanted is decided when it is due (presence, read pointer, settings),
not now, so a laptop closed seconds after a message still gets one. The same pass
schedules digests (``digest.delay.<period>``) for members with an email and digests on,
with one read of those users.

The notifier runs in a process of its own (:mod:`burrow.devstack.plan`, compose): a
slow database or a provider outage backs up its queues, never the sequencer's.

``push.due`` jobs, when they come due, are re-checked (the jobs running at once share
one write that clears their claims and one presence read): nothing is sent if the member read
the room meanwhile, turned pushes off, or is active right now on some gateway (connected
and sent a frame within ``BURROW_IDLE_AFTER``: an idle desktop does not eat the phone's
notification), nor when the member's rule for the room holds it back (level "nothing",
or "mentions" and nothing unread mentions them or replies to one of their messages) or
a snooze or the user's quiet hours do (:mod:`burrow.core.notify_rules`; dropped, not
delayed: the digest tells). Otherwise one notification per room (count + latest preview, bodies hidden
if the user turned previews off) goes to every device of the member. Per device: dead
tokens are deleted, 429/5xx go to the retry tiers (only the devices that failed), and a
confirmed device is recorded so a redelivered job never pushes it twice; a device whose
send was cut off by a crash is pushed again with the same collapse id and notification
id, which replace the first on the device (see docs/queues.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from aio_pika.abc import AbstractExchange
from aiodataloader import DataLoader

from burrow.core import events, ids, notify_plan, notify_rules
from burrow.core.envelopes import Stored
from burrow.core.mentions import BadMentions
from burrow.core.mentions import parse as parse_mentions
from burrow.core.notify_plan import Notice
from burrow.push import Device, Notification, Outcome, Result, Sender
from burrow.push.senders import build_senders
from burrow.runtime import metrics
from burrow.runtime.broker import stop_step
from burrow.runtime.process import Runtime
from burrow.runtime.settings import Settings
from burrow.storage import database
from burrow.storage.blocks import BlockStore
from burrow.storage.devices import DeviceStore
from burrow.storage.notify import NotifyStore, Unread
from burrow.storage.presence import PresenceStore
from burrow.storage.users import UserStore
from queues import topology
from queues.events import EventPublisher
from queues.jobs import BatchJobQueue, Job, JobQueue, Permanent, RetryLater, publish_job

log = logging.getLogger(__name__)

PREVIEW_CHARS = 120
DRAIN_TIMEOUT = 10.0
# Seconds notify.messages waits for more stored messages before deciding on a batch:
# a push waits BURROW_PUSH_DELAY (30 s) anyway, and at 300 messages/s one batch a second
# costs the database ~1/5 of what a batch per arrival cost (bench/RESULTS.md).
NOTIFY_LINGER = 1.0


def _text(body: dict[str, Any], name: str, limit: int = 4096) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise Permanent(f"{name} must be a non-empty string of at most {limit} characters")
    return value


def _user(body: dict[str, Any]) -> str:
    user = body.get("user")
    if not ids.is_user_id(user):
        raise Permanent("user must be a printable string of 1..128 characters")
    return str(user)


def _room(body: dict[str, Any]) -> str:
    room = body.get("room")
    if not ids.is_room_id(room):
        raise Permanent("room must match [A-Za-z0-9_-]{1,64}")
    return str(room)


def _data(body: dict[str, Any]) -> dict[str, str]:
    data = body.get("data", {})
    if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise Permanent("data must be an object of string values")
    if len(data) > 32 or sum(len(k) + len(v) for k, v in data.items()) > 2048:
        raise Permanent("data is limited to 32 keys and 2048 characters")
    return dict(data)


def notice(job: Job) -> Notice:
    """The stored message of a ``notify.messages`` job; :exc:`Permanent` if malformed."""
    body = job.body
    room, sender, seq = _room(body), body.get("sender"), body.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1 \
            or not ids.is_user_id(sender):
        raise Permanent("a stored message needs seq >= 1 and a sender")
    msg_id = body.get("id")
    try:
        mentioned = parse_mentions(body.get("mentions"))
    except BadMentions as exc:
        raise Permanent(f"a stored message with malformed mentions: {exc}") from None
    return Notice(room, str(sender), seq, msg_id if isinstance(msg_id, str) else job.message_id,
                  change=body.get("type") != "message" or "kind" in body, mentions=mentioned)


def preview(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS - 1] + "…"


def notification_to_json(n: Notification) -> dict[str, Any]:
    return {"id": n.id, "title": n.title, "body": n.body, "collapse_key": n.collapse_key,
            "data": n.data, "badge": n.badge}


def notification_from_json(raw: Any) -> Notification:
    if not isinstance(raw, dict):
        raise Permanent("notification must be an object")
    badge = raw.get("badge")
    if badge is not None and not isinstance(badge, int):
        raise Permanent("notification.badge must be an integer")
    return Notification(_text(raw, "id", 256), _text(raw, "title", 256),
                        _text(raw, "body"), _text(raw, "collapse_key", 64), _data(raw), badge)


class Notifier:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.family, self.digest, _ = topology.configured_families(settings)
        self.periods = {"hourly": settings.digest_hourly, "daily": settings.digest_daily}
        # built now: a bad push setup stops the process before it takes any job
        self.senders: dict[str, Sender] = build_senders(settings)
        self.queues: list[JobQueue] = []
        self.jobs: AbstractExchange | None = None
        self.events: EventPublisher | None = None  # push.* events (docs/events.md)

    async def start(self, runtime: Runtime) -> None:
        # Every (platform, outcome) exported at 0 from the start: a failure ratio or a
        # dashboard panel has its series before the first push.
        for platform in ("fcm", "apns"):
            metrics.PUSH_SECONDS.labels(platform)
            for outcome in Outcome:
                metrics.PUSHES.labels(platform, outcome.value)
        db = database.database(runtime.db)
        self.store = NotifyStore(db)
        self.devices = DeviceStore(db)
        self.users = UserStore(db)
        self.blocks = BlockStore(db)
        self.presence = PresenceStore(db, self.settings.presence_ttl)
        await database.ensure_indexes([self.store, self.devices, self.blocks],
                                      self.settings.reconnect_interval, "notifier")
        # Due pushes come in bursts (a notify batch schedules them together): what the
        # jobs running at once ask first goes to the database as one query each.
        self.clears: DataLoader[tuple[str, str], None] = DataLoader(
            self._clear_pushes, cache=False)
        self.activity: DataLoader[str, bool] = DataLoader(self._active, cache=False)
        self.blocked: DataLoader[str, frozenset[str]] = DataLoader(self._blocked, cache=False)
        connection = await runtime.broker.opened()
        channel = await connection.channel()
        self.publisher = channel
        self.events = EventPublisher.configured(self.settings, runtime.broker)
        self.jobs = await channel.get_exchange(topology.JOBS, ensure=False)
        topo = topology.for_settings(self.settings)
        self.queues = [
            BatchJobQueue(topology.NOTIFY_MESSAGES, topology.NOTIFY_DEAD, notice, self.schedule,
                          batch=self.settings.notify_batch,
                          hold_interval=self.settings.reconnect_interval, linger=NOTIFY_LINGER),
            JobQueue.configured(self.settings, self.family.due, self.family.dead,
                                self.settings.push_retries, self.family.retry, self.push),
        ]
        for queue in self.queues:
            await queue.start(connection, topo.queue(queue.name).arguments)

    async def drain(self) -> None:
        for queue in self.queues:
            await queue.drain(DRAIN_TIMEOUT)
        for sender in self.senders.values():
            await sender.close()
        if self.events is not None:
            await self.events.close()
        if not self.publisher.is_closed:  # bounded: the broker may be gone for good
            await stop_step(self.publisher.close, "close the notifier's publisher")

    # -- scheduling ------------------------------------------------------------------

    async def schedule(self, notices: list[Notice]) -> None:
        """Stored messages: schedule what their readers may need (pushes, digests).

        Idempotent for the whole batch: claims are written before the jobs are published
        and name the message that made them, so a redelivered batch finds its own claims
        and publishes their jobs again (same message ids), and never claims twice.
        """
        assert self.jobs is not None
        # Edits, deletes and reactions push nobody and add nothing to digests; a deleted
        # message is left out when a push or digest is due (burrow.storage.notify).
        notices = [n for n in notices if not n.change]
        if not notices:
            return
        now = datetime.now(UTC)
        members = await self.store.member_states({n.room for n in notices})
        push_stale = timedelta(seconds=2 * self.settings.push_delay
                               + sum(self.settings.push_retries) + 60)
        # One read for the batch: which of its readers block one of its (few) senders.
        blocks = await self.blocks.blockers_of({n.sender for n in notices},
                                               {m.user for m in members})
        plan = notify_plan.plan_pushes(notices, members, now - push_stale, blocks)
        if not plan.unread:
            return
        claims = plan.claim
        mentioned = notify_plan.plan_mentions(notices, members, blocks)
        if claims or mentioned:  # one read of devices for both
            phones = await self.devices.users_with_devices(
                {user for _, user in claims} | {user for _, user in mentioned})
            claims = {key: seq for key, seq in claims.items() if key[1] in phones}
            mentioned = {key: seq for key, seq in mentioned.items() if key[1] in phones}
        pushes = {**plan.again, **await self.store.claim_pushes(claims, now - push_stale)}
        msg_ids = {(n.room, n.seq): n.msg_id for n in notices}
        publishes = [publish_job(
            self.jobs, self.family.delay(self.settings.push_delay),
            # msg_id: the message that scheduled it, so logs follow it to the push
            {"kind": "room", "user": user, "room": room, "seq": seq,
             "msg_id": msg_ids.get((room, seq))}, f"push:{room}:{user}:{seq}")
            for (room, user), seq in sorted(pushes.items())]
        publishes += [publish_job(  # a mention does not wait: straight into push.due
            self.jobs, self.family.due, {"kind": "mention", "user": user, "room": room,
                                         "seq": seq, "msg_id": msg_ids.get((room, seq))},
            notify_plan.mention_key(room, user, seq))
            for (room, user), seq in sorted(mentioned.items())]

        candidates = notify_plan.digest_candidates(plan.unread)
        users = await self.store.digest_states(candidates.keys())
        digest_stale = timedelta(seconds=2 * max(self.periods.values()) + 60)
        digests = notify_plan.plan_digests(notices, candidates, users, now - digest_stale)
        won = await self.store.claim_digests(digests.claim, now - digest_stale)
        settings = {u.user: u.setting for u in users}
        for user, key in sorted({**digests.again,
                                 **{u: digests.claim[u] for u in won}}.items()):
            period = self.periods.get(settings.get(user, ""), self.settings.digest_daily)
            job_id = hashlib.sha256(f"{user}\n{key}".encode()).hexdigest()[:32]
            publishes.append(publish_job(self.jobs, self.digest.delay(period),
                                         {"kind": "digest", "user": user, "id": job_id},
                                         job_id))
        await asyncio.gather(*publishes)
        if log.isEnabledFor(logging.DEBUG):
            for (room, user), seq in pushes.items():
                log.debug("push scheduled", extra={"msg_id": msg_ids.get((room, seq)),
                                                     "room": room, "seq": seq, "user": user})

    # -- sending ---------------------------------------------------------------------

    async def push(self, job: Job) -> None:
        body = job.body
        match body.get("kind"):
            case "room":
                log.debug("room push due", extra={
                    "msg_id": body.get("msg_id"), "room": body.get("room"),
                    "seq": body.get("seq"), "user": body.get("user")})
                await self._room_push(_user(body), _room(body))
            case "mention":
                seq = body.get("seq")
                if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
                    raise Permanent("seq must be the mentioning message's seq (>= 1)")
                log.debug("mention push due", extra={
                    "msg_id": body.get("msg_id"), "room": body.get("room"), "seq": seq,
                    "user": body.get("user")})
                await self._room_push(_user(body), _room(body), mention=seq)
            case "direct":
                user = _user(body)
                nid = body.get("id", job.message_id) or uuid.uuid4().hex
                if not isinstance(nid, str) or not nid or len(nid) > 200:
                    raise Permanent("id must be a string of at most 200 characters")
                collapse = body.get("collapse_key", f"direct:{nid}"[:64])
                if not isinstance(collapse, str) or not 0 < len(collapse) <= 64:
                    raise Permanent("collapse_key must be a string of 1..64 characters")
                notification = Notification(f"direct:{nid}", _text(body, "title", 256),
                                            _text(body, "body"), collapse, _data(body))
                devices = await self.devices.of_user(user)
                await self._deliver(notification, devices, attempt=job.attempt)
            case "deliver":
                notification = notification_from_json(body.get("notification"))
                wanted = body.get("devices")
                if not isinstance(wanted, list) or not all(isinstance(d, str) for d in wanted):
                    raise Permanent("devices must be a list of device ids")
                devices = [d for d in await self.devices.of_user(_user(body)) if d.id in wanted]
                await self._deliver(notification, devices, attempt=job.attempt)
            case other:
                raise Permanent(f"unknown push job kind {other!r} "
                                "(room, mention, direct, deliver)")

    async def _clear_pushes(self, keys: list[tuple[str, str]]) -> list[None]:
        await self.store.clear_pushes(keys)
        return [None] * len(keys)

    async def _blocked(self, users: list[str]) -> list[frozenset[str]]:
        blocks = await self.blocks.blocked_by_many(set(users))
        return [blocks.get(user, frozenset()) for user in users]

    async def _active(self, users: list[str]) -> list[bool]:
        active = await self.presence.active_users(set(users), self.settings.idle_after)
        return [user in active for user in users]

    async def _room_push(self, user: str, room: str, mention: int | None = None) -> None:
        """A room's push (what is unread), or with *mention* the push of that message,
        which mentions *user*: the same checks, a text that says so."""
        if mention is None:
            # New messages from now on schedule a new job; this one sends what is unread.
            # (Both asks are shared with the jobs running at once: one query each.) A
            # mention leaves the room's waiting job and its claim alone.
            await self.clears.load((room, user))
        # Cheapest and most often decisive first: an active user is not pushed.
        if await self.activity.load(user):
            return  # they are looking at a screen right now; the digest may still tell them
        blocked = await self.blocked.load(user)  # their messages are not pushed to them
        unread = await (self.store.unread_for_push(room, user, blocked) if mention is None
                        else self.store.mention_for_push(room, user, mention, blocked))
        if unread is None:
            return  # read in time, pushed already, deleted, not a mention of them, left
        settings = await self.users.settings(user)
        if not settings.push:
            return
        if not notify_rules.push_now(user_snooze=settings.snooze_until, quiet=settings.quiet(),
                                     room_snooze=unread.rule.snooze_until,
                                     now=datetime.now(UTC)):
            # Snoozed, or the user's quiet hours: dropped, not delayed. Not marked
            # pushed, so the digest (and the room's next push) still tells these.
            return
        devices = await self.devices.of_user(user)
        if not devices:
            return
        name = await self.store.room_name(room)
        notification = (self._room(user, room, name, unread, settings.previews)
                        if mention is None else
                        self._mention(user, room, name, unread.latest, settings.previews))
        await self._deliver(notification, devices, user)
        await self.store.mark_pushed(room, user, unread.latest.seq)

    @staticmethod
    def _room(user: str, room: str, name: str, unread: Unread, previews: bool) -> Notification:
        """The notification of a room's unread messages (one per room: collapsed)."""
        latest = unread.latest
        if previews:
            text = f"{latest.sender}: {preview(latest.text)}"
            if unread.count > 1:
                text += f" (+{unread.count - 1} more)"
        else:
            text = f"{unread.count} new message{'s' if unread.count > 1 else ''}"
        return Notification(
            id=f"room:{room}:{user}:{latest.seq}", title=name, body=text,
            collapse_key=f"room:{room}"[:64],
            data={"room": room, "seq": str(latest.seq), "unread": str(unread.count)})

    @staticmethod
    def _mention(user: str, room: str, name: str, message: Stored,
                 previews: bool) -> Notification:
        """The notification of a message that mentions *user* (by name, else @room)."""
        by_name = message.mentions is not None and user in message.mentions.users
        return Notification(
            id=notify_plan.mention_key(room, user, message.seq), title=name,
            body=notify_plan.mention_text(message.sender, preview(message.text)
                                          if previews else None, room=not by_name),
            collapse_key=f"room:{room}"[:64],
            data={"room": room, "seq": str(message.seq),
                  "mention": "user" if by_name else "room"})

    async def _deliver(self, notification: Notification, devices: Sequence[Device],
                       user: str | None = None, attempt: int = 0) -> None:
        """Send to every device not yet served; retry or park what failed."""
        if not devices:
            return
        done = await self.store.pushed(notification.id, [d.id for d in devices])
        todo = [d for d in devices if d.id not in done]
        results = await asyncio.gather(*(self._send_one(notification, d) for d in todo))
        if self.events is not None and results:  # in the background: never holds a push
            at = int(time.time() * 1000)
            last = attempt >= len(self.settings.push_retries)
            self.events.publish_soon([events.push(
                r.outcome is Outcome.SENT, notification.id, r.device.user, r.device.id,
                r.device.platform, at, reason=r.reason or None, attempt=attempt,
                final=r.outcome is not Outcome.RETRY or last) for r in results])
        retry = [r for r in results if r.outcome is Outcome.RETRY]
        failed = [r for r in results if r.outcome is Outcome.FAILED]
        rest = {"kind": "deliver", "user": user or devices[0].user,
                "notification": notification_to_json(notification)}
        if failed:
            reasons = "; ".join(f"{r.device.platform} {r.device.id}: {r.reason}" for r in failed)
            if not retry:
                raise Permanent(f"push failed: {reasons}")
            log.warning("push %s failed for good on some devices: %s", notification.id, reasons)
        if retry:
            hints = [r.retry_after for r in retry if r.retry_after is not None]
            reasons = "; ".join(f"{r.device.platform}: {r.reason}" for r in retry)
            raise RetryLater(f"push {notification.id}: {reasons}",
                             {**rest, "devices": [r.device.id for r in retry]},
                             max(hints) if hints else None)

    async def _send_one(self, notification: Notification, device: Device) -> Result:
        sender = self.senders.get(device.platform)
        if sender is None:
            return Result(device, Outcome.FAILED, f"{device.platform} is not configured")
        started = time.perf_counter()
        [result] = await sender.send(notification, [device])
        metrics.PUSH_SECONDS.labels(device.platform).observe(time.perf_counter() - started)
        metrics.PUSHES.labels(device.platform, result.outcome.value).inc()
        if result.outcome is Outcome.SENT:
            await self.store.record_pushed(notification.id, device.id)
        elif result.outcome is Outcome.INVALID:
            log.info("deleting %s device %s: %s", device.platform, device.id, result.reason)
            await self.devices.delete_invalid(device.id, device.token)
        return result
