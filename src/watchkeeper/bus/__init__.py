"""Message bus: the Bus protocol and its backends."""

from watchkeeper.bus.base import (
    Bus,
    BusClosedError,
    BusError,
    BusOverflowError,
    NoResponderError,
    Subscription,
    TopicStats,
    command_topic,
    errors_topic,
    health_topic,
    metrics_topic,
    system_topic,
    topic_matches,
)
from watchkeeper.bus.memory import MemoryBus

__all__ = [
    "Bus",
    "BusClosedError",
    "BusError",
    "BusOverflowError",
    "MemoryBus",
    "NoResponderError",
    "Subscription",
    "TopicStats",
    "command_topic",
    "errors_topic",
    "health_topic",
    "metrics_topic",
    "system_topic",
    "topic_matches",
]
