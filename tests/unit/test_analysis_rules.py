"""Threshold rules: `for`, hysteresis, per-dimension overrides, missing values, every family."""

from __future__ import annotations

import pytest

from tests.unit.test_analysis_streams import (
    Stream,
    analyzer,
    disk,
    lifecycle,
    nic,
    only,
    settings,
)
from watchkeeper.analysis.engine import GONE_AFTER_S
from watchkeeper.config import ConfigError, ConfigStore
from watchkeeper.events import Alert

TICK = 5.0


def disk_var(percent: float) -> list:  # type: ignore[type-arg]
    return [disk("/", 40), disk("/var", percent)]


def test_fires_only_after_for_s_then_once_and_clears_only_below_the_margin() -> None:
    an = analyzer()  # disk warning 85, for 30 s, hysteresis 5
    s = Stream()
    # Above the level for 25 s: still pending.
    assert s.feed(an, 6, disks=disk_var(90)) == []
    # A dip below the level resets pending: another 25 s above fires nothing.
    assert s.feed(an, 1, disks=disk_var(84)) == []
    assert s.feed(an, 6, disks=disk_var(90)) == []
    # The 7th consecutive sample is 30 s after the first: it fires, once.
    fired = s.feed(an, 1, disks=disk_var(90))
    assert [(a.labels["change"], a.dimension, a.severity) for a in fired] == [
        ("new", "/var", "warning")]
    assert "for 30 s" in fired[0].summary
    # Flapping around the level, but never under 85 - 5: no new alert, no resolve.
    wobble = [81, 89, 84, 86, 80.5, 88, 83] * 10
    assert lifecycle(s.feed(an, len(wobble), disks=lambda i: disk_var(wobble[i]))) == []
    assert len(an.active_alerts()) == 1
    # Under the margin: resolved, with the words saying why.
    done = s.feed(an, 1, disks=disk_var(79.9))
    assert [a.state for a in done] == ["resolved"]
    assert "back to normal (below 80%" in done[0].summary
    assert an.active_alerts() == []


def test_critical_follows_its_own_for_and_escalates_the_open_alert() -> None:
    an = analyzer()
    s = Stream()
    new = s.feed(an, 7, cpu=80.0)
    assert [a.severity for a in new] == ["warning"]
    assert s.feed(an, 6, cpu=93.0) == []  # critical pending for 25 s
    up = s.feed(an, 1, cpu=93.0)
    assert [(a.labels["change"], a.severity, a.threshold, a.id) for a in up] == [
        ("escalated", "critical", 90.0, new[0].id)]
    # Falling back to warning level does not emit a de-escalation (severity never drops).
    assert lifecycle(s.feed(an, 20, cpu=80.0)) == []


def test_values_missing_from_a_snapshot_neither_fire_nor_resolve() -> None:
    an = analyzer()
    s = Stream()
    assert s.feed(an, 5, cpu=95.0) == []  # pending for 20 s
    # CPU unreadable for a while: no alert fires from a value that is not there.
    assert s.feed(an, 10, cpu=None, missing=[("cpu.percent", "timed out after 2s")]) == []
    assert [a.labels["change"] for a in s.feed(an, 1, cpu=95.0)] == ["new"]
    # ... nor does it resolve one.
    assert s.feed(an, 10, cpu=None, missing=[("cpu", "timed out after 2s")]) == []
    # A hung mount is left out of the snapshot with a reason: its alert holds, however long.
    assert [a.dimension for a in s.feed(an, 7, cpu=95.0, disks=disk_var(97))] == ["/var"]
    hung = s.feed(an, int(2 * GONE_AFTER_S / TICK), cpu=95.0, disks=[disk("/", 40)],
                  missing=[("disk:/var", "timed out after 2s (still hung)")])
    assert hung == []
    assert {a.dimension for a in an.active_alerts()} == {"", "/var"}
    # The outage counted as "still there": if the mount now vanishes without a reason, it
    # gets the full GONE_AFTER_S before it resolves, not an immediate one.
    assert s.feed(an, int(GONE_AFTER_S / TICK) - 1, cpu=95.0, disks=[disk("/", 40)]) == []
    assert [a.dimension for a in s.feed(an, 2, cpu=95.0, disks=[disk("/", 40)])] == ["/var"]


def test_a_dimension_that_disappears_without_a_reason_resolves_as_gone() -> None:
    an = analyzer()
    s = Stream()
    assert len(s.feed(an, 7, disks=disk_var(97))) == 1
    gone = s.feed(an, int(GONE_AFTER_S / TICK) + 1, disks=[disk("/", 40)])
    assert [(a.state, a.dimension) for a in gone] == [("resolved", "/var")]
    assert "no longer reported" in gone[0].summary


