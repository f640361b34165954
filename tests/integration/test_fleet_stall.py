"""A fleet agent whose link to the broker stalls (open, but passing nothing: packets dropped
silently) keeps sensing at its cadence: a snapshot the broker does not confirm within the
hand-off (1 s) goes to the spool, and everything reaches the central once the link flows,
every sample once, in order. Real nats-server, a real agent Runtime (real sensor), its link
through a loopback proxy.

Settings changed from the defaults, and why: ticks every 0.2 s instead of 5 s (the stall
holds 20 ticks in 4 s); bus.publish_timeout_s 30 instead of 5, so that a sensor held by an
unconfirmed publication would miss the whole stall (the hand-off, not the timeout, keeps
the cadence); a subject prefix of the test's own."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

from tests.nats_server import NatsServer
from tests.tcp_proxy import CutProxy
from watchkeeper.bus.nats import NatsBus
from watchkeeper.bus.spooling import SpoolingBus
from watchkeeper.events import MetricSnapshot
from watchkeeper.runtime import Runtime

from ..conftest import make_settings

_prefixes = itertools.count()


async def test_a_stalled_link_costs_the_agent_no_tick_and_the_central_no_sample(
        tmp_path: Path, nats_server: NatsServer) -> None:
    prefix = f"st{next(_prefixes)}"
    link = CutProxy(nats_server.port)
    await link.start()
    central = await NatsBus.open(make_settings(tmp_path / "central", bus={
        "backend": "nats", "url": nats_server.url, "subject_prefix": prefix}).bus,
        client="central")
    settings = make_settings(tmp_path / "web-1", agents={"check_interval": 0.2}, bus={
        "backend": "nats", "url": link.url, "subject_prefix": prefix,
        "publish_timeout_s": 30}).model_copy(update={"host_name": "web-1"})
    agent: Runtime | None = None
    seen: list[int] = []
    try:
        sub = central.subscribe("metrics.web-1", name="communicator", maxsize=10_000)
        await central.settle()
        agent = Runtime(settings, role="agent")
        assert isinstance(agent.bus, SpoolingBus)
        await agent.start()
        loop = asyncio.get_running_loop()

        async def read(until: float) -> None:
            while loop.time() < until:
                try:
                    _t, event = await asyncio.wait_for(sub.get(), 0.2)
                except asyncio.TimeoutError:
                    continue
                if isinstance(event, MetricSnapshot):
                    seen.append(event.seq)

        await read(loop.time() + 3)
        assert seen, "the agent never reached the central"
        link.stall()
        before = agent.bus.spooled
        await asyncio.sleep(4.0)
        spooled = agent.bus.spooled - before
        link.flow()
        # The sensor kept its cadence: 20 ticks in 4 s less the first hand-off and a loaded
        # machine's slack; held by the publication, it would have taken none (30 s timeout).
        assert spooled >= 8, f"only {spooled} snapshots sensed during a 4 s stall"
        await read(loop.time() + 15)
        once = [s for i, s in enumerate(seen) if i == 0 or s != seen[i - 1]]
        assert once == list(range(once[0], once[0] + len(once))), once
        assert len(once) == len(set(once)), "out of order"
    finally:
        if agent is not None:
            await agent.stop()
        await central.close()
        await link.close()
