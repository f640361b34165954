"""A fleet agent cut off from its broker: what it senses meanwhile waits in its spool and
reaches the central afterwards, in order, none lost (a real nats-server killed -9
and started again on the same store; the agent is a real Runtime with its real sensor).

Settings changed from the defaults, and why: ticks every 0.2 s instead of 5 s (the suite's
size of the README's "2 minutes at 5 s: 24/24 samples"; bench/fleet.py runs that one)."""

from __future__ import annotations

import asyncio
import itertools
from datetime import datetime, timezone
from pathlib import Path

from tests.nats_server import NatsServer
from watchkeeper.bus.nats import NatsBus
from watchkeeper.bus.spool import Spool
from watchkeeper.bus.spooling import SpoolingBus
from watchkeeper.events import Alert, MetricSnapshot
from watchkeeper.runtime import Runtime

from ..conftest import make_settings

_prefixes = itertools.count()


async def test_an_outage_is_replayed_in_order_and_once(tmp_path: Path) -> None:
    (tmp_path / "broker").mkdir()
    server = NatsServer(tmp_path / "broker")
    server.start()
    prefix = f"sp{next(_prefixes)}"
    bus_cfg = {"backend": "nats", "url": server.url, "subject_prefix": prefix}
    settings = make_settings(tmp_path / "web-1", bus=bus_cfg,
                             agents={"check_interval": 0.2}).model_copy(
        update={"host_name": "web-1"})
    central_cfg = make_settings(tmp_path / "central", bus=bus_cfg).bus
    central = await NatsBus.open(central_cfg, client="central")
    seen: list[int] = []
    agent: Runtime | None = None
    try:
        sub = central.subscribe("metrics.web-1", name="communicator", maxsize=10_000)
        await central.settle()
        agent = Runtime(settings, role="agent")
        assert isinstance(agent.bus, SpoolingBus)
        await agent.start()

        async def read_until(count: int, timeout: float = 60) -> None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while len(seen) < count:
                left = deadline - loop.time()
                assert left > 0, f"only {len(seen)} snapshots: {seen}"
                try:
                    _topic, event = await asyncio.wait_for(sub.get(), left)
                except asyncio.TimeoutError:
                    continue
                if isinstance(event, MetricSnapshot):
                    seen.append(event.seq)

        await read_until(5)
        spooling = agent.bus
        server.kill()  # the broker goes away: the agent keeps sensing, into its spool
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while spooling.spooled < 10:
            assert loop.time() < deadline, "nothing was spooled during the outage"
            await asyncio.sleep(0.1)
        server.start()  # back, same store
        deadline = loop.time() + 60
        while spooling.replayed < 10 or len(spooling.spool):
            assert loop.time() < deadline, (spooling.replayed, len(spooling.spool))
            await asyncio.sleep(0.1)
        last = max(seen) if seen else 0
        await read_until(len(seen) + 1)  # at least one snapshot after the replay
        # Everything the central got: every tick once, none missing, in order.
        while (item := sub.get_nowait()) is not None:
            if isinstance(item[1], MetricSnapshot):
                seen.append(item[1].seq)
        # At most the events in flight when the broker died come twice: their first send
        # was stored, its acknowledgement lost, and the broker's de-duplication went with
        # its memory stream. The central's history drops such a copy (CommunicatorAgent).
        once = [s for i, s in enumerate(seen) if i == 0 or s != seen[i - 1]]
        assert last >= 0 and len(seen) - len(once) <= 2, seen
        assert once == list(range(once[0], once[0] + len(once))), seen  # none lost, in order
        assert spooling.replayed >= 10
    finally:
        if agent is not None:
            await agent.stop()
        await central.close()
        server.kill()


async def test_a_broker_that_refuses_the_spool_is_tried_again_with_backoff_not_per_event(
        tmp_path: Path, nats_server: NatsServer) -> None:
    """An agent started before its central: the broker is up but no stream takes its events
    yet. It spools them and tries again after a back-off, not at each new event (it used to
    try about 100 times a second, a warning each time); a reconnection cuts the back-off
    short, and then every event reaches the broker once, in order."""
    prefix = f"sp{next(_prefixes)}"
    bus_cfg = make_settings(tmp_path, bus={"backend": "nats", "url": nats_server.url,
                                           "subject_prefix": prefix}).bus
    inner = await NatsBus.open(bus_cfg, client="web-1", manage_streams=False)
    link = {"online": True}  # what the NATS client says of its connection
    bus = SpoolingBus(inner, Spool.open(tmp_path), host="web-1",
                      online=lambda: link["online"], retry_s=60.0, retry_max_s=60.0)
    central: NatsBus | None = None
    t0 = datetime(2030, 3, 1, 12, 0, tzinfo=timezone.utc)

    async def publish(n: int) -> None:
        await bus.publish("alerts.web-1", Alert(
            host="web-1", id=f"a{n}", fingerprint=f"f{n}", rule="cpu", metric="cpu",
            severity="warning", since=t0, at=t0, summary=f"alert {n}"))

    try:
        for n in range(50):
            await publish(n)
        await asyncio.sleep(0.5)
        assert len(bus.spool) == 50
        assert bus.refused == 1, bus.refused  # one refused round for 50 events, then a wait
        central = await NatsBus.open(bus_cfg, client="central")  # makes the streams
        await central.settle()
        await asyncio.sleep(0.5)
        assert len(bus.spool) == 50 and bus.refused == 1  # still waiting out its back-off
        link["online"] = False  # the connection drops ...
        await publish(50)
        await asyncio.sleep(0.2)  # (the flusher sees it offline)
        link["online"] = True  # ... and comes back: the next event tries at once
        await publish(51)
        for _ in range(300):
            if len(bus.spool) == 0:
                break
            await asyncio.sleep(0.1)
        assert len(bus.spool) == 0, "the spool was not sent after the reconnection"
        stored = await central.stored("alerts.web-1")
        assert [e.id for _t, e in stored if isinstance(e, Alert)] == [f"a{n}" for n in range(52)]
    finally:
        await bus.close()
        if central is not None:
            await central.close()
