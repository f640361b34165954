"""A host of a fleet speaking for another: a central's analyzer takes a snapshot or a service
report only from the topic of the host it names (NATS permissions keep each host to its own
subjects; this is the second lock, for a broker set up too widely)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from watchkeeper.agents.analyzer import AnalyzerAgent
from watchkeeper.bus import MemoryBus
from watchkeeper.config import ConfigStore
from watchkeeper.events import Alert, CpuStats, Event, MetricSnapshot, ServiceReport
from watchkeeper.store.sqlite import SqliteStore

from ..conftest import BusRecorder, make_settings

T0 = datetime(2030, 3, 1, 12, 0, tzinfo=timezone.utc)


def hot(host: str) -> MetricSnapshot:
    return MetricSnapshot(host=host, seq=1, interval_s=5.0, at=T0,
                          cpu=CpuStats(percent=99.0, count_logical=2))


def down(host: str) -> ServiceReport:
    return ServiceReport(host=host, at=T0, service="web", manager="process",
                         condition="down", state="stopped", detail="exited 1")


@pytest.mark.parametrize(("topic", "event"), [
    ("metrics.web-1", hot("db-1")),
    ("metrics.web-1", hot("web-1.evil")),
    ("metrics.web-1", hot("")),
    ("metrics.web-1", hot("WEB-1")),
    ("metrics.web-1", hot("web-1 ")),
    ("services.web-1", down("db-1")),
    ("services.web-1", down("web-1\n")),
], ids=["another-host", "dotted-suffix", "empty-host", "case-differs", "trailing-space",
        "service-of-another-host", "service-host-with-newline"])
async def test_an_event_for_another_host_is_refused_and_changes_nothing(
        tmp_path: Path, topic: str, event: Event) -> None:
    # A short check interval: a check with nothing queued waits two of them.
    settings = make_settings(tmp_path, analyzer={"for_s": 0}, agents={"check_interval": 0.05})
    bus = MemoryBus()
    recorder = BusRecorder(bus)
    store = SqliteStore.open(settings.storage)
    agent = AnalyzerAgent(store=store, bus=bus, config=ConfigStore(settings), host="central",
                          fleet=True, wall=lambda: T0 + timedelta(seconds=1))
    await agent.setup()
    try:
        await bus.publish(topic, event)
        await agent._perform_check()
        for _ in range(20):  # the services loop runs as a task of its own
            if agent.spoofed:
                break
            await bus.publish("metrics.noise", MetricSnapshot(host="noise", seq=1,
                                                               interval_s=5.0, at=T0))
            await agent._perform_check()
        assert agent.spoofed == 1
        assert not [e for _, e in recorder.drain() if isinstance(e, Alert)]
        assert agent.engine.active_alerts() == []
        assert event.host not in {h.host for h in agent.host_states()}
    finally:
        await agent.teardown()
        await store.close()
        await bus.close()
