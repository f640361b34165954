"""Forecasts: when each disk will be full, and which processes leak memory.

Both work on bucket means over a sliding window (``forecast.window_minutes``, 60 buckets),
so one tick costs a few additions and a fit runs at most once per bucket and series.

Disk full: a Theil-Sen line (the median of pairwise slopes: robust to a few odd points)
through the free space of each mount. A forecast needs at least 6 buckets spanning 5 of
them, a falling trend and R² >= 0.5; it then states the ETA, the rate, how many points and
minutes it rests on, R² and a confidence. The last third of the window must still fall at
least half as fast, and the fall must not sit in one or two intervals, so a one-off step
(a large file copied in) is not extrapolated. Warning under ``horizon_hours``, critical under
``critical_hours``. A flat or growing free space, or a clean-up (free space jumps up by more
than 1% of the disk, which restarts the trend), clears the forecast. A cheap least-squares
pre-check skips the robust fit for disks that are far from full.

A fast fill is judged by its time to full, not by the window's age: the samples of the last
``FAST_WINDOW_S`` (one every ``FAST_STEP_S``) are fitted as well, and a fall that spans at
least ``FAST_MIN_SPAN_S``, fits a line with R² >= 0.95, is no step, still falls in its last
third and would fill the disk within ``critical_hours`` is forecast at once. Without it a
disk with an hour of flat history that starts filling at 1 MB/s is forecast only once the
fall holds half the window's buckets: a filesystem 200 MB under its warning threshold
crosses it first.

Memory leaks: per process, tracked by (pid, create_time) across the snapshots' top-memory
lists, a least-squares line through RSS. A leak is growth of at least
``leak_min_mb_per_hour`` sustained over at least ``leak_min_minutes`` with R² >= 0.8
(steady, not noisy); once reported it holds down to R² 0.5 and half the rate. A leak fast
enough to exhaust the memory still available within ``horizon_hours`` is judged by that, not
by its age: from 4 buckets (4 minutes with the default window) with R² >= 0.95.
"""

from __future__ import annotations

import itertools
import logging
import math
from array import array
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import overload

from watchkeeper.analysis.alerts import (
    Description,
    Finding,
    fmt_bytes,
    fmt_duration,
    fmt_hours,
    notify_only,
    suggest,
)
from watchkeeper.analysis.context import ProcKey, TickContext, proc_label
from watchkeeper.analysis.rules import Condition
from watchkeeper.config import ForecastConfig
from watchkeeper.events import DiskUsage, ProcessInfo, SuggestedAction

logger = logging.getLogger(__name__)

DISK_RULE = "disk_full_forecast"
DISK_METRIC = "disk.full_eta_hours"
LEAK_RULE = "memory_leak"
LEAK_METRIC = "process.rss_growth_mb_per_hour"

_BUCKETS = 60
_MIN_POINTS = 6
_MIN_R2_DISK = 0.5
_LEAK_R2 = 0.8
_LEAK_R2_HOLD = 0.5
#: An early verdict (a leak that would exhaust memory within the horizon): so many bucket
#: points at least, and a steadier line than a slow leak needs.
_FAST_POINTS = 4
_LEAK_R2_FAST = 0.95
#: A rise of free space by more than this fraction of the disk is a clean-up.
_CLEANUP_FRACTION = 0.01
#: The fast-fill verdict: the last FAST_WINDOW_S of samples, one kept every FAST_STEP_S; a
#: fall over at least FAST_MIN_SPAN_S with R² >= _FAST_R2 that fills within critical_hours.
FAST_WINDOW_S = 300.0
FAST_STEP_S = 5.0
FAST_MIN_SPAN_S = 120.0
_FAST_R2 = 0.95


# --------------------------------------------------------------------------- fits


