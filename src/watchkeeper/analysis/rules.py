"""Static threshold rules: warning/critical levels per metric and dimension, `for`, hysteresis.

Every metric family has a rule, evaluated for each of its dimensions (each mount, each
interface). Levels come from ``thresholds`` (``cpu_warning`` ...) or built-in defaults, and
``analyzer.rules`` overrides them field by field: ``"disk.percent"`` for every mount, then
``"disk.percent:/var"`` for one. Like Prometheus, a condition must hold ``for_s`` seconds
before it fires (pending resets whenever the value drops below the level); once firing it
clears only below the warning level minus the hysteresis margin, and critical drops back to
warning only below critical minus the margin. A value that is absent from a snapshot changes
nothing: it neither advances, fires nor clears a condition.

Net errors and drops are counts during one collection interval (the collector sends deltas,
not totals since boot), so their levels are "per interval".
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from watchkeeper.analysis.alerts import (
    CAUSE_EVERY_S,
    Description,
    Finding,
    fmt_duration,
    fmt_num,
    notify_only,
    suggest,
)
from watchkeeper.analysis.context import Classification, TickContext
from watchkeeper.config import RULE_METRICS, AnalyzerConfig, RuleOverride, Thresholds
from watchkeeper.events import Severity, SuggestedAction

logger = logging.getLogger(__name__)

RULE = "threshold"


class Detector(Protocol):
    """Something that owns conditions and can put one into words."""

    def finding(self, cond: Condition, tick: TickContext) -> Finding:
        """The finding for an active (or just cleared) condition of this detector."""
        ...  # pragma: no cover


class Condition:
    """The `for`/hysteresis state machine of one problem; higher values are worse.

    Level 0 is clear, 1 warning, 2 critical. ``warn_since``/``crit_since`` are when the
    value last rose to each level (pending, like Prometheus' activeAt); ``since`` is when the
    current firing began. Detectors where lower is worse feed negated values.
    """

    __slots__ = ("crit", "crit_since", "dimension", "enabled", "extra", "for_s", "last_seen",
                 "level", "margin", "metric", "note", "owner", "rule", "since", "value", "warn",
                 "warn_since")

    def __init__(self, owner: Detector, rule: str, metric: str, dimension: str, *,
                 warn: float = 0.0, crit: float | None = None, margin: float = 0.0,
                 for_s: float = 0.0) -> None:
        self.owner = owner
        self.rule = rule
        self.metric = metric
        self.dimension = dimension
        self.warn = warn
        self.crit = crit
        self.margin = margin
        self.for_s = for_s
        self.enabled = True
        self.level = 0
        self.warn_since: float | None = None
        self.crit_since: float | None = None
        self.since = 0.0
        self.value: float | None = None
        self.last_seen = 0.0
        #: Why the condition cleared when it was not the value (gone, rule disabled).
        self.note: str | None = None
        #: Detector-specific data (the resolved rule, the fit of a forecast, ...).
        self.extra: object = None

    def step(self, v: float, t: float) -> bool:
        """Feed one value at time ``t``; return True when the level changed."""
        self.value = v
        self.last_seen = t
        warn = self.warn
        level = self.level
        if v < warn and not level:  # the common case: healthy
            self.warn_since = self.crit_since = None
            return False
        if v >= warn:
            if self.warn_since is None:
                self.warn_since = t
        else:
            self.warn_since = None
        crit = self.crit
        if crit is not None and v >= crit:
            if self.crit_since is None:
                self.crit_since = t
        else:
            self.crit_since = None
        target = 0
        if self.crit_since is not None and t - self.crit_since >= self.for_s:
            target = 2
        elif self.warn_since is not None and t - self.warn_since >= self.for_s:
            target = 1
        if level == 0:
            new = target
        elif v < warn - self.margin:
            new = 0
        else:
            new = max(target, 1)
            if level == 2 and crit is not None and v >= crit - self.margin:
                new = 2
        if new == level:
            return False
        if level == 0:
            self.since = self.warn_since if self.warn_since is not None else t
            self.note = None
        self.level = new
        return True

    def force(self, level: int, t: float, *, since: float | None = None,
              note: str | None = None) -> bool:
        """Set the level from outside (seeded after a restart, gone, disabled)."""
        changed = level != self.level
        if level and not self.level:
            self.since = since if since is not None else t
            self.warn_since = self.since
        if not level:
            self.warn_since = self.crit_since = None
            self.note = note
        self.level = level
        return changed

    def reset(self) -> None:
        """Forget the level and any pending time (a hand-resolved alert starts over)."""
        self.level = 0
        self.warn_since = self.crit_since = None


# --------------------------------------------------------------------------- the rules


@dataclass(frozen=True)
class RuleSpec:
    """A threshold rule: its subject in words, unit, default levels and likely cause."""

    metric: str
    subject: str  # "{dim}" and "{value}" are filled in
    unit: str
    defaults: Callable[[Thresholds], tuple[float, float | None]]
    #: Margin when not configured; None means analyzer.hysteresis (percentage points).
    hysteresis: float | None = None
    cause: str = ""


def _net(direction: str, what: str, warn: float, crit: float, margin: float, cause: str
         ) -> RuleSpec:
    return RuleSpec(f"net.{what}_{direction}",
                    "Interface {dim} had {value} " + _NET_WORDS[(what, direction)]
                    + " in the last {interval}", "", lambda _t: (warn, crit), margin, cause)


_NET_WORDS = {("errors", "in"): "receive errors", ("errors", "out"): "transmit errors",
              ("drops", "in"): "dropped incoming packets",
              ("drops", "out"): "dropped outgoing packets"}
_NIC_CAUSE = "a faulty cable, NIC or driver, or a duplex mismatch"
_DROP_CAUSE = "full receive/transmit queues, or traffic the host does not handle"

RULES: dict[str, RuleSpec] = {spec.metric: spec for spec in (
    RuleSpec("cpu.percent", "CPU is at {value}", "%",
             lambda t: (t.cpu_warning, t.cpu_critical)),
    RuleSpec("cpu.load_per_core", "Load per core is {value}", "",
             lambda _t: (2.0, 4.0), 0.25,
             "more runnable or IO-blocked tasks than there are cores"),
    RuleSpec("memory.percent", "Memory is {value} used", "%",
             lambda t: (t.memory_warning, t.memory_critical)),
    RuleSpec("memory.swap_percent", "Swap is {value} used", "%",
             lambda t: (t.swap_warning, t.swap_critical), None,
             "memory pressure pushes pages out to swap"),
    RuleSpec("disk.percent", "Disk {dim} is {value} full", "%",
             lambda t: (t.disk_warning, t.disk_critical), None,
             "files accumulating on {dim}: logs, caches, temporary files or backups"),
    RuleSpec("disk.inodes_percent", "Disk {dim} has {value} of its inodes in use", "%",
             lambda t: (t.disk_warning, t.disk_critical), None,
             "very many small files on {dim}: caches, mail or job queues, session files"),
    _net("in", "errors", 10, 100, 5, _NIC_CAUSE),
    _net("out", "errors", 10, 100, 5, _NIC_CAUSE),
    _net("in", "drops", 100, 1000, 50, _DROP_CAUSE),
    _net("out", "drops", 100, 1000, 50, _DROP_CAUSE),
    RuleSpec("processes.zombies", "{value} processes are zombies", "",
             lambda _t: (20.0, 100.0), 5.0,
             "a parent process does not reap its exited children"),
)}
if set(RULES) != set(RULE_METRICS):  # pragma: no cover - caught by the tests
    raise RuntimeError("config.RULE_METRICS and analysis.rules.RULES disagree")

#: Metrics whose alerts are explained with the CPU or the memory classification.
_CPU_METRICS = frozenset({"cpu.percent", "cpu.load_per_core"})
_MEMORY_METRICS = frozenset({"memory.percent", "memory.swap_percent"})
_DISK_METRICS = frozenset({"disk.percent", "disk.inodes_percent"})


@dataclass(frozen=True)
class Resolved:
    """The effective levels of one rule for one dimension."""

    enabled: bool
    warn: float
    crit: float | None
    margin: float
    for_s: float


def resolve(spec: RuleSpec, dimension: str, thresholds: Thresholds, cfg: AnalyzerConfig
            ) -> Resolved:
    """Defaults < ``rules[metric]`` < ``rules[metric:dimension]``, field by field."""
    warn, crit = spec.defaults(thresholds)
    margin = cfg.hysteresis if spec.hysteresis is None else spec.hysteresis
    for_s = cfg.for_s
    enabled = True
    layers: list[RuleOverride] = []
    for key in (spec.metric, f"{spec.metric}:{dimension}" if dimension else None):
        if key is not None and key in cfg.rules:
            layers.append(cfg.rules[key])
    for o in layers:
        enabled = o.enabled
        warn = o.warning if o.warning is not None else warn
        crit = o.critical if o.critical is not None else crit
        margin = o.hysteresis if o.hysteresis is not None else margin
        for_s = o.for_s if o.for_s is not None else for_s
    if crit is not None and crit < warn:
        logger.warning("rule %s%s: critical %g is below warning %g, so only the warning "
                       "level applies", spec.metric, f":{dimension}" if dimension else "",
                       crit, warn)
        crit = None
    return Resolved(enabled, warn, crit, margin, for_s)


def _fmt(value: float, unit: str) -> str:
    return f"{fmt_num(value)}{unit}"


class RuleBook:
    """Every threshold rule's condition, keyed by (metric, dimension)."""

    def __init__(self) -> None:
        self._conds: dict[tuple[str, str], Condition] = {}
        self._thresholds = Thresholds()
        self._cfg = AnalyzerConfig()

    def configure(self, thresholds: Thresholds, cfg: AnalyzerConfig) -> None:
        """Apply new settings to every known condition (new ones resolve when first seen)."""
        self._thresholds = thresholds
        self._cfg = cfg
        for cond in self._conds.values():
            self._apply(cond)

    def _apply(self, cond: Condition) -> None:
        r = resolve(RULES[cond.metric], cond.dimension, self._thresholds, self._cfg)
        cond.enabled, cond.warn, cond.crit, cond.margin, cond.for_s = (
            r.enabled, r.warn, r.crit, r.margin, r.for_s)

    def condition(self, metric: str, dimension: str) -> Condition:
        """The condition of a rule on one dimension, created on first use."""
        key = (metric, dimension)
        cond = self._conds.get(key)
        if cond is None:
            cond = self._conds[key] = Condition(self, RULE, metric, dimension)
            self._apply(cond)
        return cond

    def observe(self, samples: Sequence[tuple[str, str, float]], t: float,
                changed: list[Condition]) -> None:
        """Step each rule's condition with this snapshot's values."""
        conds = self._conds
        for metric, dim, v in samples:
            cond = conds.get((metric, dim))
            if cond is None:
                if metric not in RULES:
                    continue
                cond = self.condition(metric, dim)
            if not cond.enabled:
                if cond.level and cond.force(0, t, note="its rule was disabled"):
                    changed.append(cond)
                continue
            if cond.step(v, t):
                changed.append(cond)

    def engaged(self, metric: str, dimension: str) -> bool:
        """True when this metric's static rule is pending or firing (anomalies stand back)."""
        cond = self._conds.get((metric, dimension))
        return cond is not None and (cond.level > 0 or cond.warn_since is not None)

    def finding(self, cond: Condition, tick: TickContext) -> Finding:
        """Put a threshold condition into words, with context and suggested actions."""
        spec = RULES[cond.metric]
        level = cond.level
        severity: Severity | None = ("critical" if level == 2 else "warning") if level else None
        threshold = cond.crit if level == 2 and cond.crit is not None else cond.warn
        klass = self._classification(cond.metric, tick) if level else None
        return Finding(
            rule=RULE, metric=cond.metric, dimension=cond.dimension, severity=severity,
            value=cond.value, since=cond.since, threshold=threshold,
            cause=klass.cause if klass else "", escalates=True, cause_every_s=CAUSE_EVERY_S,
            describe=lambda since: self._describe(cond, spec, severity, threshold, klass,
                                                  tick, since))

    @staticmethod
    def _classification(metric: str, tick: TickContext) -> Classification | None:
        if metric in _CPU_METRICS:
            return tick.cpu
        if metric in _MEMORY_METRICS:
            return tick.memory
        return None

    def _describe(self, cond: Condition, spec: RuleSpec, severity: Severity | None,
                  threshold: float, klass: Classification | None, tick: TickContext,
                  since: float) -> Description:
        dim = cond.dimension
        value = cond.value if cond.value is not None else float("nan")
        subject = spec.subject.format(dim=dim, value=_fmt(value, spec.unit),
                                      interval=fmt_duration(tick.snap.interval_s))
        labels = {}
        if cond.metric.startswith("disk."):
            labels["mount"] = dim
        elif cond.metric.startswith("net."):
            labels["interface"] = dim
        evidence = (f"{cond.metric}{'[' + dim + ']' if dim else ''}={fmt_num(value)}"
                    f"{spec.unit} at {tick.snap.at.isoformat()}",)
        if severity is None:
            if cond.note:
                why = cond.note
            elif cond.margin:
                why = (f"below {_fmt(cond.warn - cond.margin, spec.unit)}, the warning level "
                       f"{_fmt(cond.warn, spec.unit)} minus the {fmt_num(cond.margin)} margin")
            else:
                why = f"below the warning level {_fmt(cond.warn, spec.unit)}"
            summary = (f"{subject}: back to normal ({why}); resolved after "
                       f"{fmt_duration(tick.t - since)}")
            return Description(summary=summary, labels=labels, evidence=evidence,
                               likely_cause="", confidence=0.9,
                               actions=(notify_only(summary),))
        summary = (f"{subject} ({severity} at {_fmt(threshold, spec.unit)}) for "
                   f"{fmt_duration(tick.t - since)}")
        context = klass.text if klass else None
        cause = klass.likely_cause if klass else spec.cause.format(dim=dim)
        confidence = klass.confidence if klass else 0.6
        actions = self._actions(cond.metric, dim, summary, klass, tick)
        if klass is not None and klass.process is not None:
            labels["process"] = klass.process.name
            labels["pid"] = str(klass.process.pid)
        return Description(summary=summary, context=context, likely_cause=cause,
                           confidence=confidence, expected=bool(klass and klass.expected),
                           actions=actions, labels=labels, evidence=evidence)

    @staticmethod
    def _actions(metric: str, dim: str, summary: str, klass: Classification | None,
                 tick: TickContext) -> tuple[SuggestedAction, ...]:
        if metric in _DISK_METRICS:
            roots = tick.roots_on(dim)
            if roots:
                return tuple(suggest("clean_disk", {"root": root},
                                     f"free space on {dim} under the configured root {root}",
                                     summary) for root in roots[:3])
        if klass is not None and klass.kind == "runaway" and klass.process is not None:
            p = klass.process
            return (suggest("stop_process", {"pid": p.pid, "create_time": p.create_time},
                            f"{p.name} (pid {p.pid}) is a runaway", summary),)
        return (notify_only(summary),)