def test_per_metric_and_per_dimension_overrides() -> None:
    an = analyzer(settings(analyzer={"rules": {
        "disk.percent": {"warning": 70},
        "disk.percent:/data": {"warning": 97, "critical": 99},
        "disk.percent:/scratch": {"enabled": False},
        "cpu.percent": {"for_s": 0},
        "net.errors_in:eth1": {"warning": 1000, "critical": 5000},
    }}))
    s = Stream()
    alerts = s.feed(an, 7, cpu=80.0,
                    disks=[disk("/", 75), disk("/data", 95), disk("/scratch", 99.9)],
                    net=[nic("eth0", errors_in=50), nic("eth1", errors_in=50)])
    fired = {(a.metric, a.dimension): a for a in alerts}
    assert set(fired) == {("disk.percent", "/"), ("cpu.percent", ""), ("net.errors_in", "eth0")}
    assert fired[("disk.percent", "/")].threshold == 70
    # the default critical (95) still applies to / : field-by-field merge
    assert only(s.feed(an, 7, disks=[disk("/", 96), disk("/data", 95), disk("/scratch", 99)]),
                "escalated")[0].severity == "critical"
    # for_s 0 made the CPU alert fire on the very first sample
    assert fired[("cpu.percent", "")].since == fired[("cpu.percent", "")].at


def test_disabling_a_rule_live_resolves_its_open_alert() -> None:
    store = ConfigStore(settings())
    from watchkeeper.analysis import Analyzer

    an = Analyzer(lambda: store.current, host="web1")
    s = Stream()
    assert len(s.feed(an, 7, disks=disk_var(97))) == 1
    store.update({"analyzer": {"rules": {"disk.percent:/var": {"enabled": False}}}})
    out = s.feed(an, 1, disks=disk_var(97))
    assert [a.state for a in out] == ["resolved"]
    assert "rule was disabled" in out[0].summary
    assert s.feed(an, 20, disks=disk_var(97)) == []


@pytest.mark.parametrize(("values", "metric", "dimension", "summary"), [
    ({"load": 10.0}, "cpu.load_per_core", "", "Load per core is 2.5 (warning at 2) for 30 s"),
    ({"swap": 60.0}, "memory.swap_percent", "", "Swap is 60% used (warning at 50%) for 30 s"),
    ({"disks": [disk("/", 40, inodes=90)]}, "disk.inodes_percent", "/",
     "Disk / has 90% of its inodes in use (warning at 85%) for 30 s"),
    ({"net": [nic("eth0", errors_in=12)]}, "net.errors_in", "eth0",
     "Interface eth0 had 12 receive errors in the last 5 s (warning at 10) for 30 s"),
    ({"net": [nic("eth0", drops_in=150)]}, "net.drops_in", "eth0",
     "Interface eth0 had 150 dropped incoming packets in the last 5 s (warning at 100) "
     "for 30 s"),
    ({"zombies": 25}, "processes.zombies", "", "25 processes are zombies (warning at 20) for "
     "30 s"),
])
def test_every_family_has_a_rule(values: dict, metric: str, dimension: str,  # type: ignore[type-arg]
                                 summary: str) -> None:
    alerts: list[Alert] = Stream().feed(analyzer(), 7, **values)
    assert [(a.metric, a.dimension, a.summary) for a in alerts] == [(metric, dimension, summary)]


def test_net_counts_are_per_interval_so_an_old_burst_does_not_fire_forever() -> None:
    an = analyzer()
    s = Stream()
    fired = s.feed(an, 7, net=[nic("eth0", errors_in=40)])
    assert len(fired) == 1
    # The collector sends counts during the interval: once the burst stops they are 0.
    assert [a.state for a in s.feed(an, 1, net=[nic("eth0")])] == ["resolved"]


@pytest.mark.parametrize(("analyzer_cfg", "message"), [
    ({"rules": {"disk.precent": {"warning": 80}}}, "did you mean 'disk.percent'"),
    ({"rules": {"cpu.percent": {"warning": 90, "critical": 80}}}, "must not be above"),
    ({"known_jobs": [{"name": "b", "match": "x", "windows": ["1:00-3:00"]}]}, "HH:MM-HH:MM"),
    ({"known_jobs": [{"name": "b", "match": "x", "timezone": "Mars/Base"}]}, "time zone"),
    ({"forecast": {"horizon_hours": 1, "critical_hours": 2}}, "critical_hours"),
])
def test_bad_analyzer_settings_are_rejected_when_loaded(analyzer_cfg: dict,  # type: ignore[type-arg]
                                                        message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings(analyzer=analyzer_cfg)
