"""The digester: sends digest emails when their delay tier ends, and backend emails.

A digest job (``digest.due``, put into ``digest.delay.<period>`` by the notifier when a
member with an email and digests on gets a message they have not read) collects, per
room, the unread messages the member was neither pushed nor emailed about, renders text
and HTML with an unsubscribe link, and sends it over SMTP. At most one digest per period:
a job that comes due sooner than a period after the last digest goes back into the
period's delay tier. The member's rule for each room holds
(:mod:`burrow.core.notify_rules`, applied by :meth:`NotifyStore.unread_for_digest`): a
room at "nothing" is left out, one at "mentions" lists only the messages that mention
them or reply to one of theirs; snoozes and quiet hours do not hold digests back. Messages from users the member blocks
are left out (one read of their blocks per digest). A
message that mentions the member is marked in it
(:data:`burrow.mail.digest.MENTION_MARKS`). A redelivered job never sends twice: the job id is recorded once the
SMTP server took the mail, and the Message-ID is the job's, so a resend after a crash
mid-send is recognisable as the same mail.

An email job (``email.due``, from backend services, see docs/queues.md) is sent as given,
to an address or to a user's stored email once verified, with the same once-only record.

Digests go only to a verified address (:mod:`burrow.mail.verification`), checked here at
send time whatever scheduled the job. A ``verify`` job (``email.due``, from the gateway
through ``email.verify``) mails the link that verifies an address, if the address is still
the user's and unverified; an unverified address that never had such a mail (one stored
before verification existed) gets exactly one, from the first digest job that finds it.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

from aio_pika.abc import AbstractExchange

from burrow.core import ids
from burrow.core.envelopes import Stored
from burrow.mail import verification
from burrow.mail.digest import Digest, DigestMessage, DigestRoom, render
from burrow.mail.smtp import Mailer, Outcome
from burrow.mail.unsubscribe import make_token
from burrow.mail.verification import VerifyJob
from burrow.runtime import metrics
from burrow.runtime.broker import stop_step
from burrow.runtime.process import Runtime
from burrow.runtime.settings import Settings
from burrow.storage import database
from burrow.storage.blocks import BlockStore
from burrow.storage.notify import NotifyStore
from burrow.storage.users import UserStore, stamp
from queues import topology
from queues.jobs import Job, JobQueue, Permanent, RetryLater, publish_job

log = logging.getLogger(__name__)

PER_ROOM = 10
DRAIN_TIMEOUT = 30.0
MAX_EMAIL_BYTES = 256 * 1024


def _job_id(body: dict[str, Any]) -> str:
    job_id = body.get("id")
    if not isinstance(job_id, str) or not ids.is_client_id(job_id):
        raise Permanent("id must be 1..64 printable ASCII characters (the once-only key)")
    return job_id


def _mention(message: Stored, reader: str) -> str | None:
    """How *message* mentions *reader* for the digest's mark: "user", "room" or None."""
    if message.mentions is None:
        return None
    if reader in message.mentions.users:
        return "user"
    return "room" if message.mentions.room else None


