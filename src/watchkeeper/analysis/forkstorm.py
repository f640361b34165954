"""Fork storms: the host's process count rising by ``analyzer.fork_storm_processes`` or more
within ``analyzer.fork_storm_window_s``, and staying up for ``analyzer.for_s``, is an alert of
its own, named by the group of same-named processes that grew most.

A fork bomb or a worker pool forking in a loop exhausts the pid and memory limits long before
any CPU or memory threshold sees it, and a classic bomb is a tree of short-lived shells where
no single parent has many children; so the count of all processes is followed, and the
sensor's largest groups by name (``ProcessSummary.top_names``) say who. The level before the
rise is the lowest count of the window; it is held while the rise is pending or firing. The
alert resolves when the count falls back to within half the threshold of that level (the
processes are gone), or when it has not grown for ten windows (it settled: a new normal, such
as a pool that scaled up, is not a storm for ever).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from watchkeeper.analysis.alerts import Description, Finding, fmt_duration, notify_only
from watchkeeper.analysis.context import TickContext
from watchkeeper.analysis.rules import Condition
from watchkeeper.events import ProcessSummary
from watchkeeper.safetext import MAX_NAME, printable

FORK_STORM_RULE = "fork_storm"
FORK_STORM_METRIC = "processes.total"
#: Windows without growth after which a risen count is a new level, not a storm.
SETTLE_WINDOWS = 10
#: The most groups read from one snapshot (the sensor lists five).
TOP_NAMES = 5
_UNPRINTABLE_NAME = "?"


@dataclass(frozen=True)
class _Sample:
    t: float
    total: int
    names: dict[str, int] = field(default_factory=dict)


def _names(procs: ProcessSummary) -> dict[str, int]:
    # Host data: a central reads other hosts' lists, so they are bounded and made printable.
    return {printable(g.name, MAX_NAME): g.count for g in procs.top_names[:TOP_NAMES]}


class ForkStormDetector:
    """One condition on the rise of the host's process count."""

    def __init__(self) -> None:
        self._rise = 100
        self._window_s = 60.0
        self._for_s = 30.0
        self.cond = Condition(self, FORK_STORM_RULE, FORK_STORM_METRIC, "")
        self._apply()
        self._recent: deque[_Sample] = deque()
        self._base: _Sample | None = None
        self._now: _Sample | None = None
        self._peak = 0
        self._peak_t = 0.0
        self._settled = False

    def configure(self, processes: int, window_s: float, for_s: float) -> None:
        """Apply new settings (live)."""
        self._rise, self._window_s, self._for_s = processes, window_s, for_s
        self._apply()

    def _apply(self) -> None:
        cond = self.cond
        cond.warn = float(self._rise)
        cond.crit = None
        cond.margin = self._rise / 2
        cond.for_s = self._for_s

    def observe(self, procs: ProcessSummary, t: float, changed: list[Condition]) -> None:
        """Step the condition with this snapshot's process count (none: nothing moves)."""
        if procs.total is None:
            return  # an incomplete scan: neither a rise nor a fall
        now = _Sample(t, procs.total, _names(procs))
        self._now = now
        recent = self._recent
        recent.append(now)
        while recent[0].t < t - self._window_s:
            recent.popleft()
        cond = self.cond
        if cond.level == 0 and cond.warn_since is None:
            self._base = min(recent, key=lambda s: s.total)  # the earliest of equal lows
            self._settled = False
        base = self._base
        assert base is not None
        if now.total > self._peak or cond.warn_since is None:
            self._peak, self._peak_t = now.total, t
        if cond.level and t - self._peak_t >= SETTLE_WINDOWS * self._window_s:
            # No growth for ten windows: the count settled at a new level.
            self._base = base = now
            self._settled = True
        if cond.step(float(now.total - base.total), t):
            changed.append(cond)

    def _culprit(self) -> tuple[str, int, int | None] | None:
        """The group that grew most since the level before the rise: (name, now, before);
        before is None when the group was not among the largest then."""
        now, base = self._now, self._base
        if now is None or base is None or not now.names:
            return None
        best: tuple[str, int, int | None] | None = None
        for name, count in now.names.items():
            before = base.names.get(name)
            grew = count - (before or 0)
            if best is None or grew > best[1] - (best[2] or 0):
                best = (name, count, before)
        return best

    def finding(self, cond: Condition, tick: TickContext) -> Finding:
        """Put a fork storm into words."""
        return Finding(
            rule=FORK_STORM_RULE, metric=FORK_STORM_METRIC, dimension=cond.dimension,
            severity="warning" if cond.level else None, value=cond.value,
            since=cond.since, threshold=float(self._rise),
            describe=lambda since: self._describe(cond, tick, since))

    def _describe(self, cond: Condition, tick: TickContext, since: float) -> Description:
        now, base = self._now, self._base
        total = now.total if now is not None else 0
        before = base.total if base is not None else total
        labels = {"before": str(before)}
        culprit = self._culprit()
        if culprit is not None:
            labels["process"] = culprit[0] or _UNPRINTABLE_NAME
        if not cond.level:
            why = (f"it settled at {total} processes (no growth for "
                   f"{fmt_duration(SETTLE_WINDOWS * self._window_s)})" if self._settled
                   else f"{total} processes, {total - before:+d} from before it began")
            summary = (f"No fork storm any more: {why}; resolved after "
                       f"{fmt_duration(tick.t - since)}")
            return Description(summary=summary, labels=labels, confidence=0.7,
                               actions=(notify_only(summary),))
        who = ""
        if culprit is not None:
            name, count, was = culprit
            was_words = (f"{was} before" if was is not None
                         else "not among the largest groups before")
            who = f"; most of them are {name or _UNPRINTABLE_NAME} ({count} now, {was_words})"
        summary = (f"Fork storm: {total} processes, {total - before} more than before it "
                   f"began {fmt_duration(tick.t - (base.t if base else since))} ago{who}")
        return Description(
            summary=summary, labels=labels, confidence=0.7,
            context=(f"the process count rose by {self._rise} or more within "
                     f"{fmt_duration(self._window_s)} and stayed up for "
                     f"{fmt_duration(tick.t - since)}"),
            likely_cause=("a program forks in a loop: a fork bomb, a worker pool that keeps "
                          "spawning, or a script starting processes without waiting for them"),
            evidence=(f"processes.total {before} -> {total}",),
            actions=(notify_only(summary),))

    def seed(self, before: int, since: float, t: float) -> Condition:
        """Re-create a fork storm alert's state after a restart (firing since ``since``)."""
        self._base = _Sample(since, before)
        self._peak, self._peak_t = before, t
        cond = self.cond
        cond.force(1, t, since=since)
        cond.last_seen = t
        return cond
