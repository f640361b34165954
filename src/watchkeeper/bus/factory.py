"""The bus the settings ask for: in-process by default, NATS JetStream for a fleet."""

from __future__ import annotations

from watchkeeper.bus.base import Bus
from watchkeeper.bus.memory import MemoryBus
from watchkeeper.config import BusConfig


def make_bus(config: BusConfig, *, client: str) -> Bus:
    """A bus for ``bus.backend`` (a NATS bus is connected later, by :func:`start_bus`)."""
    if config.backend == "memory":
        return MemoryBus()
    from watchkeeper.bus.nats import NatsBus  # nats-py is imported only when it is used

    return NatsBus(config, client=client)


async def start_bus(bus: Bus) -> None:
    """Connect a network bus that is not connected yet (the in-process one needs nothing)."""
    if isinstance(bus, MemoryBus):
        return
    from watchkeeper.bus.nats import NatsBus

    if isinstance(bus, NatsBus) and not bus.connected:
        await bus.connect()
