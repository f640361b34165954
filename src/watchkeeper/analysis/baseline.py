"""Learned normal per (metric, dimension), an anomaly score, and "abnormal" findings.

Each series keeps a robust band: an exponentially weighted centre and spread where each new
value's deviation is clipped at 3 sigma before it is learned (a Huber-style EWMA), so one
spike barely moves the band while a lasting change is absorbed within about an hour. The
spread is the EW mean absolute deviation, scaled by 1.2533 to a normal sigma. The anomaly
score is the robust z = (value - centre) / sigma, against the band of the current UTC hour
once that band has ``warmup_samples`` samples from at least two different days
(time-of-day awareness), otherwise against the all-hours band.

A value is abnormal when its score reaches ``anomaly_score`` *and* it is at least a
minimum absolute distance from the centre (per metric, :data:`BASELINE_METRICS`), so a
near-constant metric does not alert on noise. Until a series has ``warmup_samples`` samples
it raises nothing. While the metric's static threshold rule is pending or firing, the
anomaly stands back (the threshold alert says more). Abnormal findings are ``info``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from watchkeeper.analysis.alerts import (
    CAUSE_EVERY_S,
    Description,
    Finding,
    fmt_duration,
    fmt_num,
    notify_only,
)
from watchkeeper.analysis.context import Classification, TickContext
from watchkeeper.analysis.rules import Condition
from watchkeeper.config import BaselineConfig

logger = logging.getLogger(__name__)

RULE = "anomaly"
FORMAT_VERSION = 1

#: Sigma of a normal distribution per unit of mean absolute deviation.
_MAD_TO_SIGMA = 1.2533
#: Deviations are clipped at this many sigmas before they are learned.
_CLIP = 3.0
#: Time constants: the all-hours band forgets over about an hour; an hourly band over about
#: three hours of its own hour (three days).
_TAU_S = 3600.0
_TAU_HOURLY_S = 3 * 3600.0
#: Days of history an hourly band needs before it is used.
_HOURLY_MIN_DAYS = 2


@dataclass(frozen=True)
class BaselineSpec:
    """How one metric is judged against its band."""

    label: str
    unit: str
    #: The smallest distance from the centre that can be abnormal, in the metric's unit.
    min_deviation: float
    #: ... and as a fraction of the centre, whichever is larger.
    min_relative: float = 0.0
    #: +1 only high values are abnormal, -1 only low, 0 both.
    direction: int = 1


#: Metrics with a learned baseline (host-wide ones; values computed by the engine).
BASELINE_METRICS: dict[str, BaselineSpec] = {
    "cpu.percent": BaselineSpec("CPU", "%", 10.0),
    "cpu.iowait_percent": BaselineSpec("CPU iowait", "%", 10.0),
    "cpu.load_per_core": BaselineSpec("Load per core", "", 0.5),
    "memory.percent": BaselineSpec("Memory use", "%", 10.0),
    "memory.swap_percent": BaselineSpec("Swap use", "%", 10.0),
    "processes.total": BaselineSpec("The number of processes", "", 50.0, 0.25, 0),
}


class Band:
    """A robust EWMA centre and spread, with how many samples and days it has seen."""

    __slots__ = ("center", "days", "last_day", "n", "spread")

    def __init__(self, center: float = 0.0, spread: float = 0.0, n: int = 0, days: int = 0,
                 last_day: int = -1) -> None:
        self.center = center
        self.spread = spread
        self.n = n
        self.days = days
        self.last_day = last_day

    @property
    def sigma(self) -> float:
        """Spread as a normal sigma."""
        return self.spread * _MAD_TO_SIGMA

    def update(self, x: float, alpha: float, day: int) -> None:
        """Learn one value; early on this is a plain running mean and mean deviation."""
        n = self.n + 1
        self.n = n
        if day != self.last_day:
            self.last_day = day
            self.days += 1
        if n == 1:
            self.center = x
            return
        a = alpha if alpha * n > 1.0 else 1.0 / n
        dev = x - self.center
        if n > 10:
            limit = _CLIP * self.spread * _MAD_TO_SIGMA
            if dev > limit:
                dev = limit
            elif dev < -limit:
                dev = -limit
        self.center += a * dev
        self.spread += a * ((dev if dev >= 0 else -dev) - self.spread)

    def to_list(self) -> list[float]:
        """Compact JSON form."""
        return [self.center, self.spread, self.n, self.days, self.last_day]

    @classmethod
    def from_list(cls, data: Sequence[Any]) -> Band:
        """Inverse of :meth:`to_list` (raises on malformed input)."""
        center, spread, n, days, last_day = data
        band = cls(float(center), float(spread), int(n), int(days), int(last_day))
        if not (math.isfinite(band.center) and math.isfinite(band.spread)) or band.n < 0 \
                or band.spread < 0:
            raise ValueError("band out of range")
        return band


class Series:
    """The learned normal of one (metric, dimension): all-hours band plus 24 hourly bands."""

    __slots__ = ("band", "cond", "hours", "last_score", "last_used", "last_value")

    def __init__(self, cond: Condition) -> None:
        self.band = Band()
        self.hours: list[Band | None] = [None] * 24
        self.cond = cond
        #: The band used for the last score: (centre, sigma, edge, hourly).
        self.last_used: tuple[float, float, float, bool] = (0.0, 0.0, 0.0, False)
        self.last_score = 0.0
        #: The metric's own last value (the condition holds the score).
        self.last_value: float | None = None


class BaselineBook:
    """All learned baselines and their "abnormal" conditions."""

    def __init__(self) -> None:
        self._series: dict[tuple[str, str], Series] = {}
        self._cfg = BaselineConfig()
        self._for_s = 30.0
        self._last_t: float | None = None

    def configure(self, cfg: BaselineConfig, for_s: float) -> None:
        """Apply new settings (live)."""
        self._cfg = cfg
        self._for_s = for_s
        for s in self._series.values():
            self._apply(s.cond)

    def _apply(self, cond: Condition) -> None:
        cond.warn = self._cfg.anomaly_score
        cond.margin = self._cfg.anomaly_score * 0.25
        cond.for_s = self._for_s
        cond.enabled = self._cfg.enabled

    def series(self, metric: str, dimension: str) -> Series:
        """The series of (metric, dimension), created on first use."""
        key = (metric, dimension)
        s = self._series.get(key)
        if s is None:
            cond = Condition(self, RULE, metric, dimension)
            self._apply(cond)
            s = self._series[key] = Series(cond)
        return s

    def observe(self, samples: Sequence[tuple[str, str, float]], t: float,
                engaged: Callable[[str, str], bool], changed: list[Condition]) -> None:
        """Score each baselined value against what was learned, then learn it."""
        last = self._last_t
        self._last_t = t
        # A sample after a gap (restart, outage) is one sample, not an hour of evidence.
        dt = min(max(t - last, 0.0), 60.0) if last is not None else 0.0
        alpha = 1.0 - math.exp(-dt / _TAU_S) if dt else 0.0
        alpha_h = 1.0 - math.exp(-dt / _TAU_HOURLY_S) if dt else 0.0
        hour = int(t // 3600) % 24
        day = int(t // 86400)
        warmup = self._cfg.warmup_samples
        use_hours = self._cfg.time_of_day
        enabled = self._cfg.enabled
        for metric, dim, v in samples:
            spec = BASELINE_METRICS.get(metric)
            if spec is None:
                continue
            s = self._series.get((metric, dim))
            if s is None:
                s = self.series(metric, dim)
            band = s.band
            cond = s.cond
            s.last_value = v
            if not enabled:
                if cond.level and cond.force(0, t, note="anomaly detection was switched off"):
                    changed.append(cond)
            elif engaged(metric, dim):
                # The static threshold rule is pending or firing: its alert says more.
                if cond.level and cond.force(0, t, note="the threshold alert takes over"):
                    changed.append(cond)
            elif band.n >= warmup:
                hb = s.hours[hour] if use_hours else None
                hourly = hb is not None and hb.n >= warmup and hb.days >= _HOURLY_MIN_DAYS
                ref = hb if hourly and hb is not None else band
                if cond.step(self._score(spec, ref, v, s, hourly), t):
                    changed.append(cond)
            elif cond.level and cond.force(0, t, note="its baseline is being learned again"):
                changed.append(cond)
            band.update(v, alpha, day)
            if use_hours:
                hb = s.hours[hour]
                if hb is None:
                    hb = s.hours[hour] = Band()
                hb.update(v, alpha_h, day)

    def _score(self, spec: BaselineSpec, ref: Band, v: float, s: Series, hourly: bool
               ) -> float:
        """The robust z of ``v``, 0 when it is within the minimum deviation or direction."""
        center = ref.center
        sigma = ref.spread * _MAD_TO_SIGMA
        floor = max(spec.min_deviation, spec.min_relative * abs(center))
        dev = v - center
        z = dev / sigma if sigma > 1e-12 else math.copysign(math.inf, dev) if dev else 0.0
        edge = max(self._cfg.anomaly_score * sigma, floor)
        s.last_used = (center, sigma, edge, hourly)
        if spec.direction > 0:
            z = z if dev >= floor else 0.0
        elif spec.direction < 0:
            z = -z if -dev >= floor else 0.0
        else:
            z = abs(z) if abs(dev) >= floor else 0.0
        z = min(z, 1e6)  # a finite value for the alert (sigma may be ~0 on a flat metric)
        s.last_score = z
        return z

    def score(self, metric: str, dimension: str, value: float, t: float) -> float | None:
        """The anomaly score a value would get now, or None before warm-up."""
        s = self._series.get((metric, dimension))
        spec = BASELINE_METRICS.get(metric)
        if s is None or spec is None or s.band.n < self._cfg.warmup_samples:
            return None
        hb = s.hours[int(t // 3600) % 24] if self._cfg.time_of_day else None
        hourly = (hb is not None and hb.n >= self._cfg.warmup_samples
                  and hb.days >= _HOURLY_MIN_DAYS)
        saved = (s.last_used, s.last_score)
        z = self._score(spec, hb if hourly and hb is not None else s.band, value, s, hourly)
        s.last_used, s.last_score = saved
        return z

    # ----------------------------------------------------------------- findings

    def finding(self, cond: Condition, tick: TickContext) -> Finding:
        """Put an abnormal condition into words."""
        s = self._series[(cond.metric, cond.dimension)]
        center, _sigma, edge, _hourly = s.last_used
        spec = BASELINE_METRICS[cond.metric]
        klass: Classification | None = None
        if cond.level:
            if cond.metric in ("cpu.percent", "cpu.load_per_core"):
                klass = tick.cpu
            elif cond.metric in ("memory.percent", "memory.swap_percent"):
                klass = tick.memory
        value = s.last_value
        threshold = center + edge if spec.direction >= 0 else center - edge
        return Finding(
            rule=RULE, metric=cond.metric, dimension=cond.dimension,
            severity="info" if cond.level else None, value=value, since=cond.since,
            threshold=threshold, baseline=center, cause=klass.cause if klass else "",
            worse="higher" if spec.direction > 0 else "lower" if spec.direction < 0 else None,
            cause_every_s=CAUSE_EVERY_S,
            describe=lambda since: self._describe(cond, s, spec, value, klass, tick, since))

    def _describe(self, cond: Condition, s: Series, spec: BaselineSpec, value: float | None,
                  klass: Classification | None, tick: TickContext, since: float
                  ) -> Description:
        center, sigma, _edge, hourly = s.last_used
        unit = spec.unit
        shown = f"{fmt_num(value)}{unit}" if value is not None else "unknown"
        usual = (f"usually {fmt_num(center)}{unit} ± {fmt_num(sigma)}"
                 + (" at this hour" if hourly else ""))
        dim = f" on {cond.dimension}" if cond.dimension else ""
        evidence = (f"{cond.metric}={shown} at {tick.snap.at.isoformat()}; learned centre "
                    f"{fmt_num(center)}{unit}, sigma {fmt_num(sigma)}, "
                    f"{s.band.n} samples",)
        if not cond.level:
            if cond.note:
                summary = (f"{spec.label}{dim} at {shown}: no longer reported as abnormal "
                           f"({cond.note})")
            else:
                summary = f"{spec.label}{dim} is back within its usual range at {shown} ({usual})"
            summary += f"; resolved after {fmt_duration(tick.t - since)}"
            return Description(summary=summary, evidence=evidence, confidence=0.6,
                               actions=(notify_only(summary),))
        words = "above" if spec.direction >= 0 and (value or 0) >= center else "away from"
        summary = (f"{spec.label}{dim} is {shown}, abnormal for this host and well {words} "
                   f"its learned band ({usual}; anomaly score {s.last_score:.1f}, abnormal "
                   f"from {self._cfg.anomaly_score:g}) for {fmt_duration(tick.t - since)}")
        context = klass.text if klass else None
        cause = klass.likely_cause if klass else "a change in workload or behaviour"
        return Description(
            summary=summary, context=context, likely_cause=cause,
            confidence=0.6, expected=bool(klass and klass.expected), evidence=evidence,
            actions=(notify_only(summary),),
            labels={"hourly_band": "true"} if hourly else {})

    # ----------------------------------------------------------------- persistence

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state of every learned band (not the alert conditions)."""
        return {
            "version": FORMAT_VERSION,
            "last_t": self._last_t,
            "series": [
                {"metric": m, "dimension": d, "band": s.band.to_list(),
                 "hours": {str(h): b.to_list() for h, b in enumerate(s.hours) if b is not None}}
                for (m, d), s in self._series.items() if s.band.n
            ],
        }

    def from_dict(self, data: Mapping[str, Any]) -> int:
        """Replace the learned bands with saved ones; returns how many series were loaded.

        Malformed entries are skipped with a warning; a different format version loads
        nothing (the baselines are then learned again).
        """
        if data.get("version") != FORMAT_VERSION:
            logger.warning("baselines: unknown format version %r; learning from scratch",
                           data.get("version"))
            return 0
        loaded: dict[tuple[str, str], Series] = {}
        for entry in data.get("series") or ():
            try:
                metric, dim = str(entry["metric"]), str(entry["dimension"])
                if metric not in BASELINE_METRICS:
                    continue
                cond = Condition(self, RULE, metric, dim)
                self._apply(cond)
                s = Series(cond)
                s.band = Band.from_list(entry["band"])
                for hour, band in (entry.get("hours") or {}).items():
                    h = int(hour)
                    if not 0 <= h < 24:
                        raise ValueError(f"hour {h}")
                    s.hours[h] = Band.from_list(band)
            except (KeyError, TypeError, ValueError) as exc:
                logger.warning("baselines: skipping a malformed entry (%s)", exc)
                continue
            loaded[(metric, dim)] = s
        # Conditions already active (alerts restored earlier) keep their state and series.
        for key, old in self._series.items():
            if old.cond.level:
                if key in loaded:
                    loaded[key].cond = old.cond
                else:
                    loaded[key] = old
        self._series = loaded
        last = data.get("last_t")
        self._last_t = float(last) if isinstance(last, (int, float)) else None
        return len(loaded)
