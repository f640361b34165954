"""The Bus protocol every backend implements, and its topic conventions.

Topics are dot-separated tokens, NATS style: ``metrics.<host>``, ``alerts.<host>``,
``health.<host>.<agent>``, ``command.<host>.<agent>``. Patterns use ``*`` for one token and
``>`` for one or more trailing tokens, so the in-memory bus and NATS JetStream agree.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from watchkeeper.events import Event


class BusError(Exception):
    """Base for bus failures."""


class BusOverflowError(BusError):
    """A never-drop event could not be queued for a subscriber in time (it fails loudly)."""


class NoResponderError(BusError):
    """A request went to a topic that nobody serves."""


class BusClosedError(BusError):
    """The bus was closed."""


def metrics_topic(host: str) -> str:
    return f"metrics.{host}"


def health_topic(host: str, agent: str) -> str:
    return f"health.{host}.{agent}"


def errors_topic(host: str, agent: str) -> str:
    return f"errors.{host}.{agent}"


def command_topic(host: str, agent: str) -> str:
    return f"command.{host}.{agent}"


def system_topic(host: str) -> str:
    return f"system.{host}"


@lru_cache(maxsize=4096)
def topic_matches(pattern: str, topic: str) -> bool:
    """NATS subject matching: ``*`` is one token, a final ``>`` is one or more tokens."""
    p_tokens = pattern.split(".")
    t_tokens = topic.split(".")
    for i, p in enumerate(p_tokens):
        if p == ">":
            return i == len(p_tokens) - 1 and len(t_tokens) > i
        if i >= len(t_tokens):
            return False
        if p != "*" and p != t_tokens[i]:
            return False
    return len(p_tokens) == len(t_tokens)


@dataclass(frozen=True)
class TopicStats:
    """Counters for one topic, for the 'Message Bus' views."""

    topic: str
    published: int
    delivered: int
    dropped: int
    queue_depth: int


@dataclass(frozen=True)
class SubscriptionStats:
    name: str
    pattern: str
    depth: int
    maxsize: int
    dropped: int


class Subscription(Protocol):
    """A bounded stream of (topic, event) pairs for one subscriber."""

    name: str
    pattern: str

    def __aiter__(self) -> AsyncIterator[tuple[str, Event]]: ...

    async def get(self) -> tuple[str, Event]: ...

    def get_nowait(self) -> tuple[str, Event] | None:
        """The next queued item, or None when the queue is empty."""
        ...

    def close(self) -> None: ...

    def commit(self) -> None:
        """Everything handed out so far is durable where the subscriber keeps it: a network
        bus acknowledges it now (from the first call on, only here), so a subscriber killed
        before its commit gets it again after a restart. In-process: nothing to do."""
        ...


Handler = Callable[[Event], Awaitable[Event]]
#: Which topics a subscriber takes (an analysis shard's own hosts).
TopicFilter = Callable[[str], bool]


class Bus(Protocol):
    """Publish/subscribe by topic plus request/reply; memory.py (one process) and nats.py."""

    async def publish(self, topic: str, event: Event) -> None:
        """Deliver to every matching subscriber; may raise BusOverflowError for never-drop
        events whose subscriber stays full."""
        ...

    def subscribe(self, pattern: str, *, name: str = "", maxsize: int | None = None,
                  lossy: bool = False, keep: TopicFilter | None = None) -> Subscription:
        """A bounded queue of matching events; ``lossy`` subscribers (observers such as a
        browser's live stream) drop their oldest event when full instead of ever making a
        publisher wait. ``keep``: only topics it accepts are queued; the rest are passed
        over (on NATS acknowledged unread, before decoding): an analysis shard's hosts."""
        ...

    def serve(self, topic: str, handler: Handler) -> Callable[[], None]:
        """Answer requests on ``topic``; returns a function that stops serving."""
        ...

    async def request(self, topic: str, event: Event, *, timeout: float = 5.0) -> Event: ...

    def stats(self) -> list[TopicStats]: ...

    def subscriptions(self) -> list[SubscriptionStats]: ...

    async def close(self) -> None: ...