@dataclass(frozen=True)
class Fit:
    """A straight line through (t, y) points, with how well it fits."""

    slope: float  # y units per second
    intercept: float  # y at t = x0
    x0: float
    r2: float
    n: int
    span_s: float

    def at(self, t: float) -> float:
        """The line's value at time ``t``."""
        return self.intercept + self.slope * (t - self.x0)


def _r2(points: Sequence[tuple[float, float]], slope: float, intercept: float, x0: float
        ) -> float:
    n = len(points)
    mean_y = sum(y for _, y in points) / n
    ss_tot = sum((y - mean_y) ** 2 for _, y in points)
    if ss_tot <= 0.0:
        return 0.0
    ss_res = sum((y - intercept - slope * (x - x0)) ** 2 for x, y in points)
    return max(0.0, 1.0 - ss_res / ss_tot)


def least_squares(points: Sequence[tuple[float, float]]) -> Fit | None:
    """Ordinary least squares; None for fewer than two distinct times."""
    n = len(points)
    if n < 2:
        return None
    x0 = points[0][0]
    mx = sum(x - x0 for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - x0 - mx) ** 2 for x, _ in points)
    if sxx <= 0.0:
        return None
    sxy = sum((x - x0 - mx) * (y - my) for x, y in points)
    slope = sxy / sxx
    intercept = my - slope * mx
    return Fit(slope, intercept, x0, _r2(points, slope, intercept, x0), n,
               points[-1][0] - x0)


def theil_sen(points: Sequence[tuple[float, float]]) -> Fit | None:
    """Median of pairwise slopes (O(n²): used on at most 60 bucket means)."""
    n = len(points)
    if n < 2:
        return None
    x0 = points[0][0]
    slopes = []
    for i in range(n - 1):
        xi, yi = points[i]
        for j in range(i + 1, n):
            xj, yj = points[j]
            if xj != xi:
                slopes.append((yj - yi) / (xj - xi))
    if not slopes:
        return None
    slope = _median(slopes)
    intercept = _median([y - slope * (x - x0) for x, y in points])
    return Fit(slope, intercept, x0, _r2(points, slope, intercept, x0), n,
               points[-1][0] - x0)


def _median(values: list[float]) -> float:
    values.sort()
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


class Points(Sequence[tuple[float, float]]):
    """(t, y) points in two arrays of doubles: 16 bytes a point, where a deque of tuples of
    floats takes about 100. A central follows thousands of hosts with hundreds of series
    each; pairs are made only when a fit reads them."""

    __slots__ = ("_t", "_y")

    def __init__(self) -> None:
        self._t = array("d")
        self._y = array("d")

    def __len__(self) -> int:
        return len(self._t)

    @overload
    def __getitem__(self, i: int) -> tuple[float, float]: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[tuple[float, float]]: ...

    def __getitem__(self, i: int | slice) -> tuple[float, float] | Sequence[tuple[float, float]]:
        if isinstance(i, slice):
            return list(zip(self._t[i], self._y[i], strict=True))
        return self._t[i], self._y[i]

    def __iter__(self) -> Iterator[tuple[float, float]]:
        return zip(self._t, self._y, strict=True)

    def append(self, point: tuple[float, float]) -> None:
        self._t.append(point[0])
        self._y.append(point[1])

    def popleft(self) -> None:
        del self._t[0], self._y[0]

    def clear(self) -> None:
        del self._t[:], self._y[:]


class Bucketed:
    """Bucket means of (t, y) over a sliding window."""

    __slots__ = ("acc_n", "acc_t", "acc_y", "points", "start")

    def __init__(self) -> None:
        self.points = Points()
        self.acc_t = 0.0
        self.acc_y = 0.0
        self.acc_n = 0
        self.start = 0.0

    def add(self, t: float, y: float, bucket_s: float, window_s: float) -> bool:
        """Add a sample; True when it closed a bucket (a new point was appended)."""
        if self.acc_n and t - self.start >= bucket_s:
            n = self.acc_n
            self.points.append((self.acc_t / n, self.acc_y / n))
            self.acc_t, self.acc_y, self.acc_n, self.start = t, y, 1, t
            horizon = t - window_s
            points = self.points
            while points and points[0][0] < horizon:
                points.popleft()
            return True
        if not self.acc_n:
            self.start = t
        self.acc_t += t
        self.acc_y += y
        self.acc_n += 1
        return False


