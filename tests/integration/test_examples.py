"""The scripts in ``examples/``, run as a reader of the README runs them: a process of
their own, configured only by the variables they document, against real processes.

``examples/chat.py`` against a gateway in development mode: two users, a room it
creates, a message from one shown as received by the other; run twice, since a reader
runs it again (the room exists then). ``examples/backend_jobs.py`` as the backend
broker user: its system message is stored in the room.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, eventually
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration
T = 90  # seconds a script may take on a busy machine


def example(name: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python examples/NAME ARGS...`` with the test's environment minus any
    BURROW_* variable, plus *env*; bounded."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BURROW_")}
    return subprocess.run([sys.executable, str(ROOT / "examples" / name), *args],
                          env={**clean, **env}, cwd=ROOT, capture_output=True, text=True,
                          timeout=T, check=False)


def history(stack: Stack, room: str, user: str) -> list[tuple[int, str, str]]:
    status, body = stack.http("GET", f"/v1/rooms/{room}/messages", user)
    assert status == 200, body
    return [(m["seq"], m["sender"], m["body"]) for m in body["messages"]]


async def test_chat_example_two_users_chat_through_a_dev_mode_gateway(stack: Stack) -> None:
    dev = stack.add_gateway(BURROW_DEV_MODE="true")
    first = example("chat.py", BURROW_URL=dev.url(""))
    assert first.returncode == 0, (first.stdout, first.stderr)
    assert first.stdout.splitlines() == [
        "alice created room quickstart with bob in it",
        "alice sent #1 to quickstart: Hello Bob! This message went through Burrow.",
        "bob received #1 from alice: Hello Bob! This message went through Burrow."]

    # again, as a reader would: the room is there, bob stays in it, the next seq
    again = example("chat.py", "--text", "Second run", BURROW_URL=dev.url(""))
    assert again.returncode == 0, (again.stdout, again.stderr)
    assert again.stdout.splitlines()[-1] == "bob received #2 from alice: Second run"
    assert history(stack, "quickstart", "bob") == [
        (1, "alice", "Hello Bob! This message went through Burrow."),
        (2, "alice", "Second run")]

    # the arguments, and --url over BURROW_URL
    other = example("chat.py", "--url", dev.url(""), "--room", "book-club", "--sender",
                    "bob", "--receiver", "carol", "--text", "Chapter 3 by Friday?",
                    BURROW_URL="http://127.0.0.1:1")
    assert other.returncode == 0, (other.stdout, other.stderr)
    assert other.stdout.splitlines()[-1] == "carol received #1 from bob: Chapter 3 by Friday?"

    # without development mode it says what is missing, in one line, without a traceback
    refused = example("chat.py", BURROW_URL=stack.gateways[0].url(""))
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith("chat.py: the gateway is not in development mode")
    assert "Traceback" not in refused.stderr


async def test_backend_jobs_example_posts_a_system_message(stack: Stack) -> None:
    stack.vhost.load_topology()  # burrow.jobs too: no notifier or digester runs here
    stack.room("ops", "alice", "bob")
    done = example("backend_jobs.py", "ops", "bob", "bob@example.test",
                   BURROW_BACKEND_URL=stack.vhost.url("burrow-backend"))
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert done.stdout == "published: a system message, a push and an email\n"
    # a publisher confirm says the broker has it; the sequencer stores it a moment later
    eventually(lambda: history(stack, "ops", "bob"), timeout=15)
    assert history(stack, "ops", "bob") == [
        (1, "system:example", "The example backend says hello")]
