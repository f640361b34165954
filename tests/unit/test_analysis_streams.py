"""Synthetic snapshot streams for the analysis tests, and end-to-end engine scenarios.

The other test_analysis_* modules import :class:`Stream`, :func:`analyzer` and :func:`proc`
from here. Snapshots are real events.py models, 5 s apart.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

from watchkeeper.analysis import RULE_NOTE, Analyzer
from watchkeeper.config import ConfigStore, Settings, validate
from watchkeeper.events import (
    Alert,
    CpuStats,
    DiskUsage,
    MemoryStats,
    MetricSnapshot,
    Missing,
    NetIO,
    ProcessInfo,
    ProcessSummary,
    decode,
    encode,
)
from watchkeeper.remediation.registry import REGISTRY

HOST = "web1"
START = datetime(2024, 3, 4, 12, 0, tzinfo=timezone.utc)
GB = 1_000_000_000


def settings(**sections: dict[str, Any]) -> Settings:
    """Validated settings with the given sections (the analyzer touches no files)."""
    return validate(sections)


def analyzer(s: Settings | None = None, **kw: Any) -> Analyzer:
    """An Analyzer for HOST on fixed settings."""
    fixed = s or settings()
    return Analyzer(lambda: fixed, host=HOST, **kw)


def proc(pid: int, name: str, *, cpu: float | None = None, rss: float | None = None,
         create_time: float = 1_700_000_000.0, cmdline: str = "") -> ProcessInfo:
    """A process row as the collector lists it."""
    return ProcessInfo(pid=pid, create_time=create_time, name=name, cpu_percent=cpu,
                       rss=None if rss is None else int(rss), cmdline=cmdline or name)


def disk(mount: str, percent: float, *, total: float = 100 * GB,
         free: float | None = None, inodes: float | None = 5.0) -> DiskUsage:
    """A mount at ``percent`` full (free derived unless given)."""
    free_b = total * (1 - percent / 100) if free is None else free
    return DiskUsage(mountpoint=mount, device="/dev/sda1", fstype="ext4", total=int(total),
                     used=int(total - free_b), free=int(free_b), percent=percent,
                     inodes_percent=inodes)


def nic(name: str, *, errors_in: int = 0, drops_in: int = 0) -> NetIO:
    """An interface with counts during the interval."""
    return NetIO(interface=name, is_up=True, bytes_sent_per_s=1e5, bytes_recv_per_s=1e5,
                 packets_sent_per_s=100, packets_recv_per_s=100, errors_in=errors_in,
                 errors_out=0, drops_in=drops_in, drops_out=0)


class Stream:
    """Builds snapshots of one host, each 5 s after the previous one."""

    def __init__(self, host: str = HOST, start: datetime = START, interval: float = 5.0,
                 cores: int = 4) -> None:
        self.host = host
        self.at = start
        self.interval = interval
        self.cores = cores
        self.seq = 0

    def snap(self, *, cpu: float | None = 10.0, memory: float | None = 40.0,
             swap: float | None = 0.0, load: float | None = 0.5,
             disks: Iterable[DiskUsage] | None = None, net: Iterable[NetIO] = (),
             zombies: int | None = 0, total_procs: int | None = 200,
             top_cpu: Iterable[ProcessInfo] = (), top_memory: Iterable[ProcessInfo] = (),
             missing: Iterable[tuple[str, str]] = (), available: float | None = 8 * GB
             ) -> MetricSnapshot:
        """The next snapshot; ``None`` leaves a value unread."""
        snap = MetricSnapshot(
            host=self.host, at=self.at, seq=self.seq, interval_s=self.interval,
            cpu=CpuStats(percent=cpu, load_1=load, count_logical=self.cores),
            memory=MemoryStats(total=16 * GB, used=int(16 * GB * (memory or 0) / 100),
                               available=None if available is None else int(available),
                               percent=memory, swap_percent=swap),
            disks=tuple(disks) if disks is not None else (disk("/", 40.0),),
            net=tuple(net),
            processes=ProcessSummary(total=total_procs, zombies=zombies,
                                     top_cpu=tuple(top_cpu), top_memory=tuple(top_memory)),
            missing=tuple(Missing(key=k, reason=r) for k, r in missing))
        self.seq += 1
        self.at += timedelta(seconds=self.interval)
        return snap

    def feed(self, an: Analyzer, n: int, **values: Any) -> list[Alert]:
        """Observe ``n`` snapshots; a value may be a function of the tick index."""
        out: list[Alert] = []
        for i in range(n):
            kw = {k: (v(i) if callable(v) else v) for k, v in values.items()}
            out += an.observe(self.snap(**kw))
        return out


def only(alerts: list[Alert], change: str | None = None, rule: str | None = None
         ) -> list[Alert]:
    """Alerts filtered by change kind and rule."""
    return [a for a in alerts if (change is None or a.labels.get("change") == change)
            and (rule is None or a.rule == rule)]


def lifecycle(alerts: list[Alert]) -> list[Alert]:
    """The lifecycle changes, without the bounded "value" updates of a firing alert."""
    return [a for a in alerts if a.labels.get("change") != "value"]


def ramp(a: float, b: float, n: int) -> Callable[[int], float]:
    """A value going from a to b over n ticks, then staying at b."""
    return lambda i: a + (b - a) * min(i, n) / n


# --------------------------------------------------------------------------- scenarios


def test_a_full_incident_is_a_handful_of_events_each_complete_and_rule_based() -> None:
    an = analyzer(cleanup_roots=["/var/tmp"])
    s = Stream()
    alerts = s.feed(an, 60, disks=[disk("/", 40), disk("/var", 50)])
    alerts += s.feed(an, 400, disks=[disk("/", 40), disk("/var", 93)])  # 33 min at 93 %
    alerts += s.feed(an, 60, disks=[disk("/", 40), disk("/var", 60)])
    disk_alerts = [a for a in alerts if a.metric == "disk.percent"]
    # new, escalated after 15 min, resolved: three events for a 33-minute problem
    assert [a.labels["change"] for a in disk_alerts] == ["new", "escalated", "resolved"]
    new = disk_alerts[0]
    assert (new.metric, new.dimension, new.value, new.threshold) == ("disk.percent", "/var",
                                                                     93.0, 85.0)
    assert new.summary == "Disk /var is 93% full (warning at 85%) for 30 s"
    assert new.since == START + timedelta(seconds=60 * 5)
    assert new.severity == "warning" and new.state == "firing"
    assert [(x.action, x.params["root"]) for x in new.suggested_actions] == [
        ("clean_disk", "/var/tmp")]
    assert new.assessment is not None
    assert new.assessment.source == "rule" and new.assessment.note == RULE_NOTE
    assert new.assessment.suggested_actions == new.suggested_actions
    assert "files accumulating on /var" in new.assessment.likely_cause
    assert disk_alerts[1].severity == "critical"
    assert "escalated to critical: still firing after 15 min" in disk_alerts[1].summary
    assert disk_alerts[2].state == "resolved" and disk_alerts[2].value == 60.0
    assert len({a.id for a in disk_alerts}) == 1  # one problem, one alert id
    # every event survives the bus encoding unchanged
    for a in alerts:
        assert decode(encode(a)) == a
        assert all(x.action in REGISTRY for x in a.suggested_actions)


def test_without_cleanup_roots_a_full_disk_only_suggests_notifying() -> None:
    an = analyzer()
    alerts = Stream().feed(an, 10, disks=[disk("/var", 97)])
    assert [a.suggested_actions[0].action for a in alerts] == ["notify_only"]
    assert alerts[0].severity == "critical"


def test_a_cleanup_root_on_another_mount_is_not_suggested() -> None:
    an = analyzer(cleanup_roots=["/var/log/app", "/srv/tmp"])
    alerts = Stream().feed(an, 10, disks=[disk("/", 40), disk("/var", 97), disk("/var/log", 20)])
    # /var/log/app lives on the /var/log mount, not on /var
    assert [x.action for x in alerts[0].suggested_actions] == ["notify_only"]


def test_noisy_but_normal_cpu_for_two_hours_raises_nothing() -> None:
    rng = random.Random(4)
    an = analyzer()
    s = Stream()
    alerts = s.feed(an, 2 * 720, cpu=lambda i: rng.uniform(10, 60),
                    memory=lambda i: rng.uniform(30, 50), load=lambda i: rng.uniform(0.1, 3),
                    total_procs=lambda i: rng.randint(180, 220))
    assert alerts == []
    assert an.active_alerts() == []
    # and the detector is not blind: the same analyzer still fires on a real problem
    assert s.feed(an, 10, cpu=97.0) != []


def test_settings_are_read_on_every_observe() -> None:
    store = ConfigStore(settings())
    an = Analyzer(lambda: store.current, host=HOST)
    s = Stream()
    assert s.feed(an, 20, cpu=80.0) != []  # 80 > 75 (default warning)
    an2 = Analyzer(lambda: store.current, host=HOST)
    store.update({"thresholds": {"cpu_warning": 85, "cpu_critical": 95}})
    assert Stream().feed(an2, 20, cpu=80.0) == []
    # the first analyzer's open alert clears under the new levels once 80 < 85 - 5 is false:
    # 80 is within the hysteresis band, so it holds; at 78 it clears
    assert only(s.feed(an, 5, cpu=80.0), "resolved") == []
    assert only(s.feed(an, 2, cpu=78.0), "resolved") != []


def test_snapshots_of_another_host_or_out_of_order_are_ignored() -> None:
    an = analyzer()
    other = Stream(host="db9")
    assert other.feed(an, 20, cpu=99.0) == []
    s = Stream()
    first = s.snap(cpu=99.0)
    an.observe(first)
    assert an.observe(first) == []  # replayed: not newer


def test_every_assessment_says_it_is_rule_based_without_an_llm_key() -> None:
    s = settings(llm={"api_key": None})
    an = analyzer(s)
    st = Stream()
    alerts = st.feed(an, 20, cpu=99.0, memory=97.0, swap=90.0, zombies=500,
                     disks=[disk("/", 99, inodes=99)], net=[nic("eth0", errors_in=500)])
    alerts += st.feed(an, 30, cpu=5.0, memory=30.0, swap=0.0, zombies=0,
                      disks=[disk("/", 20)], net=[nic("eth0")])
    kinds = {(a.metric, a.labels["change"]) for a in alerts}
    for metric in ("cpu.percent", "memory.percent", "memory.swap_percent", "disk.percent",
                   "disk.inodes_percent", "net.errors_in", "processes.zombies"):
        assert (metric, "new") in kinds and (metric, "resolved") in kinds
    for a in alerts:
        assert a.assessment is not None
        assert a.assessment.source == "rule" and a.assessment.note == RULE_NOTE
        assert a.summary and a.assessment.summary == a.summary
