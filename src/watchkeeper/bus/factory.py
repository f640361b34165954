"""The bus the settings ask for: in-process by default, NATS JetStream for a fleet."""

from __future__ import annotations

from pathlib import Path

from watchkeeper.bus.base import Bus
from watchkeeper.bus.memory import MemoryBus
from watchkeeper.config import BusConfig


def make_bus(config: BusConfig, *, client: str, host_agent: bool = False) -> Bus:
    """A bus for ``bus.backend`` (a NATS bus is connected later, by :func:`start_bus`).

    A fleet's host agent with its own credentials leaves the streams to the central: its
    broker permissions (bus/auth.py) do not let it create or change them."""
    if config.backend == "memory":
        return MemoryBus()
    from watchkeeper.bus.nats import NatsBus  # nats-py is imported only when it is used

    own_identity = config.nkey_seed_file is not None or config.creds_file is not None
    return NatsBus(config, client=client, manage_streams=not (host_agent and own_identity))


def spooled(bus: Bus, config: BusConfig, *, host: str, data_dir: Path) -> Bus:
    """A fleet agent's network bus with its spool in front (bus/spooling.py); the in-process
    bus as it is."""
    from watchkeeper.bus.nats import NatsBus

    if not isinstance(bus, NatsBus):
        return bus
    from watchkeeper.bus.spool import Spool
    from watchkeeper.bus.spooling import SpoolingBus

    spool = Spool.open(data_dir, max_events=config.spool.max_events,
                       max_bytes=config.spool.max_bytes, max_age_s=config.spool.max_age_s)
    return SpoolingBus(bus, spool, host=host, online=lambda: bus.online)


async def start_bus(bus: Bus) -> None:
    """Connect a network bus that is not connected yet (the in-process one needs nothing)."""
    if isinstance(bus, MemoryBus):
        return
    from watchkeeper.bus.nats import NatsBus
    from watchkeeper.bus.spooling import SpoolingBus

    if isinstance(bus, SpoolingBus):
        await start_bus(bus.inner)
        await bus.start()
        return

    if isinstance(bus, NatsBus) and not bus.connected:
        await bus.connect()
