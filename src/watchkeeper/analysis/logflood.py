"""Log floods: a watched log file growing faster than ``analyzer.log_flood_mb_per_min`` for
``analyzer.for_s`` is an alert of its own, named by the file.

The sensor lists the fastest-growing files of ``sensor.log_paths`` (default ``/var/log``)
each tick with their growth since the previous one. A file is followed from the first tick
it grows at the threshold or faster; a tick that does not list it counts as no growth. The
alert resolves when the growth drops below half the threshold. One burst (a rotation's copy,
a journal file's preallocation) is one tick, shorter than ``for_s``: it is no flood.
"""

from __future__ import annotations

from collections.abc import Sequence

from watchkeeper.analysis.alerts import (
    Description,
    Finding,
    fmt_bytes,
    fmt_duration,
    notify_only,
    suggest,
)
from watchkeeper.analysis.context import TickContext
from watchkeeper.analysis.rules import Condition
from watchkeeper.events import LogGrowth, SuggestedAction

LOG_FLOOD_RULE = "log_flood"
LOG_FLOOD_METRIC = "log.growth_mb_per_min"


class _Track:
    __slots__ = ("cond", "log")

    def __init__(self, cond: Condition, log: LogGrowth) -> None:
        self.cond = cond
        self.log = log


class LogFloodDetector:
    """Per-file growth conditions, from each snapshot's list of growing logs."""

    def __init__(self) -> None:
        self._tracks: dict[str, _Track] = {}
        self._mb_per_min = 5.0
        self._for_s = 30.0
        self._rotatable: frozenset[str] = frozenset()

    def configure(self, mb_per_min: float, for_s: float,
                  rotatable: Sequence[str] = ()) -> None:
        """Apply new settings (live); ``rotatable``: the paths rotate_log may act on."""
        self._mb_per_min, self._for_s = mb_per_min, for_s
        self._rotatable = frozenset(rotatable)
        for tr in self._tracks.values():
            self._apply(tr.cond)

    def _apply(self, cond: Condition) -> None:
        cond.warn = self._mb_per_min
        cond.crit = None
        cond.margin = self._mb_per_min / 2
        cond.for_s = self._for_s

    def track(self, log: LogGrowth) -> Condition:
        """The condition of a file, created on first use."""
        tr = self._tracks.get(log.path)
        if tr is None:
            cond = Condition(self, LOG_FLOOD_RULE, LOG_FLOOD_METRIC, log.path)
            self._apply(cond)
            tr = self._tracks[log.path] = _Track(cond, log)
            cond.extra = tr
        return tr.cond

    def observe(self, logs: Sequence[LogGrowth], t: float, changed: list[Condition],
                known: bool) -> None:
        """Step every listed file and every followed one the list leaves out (no growth).
        ``known``: whether this snapshot read the logs at all (else nothing moves)."""
        if not known:
            return
        seen: set[str] = set()
        for log in logs:
            rate = log.bytes_per_s * 60 / 1e6
            tr = self._tracks.get(log.path)
            if tr is None and rate < self._mb_per_min:
                continue
            cond = self.track(log)
            tr = self._tracks[log.path]
            tr.log = log
            seen.add(log.path)
            if cond.step(rate, t):
                changed.append(cond)
        for path, tr in list(self._tracks.items()):
            if path not in seen and tr.cond.step(0.0, t):
                changed.append(tr.cond)
            if not tr.cond.level and tr.cond.warn_since is None:
                del self._tracks[path]

    def finding(self, cond: Condition, tick: TickContext) -> Finding:
        """Put a log flood into words."""
        tr = cond.extra
        assert isinstance(tr, _Track)
        rate = cond.value or 0.0
        return Finding(
            rule=LOG_FLOOD_RULE, metric=LOG_FLOOD_METRIC, dimension=cond.dimension,
            severity="warning" if cond.level else None, value=round(rate, 2),
            since=cond.since, threshold=self._mb_per_min,
            describe=lambda since: self._describe(cond, tr, tick, since))

    def _describe(self, cond: Condition, tr: _Track, tick: TickContext, since: float
                  ) -> Description:
        path = cond.dimension
        labels = {"path": path}
        if not cond.level:
            summary = (f"Log {path} is no longer flooding (below "
                       f"{self._mb_per_min / 2:g} MB/min); resolved after "
                       f"{fmt_duration(tick.t - since)}")
            return Description(summary=summary, labels=labels, confidence=0.8,
                               actions=(notify_only(summary),))
        rate = cond.value or 0.0
        summary = (f"Log {path} is flooding: it grows by {rate:.1f} MB/min (flood at "
                   f"{self._mb_per_min:g} MB/min) for {fmt_duration(tick.t - since)}, "
                   f"{fmt_bytes(tr.log.size)} now")
        action: SuggestedAction = (
            suggest("rotate_log", {"path": path}, f"{path} is flooding", summary)
            if path in self._rotatable else notify_only(summary))
        return Description(
            summary=summary, labels=labels, confidence=0.8,
            context=f"{path} grew {rate:.1f} MB/min in every snapshot since "
                    f"{fmt_duration(tick.t - since)} ago",
            likely_cause="a program logs in a loop (an error repeated, debug logging left on)",
            evidence=(f"size[{path}] +{rate:.1f} MB/min for {fmt_duration(tick.t - since)}",),
            actions=(action,))

    def seed(self, path: str, since: float, t: float) -> Condition:
        """Re-create a flood alert's state after a restart (firing since ``since``)."""
        cond = self.track(LogGrowth(path=path, size=0, bytes_per_s=0.0))
        cond.force(1, t, since=since)
        cond.last_seen = t
        return cond
