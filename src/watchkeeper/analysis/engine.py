"""The rule-based brain of the AnalyzerAgent: snapshots in, alert changes out.

:class:`Analyzer` runs the threshold rules, learned baselines, disk forecasts, leak and
runaway detection over each MetricSnapshot of one host, explains high CPU and memory, and hands the
active problems to the :class:`~watchkeeper.analysis.alerts.AlertManager`, which returns only
what changed. It is pure and clock-free: time is ``snapshot.at``; the settings are read
through ``settings_provider`` on every observe, so configuration changes apply live.

A problem whose value is absent from a snapshot is left alone when the snapshot says why
(``snapshot.missing``: a timed-out mount, an unreadable family); when a dimension simply
stops being reported (unmounted, interface removed, process gone) for ``GONE_AFTER_S`` its
alert resolves as "no longer reported".
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from watchkeeper.analysis.alerts import AlertManager, Silence
from watchkeeper.analysis.baseline import BASELINE_METRICS, BaselineBook
from watchkeeper.analysis.baseline import RULE as ANOMALY_RULE
from watchkeeper.analysis.context import CompiledJob, TickContext, compile_jobs
from watchkeeper.analysis.forecast import DISK_RULE, LEAK_RULE, DiskForecaster, LeakDetector
from watchkeeper.analysis.forkstorm import FORK_STORM_RULE, ForkStormDetector
from watchkeeper.analysis.hosts import RULE as HOST_DOWN_RULE
from watchkeeper.analysis.hosts import HostDownDetector
from watchkeeper.analysis.logflood import LOG_FLOOD_RULE, LogFloodDetector
from watchkeeper.analysis.rules import RULE as THRESHOLD_RULE
from watchkeeper.analysis.rules import RULES, Condition, RuleBook
from watchkeeper.analysis.runaway import RUNAWAY_RULE, RunawayDetector
from watchkeeper.analysis.services import ServiceDetector
from watchkeeper.config import Settings
from watchkeeper.events import Alert, Assessment, MetricSnapshot, ServiceReport

logger = logging.getLogger(__name__)

#: A dimension absent this long without a reason in ``snapshot.missing`` is gone.
GONE_AFTER_S = 300.0

Sample = tuple[str, str, float]
ProblemKey = tuple[str, str, str]

#: Keys in ``snapshot.missing`` that explain an absent value of a metric family.
_FAMILY_MISSING = {
    "cpu": ("cpu",), "memory": ("memory",), "disk": ("disks",), "net": ("net",),
    "processes": ("processes", "processes.list"), "process": ("processes", "processes.list"),
    "log": ("logs",),
}


def extract(snap: MetricSnapshot) -> list[Sample]:
    """The (metric, dimension, value) samples the analyzer judges, from one snapshot."""
    out: list[Sample] = []
    add = out.append
    cpu = snap.cpu
    if cpu.percent is not None:
        add(("cpu.percent", "", cpu.percent))
    if cpu.iowait_percent is not None:
        add(("cpu.iowait_percent", "", cpu.iowait_percent))
    if cpu.load_1 is not None:
        n = cpu.count_logical or (snap.identity.cpu_count if snap.identity else None) \
            or len(cpu.per_core)
        if n:
            add(("cpu.load_per_core", "", cpu.load_1 / n))
    mem = snap.memory
    if mem.percent is not None:
        add(("memory.percent", "", mem.percent))
    if mem.swap_percent is not None:
        add(("memory.swap_percent", "", mem.swap_percent))
    for d in snap.disks:
        if d.percent is not None:
            add(("disk.percent", d.mountpoint, d.percent))
        if d.inodes_percent is not None:
            add(("disk.inodes_percent", d.mountpoint, d.inodes_percent))
    for nic in snap.net:
        i = nic.interface
        add(("net.errors_in", i, float(nic.errors_in)))
        add(("net.errors_out", i, float(nic.errors_out)))
        add(("net.drops_in", i, float(nic.drops_in)))
        add(("net.drops_out", i, float(nic.drops_out)))
    procs = snap.processes
    if procs.zombies is not None:
        add(("processes.zombies", "", float(procs.zombies)))
    if procs.total is not None:
        add(("processes.total", "", float(procs.total)))
    return out


def explained(metric: str, dimension: str, missing: Sequence[str]) -> bool:
    """Whether ``snapshot.missing`` explains why this value is absent."""
    family = metric.split(".", 1)[0]
    whole = _FAMILY_MISSING.get(family, ())
    own = f"{family}:{dimension}" if dimension else None
    for key in missing:
        if key in whole or metric.startswith(key) or (own and key.startswith(own)):
            return True
    return False


def _epoch(at: datetime) -> float:
    # Events carry aware UTC datetimes; a naive one is read as UTC, not as local time.
    return (at if at.tzinfo is not None else at.replace(tzinfo=timezone.utc)).timestamp()


class Analyzer:
    """Rules, baselines, forecasts and context for one host; returns alert changes only.

    ``cleanup_roots`` are the directories clean_disk may work under (the remediation
    configuration's roots); without them a full disk is answered with notify_only. Not
    thread-safe: call it from one thread (the agent's event loop; an observe takes ~0.1 ms,
    so it needs no worker thread).
    """

    def __init__(self, settings_provider: Callable[[], Settings], *, host: str,
                 cleanup_roots: Sequence[str] | Callable[[], Sequence[str]] = ()) -> None:
        self._provider = settings_provider
        self.host = host
        if callable(cleanup_roots):
            self._roots = cleanup_roots
        else:
            fixed = tuple(cleanup_roots)
            self._roots = lambda: fixed
        self._settings: Settings | None = None
        self._rules = RuleBook()
        self._baselines = BaselineBook()
        self._disks = DiskForecaster()
        self._leaks = LeakDetector()
        self._runaway = RunawayDetector()
        self._floods = LogFloodDetector()
        self._forks = ForkStormDetector()
        self._services = ServiceDetector()
        self._host_down = HostDownDetector(host)
        self._manager = AlertManager(host)
        self._jobs: tuple[CompiledJob, ...] = ()
        self._runaway_s = 600.0
        self._runaway_percent = 90.0
        self._active: dict[ProblemKey, Condition] = {}
        self._last_t: float | None = None
        self._warned_hosts: set[str] = set()
        self._refresh()

    # ----------------------------------------------------------------- settings

    def _refresh(self) -> Settings:
        s = self._provider()
        old = self._settings
        if s is old:
            return s
        self._settings = s
        if old is not None and s.analyzer == old.analyzer and s.thresholds == old.thresholds \
                and s.remediation.log_files == old.remediation.log_files:
            return s
        a = s.analyzer
        self._floods.configure(a.log_flood_mb_per_min, a.for_s,
                               [str(r.path) for r in s.remediation.log_files])
        self._forks.configure(a.fork_storm_processes, a.fork_storm_window_s, a.for_s)
        self._rules.configure(s.thresholds, a)
        self._baselines.configure(a.baseline, a.for_s)
        self._disks.configure(a.forecast)
        self._leaks.configure(a.forecast)
        self._jobs = compile_jobs(a.known_jobs)
        self._runaway_s = a.runaway_minutes * 60.0
        self._runaway_percent = a.runaway_cpu_percent
        self._runaway.configure(a.runaway_cpu_percent, a.runaway_minutes)
        self._manager.configure(escalate_after_s=a.escalate_after_s,
                                flap_window_s=a.flap_window_s,
                                flap_max_transitions=a.flap_max_transitions)
        if old is not None:
            logger.info("analyzer settings applied")
        return s

    # ----------------------------------------------------------------- the tick

    def observe(self, snap: MetricSnapshot) -> list[Alert]:
        """Analyse one snapshot; returns the alert changes to publish (usually none)."""
        if snap.host != self.host:
            if snap.host not in self._warned_hosts:
                self._warned_hosts.add(snap.host)
                logger.warning("analyzer for %s ignores snapshots of %s", self.host, snap.host)
            return []
        t = _epoch(snap.at)
        if self._last_t is not None and t <= self._last_t:
            logger.debug("ignoring snapshot %s: not newer than the last one", snap.seq)
            return []
        self._last_t = t
        self._refresh()
        back = self._host_down.reporting(t)
        if back is not None:  # a host that was down reports again (fleet)
            return [*self._manager.update(t, [back]), *self._observe(snap, t)]
        return self._observe(snap, t)

    def _observe(self, snap: MetricSnapshot, t: float) -> list[Alert]:
        samples = extract(snap)
        changed: list[Condition] = []
        self._rules.observe(samples, t, changed)
        self._baselines.observe(samples, t, self._rules.engaged, changed)
        procs = snap.processes
        self._runaway.observe(procs.top_cpu, t, changed, lambda p: any(
            j.matches(p) and j.active_at(t) for j in self._jobs))
        self._disks.observe(snap.disks, t, changed)
        self._leaks.observe(procs.top_memory, t, changed, snap.memory.available)
        self._floods.observe(snap.logs, t, changed,
                             not any(m.key == "logs" for m in snap.missing))
        self._forks.observe(procs, t, changed)

        active = self._active
        cleared: list[Condition] = []
        for cond in changed:
            key = (cond.rule, cond.metric, cond.dimension)
            if cond.level:
                active[key] = cond
            elif active.pop(key, None) is not None:
                cleared.append(cond)
        if active:
            self._sweep_gone(snap, t, cleared)
        if not active and not cleared and not self._manager.has_open:
            return []
        tick = self._tick(snap, t)
        findings = [c.owner.finding(c, tick) for c in (*active.values(), *cleared)]
        return self._manager.update(t, findings)

    def _sweep_gone(self, snap: MetricSnapshot, t: float, cleared: list[Condition]) -> None:
        missing: list[str] | None = None
        for key, cond in list(self._active.items()):
            if cond.last_seen >= t:
                continue
            if missing is None:
                missing = [m.key for m in snap.missing]
            if explained(cond.metric, cond.dimension, missing):
                cond.last_seen = t  # a known outage: hold, do not count it as gone
            elif t - cond.last_seen >= GONE_AFTER_S:
                cond.force(0, t, note=f"no longer reported for {GONE_AFTER_S:g} s")
                del self._active[key]
                cleared.append(cond)

    def _tick(self, snap: MetricSnapshot, t: float) -> TickContext:
        return TickContext(snap, t, jobs=self._jobs, runaway=self._runaway,
                           runaway_s=self._runaway_s, runaway_percent=self._runaway_percent,
                           leaks=self._leaks.leaks, cleanup_roots=self._roots)

    # ----------------------------------------------------------------- services

    def observe_service(self, report: ServiceReport) -> list[Alert]:
        """A declared service's condition changed (the remediator's report): its alert
        fires, is updated with what remediation does, or resolves; returns the changes."""
        if report.host != self.host:
            return []
        self._refresh()
        finding = self._services.finding(report)
        if finding is None:
            return []
        t = _epoch(report.at)
        # Reports come between snapshots; never move the manager's clock backwards.
        return self._manager.update(max(t, self._last_t or t), [finding])

    # ----------------------------------------------------------------- host down

    def silent(self, now: float, last_seen: float) -> list[Alert]:
        """The host has sent nothing since ``last_seen`` (epoch s on the caller's clock, a
        central that follows it): its host-down alert fires, once; returns the changes."""
        finding = self._host_down.silent(last_seen, now - last_seen)
        if finding is None:
            return []
        # The manager's clock never goes back; the snapshots' clock (_last_t) is the host's.
        return self._manager.update(max(now, self._last_t or now), [finding])

    @property
    def down(self) -> bool:
        """Whether the host-down alert is open."""
        return self._host_down.down_since is not None

    # ----------------------------------------------------------------- user actions

    def ack(self, fingerprint: str, by: str) -> Alert | None:
        """Acknowledge an open alert; returns the change to publish, if any."""
        return self._manager.ack(fingerprint, by, t=self._last_t)

    def resolve(self, fingerprint: str, by: str) -> Alert | None:
        """Resolve an alert by hand; if its problem persists it fires again after for_s."""
        alert = self._manager.resolve(fingerprint, by, t=self._last_t)
        if alert is not None:
            cond = self._active.pop((alert.rule, alert.metric, alert.dimension), None)
            if cond is not None:
                cond.reset()
        return alert

    def assess(self, fingerprint: str, assessment: Assessment) -> Alert | None:
        """Attach an LLM's assessment to an open alert; returns the change to publish."""
        return self._manager.assess(fingerprint, assessment, t=self._last_t)

    def silence(self, matchers: Mapping[str, str], until: datetime, *, by: str = "",
                comment: str = "", silence_id: str | None = None
                ) -> tuple[Silence, list[Alert]]:
        """Silence matching alerts until ``until``; returns the silence and the changes."""
        return self._manager.silence(matchers, until, by=by, comment=comment,
                                     silence_id=silence_id, t=self._last_t)

    def unsilence(self, silence_id: str) -> list[Alert]:
        """End a silence early; returns the changes (alerts no longer silenced)."""
        return self._manager.unsilence(silence_id, t=self._last_t)

    @property
    def silences(self) -> list[Silence]:
        """Silences in force."""
        return self._manager.silences

    def active_alerts(self) -> list[Alert]:
        """The latest version of every open alert."""
        return self._manager.active()

    # ----------------------------------------------------------------- restart

    def restore(self, alerts: Iterable[Alert]) -> list[Alert]:
        """Re-open alerts from events emitted before a restart; returns the re-opened ones.

        The detectors resume those problems as firing, so an alert resolves only when its
        problem is seen to clear (or its dimension is gone), not merely because the
        detector's memory was lost; nothing is emitted for the restored alerts themselves.
        """
        self._refresh()
        opened = self._manager.restore(alerts)
        kept = []
        for a in opened:
            if self._services.seed(a):
                kept.append(a)  # resolves at the remediator's next report of the service
                continue
            if a.rule == HOST_DOWN_RULE:
                self._host_down.seed(_epoch(a.since))
                kept.append(a)  # resolves with the host's next snapshot
                continue
            cond = self._seed(a)
            if cond is None:
                logger.warning("cannot resume alert %s (%s %s %s); dropping it", a.id, a.rule,
                               a.metric, a.dimension)
                self._manager.forget(a.fingerprint)
                continue
            self._active[(cond.rule, cond.metric, cond.dimension)] = cond
            kept.append(a)
        return kept

    def _seed(self, a: Alert) -> Condition | None:
        level = 2 if a.severity == "critical" else 1
        since = _epoch(a.since)
        seen = _epoch(a.at)
        cond: Condition | None = None
        if a.rule == THRESHOLD_RULE and a.metric in RULES:
            cond = self._rules.condition(a.metric, a.dimension)
            if cond.crit is None:
                level = 1
        elif a.rule == ANOMALY_RULE and a.metric in BASELINE_METRICS:
            cond = self._baselines.series(a.metric, a.dimension).cond
            level = 1
        elif a.rule == DISK_RULE:
            cond = self._disks.trend(a.dimension).cond
        elif a.rule == RUNAWAY_RULE:
            try:
                pid = int(a.labels["pid"])
                create_time = float(a.labels["create_time"])
            except (KeyError, ValueError):
                return None
            return self._runaway.seed(pid, create_time, a.labels.get("process", "?"), since,
                                      seen)
        elif a.rule == LOG_FLOOD_RULE:
            return self._floods.seed(a.dimension, since, seen)
        elif a.rule == FORK_STORM_RULE:
            try:
                before = int(a.labels["before"])
            except (KeyError, ValueError):
                return None
            return self._forks.seed(before, since, seen)
        elif a.rule == LEAK_RULE:
            try:
                pid = int(a.labels["pid"])
                create_time = float(a.labels["create_time"])
            except (KeyError, ValueError):
                return None
            return self._leaks.seed(pid, create_time, a.labels.get("process", "?"), 1, since,
                                    seen)
        if cond is None:
            return None
        cond.force(level, seen, since=since)
        cond.value = a.value
        cond.last_seen = seen
        return cond

    def baselines_to_dict(self) -> dict[str, Any]:
        """The learned baselines as JSON-ready data (persist it to survive a restart)."""
        return self._baselines.to_dict()

    def baselines_from_dict(self, data: Mapping[str, Any]) -> int:
        """Load baselines saved by :meth:`baselines_to_dict`; returns the series loaded."""
        return self._baselines.from_dict(data)

    def anomaly_score(self, metric: str, dimension: str, value: float) -> float | None:
        """The robust z a value of a baselined metric would get now (None in warm-up)."""
        return self._baselines.score(metric, dimension, value, self._last_t or 0.0)
