"""burrow.batches: what arrives while a flush runs goes into the next one."""

from __future__ import annotations

import asyncio

import pytest

from burrow.batches import Batches


async def test_items_that_arrive_during_a_flush_form_the_next_batch() -> None:
    seen: list[list[int]] = []
    gate = asyncio.Event()

    async def flush(items: list[int]) -> None:
        seen.append(items)
        if len(seen) == 1:
            await gate.wait()

    batches: Batches[int] = Batches(flush, "test")
    first = asyncio.create_task(batches.put(1))
    await asyncio.sleep(0)  # the first flush starts with [1] and waits on the gate
    waiting = [asyncio.create_task(batches.put(i)) for i in (2, 3, 4)]
    await asyncio.sleep(0)
    assert seen == [[1]] and not first.done()
    gate.set()
    await asyncio.wait_for(asyncio.gather(first, *waiting), 5)
    assert seen == [[1], [2, 3, 4]]


async def test_a_failing_flush_is_logged_and_the_next_batch_still_runs(
        caplog: pytest.LogCaptureFixture) -> None:
    seen: list[list[str]] = []

    async def flush(items: list[str]) -> None:
        seen.append(items)
        if items == ["bad"]:
            raise ValueError("boom")

    batches: Batches[str] = Batches(flush, "test")
    await asyncio.wait_for(batches.put("bad"), 5)  # released, not raised
    await asyncio.wait_for(batches.put("good"), 5)
    assert seen == [["bad"], ["good"]]
    assert "a batch of 1 failed" in caplog.text


async def test_linger_gathers_what_arrives_within_it() -> None:
    seen: list[list[int]] = []

    async def flush(items: list[int]) -> None:
        seen.append(items)

    batches: Batches[int] = Batches(flush, "test", linger=0.05)
    batches.add(1)
    batches.add(2)
    await asyncio.wait_for(batches.put(3), 5)
    assert seen == [[1, 2, 3]]


async def test_close_releases_waiters_and_drops_what_is_queued() -> None:
    seen: list[list[int]] = []
    never = asyncio.Event()

    async def flush(items: list[int]) -> None:
        seen.append(items)
        await never.wait()

    batches: Batches[int] = Batches(flush, "test")
    waiter = asyncio.create_task(batches.put(1))
    await asyncio.sleep(0)
    queued = asyncio.create_task(batches.put(2))
    await asyncio.sleep(0)
    await asyncio.wait_for(batches.close(), 5)
    await asyncio.wait_for(asyncio.gather(waiter, queued), 5)
    assert seen == [[1]]
    never.set()
    await asyncio.wait_for(batches.put(3), 5)  # usable again after close
    assert seen[1:] == [[3]]
