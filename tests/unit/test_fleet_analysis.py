"""FleetAnalyzer: one engine per host behind the Analyzer interface, and host-down for a host
that stops reporting (the central's clock, injected)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from watchkeeper.analysis.fleet import FleetAnalyzer
from watchkeeper.config import Settings
from watchkeeper.events import CpuStats, MemoryStats, MetricSnapshot

from ..conftest import make_settings

T0 = datetime(2030, 3, 1, 12, 0, tzinfo=timezone.utc)
E0 = T0.timestamp()


def snap(host: str, seq: int, cpu: float = 10.0) -> MetricSnapshot:
    return MetricSnapshot(host=host, seq=seq, interval_s=5.0,
                          at=T0 + timedelta(seconds=5 * seq),
                          cpu=CpuStats(percent=cpu, count_logical=2),
                          memory=MemoryStats(percent=30.0))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, analyzer={"for_s": 0})


def test_each_host_has_its_own_engine_and_its_alerts(settings: Settings) -> None:
    fleet = FleetAnalyzer(lambda: settings)
    assert fleet.observe(snap("a", 1, cpu=99.0), received=E0) != []
    assert fleet.observe(snap("b", 1), received=E0) == []
    (hot,) = fleet.active_alerts()
    assert hot.host == "a" and hot.metric == "cpu.percent"
    assert fleet.hosts == ("a", "b")
    # An ack finds the host that owns the alert; an unknown fingerprint changes nothing.
    acked = fleet.ack(hot.fingerprint, "ann")
    assert acked is not None and acked.state == "acknowledged" and acked.host == "a"
    assert fleet.ack("nope", "ann") is None
    states = {h.host: h for h in fleet.host_states()}
    assert states["a"].open_alerts == 1 and states["a"].worst == "critical"
    assert states["b"].open_alerts == 0 and states["b"].worst is None
    assert states["b"].last_snapshot_at == T0 + timedelta(seconds=5)


def test_a_silent_host_is_down_once_after_the_stated_time_and_up_at_its_next_report(
        settings: Settings) -> None:
    assert settings.analyzer.host_down_after_s == 60  # the default the README states
    fleet = FleetAnalyzer(lambda: settings)
    fleet.observe(snap("a", 1), received=E0)
    fleet.observe(snap("b", 1), received=E0 + 50)
    assert fleet.check_silent(E0 + 59.9) == []
    (down,) = fleet.check_silent(E0 + 60)
    assert (down.host, down.rule, down.severity, down.state) == ("a", "host_down", "critical",
                                                                 "firing")
    assert down.summary.startswith("Host a stopped reporting: nothing since 2030-03-01 12:00:00")
    assert fleet.check_silent(E0 + 90) == []  # once, not every check
    assert [h.down for h in fleet.host_states()] == [True, False]
    (b_down,) = fleet.check_silent(E0 + 110)
    assert b_down.host == "b"
    # a reports again: its host-down resolves, and nothing else of it is touched.
    back = fleet.observe(snap("a", 30), received=E0 + 150)
    assert [(x.rule, x.state) for x in back] == [("host_down", "resolved")]
    assert "reports again after 2 min" in back[0].summary
    assert [h.down for h in fleet.host_states()] == [False, True]


def test_a_silence_covers_every_host_also_one_that_reports_later(settings: Settings) -> None:
    fleet = FleetAnalyzer(lambda: settings)
    fleet.observe(snap("a", 1, cpu=99.0), received=E0)
    silence, changes = fleet.silence({"metric": "cpu.percent"}, T0 + timedelta(hours=1),
                                     by="ann")
    assert [c.silenced for c in changes] == [True]
    later = fleet.observe(snap("c", 1, cpu=99.0), received=E0)
    assert later and all(a.silenced for a in later)
    assert [s.id for s in fleet.silences] == [silence.id]
    lifted = fleet.unsilence(silence.id)
    assert sorted(a.host for a in lifted) == ["a", "c"] and fleet.silences == []
    with pytest.raises(ValueError, match="at least one matcher"):
        fleet.silence({}, T0 + timedelta(hours=1))
    # An expired silence is dropped at the next check.
    fleet.silence({"host": "a"}, T0 + timedelta(minutes=1))
    fleet.check_silent(E0 + 120)
    assert fleet.silences == []


def test_hosts_past_the_bound_are_refused_not_followed(settings: Settings,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    fleet = FleetAnalyzer(lambda: settings, max_hosts=2)
    for host in ("a", "b", "c", "d"):
        fleet.observe(snap(host, 1, cpu=99.0), received=E0)
    assert fleet.hosts == ("a", "b")
    assert {a.host for a in fleet.active_alerts()} == {"a", "b"}
    assert [r.getMessage() for r in caplog.records if "ignoring host" in r.getMessage()] == [
        "fleet: 2 hosts followed already (the most one central takes); ignoring host 'c'",
        "fleet: 2 hosts followed already (the most one central takes); ignoring host 'd'"]


def test_restart_restores_each_hosts_alerts_and_baselines(settings: Settings) -> None:
    fleet = FleetAnalyzer(lambda: settings)
    fired = fleet.observe(snap("a", 1, cpu=99.0), received=E0)
    fleet.observe(snap("b", 1), received=E0)
    down = fleet.check_silent(E0 + 61)
    saved = fleet.baselines_to_dict()
    assert set(saved["hosts"]) == {"a", "b"}

    again = FleetAnalyzer(lambda: settings)
    kept = again.restore([*fired, *down])
    assert sorted((a.host, a.rule) for a in kept) == [("a", "host_down"), ("a", "threshold"),
                                                      ("b", "host_down")]
    again.baselines_from_dict(saved)
    assert again.baselines_from_dict({"hosts": "not a mapping"}) == 0
    assert [h.down for h in again.host_states()] == [True, True]
    back = again.observe(snap("b", 20), received=E0 + 200)
    assert [(x.host, x.rule, x.state) for x in back] == [("b", "host_down", "resolved")]