# --------------------------------------------------------------------------- disks


def _is_step(points: Sequence[tuple[float, float]]) -> bool:
    """Whether most of the fall happened between two or three adjacent points (a step).

    A steady trend spreads its fall over all intervals; a large file copied in puts it into
    one interval (two when the copy straddles a bucket boundary).
    """
    total = points[0][1] - points[-1][1]
    if total <= 0:
        return True
    drops = sorted((a[1] - b[1] for a, b in itertools.pairwise(points)), reverse=True)
    return sum(drops[:2]) > 0.7 * total


class DiskTrend:
    """Free space history and forecast state of one mount."""

    __slots__ = ("cond", "eta_h", "fast", "fit", "free", "percent_units", "recent", "series",
                 "total", "window_eta", "window_fit")

    def __init__(self, cond: Condition) -> None:
        self.cond = cond
        self.series = Bucketed()
        self.fit: Fit | None = None
        self.eta_h = math.inf
        #: The window's verdict (hours; inf: not filling) and its fit, kept between buckets.
        self.window_eta = math.inf
        self.window_fit: Fit | None = None
        #: Raw (t, free) samples of the last FAST_WINDOW_S, and whether they decide the ETA.
        self.recent: deque[tuple[float, float]] = deque()
        self.fast = False
        self.free = 0.0
        self.total = 0.0
        #: True when only disk.percent is known: free and total are then percentage points.
        self.percent_units = False


