"""``wait_for`` that never swallows a cancellation.

Python 3.11's ``asyncio.wait_for`` returns the inner result when the caller is cancelled in
the same loop step as the inner awaitable finishes (cpython gh-86296, fixed in 3.12 by
building it on ``asyncio.timeout``). A loop like ``while True: wait_for(event.wait(), t)``
then never ends: an agent's teardown that cancels it waits forever. Every timed wait in
watchkeeper goes through here instead.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def wait_for(aw: Awaitable[T], timeout: float | None) -> T:
    """Await ``aw`` for at most ``timeout`` seconds (None: no limit); TimeoutError after it,
    with ``aw`` cancelled. A cancellation of the caller always propagates."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(timeout):
            return await aw
    return await wait_for(aw, timeout)  # 3.10: best effort, the old behaviour
