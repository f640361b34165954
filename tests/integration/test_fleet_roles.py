"""The fleet's two roles in one process on a shared in-process bus: a host agent (sensor,
remediator, its own history) and a central (analysis for every host, history, notifications).
The same wiring runs over NATS JetStream between machines."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from watchkeeper.agents.analyzer import AnalyzerAgent
from watchkeeper.agents.sensor import SensorAgent
from watchkeeper.api.app import create_app
from watchkeeper.bus import MemoryBus
from watchkeeper.events import Alert
from watchkeeper.runtime import Runtime

from ..conftest import make_settings


async def until(cond: Callable[[], Any], timeout: float = 20.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (value := cond()):
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)
    return value


class SharedBus(MemoryBus):
    """One in-process bus for two runtimes: only the last one out closes it."""

    users = 2

    async def close(self) -> None:
        self.users -= 1
        if self.users == 0:
            await super().close()


async def test_a_host_agent_and_a_central_share_the_work_and_a_silent_host_is_down(
        tmp_path: Path) -> None:
    bus = SharedBus()
    # Fast loops so the test takes seconds; host_down_after_s at 2 s instead of 60 for the
    # same reason.
    fast: dict[str, Any] = {"check_interval": 0.2, "heartbeat_interval": 0.5}
    central = Runtime(make_settings(tmp_path / "central", agents=fast,
                                    analyzer={"host_down_after_s": 2}
                                    ).model_copy(update={"host_name": "central"}),
                      bus=bus, role="central")
    agent = Runtime(make_settings(tmp_path / "web-1", agents=fast
                                  ).model_copy(update={"host_name": "web-1"}),
                    bus=bus, role="agent")
    assert sorted(a.name for a in central.agents) == ["analyzer", "communicator", "notifier"]
    assert sorted(a.name for a in agent.agents) == ["communicator", "remediator", "sensor"]
    await central.start()
    await agent.start()
    try:
        analyzer = next(a for a in central.agents if isinstance(a, AnalyzerAgent))
        await until(lambda: [h for h in analyzer.host_states() if h.host == "web-1"])
        # The central keeps the host's history; the agent keeps only its own host's.
        await until(lambda: central.store.latest_snapshot("web-1") is not None)
        assert agent.store.latest_snapshot("central") is None
        await until(lambda: agent.store.events())
        assert {e.event.host for e in agent.store.events()} == {"web-1"}
        assert "central" in {e.event.host for e in central.store.events()}

        # The central's API and /metrics speak for every host.
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(central)),
                                     base_url="http://127.0.0.1") as api:
            body = (await api.get("/api/hosts")).json()
            assert body["fleet"] is True
            assert [(h["host"], h["health"]) for h in body["hosts"]] == [("web-1", "ok")]
            exposition = (await api.get("/metrics")).text
        assert 'watchkeeper_host_up{host="web-1"} 1.0' in exposition
        assert 'watchkeeper_cpu_percent{dimension="",host="web-1"}' in exposition
        assert 'watchkeeper_alerts_open{host="web-1",severity="critical"} 0.0' in exposition

        # The host goes quiet (its sensor stops): the central says it is down.
        sensor = next(a for a in agent.agents if isinstance(a, SensorAgent))
        sensor.pause()
        down = await until(lambda: [e for e in central.store.events(kinds=["alert"])
                                    if isinstance(e.event, Alert)
                                    and e.event.rule == "host_down"], timeout=30)
        assert down[0].event.host == "web-1" and down[0].event.severity == "critical"
        (state,) = [h for h in analyzer.host_states() if h.host == "web-1"]
        assert state.down
        # It reports again: resolved.
        sensor.resume()
        await until(lambda: not [h for h in analyzer.host_states() if h.down])
    finally:
        await agent.stop()
        await central.stop()