class Digester:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        _, self.digest, self.email = topology.configured_families(settings)
        self.periods = {"hourly": settings.digest_hourly, "daily": settings.digest_daily}
        self.secret = settings.unsubscribe_key()
        self.domain = settings.email_from.rpartition("@")[2].rstrip(">") or "burrow.invalid"
        self.queues: list[JobQueue] = []
        self.jobs: AbstractExchange | None = None

    async def start(self, runtime: Runtime) -> None:
        for outcome in Outcome:  # exported at 0 from the start (the failure-ratio alert)
            metrics.EMAILS.labels(outcome.value)
        db = database.database(runtime.db)
        self.store = NotifyStore(db)
        self.users = UserStore(db)
        self.blocks = BlockStore(db)
        await database.ensure_indexes([self.store, self.blocks], self.settings.reconnect_interval,
                                      "digester")
        self.mailer = Mailer(self.settings.smtp_url)
        connection = await runtime.broker.opened()
        self.publisher = await connection.channel()
        self.jobs = await self.publisher.get_exchange(topology.JOBS, ensure=False)
        self.verify = await self.publisher.get_exchange(topology.VERIFY, ensure=False)
        topo = topology.for_settings(self.settings)
        retries = self.settings.email_retries
        self.queues = [
            JobQueue.configured(self.settings, self.digest.due, self.digest.dead, retries,
                                self.digest.retry, self.send_digest),
            JobQueue.configured(self.settings, self.email.due, self.email.dead, retries,
                                self.email.retry, self.send_email),
        ]
        for queue in self.queues:
            await queue.start(connection, topo.queue(queue.name).arguments)

    async def drain(self) -> None:
        for queue in self.queues:
            await queue.drain(DRAIN_TIMEOUT)
        await self.mailer.close()
        if not self.publisher.is_closed:  # bounded: the broker may be gone for good
            await stop_step(self.publisher.close, "close the digester's publisher")

    async def _send(self, message: EmailMessage) -> None:
        started = time.perf_counter()
        result = await self.mailer.send(message)
        metrics.EMAIL_SECONDS.observe(time.perf_counter() - started)
        metrics.EMAILS.labels(result.outcome.value).inc()
        if result.outcome is Outcome.RETRY:
            raise RetryLater(f"smtp: {result.detail}")
        if result.outcome is Outcome.REJECTED:
            raise Permanent(f"smtp refused: {result.detail}")

    async def send_digest(self, job: Job) -> None:
        body = job.body
        if body.get("kind") != "digest":
            raise Permanent(f"unknown digest job kind {body.get('kind')!r} (digest)")
        user, job_id = body.get("user"), _job_id(body)
        if not ids.is_user_id(user):
            raise Permanent("user must be a printable string of 1..128 characters")
        assert isinstance(user, str) and self.jobs is not None
        if await self.store.digest_done(job_id):
            return  # a redelivery of a digest already sent
        await self.store.clear_digest(user)
        settings = await self.users.settings(user)
        if settings.digest == "off" or not settings.email:
            return
        if not settings.email_verified:  # never to an address nobody confirmed
            await self._first_verification(user)
            return
        period = self.periods.get(settings.digest, self.settings.digest_daily)
        last = await self.store.last_digest_at(user)
        if last is not None and datetime.now(UTC) - last < timedelta(seconds=period):
            # one digest per period: wait for the next one (the notifier does not
            # schedule another while this one is pending)
            await self.store.delay_digest(user)
            await publish_job(self.jobs, self.digest.delay(period), body, job_id)
            return
        found = await self.store.unread_for_digest(  # nothing from users they block
            user, PER_ROOM, await self.blocks.blocked_by(user))
        if not found:
            return
        rooms = [DigestRoom(room, await self.store.room_name(room), count,
                            [DigestMessage(m.seq, m.sender, m.text, m.ts,
                                           _mention(m, user)) for m in messages])
                 for room, count, messages in found]
        token = make_token(self.secret, user)
        digest = Digest(user=user, to=settings.email, rooms=rooms,
                        unsubscribe_url=f"{self.settings.public_url}/v1/unsubscribe?token={token}",
                        open_url=None, message_id=f"<digest-{job_id}@{self.domain}>")
        await self._send(render(digest, self.settings.email_from, settings.previews))
        await self.store.record_digest(job_id, user,
                                       {room: messages[-1].seq for room, _, messages in found})

    async def _first_verification(self, user: str) -> None:
        """Queue the one verification mail an unverified address gets without a request
        (stored before verification existed); nothing if it had one or is not stored."""
        state = await self.users.email_state(user)
        if state.email is None or not verification.needs_first_mail(state):
            return
        job = VerifyJob(verification.legacy_job_id(user, state.email), user, state.email)
        # Queued before it is recorded: a crash in between queues the same id again,
        # which the once-only record drops, rather than recording a mail never queued.
        # Through email.verify, like the gateway's: this worker may not publish email.due.
        await publish_job(self.verify, self.email.due, job.body(), job.id)
        await self.users.mark_verification_sent(user, state.email, stamp())

    async def send_verification(self, job: Job) -> None:
        try:
            verify = VerifyJob.from_body(job.body)
        except ValueError as exc:
            raise Permanent(str(exc)) from None
        if await self.store.digest_done(verify.id):
            return
        state = await self.users.email_state(verify.user)
        if state.email != verify.address or state.verified:
            return  # changed or confirmed since it was asked for: nothing to verify
        token = verification.make_token(self.secret, verify.user, verify.address)
        await self._send(verification.render(
            verify.address, verification.link(self.settings.public_url, token),
            self.settings.email_from, verification.message_id(verify.id, self.domain)))
        await self.store.record_email(verify.id)

    async def send_email(self, job: Job) -> None:
        body = job.body
        if body.get("kind") == verification.KIND:
            await self.send_verification(job)
            return
        if job.exchange == topology.VERIFY:  # a gateway may ask for verifications only
            raise Permanent(f"only {verification.KIND!r} jobs may come through "
                            f"{topology.VERIFY}")
        if body.get("kind") != "email":
            raise Permanent(f"unknown email job kind {body.get('kind')!r} (email)")
        job_id = _job_id(body)
        if await self.store.digest_done(job_id):
            return
        to = body.get("to")
        if to is None:
            user = body.get("user")
            if not ids.is_user_id(user):
                raise Permanent("give to (an address) or user (whose stored email is used)")
            assert isinstance(user, str)
            stored = await self.users.settings(user)
            if not stored.email:
                raise Permanent(f"user {user!r} has no email address")
            if not stored.email_verified:  # the user may have typed anyone's address
                raise Permanent(f"user {user!r} has not verified their email address")
            to = stored.email
        subject, text, html = body.get("subject"), body.get("text"), body.get("html")
        if not isinstance(to, str) or "@" not in to or len(to) > 254 or "\n" in to:
            raise Permanent("to must be an email address")
        if not isinstance(subject, str) or not subject or len(subject) > 998 \
                or "\n" in subject or "\r" in subject:
            raise Permanent("subject must be one line of at most 998 characters")
        if not isinstance(text, str) or (html is not None and not isinstance(html, str)):
            raise Permanent("text must be a string, html a string or absent")
        if len(text) + len(html or "") > MAX_EMAIL_BYTES:
            raise Permanent(f"text and html are limited to {MAX_EMAIL_BYTES} characters")
        message = EmailMessage()
        message["From"] = self.settings.email_from
        message["To"] = to
        message["Subject"] = subject
        message["Message-ID"] = f"<email-{job_id}@{self.domain}>"
        message.set_content(text)
        if html is not None:
            message.add_alternative(html, subtype="html")
        await self._send(message)
        await self.store.record_email(job_id)
