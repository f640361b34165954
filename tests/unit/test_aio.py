"""watchkeeper.aio.wait_for: a timed wait that a cancellation always ends."""

from __future__ import annotations

import asyncio

import pytest

from watchkeeper.aio import wait_for


async def test_a_cancel_in_the_step_the_wait_ends_is_not_swallowed() -> None:
    """The race that hung an agent's teardown: its sender loop was cancelled just as its
    wake-up event was set, and 3.11's asyncio.wait_for returned instead of raising."""
    event = asyncio.Event()
    rounds = 0

    async def loop_forever() -> None:
        nonlocal rounds
        while True:
            rounds += 1
            await wait_for(event.wait(), 10)
            event.clear()

    task = asyncio.create_task(loop_forever())
    await asyncio.sleep(0)
    event.set()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(task), 2)
    assert task.cancelled() and rounds == 1


async def test_it_times_out_and_returns_results() -> None:
    with pytest.raises(TimeoutError):
        await wait_for(asyncio.sleep(5), 0.01)
    assert await wait_for(asyncio.sleep(0, result="done"), 1) == "done"
    assert await wait_for(asyncio.sleep(0, result="no limit"), None) == "no limit"