class DiskForecaster:
    """Disk-full ETA per mount."""

    def __init__(self) -> None:
        self._trends: dict[str, DiskTrend] = {}
        self.configure(ForecastConfig())

    def configure(self, cfg: ForecastConfig) -> None:
        """Apply new settings (live)."""
        self._cfg = cfg
        self._window_s = cfg.window_minutes * 60.0
        self._bucket_s = self._window_s / _BUCKETS
        for tr in self._trends.values():
            self._apply(tr.cond)

    def _apply(self, cond: Condition) -> None:
        # Lower ETAs are worse: the condition sees -ETA against -horizon.
        cond.warn = -self._cfg.horizon_hours
        cond.crit = -self._cfg.critical_hours
        cond.margin = 0.1 * self._cfg.horizon_hours
        cond.for_s = 0.0  # the window already is the duration

    def trend(self, mount: str) -> DiskTrend:
        """The trend of a mount, created on first use."""
        tr = self._trends.get(mount)
        if tr is None:
            cond = Condition(self, DISK_RULE, DISK_METRIC, mount)
            self._apply(cond)
            tr = self._trends[mount] = DiskTrend(cond)
            cond.extra = tr
        return tr

    def observe(self, disks: Sequence[DiskUsage], t: float, changed: list[Condition]) -> None:
        """Add this snapshot's free space; fit when a bucket closes."""
        bucket_s, window_s = self._bucket_s, self._window_s
        trends = self._trends
        for d in disks:
            percent_units = False
            if d.free is not None and d.total:
                free, total = float(d.free), float(d.total)
            elif d.percent is not None:
                free, total, percent_units = 100.0 - d.percent, 100.0, True
            else:
                continue
            tr = trends.get(d.mountpoint)
            if tr is None:
                tr = self.trend(d.mountpoint)
            tr.cond.last_seen = t
            tr.free, tr.total = free, total
            if percent_units != tr.percent_units:
                tr.percent_units = percent_units
                tr.series = Bucketed()  # units changed: start over
                tr.recent.clear()
            stepped = False
            if tr.series.add(t, free, bucket_s, window_s):
                eta = self._eta(tr, t)
                if eta is not None:
                    tr.window_eta, tr.window_fit = eta, tr.fit
                    stepped = True
            fast = self._fast_eta(tr, t, free)
            if fast is not None or tr.fast:
                stepped = True
            if stepped:
                tr.fast = fast is not None and fast[0] < tr.window_eta
                eta, tr.fit = (fast if fast is not None and tr.fast
                               else (tr.window_eta, tr.window_fit))
                tr.eta_h = eta
                if tr.cond.step(-eta, t):
                    changed.append(tr.cond)

    def _fast_eta(self, tr: DiskTrend, t: float, free: float) -> tuple[float, Fit] | None:
        """Hours until full judged on the last few minutes alone, when that is within
        ``critical_hours`` and the fall is steady; else None."""
        recent = tr.recent
        if recent and free - recent[-1][1] > _CLEANUP_FRACTION * tr.total:
            recent.clear()  # a clean-up: the fall before it says nothing any more
        if not recent or t - recent[-1][0] >= 0.9 * FAST_STEP_S:  # ticks jitter
            recent.append((t, free))
        while recent and recent[0][0] < t - FAST_WINDOW_S:
            recent.popleft()
        if len(recent) < 3 or t - recent[0][0] < FAST_MIN_SPAN_S:
            return None
        points = list(recent)
        # The whole window, else its last FAST_MIN_SPAN_S: a fill that began after a flat
        # stretch is a line only from where it began.
        short = next(i for i in range(len(points) - 1, -1, -1)
                     if t - points[i][0] >= FAST_MIN_SPAN_S)
        for part in (points, points[short:]) if short else (points,):
            found = self._fast_fit(part, t, free)
            if found is not None:
                return found
        return None

    def _fast_fit(self, points: list[tuple[float, float]], t: float, free: float
                  ) -> tuple[float, Fit] | None:
        """The fast verdict on ``points`` (see _fast_eta)."""
        if len(points) < 3:
            return None
        # Cheap pre-check: the plain fall since the oldest sample must fill the disk soon.
        t0, y0 = points[0]
        fall = (y0 - free) / (t - t0)
        limit_s = self._cfg.critical_hours * 3600.0
        if fall <= 0 or free / fall > limit_s:
            return None
        fit = least_squares(points)
        if fit is None or fit.slope >= 0 or fit.r2 < _FAST_R2 or _is_step(points):
            return None
        tail = least_squares(points[-max(3, len(points) // 3):])
        if tail is None or tail.slope > 0.5 * fit.slope:
            return None  # it stopped falling
        eta_s = max(fit.at(t), 0.0) / -fit.slope
        return (eta_s / 3600.0, fit) if eta_s <= limit_s else None

    def _eta(self, tr: DiskTrend, t: float) -> float | None:
        """Hours until full (inf: not filling), or None when there is too little to say."""
        points = tr.series.points
        if len(points) >= 2 and points[-1][1] - points[-2][1] > _CLEANUP_FRACTION * tr.total:
            last = points[-1]
            points.clear()
            points.append(last)
            tr.fit = None
            return math.inf
        if len(points) < _MIN_POINTS or points[-1][0] - points[0][0] < 5 * self._bucket_s:
            return None
        quick = least_squares(points)
        if quick is None or quick.slope >= 0:
            tr.fit = quick
            return math.inf
        if not tr.cond.level and \
                quick.at(t) / -quick.slope > 3 * self._cfg.horizon_hours * 3600:
            tr.fit = quick
            return math.inf  # far from full: the robust fit would not change the verdict
        if _is_step(points):
            tr.fit = quick
            return math.inf
        fit = theil_sen(points)
        tr.fit = fit
        if fit is None or fit.slope >= 0 or fit.r2 < _MIN_R2_DISK:
            return math.inf
        # A step (a big file copied in) followed by a flat line is not a trend: the last
        # third of the window must still fall at half the fitted rate or more. (A step in
        # the last third leaves most pairwise slopes flat, so the median above is ~0.)
        recent = theil_sen(list(points)[-max(3, len(points) // 3):])
        if recent is None or recent.slope > 0.5 * fit.slope:
            return math.inf
        return max(fit.at(t), 0.0) / -fit.slope / 3600.0

    def confidence(self, fit: Fit, fast: bool = False) -> float:
        """R² scaled down while the fit covers less than half its window (the trend's, or
        FAST_WINDOW_S for a fast fill)."""
        window = FAST_WINDOW_S if fast else self._window_s
        return round(fit.r2 * min(1.0, fit.span_s / (0.5 * window)), 2)

    def finding(self, cond: Condition, tick: TickContext) -> Finding:
        """Put a disk forecast into words."""
        tr = self._trends[cond.dimension]
        level = cond.level
        eta = tr.eta_h
        threshold = self._cfg.critical_hours if level == 2 else self._cfg.horizon_hours
        return Finding(
            rule=DISK_RULE, metric=DISK_METRIC, dimension=cond.dimension,
            severity=("critical" if level == 2 else "warning") if level else None,
            value=round(eta, 3) if math.isfinite(eta) else None, since=cond.since,
            threshold=threshold, worse="lower",
            describe=lambda since: self._describe(cond, tr, threshold, tick, since))

    def _describe(self, cond: Condition, tr: DiskTrend, threshold: float, tick: TickContext,
                  since: float) -> Description:
        mount = cond.dimension
        labels = {"mount": mount}
        amount = (lambda v: f"{v:.1f} points") if tr.percent_units else fmt_bytes
        if not cond.level:
            why = cond.note or (f"no full-disk forecast under "
                                f"{fmt_hours(self._cfg.horizon_hours)} any more")
            summary = (f"Disk {mount} is no longer filling up fast ({why}); resolved after "
                       f"{fmt_duration(tick.t - since)}")
            return Description(summary=summary, labels=labels, confidence=0.7,
                               actions=(notify_only(summary),))
        fit = tr.fit
        level_word = "critical" if cond.level == 2 else "warning"
        summary = (f"Disk {mount} will be full in about {fmt_hours(tr.eta_h)} "
                   f"({level_word} under {fmt_hours(threshold)})")
        evidence: tuple[str, ...] = ()
        confidence = 0.5
        if fit is not None:
            rate = -fit.slope * 3600
            confidence = self.confidence(fit, tr.fast)
            summary += (f": free space falls by {amount(rate)}/h, {amount(tr.free)} left; "
                        f"fit over {fmt_duration(fit.span_s)} ({fit.n} points"
                        f"{', a fast fill' if tr.fast else ''}), "
                        f"R² {fit.r2:.2f}, confidence {confidence:.2f}")
            evidence = (f"disk.free[{mount}] fell {amount(rate)}/h over "
                        f"{fmt_duration(fit.span_s)}; Theil-Sen fit, R² {fit.r2:.2f}",)
        actions = _disk_actions(mount, summary, tick)
        return Description(
            summary=summary, labels=labels, evidence=evidence, confidence=confidence,
            likely_cause=f"something keeps writing to {mount} (logs, dumps, downloads, "
                         "backups) faster than it is cleaned up",
            actions=actions,
            context=f"trend over the last {fmt_duration(fit.span_s)}" if fit else None)


def _disk_actions(mount: str, summary: str, tick: TickContext
                  ) -> tuple[SuggestedAction, ...]:
    roots = tick.roots_on(mount)
    if roots:
        return tuple(suggest("clean_disk", {"root": root},
                             f"free space on {mount} under the configured root {root}",
                             summary) for root in roots[:3])
    return (notify_only(summary),)


# --------------------------------------------------------------------------- leaks


#: How long a leaking process may be missing from the largest-memory list before its alert
#: resolves: several readings, so one at the list's edge does not flap in and out.
LEFT_S = 30.0


class ProcTrack:
    """RSS history and leak state of one process."""

    __slots__ = ("cond", "fit", "proc", "rate", "series")

    def __init__(self, cond: Condition, proc: ProcessInfo) -> None:
        self.cond = cond
        self.proc = proc
        self.series = Bucketed()
        self.fit: Fit | None = None
        self.rate = 0.0


class LeakDetector:
    """Steady RSS growth per process, followed by (pid, create_time)."""

    def __init__(self) -> None:
        self._tracks: dict[tuple[int, float], ProcTrack] = {}
        self._next_sweep = 0.0
        self.configure(ForecastConfig())

    def configure(self, cfg: ForecastConfig) -> None:
        """Apply new settings (live)."""
        self._cfg = cfg
        self._min_s = cfg.leak_min_minutes * 60.0
        self._window_s = max(2 * self._min_s, cfg.window_minutes * 60.0)
        self._bucket_s = self._window_s / _BUCKETS
        for tr in self._tracks.values():
            self._apply(tr.cond)

    def _apply(self, cond: Condition) -> None:
        cond.warn = self._cfg.leak_min_mb_per_hour
        cond.crit = None
        cond.margin = 0.5 * self._cfg.leak_min_mb_per_hour
        cond.for_s = 0.0

    def track(self, p: ProcessInfo) -> ProcTrack:
        """The track of a process, created on first use."""
        key = (p.pid, p.create_time)
        tr = self._tracks.get(key)
        if tr is None:
            cond = Condition(self, LEAK_RULE, LEAK_METRIC, leak_dimension(p))
            self._apply(cond)
            tr = self._tracks[key] = ProcTrack(cond, p)
            cond.extra = tr
        return tr

    def observe(self, top_memory: Sequence[ProcessInfo], t: float, changed: list[Condition],
                available: int | None = None) -> None:
        """Add this snapshot's RSS of each listed process; judge when a bucket closes.
        ``available``: the host's available memory (bytes), for the early verdict."""
        tracks = self._tracks
        bucket_s, window_s = self._bucket_s, self._window_s
        for p in top_memory:
            rss = p.rss
            if rss is None:
                continue
            tr = tracks.get((p.pid, p.create_time))
            if tr is None:
                tr = self.track(p)
            tr.proc = p
            tr.cond.last_seen = t
            if tr.series.add(t, rss / 1e6, bucket_s, window_s):
                self._judge(tr, t, changed, available)
        if top_memory:
            self._left(t, changed)
        else:  # a tick without a process list says nothing about who left it: hold
            for tr in tracks.values():
                if tr.cond.level:
                    tr.cond.last_seen = t
        if t >= self._next_sweep:
            self._next_sweep = t + bucket_s
            horizon = t - window_s
            for key in [k for k, tr in tracks.items()
                        if tr.cond.last_seen < horizon and not tr.cond.level]:
                del tracks[key]

    def _left(self, t: float, changed: list[Condition]) -> None:
        """Resolve a leak whose process has been out of the largest-memory list for
        ``LEFT_S``: it exited or shrank, and either way no longer eats the host's memory."""
        for tr in self._tracks.values():
            cond = tr.cond
            if cond.level and t - cond.last_seen >= LEFT_S and cond.force(
                    0, t, note=f"not among the largest processes for {LEFT_S:g} s: it "
                               "exited or shrank"):
                changed.append(cond)

    def _judge(self, tr: ProcTrack, t: float, changed: list[Condition],
               available: int | None) -> None:
        points = tr.series.points
        if len(points) < _FAST_POINTS:
            return
        span_s = points[-1][0] - points[0][0]
        # Younger than leak_min_minutes: only a leak that would exhaust memory soon is named.
        early = span_s < self._min_s and not tr.cond.level
        if early and not available:
            return
        if not early and len(points) < _MIN_POINTS:
            return
        min_rate = self._cfg.leak_min_mb_per_hour
        rate = 0.0
        if span_s > 0 and (points[-1][1] - points[0][1]) / (span_s / 3600.0) >= 0.5 * min_rate:
            fit = least_squares(points)
            tr.fit = fit
            needed = (_LEAK_R2_HOLD if tr.cond.level else _LEAK_R2_FAST if early
                      else _LEAK_R2)
            if fit is not None and fit.r2 >= needed:
                rate = fit.slope * 3600.0
        if early and (rate <= 0 or (available or 0) / 1e6 / rate > self._cfg.horizon_hours):
            return  # not fast enough to judge before leak_min_minutes
        tr.rate = rate
        if tr.cond.step(rate, t):
            changed.append(tr.cond)

    def leaks(self) -> dict[ProcKey, float]:
        """Processes currently reported as leaking, with their growth in MB/h."""
        return {k: tr.rate for k, tr in self._tracks.items() if tr.cond.level}

    def finding(self, cond: Condition, tick: TickContext) -> Finding:
        """Put a leak into words."""
        tr = cond.extra
        assert isinstance(tr, ProcTrack)
        return Finding(
            rule=LEAK_RULE, metric=LEAK_METRIC, dimension=cond.dimension,
            severity="warning" if cond.level else None, value=round(tr.rate, 1),
            since=cond.since, threshold=self._cfg.leak_min_mb_per_hour,
            describe=lambda since: self._describe(cond, tr, tick, since))

    def _describe(self, cond: Condition, tr: ProcTrack, tick: TickContext, since: float
                  ) -> Description:
        p = tr.proc
        who = proc_label(p)
        labels = {"process": p.name, "pid": str(p.pid), "create_time": repr(p.create_time)}
        rss = fmt_bytes(p.rss) if p.rss is not None else "unknown"
        if not cond.level:
            why = cond.note or f"growth now {tr.rate:.0f} MB/h or not steady"
            summary = (f"Process {who} no longer leaks memory ({why}); resolved after "
                       f"{fmt_duration(tick.t - since)}")
            return Description(summary=summary, labels=labels, confidence=0.7,
                               actions=(notify_only(summary),))
        fit = tr.fit
        summary = f"Process {who} leaks memory: its RSS grows steadily by {tr.rate:.0f} MB/h"
        confidence = 0.6
        evidence: tuple[str, ...] = ()
        if fit is not None:
            confidence = round(min(0.95, fit.r2), 2)
            summary += (f" over {fmt_duration(fit.span_s)} (now {rss}; {fit.n} points, "
                        f"R² {fit.r2:.2f})")
            evidence = (f"rss[{p.pid}] +{tr.rate:.0f} MB/h over {fmt_duration(fit.span_s)}, "
                        f"R² {fit.r2:.2f}",)
        available = tick.snap.memory.available
        if available and tr.rate > 0:
            hours = available / 1e6 / tr.rate
            summary += (f"; at this rate the {fmt_bytes(available)} still available last "
                        f"about {fmt_hours(hours)}")
        return Description(
            summary=summary, labels=labels, confidence=confidence, evidence=evidence,
            context=f"memory leak in {who}: steady growth, not a spike",
            likely_cause=f"{who} allocates memory it never frees",
            actions=(notify_only(summary),))

    def seed(self, pid: int, create_time: float, name: str, level: int, since: float,
             t: float) -> Condition:
        """Re-create the state of a leak alert restored after a restart."""
        tr = self.track(ProcessInfo(pid=pid, create_time=create_time, name=name))
        tr.cond.force(level, t, since=since)
        tr.cond.last_seen = t
        return tr.cond


def leak_dimension(p: ProcessInfo) -> str:
    """The alert dimension of a process: ``name[pid]``."""
    return f"{p.name}[{p.pid}]"
