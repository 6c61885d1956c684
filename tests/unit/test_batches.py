"""burrow.core.batches: what arrives while a flush runs goes into the next one."""

from __future__ import annotations

import asyncio

import pytest

from burrow.core.batches import Batches


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
    assert [r.getMessage() for r in caplog.records] == ["test: a batch of 1 failed"]


async def test_add_alone_flushes_every_batch_in_a_task_named_after_them() -> None:
    """Items queued without a waiter (add, not put) are flushed batch after batch, in a
    task that bears the given name (asyncio's task dumps show it); close needs no waiter."""
    seen: list[list[int]] = []
    tasks: list[str] = []
    started, gate = asyncio.Event(), asyncio.Event()

    async def flush(items: list[int]) -> None:
        seen.append(items)
        task = asyncio.current_task()
        assert task is not None
        tasks.append(task.get_name())
        started.set()
        await gate.wait()

    batches: Batches[int] = Batches(flush, "presence")
    batches.add(1)
    await asyncio.wait_for(started.wait(), 5)
    batches.add(2)
    batches.add(3)
    gate.set()
    for _ in range(10):
        await asyncio.sleep(0)
    assert seen == [[1], [2, 3]]
    assert tasks == ["presence", "presence"]
    await asyncio.wait_for(batches.close(), 5)


async def test_close_waits_until_the_running_flush_is_cancelled() -> None:
    cancelled = asyncio.Event()

    async def flush(items: list[int]) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    batches: Batches[int] = Batches(flush, "test")
    batches.add(1)
    await asyncio.sleep(0)
    await batches.close()  # awaited directly: wait_for's own task would give it a turn
    assert cancelled.is_set()


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
