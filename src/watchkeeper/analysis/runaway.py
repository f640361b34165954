"""Runaway processes: one process pinned at or above ``analyzer.runaway_cpu_percent`` for
``analyzer.runaway_minutes`` is an alert of its own, whatever the host's total CPU.

One pinned core on a 2-core host is 50 % of the CPU, below every CPU threshold: judged by
the host's total alone, a process spinning for hours raises nothing. On a saturated host a
spinning process gets only its share of a core; where the sensor measured its demand
(running or waiting for a CPU, Linux) the larger of that and its CPU % counts. Here each
process in the top-CPU list is followed by (pid, start time). It is pinned while every
snapshot lists it at or above the percentage; it fires once pinned for ``runaway_minutes``
and resolves when it drops below the percentage minus ``RELEASE_MARGIN`` points, leaves the
list, or exits. A process of a known job inside its window is expected to be busy and never
a runaway. The CPU threshold alerts read the same state to name a runaway as the cause of a
busy host.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from watchkeeper.analysis.alerts import Description, Finding, fmt_duration, suggest
from watchkeeper.analysis.context import ProcKey, TickContext, proc_label
from watchkeeper.analysis.rules import Condition
from watchkeeper.events import ProcessInfo

RUNAWAY_RULE = "runaway"
RUNAWAY_METRIC = "process.cpu_percent"
#: Percentage points below the runaway percentage that end a firing runaway (hysteresis:
#: a loop that dips to 85 % for a tick is still the same runaway).
RELEASE_MARGIN = 20.0


class _Track:
    __slots__ = ("cond", "proc")

    def __init__(self, cond: Condition, proc: ProcessInfo) -> None:
        self.cond = cond
        self.proc = proc


def busy(p: ProcessInfo) -> float | None:
    """How pinned a process is: its CPU %, or its demand (running or waiting for a CPU)
    when that is higher: on a saturated host a spinning loop gets only its share."""
    if p.cpu_demand_percent is None:
        return p.cpu_percent
    return max(p.cpu_percent or 0.0, p.cpu_demand_percent)


def runaway_dimension(p: ProcessInfo) -> str:
    """The alert dimension of a process: ``name[pid]``."""
    return f"{p.name}[{p.pid}]"


class RunawayDetector:
    """Per-process pinned-CPU conditions, from each snapshot's top-CPU list."""

    def __init__(self) -> None:
        self._tracks: dict[ProcKey, _Track] = {}
        self._percent = 90.0
        self._for_s = 600.0

    @property
    def percent(self) -> float:
        """The CPU % (of one core) at or above which a process counts as pinned."""
        return self._percent

    @property
    def for_s(self) -> float:
        """How long a process must stay pinned to be a runaway."""
        return self._for_s

    def configure(self, percent: float, minutes: float) -> None:
        """Apply new settings (live)."""
        self._percent, self._for_s = percent, minutes * 60.0
        for tr in self._tracks.values():
            self._apply(tr.cond)

    def _apply(self, cond: Condition) -> None:
        cond.warn = self._percent
        cond.crit = None
        cond.margin = min(RELEASE_MARGIN, self._percent / 2)
        cond.for_s = self._for_s

    def observe(self, top_cpu: Sequence[ProcessInfo], t: float, changed: list[Condition],
                expected: Callable[[ProcessInfo], bool] = lambda _p: False) -> None:
        """Step every listed process (and every followed one the list no longer holds)."""
        if not top_cpu:
            return  # no process list this tick (missing): neither start nor reset
        seen: set[ProcKey] = set()
        for p in top_cpu:
            cpu = busy(p)
            if cpu is None:
                continue
            key = (p.pid, p.create_time)
            tr = self._tracks.get(key)
            if tr is None:
                if cpu < self._percent:
                    continue
                cond = Condition(self, RUNAWAY_RULE, RUNAWAY_METRIC, runaway_dimension(p))
                self._apply(cond)
                tr = self._tracks[key] = _Track(cond, p)
                cond.extra = tr
            seen.add(key)
            tr.proc = p
            if tr.cond.step(0.0 if expected(p) else cpu, t):
                changed.append(tr.cond)
        for key, tr in list(self._tracks.items()):
            if key not in seen and tr.cond.step(0.0, t):
                changed.append(tr.cond)
            if not tr.cond.level and tr.cond.warn_since is None:
                del self._tracks[key]

    def _pinned_since(self, tr: _Track) -> float | None:
        cond = tr.cond
        return cond.since if cond.level else cond.warn_since

    def longest(self, t: float, min_s: float) -> tuple[ProcessInfo, float] | None:
        """The process pinned longest, if for at least ``min_s``; with how long."""
        best: tuple[ProcessInfo, float] | None = None
        for tr in self._tracks.values():
            since = self._pinned_since(tr)
            if since is not None and t - since >= min_s and (best is None
                                                             or t - since > best[1]):
                best = (tr.proc, t - since)
        return best

    def to_list(self) -> list[tuple[ProcessInfo, float]]:
        """Every pinned process with the time it became pinned."""
        return [(tr.proc, since) for tr in self._tracks.values()
                if (since := self._pinned_since(tr)) is not None]

    def finding(self, cond: Condition, tick: TickContext) -> Finding:
        """Put a runaway into words."""
        tr = cond.extra
        assert isinstance(tr, _Track)
        p = tr.proc
        return Finding(
            rule=RUNAWAY_RULE, metric=RUNAWAY_METRIC, dimension=cond.dimension,
            severity="warning" if cond.level else None, value=busy(p),
            since=cond.since, threshold=self._percent,
            cause=f"runaway:{p.pid}:{p.create_time!r}",
            describe=lambda since: self._describe(cond, tr, tick, since))

    def _describe(self, cond: Condition, tr: _Track, tick: TickContext, since: float
                  ) -> Description:
        p = tr.proc
        who = proc_label(p)
        labels = {"process": p.name, "pid": str(p.pid), "create_time": repr(p.create_time)}
        if p.user:
            labels["user"] = p.user
        if not cond.level:
            summary = (f"Process {who} is no longer a runaway (below "
                       f"{self._percent - cond.margin:g}% of a core, or gone); resolved after "
                       f"{fmt_duration(tick.t - since)}")
            return Description(summary=summary, labels=labels, confidence=0.8)
        n = tick.snap.cpu.count_logical or 0
        host = tick.snap.cpu.percent
        share = (f"; the host's CPU is at {host:.0f}% ({n} cores)" if host is not None and n
                 else "")
        demand = (f", {p.cpu_demand_percent:.0f}% running or waiting for a CPU"
                  if p.cpu_demand_percent is not None
                  and p.cpu_demand_percent > (p.cpu_percent or 0) + 10 else "")
        summary = (f"Process {who} is a runaway: pinned at {self._percent:g}% of a core or "
                   f"more for {fmt_duration(tick.t - since)} (now "
                   f"{p.cpu_percent or 0:.0f}%{demand}){share}")
        return Description(
            summary=summary, labels=labels, confidence=0.8,
            context=(f"{who} has used at least {self._percent:g}% of a core in every "
                     f"snapshot since {fmt_duration(tick.t - since)} ago"
                     + (f"; command line: {p.cmdline[:200]}" if p.cmdline else "")),
            likely_cause=f"{who} is stuck in a busy loop or overloaded",
            evidence=(f"cpu[{p.pid}] >= {self._percent:g}% for "
                      f"{fmt_duration(tick.t - since)}",),
            actions=(suggest("stop_process", {"pid": p.pid, "create_time": p.create_time},
                             f"{who} is a runaway", summary),))

    def seed(self, pid: int, create_time: float, name: str, since: float, t: float
             ) -> Condition:
        """Re-create a runaway alert's state after a restart (firing since ``since``)."""
        p = ProcessInfo(pid=pid, create_time=create_time, name=name)
        cond = Condition(self, RUNAWAY_RULE, RUNAWAY_METRIC, runaway_dimension(p))
        self._apply(cond)
        tr = self._tracks[(pid, create_time)] = _Track(cond, p)
        cond.extra = tr
        cond.force(1, t, since=since)
        cond.last_seen = t
        return cond
