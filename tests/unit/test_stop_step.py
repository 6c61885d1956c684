"""``stop_step``: a shutdown step that talks to the broker never holds up a stop."""

from __future__ import annotations

import asyncio
import time

from aio_pika.exceptions import ChannelInvalidStateError

from burrow.runtime.broker import stop_step


class Channel:
    """Just what ``stop_step`` reads of an aio-pika channel."""

    def __init__(self, closed: bool) -> None:
        self.is_closed = closed


async def test_a_step_on_a_closed_channel_is_skipped() -> None:
    ran = asyncio.Event()

    async def step() -> None:
        ran.set()

    await stop_step(step, "cancel", Channel(closed=True))  # type: ignore[arg-type]
    assert not ran.is_set()
    await stop_step(step, "cancel", Channel(closed=False))  # type: ignore[arg-type]
    assert ran.is_set()


async def test_a_step_waiting_for_a_broker_that_never_comes_back_is_given_up() -> None:
    never = asyncio.Event()  # as a robust channel waits for its connection's reconnect
    began = time.monotonic()
    # (bounded here too, so that a stop_step without its bound fails instead of hanging)
    await asyncio.wait_for(stop_step(never.wait, "cancel", timeout=0.2), 5.0)
    assert time.monotonic() - began < 5.0


async def test_a_broker_error_does_not_stop_the_stop() -> None:
    async def step() -> None:
        raise ChannelInvalidStateError("closed")

    await stop_step(step, "close")
