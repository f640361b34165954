"""Health history from events written through the real SQLite store, at fixed times
(2026-01-01, not today): incidents, time to detect/recover, uptime, success rates."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from watchkeeper.config import StorageConfig
from watchkeeper.events import (
    Alert,
    Event,
    HostIdentity,
    MetricSnapshot,
    RemediationEvent,
    ServiceReport,
)
from watchkeeper.health_history import (
    RangeError,
    duration_stats,
    health_history,
    parse_when,
    resolve_range,
)
from watchkeeper.store.sqlite import SqliteStore

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
HOST = "h1"


def at(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "history.db", StorageConfig(data_dir=tmp_path))
    try:
        yield s
    finally:
        await s.close()


def alert(t: float, since: float, change: str, *, state: str = "firing", fp: str = "fp-web",
          rule: str = "service", metric: str = "service.up", dimension: str = "web",
          severity: str = "critical", host: str = HOST) -> Alert:
    return Alert(host=host, at=at(t), id=f"{fp}-{int(since * 1000):x}", fingerprint=fp,
                 rule=rule, metric=metric, dimension=dimension, severity=severity,  # type: ignore[arg-type]
                 state=state, since=at(since), summary=f"{dimension} {change}",  # type: ignore[arg-type]
                 labels={"change": change})


def report(t: float, condition: str, service: str = "web") -> ServiceReport:
    return ServiceReport(host=HOST, at=at(t), service=service, manager="process",
                         condition=condition, state="running")  # type: ignore[arg-type]


def remediation(t: float, phase: str, *, outcome: str | None = None,
                fp: str | None = "fp-web", target: str = "web",
                action: str = "restart_service", verified: bool | None = None
                ) -> RemediationEvent:
    return RemediationEvent(host=HOST, at=at(t), phase=phase, action=action,  # type: ignore[arg-type]
                            target=target, outcome=outcome, verified=verified,
                            fingerprint=fp)


async def write(store: SqliteStore, *events: Event) -> None:
    for ev in events:
        if isinstance(ev, MetricSnapshot):
            store.add_snapshot(ev)
        else:
            topic = {Alert: "alerts", RemediationEvent: "actions",
                     ServiceReport: "services"}[type(ev)]
            store.add_event(f"{topic}.{ev.host}", ev)
    await store.flush()


def crash_and_restart() -> list[Event]:
    """web exits at 100 s, fires at 100.4 s, restarted at 101-102 s, resolved at 108 s."""
    return [
        report(0, "ok"),
        report(100, "down"),
        alert(100.4, 100, "new"),
        report(101, "restarting"),
        remediation(101, "started"),
        remediation(102, "finished", outcome="ok", verified=True),
        report(102, "starting"),
        alert(102.5, 100, "updated"),
        report(108, "ok"),
        alert(108, 100, "resolved", state="resolved"),
    ]


def history(store: SqliteStore, start: float, end: float, **kw: Any) -> Any:
    return health_history(store, at(start), at(end), interval_s=kw.pop("interval_s", 5.0),
                          now=kw.pop("now", at(10_000)))


async def test_a_crash_and_restart_is_one_incident_with_its_ttd_ttr_uptime_and_success(
        store: SqliteStore) -> None:
    await write(store, *crash_and_restart())
    h = history(store, 0, 200)
    (inc,) = h.incidents
    assert inc.state == "resolved" and inc.host == HOST and inc.severity == "critical"
    assert inc.start == at(100) and inc.end == at(108)
    assert inc.ttd_s == pytest.approx(0.4)   # exit -> alert fired
    assert inc.ttr_s == pytest.approx(7.6)   # fired -> resolved
    assert [a.id for a in inc.alerts] == ["fp-web-186a0"]
    (action,) = inc.actions
    assert (action.action, action.target, action.success) == ("restart_service", "web", True)
    assert h.ttd.count == 1 and h.ttd.p50_s == pytest.approx(0.4)
    assert h.ttr.mean_s == pytest.approx(7.6) and h.ttr.p90_s == pytest.approx(7.6)
    (svc,) = h.services
    assert (svc.service, svc.down_s, svc.known_s) == ("web", 2.0, 200.0)  # down + restarting
    assert svc.uptime_percent == pytest.approx(99.0)
    assert [(r.key, r.successes, r.failures, r.success_rate) for r in h.by_action] == [
        ("restart_service", 1, 0, 1.0)]
    assert [(r.key, r.success_rate) for r in h.by_target] == [("h1/web", 1.0)]
    assert h.truncated is False


async def test_overlapping_alerts_of_one_problem_are_one_incident(store: SqliteStore) -> None:
    cpu = {"rule": "cpu_high", "metric": "cpu.percent", "dimension": ""}
    await write(
        store,
        # CPU warning, then critical (another rule) while the warning still fires.
        alert(10, 5, "new", fp="cpu-warn", severity="warning", **cpu),
        alert(30, 25, "new", fp="cpu-crit", **cpu),
        alert(50, 25, "resolved", state="resolved", fp="cpu-crit", **cpu),
        # Touching: a new warning opens the instant the first closes.
        alert(60, 5, "resolved", state="resolved", fp="cpu-warn", severity="warning", **cpu),
        alert(60, 60, "new", fp="cpu-warn", severity="warning", **cpu),
        alert(70, 60, "resolved", state="resolved", fp="cpu-warn", severity="warning", **cpu),
        # A disk alert at the same time is another problem...
        alert(20, 20, "new", fp="disk", rule="disk_full", metric="disk.percent",
              dimension="/var", severity="warning"),
        # ...and so is the same CPU alert on another host.
        alert(12, 6, "new", fp="cpu-warn", severity="warning", host="h2", **cpu),
        # A memory alert is linked to the disk problem by one remediation naming both.
        alert(21, 21, "new", fp="mem", rule="memory_high", metric="memory.percent",
              severity="warning"),
        remediation(40, "finished", outcome="failed", fp="disk", target="/var",
                    action="clean_disk"),
        remediation(41, "finished", outcome="ok", fp="mem", target="/var",
                    action="clean_disk"),
        alert(90, 20, "resolved", state="resolved", fp="disk", rule="disk_full",
              metric="disk.percent", dimension="/var", severity="warning"),
    )
    h = history(store, 0, 100)
    shape = [(i.host, sorted(a.fingerprint for a in i.alerts), i.state) for i in h.incidents]
    assert shape == [
        (HOST, ["cpu-crit", "cpu-warn", "cpu-warn"], "resolved"),
        ("h2", ["cpu-warn"], "open"),
        (HOST, ["disk", "mem"], "open"),
    ]
    cpu_inc = h.incidents[0]
    assert cpu_inc.severity == "critical" and cpu_inc.start == at(5) and cpu_inc.end == at(70)
    assert cpu_inc.ttd_s == pytest.approx(5) and cpu_inc.ttr_s == pytest.approx(60)
    assert h.incidents[1].end is None and h.incidents[1].ttr_s is None
    assert [a.success for a in h.incidents[2].actions] == [False, True]
    assert [(r.key, r.successes, r.failures, r.success_rate) for r in h.by_action] == [
        ("clean_disk", 1, 1, 0.5)]
    assert h.ttr.count == 1  # open incidents have no time to recover yet


async def test_ranges_filter_and_relative_times_count_back_from_now(
        store: SqliteStore) -> None:
    later = [e.model_copy(update={"at": e.at + timedelta(hours=2)}) for e in crash_and_restart()]
    later = [e.model_copy(update={"since": e.since + timedelta(hours=2),
                                  "id": e.id + "-later"})
             if isinstance(e, Alert) else e for e in later]
    await write(store, *crash_and_restart(), *later)
    assert len(history(store, 0, 200).incidents) == 1
    assert len(history(store, 0, 3 * 3600).incidents) == 2
    (second,) = history(store, 3600, 3 * 3600).incidents
    assert second.start == at(7300)
    frm, to = resolve_range("-1h", None, now=at(3 * 3600))
    assert (frm, to) == (at(2 * 3600), at(3 * 3600))
    frm, to = resolve_range(None, None, now=at(86400))
    assert (frm, to) == (at(0), at(86400))  # default: the last 24 h
    assert parse_when("2026-01-01T00:01:40Z", at(0), name="from") == at(100)
    assert parse_when("2026-01-01T00:01:40", at(0), name="from") == at(100)  # naive is UTC


@pytest.mark.parametrize(("start", "end", "message"), [
    ("yesterday", None, "from='yesterday' is not a time"),
    ("-24x", None, "from='-24x' is not a time"),
    (None, "soon", "to='soon' is not a time"),
    ("-1h", "-2h", "must be before to"),
    ("-400d", None, "longer than 366 days"),
], ids=["word", "bad-unit", "bad-to", "backwards", "too-long"])
def test_bad_ranges_are_refused_with_the_reason(start: str | None, end: str | None,
                                               message: str) -> None:
    with pytest.raises(RangeError, match=message):
        resolve_range(start, end, now=at(0))


async def test_an_empty_history_is_an_answer(store: SqliteStore) -> None:
    h = history(store, 0, 3600)
    assert h.incidents == [] and h.hosts == [] and h.services == []
    assert h.by_action == [] and h.by_target == []
    assert h.ttd.count == 0 and h.ttd.mean_s is None and h.ttr.p90_s is None


def snap(t: float, host: str = HOST, boot: float | None = None) -> MetricSnapshot:
    identity = None if boot is None else HostIdentity(
        hostname=host, os="Linux", os_release="6", machine="x86_64", boot_time=at(boot).timestamp())
    return MetricSnapshot(host=host, at=at(t), seq=int(t), interval_s=5.0, identity=identity)


# Every 5 s from 0 to 500 s, then nothing until 800 s, then every 5 s to 1000 s; one
# snapshot before the range (watched before it).
TIMES = [*range(0, 501, 5), *range(800, 1001, 5)]


async def test_a_gap_whose_boot_times_are_unknown_is_left_out_of_the_uptime(
        store: SqliteStore) -> None:
    await write(store, snap(-3), *(snap(t) for t in TIMES))
    (host,) = history(store, 0, 1000).hosts
    assert host.unknown_s == pytest.approx(300.0) and host.gaps == 1
    assert host.up_s == pytest.approx(700.0) and host.down_s == 0 and host.reboots == 0
    assert host.uptime_percent == pytest.approx(100.0)
    # The end of the range long after the last snapshot (silent now) is unknown too.
    (host,) = history(store, 0, 1100).hosts
    assert host.unknown_s == pytest.approx(400.0) and host.gaps == 2
    assert host.uptime_percent == pytest.approx(100.0)


async def test_a_reboot_during_a_gap_is_down_until_the_new_boot(store: SqliteStore) -> None:
    # Booted at -1000; silent from 500; booted again at 700 (watchkeeper back at 800).
    await write(store, snap(-3, boot=-1000),
                *(snap(t, boot=-1000 if t <= 500 else 700) for t in TIMES))
    (host,) = history(store, 0, 1000).hosts
    assert host.reboots == 1 and host.down_s == pytest.approx(200.0)
    assert host.up_s == pytest.approx(800.0) and host.unwatched_s == 0
    assert host.uptime_percent == pytest.approx(80.0)


async def test_watchkeeper_stopped_without_a_reboot_is_not_the_machines_downtime(
        store: SqliteStore) -> None:
    # Watchkeeper stopped for 5 minutes for an upgrade; the machine kept its boot time.
    await write(store, snap(-3, boot=-1000), *(snap(t, boot=-1000) for t in TIMES))
    (host,) = history(store, 0, 1000).hosts
    assert host.unwatched_s == pytest.approx(300.0) and host.down_s == 0
    assert host.uptime_percent == pytest.approx(100.0) and host.gaps == 1


async def test_a_reboot_across_the_start_of_the_range_counts_from_the_start(
        store: SqliteStore) -> None:
    # Last seen at -100, rebooted at 60, watched again from 100.
    await write(store, snap(-100, boot=-1000), *(snap(t, boot=60) for t in range(100, 1001, 5)))
    (host,) = history(store, 0, 1000).hosts
    assert host.reboots == 1 and host.down_s == pytest.approx(60.0)
    assert host.uptime_percent == pytest.approx(94.0)


def test_percentiles_interpolate_between_ranks() -> None:
    s = duration_stats([1.0, 2.0, 3.0, 4.0, 10.0])
    assert (s.count, s.mean_s, s.p50_s) == (5, 4.0, 3.0)
    assert s.p90_s == pytest.approx(7.6)


async def test_an_alert_open_when_the_range_begins_belongs_to_it(store: SqliteStore) -> None:
    await write(
        store,
        # Opened and resolved before the range: not in it.
        alert(10, 5, "new", fp="old"),
        alert(20, 5, "resolved", state="resolved", fp="old"),
        # Opened before the range, only value updates inside it, resolved after it.
        alert(30, 25, "new", fp="long", metric="disk.percent", dimension="/"),
        alert(1500, 25, "value", fp="long", metric="disk.percent", dimension="/"),
        alert(3000, 25, "resolved", state="resolved", fp="long", metric="disk.percent",
              dimension="/"),
        # Opened before the range, resolved inside it.
        alert(40, 35, "new", fp="web"),
        alert(1200, 35, "resolved", state="resolved", fp="web"),
    )
    h = history(store, 1000, 2000)
    by_fp = {i.alerts[0].fingerprint: i for i in h.incidents}
    assert set(by_fp) == {"long", "web"}
    assert by_fp["web"].state == "resolved" and by_fp["web"].start == at(35)
    assert by_fp["web"].ttd_s == pytest.approx(5) and by_fp["web"].ttr_s == pytest.approx(1160)
    # Still firing at the range's end (it resolved later): open, as of that end.
    assert by_fp["long"].state == "open" and by_fp["long"].end is None
