"""Job payloads fuzzed (a seeded random generator, so a failure replays) for every worker
queue jobs come from outside into: those a backend service may publish to (``push.due``,
``email.due``) and those only an admin moving messages back may (``notify.messages``,
``digest.due``): random JSON, the right ``kind`` with any fields, binary, invalid UTF-8,
deep nesting, huge strings.
Invariants: the worker processes stay up with no traceback in their logs (every bad job is
parked or retried with a reason, never a crash), the queues drain, and a real e-mail
job published after the flood is still sent.

``BURROW_FUZZ_EXAMPLES`` sets the budget (jobs per queue = 4 x it; CI: 48)."""

from __future__ import annotations

import json
import os
import random

import pytest

from tests.conftest import until
from tests.fakes.smtp import FakeSmtpServer
from tests.integration.conftest import Stack
from tests.integration.test_mail_jobs import mail_workers, publish, set_email

pytestmark = pytest.mark.integration
JOBS = 4 * int(os.environ.get("BURROW_FUZZ_EXAMPLES", "12"))
QUEUES = {"notify.messages": None, "push.due": ["room", "direct", "deliver"],
          "digest.due": ["digest"], "email.due": ["email", "verify"]}
BACKEND = {"push.due", "email.due"}  # docs/queues.md; the others only the admin may

def value(rng: random.Random, depth: int = 0) -> object:
    """A random JSON value: scalars of every type, odd strings, small nested structures."""
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice([0, -1, 1, 2**63, -(2**70), rng.randrange(-1000, 10**6)])
    if kind == 3:
        return rng.choice([0.5, -1e308, 1e-9, 3.0])
    if kind in (4, 5):
        return rng.choice(["", "x", "a\nb", "\u202e", "\x00", "room-1", "alice",
                           "é" * 70, "<script>", "x" * rng.randrange(0, 5000)])
    if kind in (6, 7):
        return [value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    return {rng.choice(FIELDS): value(rng, depth + 1) for _ in range(rng.randrange(0, 4))}


FIELDS = ["room", "user", "seq", "sender", "id", "msg_id", "to", "subject", "text", "html",
          "title", "body", "data", "devices", "notification", "collapse_key"]


def payload(kinds: list[str] | None, rng: random.Random) -> bytes:
    choice = rng.randrange(8)
    if choice == 0:
        return rng.randbytes(rng.randrange(1, 300))
    if choice == 1:
        return b"\xff\xfe" + json.dumps({"kind": "email"}).encode()
    if choice == 2:
        depth = rng.randrange(1, 3000)
        return b"[" * depth + b"]" * depth
    if choice == 3:
        return json.dumps({"kind": rng.choice(kinds or ["x"]), "text": "x" * 200_000,
                           "room": "r" * 5000}).encode()
    if choice == 4:
        return json.dumps(value(rng)).encode()
    shaped = {name: value(rng) for name in rng.sample(FIELDS, rng.randrange(0, 8))}
    if kinds:
        shaped["kind"] = rng.choice(kinds)
    return json.dumps(shaped).encode()


async def test_no_job_payload_breaks_a_worker(relay: FakeSmtpServer, stack: Stack) -> None:
    workers = mail_workers(stack, relay, BURROW_PUSH_RETRIES="1")
    rng = random.Random(20261206)
    for queue, kinds in QUEUES.items():
        user = "burrow-backend" if queue in BACKEND else "burrow-admin"
        for n in range(JOBS):
            await publish(stack, queue, payload(kinds, rng), message_id=f"fuzz-{queue}-{n}",
                          user=user)

    def drained() -> bool:
        for queue in QUEUES:
            info = stack.vhost.api("GET", f"/api/queues/{{vhost}}/{queue}")
            assert isinstance(info, dict)
            if info.get("messages", 1) != 0:
                return False
        return True

    await until(drained, timeout=120)
    assert [worker.app.exited for worker in workers] == [None, None]
    set_email(stack, "dora")
    await publish(stack, "email.due", {"kind": "email", "id": "after-the-flood",
                                       "user": "dora", "subject": "Still here",
                                       "text": "ok"}, message_id="after")
    mails = await relay.wait_for_async(1, timeout=60)
    assert any(m.message["Subject"] == "Still here" for m in mails)
    for worker in workers:
        log = worker.log.read_text(errors="replace")
        assert "Traceback" not in log, log[log.index("Traceback") - 500:][:3000]
    print(f"job fuzz: {JOBS * len(QUEUES)} jobs over {len(QUEUES)} queues, workers up")
