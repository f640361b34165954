"""In-process asyncio bus: the default for one host.

Overflow policy, per subscriber queue (bounded, ``maxsize`` events):
- droppable events (metric snapshots, heartbeats): a full queue drops its oldest
  droppable event to make room, and the drop is counted on that topic;
- every other event (alerts, actions, commands, errors): the publisher waits up to
  ``block_timeout`` seconds for room, then BusOverflowError is raised to the publisher
  and counted; nothing is ever dropped silently.
Events are delivered as the same immutable objects (they are frozen), in publish order.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from watchkeeper.aio import wait_for
from watchkeeper.bus.base import (
    BusClosedError,
    BusOverflowError,
    Handler,
    NoResponderError,
    SubscriptionStats,
    TopicFilter,
    TopicStats,
    topic_matches,
)
from watchkeeper.events import Event

log = logging.getLogger(__name__)

DEFAULT_MAXSIZE = 1000


@dataclass
class _Counters:
    published: int = 0
    delivered: int = 0
    dropped: int = 0
    depth: int = 0


class MemorySubscription:
    """One subscriber's bounded queue."""

    def __init__(self, bus: MemoryBus, pattern: str, name: str, maxsize: int,
                 lossy: bool = False, keep: TopicFilter | None = None) -> None:
        self.bus = bus
        self.keep = keep
        self.pattern = pattern
        self.name = name or pattern
        self.maxsize = maxsize
        #: An observer (a browser's live stream): it never holds a publisher back; when it
        #: falls behind its oldest events are dropped and counted instead.
        self.lossy = lossy
        self.dropped = 0
        self._items: collections.deque[tuple[str, Event]] = collections.deque()
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._closed = False

    # -- producer side (called by the bus)
    def _drop_oldest_droppable(self) -> str | None:
        for i, (topic, event) in enumerate(self._items):
            if type(event).droppable:
                del self._items[i]
                return topic
        return None

    async def _put(self, topic: str, event: Event, block_timeout: float) -> None:
        if self._closed:
            return
        if len(self._items) >= self.maxsize:
            if self.lossy:
                old_topic, _ = self._items.popleft()
                self.dropped += 1
                self.bus._counter(old_topic).dropped += 1
                self.bus._counter(old_topic).depth -= 1
                self._items.append((topic, event))
                self.bus._counter(topic).depth += 1
                self._readable.set()
                return
            victim = self._drop_oldest_droppable() if type(event).droppable else None
            if victim is not None:
                self.dropped += 1
                self.bus._counter(victim).dropped += 1
                self.bus._counter(victim).depth -= 1
            elif type(event).droppable:
                # Queue full of never-drop events: the new droppable one is the loser.
                self.dropped += 1
                self.bus._counter(topic).dropped += 1
                return
            else:
                await self._wait_for_room(topic, block_timeout)
        self._items.append((topic, event))
        self.bus._counter(topic).depth += 1
        if len(self._items) >= self.maxsize:
            self._writable.clear()
        self._readable.set()

    async def _wait_for_room(self, topic: str, block_timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + block_timeout
        while len(self._items) >= self.maxsize and not self._closed:
            remaining = deadline - loop.time()
            if remaining <= 0:
                self.bus._counter(topic).dropped += 1
                raise BusOverflowError(
                    f"subscriber {self.name!r} is full ({self.maxsize} events) and did not "
                    f"drain within {block_timeout:g}s; event on {topic!r} not delivered"
                )
            self._writable.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await wait_for(self._writable.wait(), remaining)

    # -- consumer side
    async def get(self) -> tuple[str, Event]:
        while not self._items:
            if self._closed:
                raise BusClosedError(f"subscription {self.name!r} closed")
            self._readable.clear()
            await self._readable.wait()
        topic, event = self._items.popleft()
        counter = self.bus._counter(topic)
        counter.delivered += 1
        counter.depth -= 1
        if len(self._items) < self.maxsize:
            self._writable.set()
        return topic, event

    def get_nowait(self) -> tuple[str, Event] | None:
        if not self._items:
            return None
        topic, event = self._items.popleft()
        counter = self.bus._counter(topic)
        counter.delivered += 1
        counter.depth -= 1
        self._writable.set()
        return topic, event

    def __len__(self) -> int:
        return len(self._items)

    def commit(self) -> None:
        """Nothing to acknowledge in one process (a crash loses the queue with the process)."""

    async def __aiter__(self) -> AsyncIterator[tuple[str, Event]]:
        while True:
            try:
                yield await self.get()
            except BusClosedError:
                return

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for topic, _ in self._items:
            self.bus._counter(topic).depth -= 1
        self._items.clear()
        self._readable.set()
        self._writable.set()
        self.bus._unsubscribe(self)


class MemoryBus:
    """The in-process Bus implementation."""

    def __init__(self, *, default_maxsize: int = DEFAULT_MAXSIZE, block_timeout: float = 5.0
                 ) -> None:
        self.default_maxsize = default_maxsize
        self.block_timeout = block_timeout
        self._subs: list[MemorySubscription] = []
        self._handlers: dict[str, Handler] = {}
        self._counters: dict[str, _Counters] = {}
        self._closed = False

    def _counter(self, topic: str) -> _Counters:
        counter = self._counters.get(topic)
        if counter is None:
            counter = self._counters[topic] = _Counters()
        return counter

    def _unsubscribe(self, sub: MemorySubscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    async def publish(self, topic: str, event: Event) -> None:
        if self._closed:
            raise BusClosedError("bus is closed")
        self._counter(topic).published += 1
        failures: list[BusOverflowError] = []
        for sub in [s for s in self._subs if topic_matches(s.pattern, topic)
                    and (s.keep is None or s.keep(topic))]:
            try:
                await sub._put(topic, event, self.block_timeout)
            except BusOverflowError as exc:
                log.error("%s", exc)
                failures.append(exc)
        if failures:
            raise failures[0]

    def subscribe(self, pattern: str, *, name: str = "", maxsize: int | None = None,
                  lossy: bool = False, keep: TopicFilter | None = None) -> MemorySubscription:
        if self._closed:
            raise BusClosedError("bus is closed")
        sub = MemorySubscription(self, pattern, name, maxsize or self.default_maxsize, lossy,
                                 keep)
        self._subs.append(sub)
        return sub

    def serve(self, topic: str, handler: Handler) -> Callable[[], None]:
        if topic in self._handlers:
            raise ValueError(f"topic {topic!r} already has a responder")
        self._handlers[topic] = handler

        def stop() -> None:
            if self._handlers.get(topic) is handler:
                del self._handlers[topic]

        return stop

    async def request(self, topic: str, event: Event, *, timeout: float = 5.0) -> Event:
        if self._closed:
            raise BusClosedError("bus is closed")
        handler = self._handlers.get(topic)
        if handler is None:
            raise NoResponderError(f"no responder on {topic!r}")
        counter = self._counter(topic)
        counter.published += 1
        reply = await wait_for(handler(event), timeout)
        counter.delivered += 1
        return reply

    def responders(self) -> list[str]:
        return sorted(self._handlers)

    def stats(self) -> list[TopicStats]:
        return [
            TopicStats(topic, c.published, c.delivered, c.dropped, max(c.depth, 0))
            for topic, c in sorted(self._counters.items())
        ]

    def subscriptions(self) -> list[SubscriptionStats]:
        return [
            SubscriptionStats(s.name, s.pattern, len(s), s.maxsize, s.dropped) for s in self._subs
        ]

    async def close(self) -> None:
        self._closed = True
        for sub in list(self._subs):
            sub.close()
        self._handlers.clear()
