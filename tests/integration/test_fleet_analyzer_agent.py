"""A central's AnalyzerAgent (``fleet=True``) on a real bus: every host's snapshots, one
engine each, host-down on the central's (injected) clock, and no host speaking for another."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from watchkeeper.agents.analyzer import AnalyzerAgent
from watchkeeper.bus import MemoryBus
from watchkeeper.config import ConfigStore
from watchkeeper.events import Alert, CpuStats, MemoryStats, MetricSnapshot
from watchkeeper.store.sqlite import SqliteStore

from ..conftest import BusRecorder, make_settings

T0 = datetime(2030, 3, 1, 12, 0, tzinfo=timezone.utc)


def snap(host: str, seq: int, cpu: float = 10.0) -> MetricSnapshot:
    return MetricSnapshot(host=host, seq=seq, interval_s=5.0,
                          at=T0 + timedelta(seconds=5 * seq),
                          cpu=CpuStats(percent=cpu, count_logical=2),
                          memory=MemoryStats(percent=30.0))


async def test_the_central_analyses_every_host_refuses_spoofing_and_sees_a_host_go_down(
        tmp_path: Path) -> None:
    settings = make_settings(tmp_path, analyzer={"for_s": 0},
                             agents={"check_interval": 0.05})
    now = [T0]
    bus = MemoryBus()
    recorder = BusRecorder(bus)
    store = SqliteStore.open(settings.storage)
    agent = AnalyzerAgent(store=store, bus=bus, config=ConfigStore(settings), host="central",
                          fleet=True, wall=lambda: now[0])
    await agent.setup()
    try:
        await bus.publish("metrics.web-1", snap("web-1", 1, cpu=99.0))
        await bus.publish("metrics.db-1", snap("db-1", 1))
        # web-1's agent claims to be db-1: refused, whatever it says.
        await bus.publish("metrics.web-1", snap("db-1", 2, cpu=99.0))
        await agent._perform_check()
        alerts = [(t, e) for t, e in recorder.drain() if isinstance(e, Alert)]
        assert [(t, e.host, e.metric) for t, e in alerts] == [
            ("alerts.web-1", "web-1", "cpu.percent")]
        assert agent.spoofed == 1
        assert agent.latest("db-1") == snap("db-1", 1)

        # db-1 keeps reporting; web-1 goes silent. 60 s later (default) it is down, once.
        now[0] = T0 + timedelta(seconds=30)
        await bus.publish("metrics.db-1", snap("db-1", 7))
        await agent._perform_check()
        now[0] = T0 + timedelta(seconds=61)
        await bus.publish("metrics.db-1", snap("db-1", 12))
        await agent._perform_check()
        await bus.publish("metrics.db-1", snap("db-1", 13))
        await agent._perform_check()
        every = [(t, e) for t, e in recorder.drain() if isinstance(e, Alert)]
        assert [(t, e.rule, e.state) for t, e in every[len(alerts):]] == [
            ("alerts.web-1", "host_down", "firing")]
    finally:
        await agent.teardown()
        await store.close()
        await bus.close()
