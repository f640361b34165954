"""Host down across a central's restart (the central's clock injected): a host that stops
reporting is down after ``analyzer.host_down_after_s`` (60 s by default), a host that was
down before the restart and stays down is alerted once, not twice, and a host the history
knows is not forgotten by the new process."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from watchkeeper.agents.analyzer import AnalyzerAgent
from watchkeeper.analysis.fleet import FleetAnalyzer
from watchkeeper.bus import MemoryBus
from watchkeeper.config import ConfigStore, Settings
from watchkeeper.events import Alert, CpuStats, MemoryStats, MetricSnapshot
from watchkeeper.store.sqlite import SqliteStore

from ..conftest import make_settings

T0 = datetime(2030, 3, 1, 12, 0, tzinfo=timezone.utc)
E0 = T0.timestamp()


def snap(host: str, seq: int) -> MetricSnapshot:
    return MetricSnapshot(host=host, seq=seq, interval_s=5.0,
                          at=T0 + timedelta(seconds=5 * seq),
                          cpu=CpuStats(percent=10.0, count_logical=2),
                          memory=MemoryStats(percent=30.0))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)  # defaults: host_down_after_s 60


def test_a_host_down_before_a_restart_stays_down_once_and_is_not_forgotten(
        settings: Settings) -> None:
    assert settings.analyzer.host_down_after_s == 60
    before = FleetAnalyzer(lambda: settings)
    before.observe(snap("a", 1), received=E0)
    (down,) = before.check_silent(E0 + 60)
    assert (down.host, down.rule, down.state) == ("a", "host_down", "firing")

    # The central restarts at E0 + 100: the alert comes back from its history, the host
    # from its snapshots; the host stays silent for another hour.
    after = FleetAnalyzer(lambda: settings)
    after.restore([down])
    after.known(["a"], since=E0 + 100)
    for t in (E0 + 100, E0 + 160, E0 + 3700):
        assert after.check_silent(t) == []  # not alerted twice
    (state,) = after.host_states()
    assert (state.host, state.down, state.open_alerts) == ("a", True, 1)
    (open_alert,) = after.active_alerts()
    assert open_alert.id == down.id  # the same alert, still open
    back = after.observe(snap("a", 900), received=E0 + 3800)
    assert [(x.id, x.rule, x.state) for x in back] == [(down.id, "host_down", "resolved")]


def test_a_host_silent_across_a_restart_is_down_after_the_stated_time_from_it(
        settings: Settings) -> None:
    # a reported until just before the central died; b reports after the restart.
    after = FleetAnalyzer(lambda: settings)
    after.known(["a", "b"], since=E0 + 100)
    after.observe(snap("b", 30), received=E0 + 130)
    assert after.check_silent(E0 + 159.9) == []
    (down,) = after.check_silent(E0 + 160)
    assert (down.host, down.rule, down.severity) == ("a", "host_down", "critical")
    assert after.check_silent(E0 + 170) == []  # once
    (b_down,) = after.check_silent(E0 + 190)
    assert b_down.host == "b"  # b is judged from its own report after the restart
    assert [h.host for h in after.host_states()] == ["a", "b"]


async def test_a_restarted_central_remembers_its_hosts_from_the_history(
        settings: Settings) -> None:
    # What the first process stored: a snapshot of each host, and b's host-down alert.
    store = SqliteStore.open(settings.storage)
    first = FleetAnalyzer(lambda: settings)
    first.observe(snap("a", 1), received=E0)
    first.observe(snap("b", 1), received=E0 - 100)
    (b_down,) = first.check_silent(E0 - 40)
    for host in ("a", "b"):
        store.add_snapshot(snap(host, 1))
    store.add_event("alerts.b", b_down)
    await store.flush()

    now = [T0 + timedelta(seconds=30)]  # the restart, on the central's clock
    bus = MemoryBus()
    agent = AnalyzerAgent(store=store, bus=bus, config=ConfigStore(settings), host="central",
                          fleet=True, wall=lambda: now[0])
    published = bus.subscribe("alerts.*", name="test", maxsize=100)
    await agent.setup()
    try:
        engine = agent.engine
        assert isinstance(engine, FleetAnalyzer)
        assert {h.host: h.down for h in agent.host_states()} == {"a": False, "b": True}
        assert engine.check_silent(E0 + 89) == []
        (a_down,) = engine.check_silent(E0 + 90)  # 60 s after the restart
        assert (a_down.host, a_down.rule) == ("a", "host_down")
        assert engine.check_silent(E0 + 3600) == []  # b is not alerted a second time
        await agent.publish_alert(a_down)
        alerts = []
        while (item := published.get_nowait()) is not None:
            assert isinstance(item[1], Alert)
            alerts.append(item[1])
        assert [(a.host, a.rule) for a in alerts] == [("a", "host_down")]
    finally:
        await agent.teardown()
        await store.close()


async def test_an_in_process_bus_reads_nothing_back(settings: Settings) -> None:
    store = SqliteStore.open(settings.storage)
    agent = AnalyzerAgent(store=store, bus=MemoryBus(), config=ConfigStore(settings),
                          host="central", fleet=True)
    try:
        assert await agent._unstored_alerts() == []
    finally:
        await store.close()
