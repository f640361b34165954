"""Alert lifecycle: de-duplication by fingerprint, escalation, ack, silences, flapping.

Detectors (rules, baselines, forecasts) report *findings*: the problems that are active this
tick, plus those that cleared this tick. :class:`AlertManager` turns that stream into alert
*changes* (new, escalated, updated, acknowledged, silenced, resolved), so the agent publishes
one event per change and never one per tick. Everything runs on the snapshot's clock (epoch
seconds passed in), never on the wall clock.

Rules of the lifecycle, in plain words:

* one open alert per fingerprint (rule + metric + dimension + host);
* severity only goes up while an alert is open: it escalates when the problem worsens, or when
  a warning of an escalating rule (threshold rules) has lasted ``escalate_after_s``;
  a worsening re-opens an acknowledged alert, time alone does not escalate an acknowledged one;
* a problem whose alert opened and closed more than ``flap_max_transitions`` times within
  ``flap_window_s`` is flapping: the alert is held open (one "flapping" update) and resolves
  only once the changes within the window drop back under the limit;
* silenced alerts are tracked and emitted with ``silenced=True`` so they are stored and shown,
  and the notifier skips them; a silence that ends un-silences what is still open.

While an alert is open its current version (what :meth:`AlertManager.active` returns) follows
every tick: value, words and ``peak`` (the worst value since it opened). Publishing is bounded
(see :data:`VALUE_EVERY_S`): a "value" change only when the value moved by
:data:`VALUE_STEP` or more and the last published version is ``VALUE_EVERY_S`` old, and a new
explanation ("updated": another culprit, a runaway) at once, the next one no sooner than
:data:`CAUSE_EVERY_S` after it. An LLM's assessment is attached with
:meth:`AlertManager.assess` ("assessed") and stays on every later version of the alert until
a newer one replaces it.

Every emitted Alert carries ``labels["change"]``: new, escalated, updated, value, assessed,
flapping, acknowledged, silenced, unsilenced or resolved.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import math
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal, cast, get_args

from watchkeeper.events import Alert, AlertState, Assessment, Severity, SuggestedAction
from watchkeeper.remediation.registry import ActionRefused, validate_action

logger = logging.getLogger(__name__)

#: What every rule-based assessment says about itself (there is no LLM behind it).
RULE_NOTE = "rule-based (no LLM)"

SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}

ChangeKind = Literal["new", "escalated", "updated", "value", "assessed", "flapping",
                     "acknowledged", "silenced", "unsilenced", "resolved"]

#: A firing alert's value is published again ("value") once it moved by this fraction of the
#: last published value, and at most once per VALUE_EVERY_S seconds per alert: the API shows
#: every tick, the bus and the store see a bounded trickle.
VALUE_STEP = 0.05
VALUE_EVERY_S = 60.0
#: A new explanation of an open alert read from each sample (another culprit, a runaway, a
#: known job) is published at once, but a further one only CAUSE_EVERY_S after it, so a
#: process hovering at the edge cannot flood the bus (``Finding.cause_every_s``).
CAUSE_EVERY_S = 30.0

#: Alert fields a silence matcher may name; any other matcher name is looked up in the labels.
#: ("fingerprint" is what the dashboard's Silence button matches on.)
MATCHABLE_FIELDS = ("rule", "metric", "dimension", "host", "severity", "fingerprint")


# --------------------------------------------------------------------------- text helpers


def fmt_duration(seconds: float) -> str:
    """45 s, 2 min, 1 h 5 min, 2 d 3 h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        h, m = divmod(s // 60, 60)
        return f"{h} h {m} min" if m else f"{h} h"
    d, h = divmod(s // 3600, 24)
    return f"{d} d {h} h" if h else f"{d} d"


def fmt_bytes(n: float) -> str:
    """Decimal units, as disk vendors and df -H count: 2.1 GB."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"  # pragma: no cover - the loop always returns


def fmt_num(value: float) -> str:
    """A value for a sentence: 93, 4.2, 0.35."""
    a = abs(value)
    if not math.isfinite(value):
        return str(value)
    if a >= 10 or a == int(a):
        return f"{value:.0f}"
    if a >= 1:
        return f"{value:.1f}".rstrip("0").rstrip(".")
    return f"{value:.2f}".rstrip("0").rstrip(".")


def fmt_hours(hours: float) -> str:
    """An ETA in words: 25 min, 3.2 h, 2.5 d."""
    if hours < 1:
        return f"{max(1, round(hours * 60))} min"
    if hours < 48:
        return f"{hours:.1f}".removesuffix(".0") + " h"
    return f"{hours / 24:.1f}".removesuffix(".0") + " d"


# --------------------------------------------------------------------------- actions


def notify_only(message: str) -> SuggestedAction:
    """The always-valid suggestion: tell a human, change nothing."""
    return validate_action("notify_only", {"message": message[:2000]},
                           reason="no safe automatic fix is known for this")


def suggest(action: str, params: dict[str, Any], reason: str, fallback: str
            ) -> SuggestedAction:
    """A registry-validated suggestion, or notify_only when the registry refuses it."""
    try:
        return validate_action(action, params, reason=reason)
    except ActionRefused as exc:
        # A rule that builds invalid parameters (pid 1, empty root) must not break the alert.
        logger.debug("rule suggestion %s refused: %s", action, exc)
        return notify_only(fallback)


# --------------------------------------------------------------------------- findings


@dataclass(slots=True)
class Description:
    """The words and suggestions of an alert, built only when an alert is emitted."""

    summary: str
    context: str | None = None
    likely_cause: str = ""
    confidence: float = 0.5
    expected: bool = False
    actions: tuple[SuggestedAction, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    evidence: tuple[str, ...] = ()


@dataclass(slots=True)
class Finding:
    """One problem as a detector sees it this tick; severity None means it cleared now."""

    rule: str
    metric: str
    dimension: str
    severity: Severity | None
    value: float | None
    since: float
    #: Builds the words, given when the alert began (durations are counted from it).
    describe: Callable[[float], Description]
    threshold: float | None = None
    baseline: float | None = None
    #: Tag of the explanation (known job, runaway pid, ...): a change re-emits the alert.
    cause: str = ""
    #: Whether a warning that lasts escalate_after_s becomes critical (threshold rules).
    escalates: bool = False
    #: Which way the value gets worse, for the alert's ``peak`` (None: no peak is kept).
    worse: Literal["higher", "lower"] | None = "higher"
    #: Seconds between two published changes of ``cause``: CAUSE_EVERY_S for a cause read
    #: from every sample (the CPU's culprit), which may flicker; 0 for a detector that
    #: reports only changes (each one is news, and a deferred one would never come again).
    cause_every_s: float = 0.0


def fingerprint(host: str, rule: str, metric: str, dimension: str) -> str:
    """Stable id of one problem: the same inputs give the same value on every run."""
    raw = "\x1f".join((host, rule, metric, dimension)).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


# --------------------------------------------------------------------------- silences


@dataclass(frozen=True)
class Silence:
    """Mutes matching alerts until ``until``; matchers are globs on alert fields or labels."""

    id: str
    matchers: Mapping[str, str]
    until: datetime
    by: str = ""
    comment: str = ""

    def matches(self, alert: Alert) -> bool:
        """True when every matcher's glob matches the alert's field or label."""
        for name, pattern in self.matchers.items():
            if name in MATCHABLE_FIELDS:
                value = str(getattr(alert, name))
            else:
                label = alert.labels.get(name)
                if label is None:
                    return False
                value = label
            if not fnmatch.fnmatchcase(value, pattern):
                return False
        return True


# --------------------------------------------------------------------------- manager


@dataclass(slots=True)
class _Open:
    """What the manager knows about one open alert."""

    alert: Alert
    severity: Severity
    state: AlertState
    cause: str | None
    acked_by: str | None = None
    flapping: bool = False
    escalated: str | None = None
    #: Set while a flapping alert's problem is clear but the alert is held open.
    held: Finding | None = None
    held_description: Description | None = None
    #: The LLM's assessment, kept on every later version until a newer one arrives.
    llm: Assessment | None = None
    #: The worst value since the alert opened.
    peak: float | None = None
    #: When the last version was published, its value and its change kind.
    published_t: float = 0.0
    published_value: float | None = None
    change: ChangeKind = "new"
    #: When the explanation last changed in a published version (flicker bound).
    cause_t: float = -math.inf
    #: What a person would see change (rounded value, duration, cause) at the last follow.
    shown: tuple[str, str, str] | None = None


def _change_kind(label: str | None) -> ChangeKind:
    """The change kind a stored alert's label names ("new" when unknown)."""
    for kind in get_args(ChangeKind):
        if kind == label:
            return cast(ChangeKind, kind)
    return "new"


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, timezone.utc)


class AlertManager:
    """Turns per-tick findings into alert changes; see the module docstring for the rules."""

    def __init__(self, host: str, *, escalate_after_s: float = 900.0,
                 flap_window_s: float = 600.0, flap_max_transitions: int = 4) -> None:
        self.host = host
        self.escalate_after_s = escalate_after_s
        self.flap_window_s = flap_window_s
        self.flap_max_transitions = flap_max_transitions
        self._open: dict[str, _Open] = {}
        self._transitions: dict[str, deque[float]] = {}
        self._silences: dict[str, Silence] = {}
        self._fingerprints: dict[tuple[str, str, str], str] = {}
        self._now: float | None = None
        self._resilence = False

    def configure(self, *, escalate_after_s: float, flap_window_s: float,
                  flap_max_transitions: int) -> None:
        """Apply new lifecycle settings (read from the live configuration)."""
        self.escalate_after_s = escalate_after_s
        self.flap_window_s = flap_window_s
        self.flap_max_transitions = flap_max_transitions

    def fingerprint(self, rule: str, metric: str, dimension: str) -> str:
        """The fingerprint of a problem on this host (cached)."""
        key = (rule, metric, dimension)
        fp = self._fingerprints.get(key)
        if fp is None:
            fp = self._fingerprints[key] = fingerprint(self.host, rule, metric, dimension)
        return fp

    # ----------------------------------------------------------------- queries

    def active(self) -> list[Alert]:
        """The latest version of every open (firing or acknowledged) alert."""
        # list() first: sync API routes read this from a worker thread while ticks go on.
        return [rec.alert for rec in list(self._open.values())]

    @property
    def has_open(self) -> bool:
        """Whether any alert is open or silence set (then every tick must be looked at)."""
        return bool(self._open or self._silences)

    def forget(self, fp: str) -> None:
        """Drop an open alert without emitting anything (it cannot be followed any more)."""
        self._open.pop(fp, None)

    def get(self, fp: str) -> Alert | None:
        """The latest version of the open alert with this fingerprint."""
        rec = self._open.get(fp)
        return rec.alert if rec else None

    @property
    def silences(self) -> list[Silence]:
        """Silences in force (expired ones are dropped on the next update)."""
        return list(self._silences.values())

    # ----------------------------------------------------------------- the tick

    def update(self, t: float, findings: Iterable[Finding]) -> list[Alert]:
        """Apply this tick's findings; return the alert changes to publish (often none)."""
        self._now = t
        changes: list[Alert] = []
        now_dt: datetime | None = None
        if self._silences:
            now_dt = _utc(t)
            for sid in [s.id for s in self._silences.values() if s.until <= now_dt]:
                logger.info("silence %s expired", sid)
                del self._silences[sid]
                self._resilence = True
        seen: set[str] = set()
        for f in findings:
            fp = self.fingerprint(f.rule, f.metric, f.dimension)
            seen.add(fp)
            rec = self._open.get(fp)
            if f.severity is None:
                if rec is not None and rec.held is None:
                    self._cleared(fp, rec, f, t, changes)
            elif rec is None:
                self._opened(fp, f, t, changes)
            else:
                self._still_active(fp, rec, f, t, changes)
        for fp, rec in list(self._open.items()):
            if fp in seen:
                continue
            if rec.held is not None and self._flap_count(fp, t) <= self.flap_max_transitions:
                # Settled after flapping: resolve with the words of the last clear.
                desc = rec.held_description or rec.held.describe(self._since(rec))
                desc.summary += " (held open until the flapping settled)"
                changes.append(self._emit(rec, "resolved", t, rec.held, desc,
                                          state="resolved"))
                del self._open[fp]
        if self._resilence:
            self._resilence = False
            changes += self._apply_silences(t)
        if len(self._transitions) > 4 * len(self._open) + 64:
            self._prune_transitions(t)
        return changes

    def _opened(self, fp: str, f: Finding, t: float, changes: list[Alert]) -> None:
        self._transition(fp, t)
        assert f.severity is not None
        since = f.since
        placeholder = Alert(host=self.host, at=_utc(t), id=f"{fp}-{int(since * 1000):x}",
                            fingerprint=fp, rule=f.rule, metric=f.metric,
                            dimension=f.dimension, severity=f.severity, since=_utc(since),
                            summary="")
        rec = _Open(alert=placeholder, severity=f.severity, state="firing", cause=f.cause,
                    peak=f.value if f.worse else None)
        rec.flapping = self._flap_count(fp, t) > self.flap_max_transitions
        self._open[fp] = rec
        rec.alert = self._emit(rec, "new", t, f, f.describe(since))
        changes.append(rec.alert)

    def _cleared(self, fp: str, rec: _Open, f: Finding, t: float, changes: list[Alert]) -> None:
        self._transition(fp, t)
        count = self._flap_count(fp, t)
        if count > self.flap_max_transitions:
            rec.held = f
            rec.held_description = f.describe(self._since(rec))
            if not rec.flapping:
                rec.flapping = True
                desc = self._described(rec)
                desc.summary += (f" (flapping: {count} changes in "
                                 f"{fmt_duration(self.flap_window_s)}; held open until it "
                                 "settles)")
                changes.append(self._emit(rec, "flapping", t, None, desc))
            return
        changes.append(self._emit(rec, "resolved", t, f, f.describe(self._since(rec)),
                                  state="resolved"))
        del self._open[fp]

    def _still_active(self, fp: str, rec: _Open, f: Finding, t: float,
                      changes: list[Alert]) -> None:
        assert f.severity is not None
        if rec.held is not None:
            # A flapping problem came back: still the same held-open alert, nothing to say
            # unless it got worse.
            self._transition(fp, t)
            rec.held = None
            rec.held_description = None
        self._track_peak(rec, f)
        if SEVERITY_RANK[f.severity] > SEVERITY_RANK[rec.severity]:
            rec.severity = f.severity
            rec.escalated = "worsened"
            rec.cause = f.cause
            if rec.state == "acknowledged":
                # The ack was for a lesser problem: page again.
                rec.state = "firing"
                rec.acked_by = None
            changes.append(self._emit(rec, "escalated", t, f, f.describe(self._since(rec))))
        elif (f.escalates and rec.severity == "warning" and rec.state == "firing"
              and t - self._since(rec) >= self.escalate_after_s):
            rec.severity = "critical"
            rec.escalated = "persisting"
            rec.cause = f.cause
            desc = f.describe(self._since(rec))
            desc.summary += (f"; escalated to critical: still firing after "
                             f"{fmt_duration(self.escalate_after_s)}")
            changes.append(self._emit(rec, "escalated", t, f, desc))
        elif rec.cause is None:
            rec.cause = f.cause  # restored after a restart: adopt without re-announcing
            self._follow(rec, f, t)
        elif f.cause != rec.cause and t - rec.cause_t >= f.cause_every_s:
            rec.cause = f.cause
            rec.cause_t = t
            changes.append(self._emit(rec, "updated", t, f, f.describe(self._since(rec))))
        elif rec.flapping and self._flap_count(fp, t) <= self.flap_max_transitions:
            rec.flapping = False
            changes.append(self._emit(rec, "updated", t, f, f.describe(self._since(rec))))
        elif self._moved(rec, f, t):
            changes.append(self._emit(rec, "value", t, f, f.describe(self._since(rec))))
        else:
            self._follow(rec, f, t)

    # ----------------------------------------------------------------- following the value

    @staticmethod
    def _track_peak(rec: _Open, f: Finding) -> None:
        v = f.value
        if f.worse is None or v is None or not math.isfinite(v):
            return
        if rec.peak is None or (v > rec.peak if f.worse == "higher" else v < rec.peak):
            rec.peak = v

    @staticmethod
    def _moved(rec: _Open, f: Finding, t: float) -> bool:
        """Whether the value moved enough, and long enough ago, to publish it again."""
        if t - rec.published_t < VALUE_EVERY_S:
            return False
        new, old = f.value, rec.published_value
        if new is None or old is None or not (math.isfinite(new) and math.isfinite(old)):
            return new is not None and old is None
        return abs(new - old) >= max(abs(old) * VALUE_STEP, 1e-9) and fmt_num(new) != fmt_num(old)

    def _follow(self, rec: _Open, f: Finding, t: float) -> None:
        """Bring the open alert's current version to this tick, without publishing it."""
        prev = rec.alert
        since = self._since(rec)
        shown = (fmt_num(f.value) if f.value is not None else "", fmt_duration(t - since),
                 f.cause)
        if shown == rec.shown:
            # The words would read the same: only the numbers move (cheap; no describe).
            rec.alert = prev.model_copy(update={"at": _utc(t), "value": f.value,
                                                "peak": rec.peak})
            return
        rec.shown = shown
        desc = f.describe(since)
        assessment = rec.llm
        if assessment is None:
            assessment = self._rule_assessment(desc, prev.suggested_actions)
        rec.alert = prev.model_copy(update={
            "at": _utc(t), "value": f.value, "peak": rec.peak, "threshold": f.threshold,
            "baseline": f.baseline, "summary": desc.summary, "context": desc.context,
            "labels": self._labels(rec, desc.labels, rec.change), "assessment": assessment,
        })

    @staticmethod
    def _rule_assessment(desc: Description, actions: tuple[SuggestedAction, ...]
                         ) -> Assessment:
        return Assessment(
            source="rule", summary=desc.summary, likely_cause=desc.likely_cause,
            confidence=desc.confidence, expected=desc.expected, suggested_actions=actions,
            evidence=desc.evidence, note=RULE_NOTE)

    # ----------------------------------------------------------------- user actions

    def ack(self, fp: str, by: str, *, t: float | None = None) -> Alert | None:
        """Acknowledge an open alert; returns the change, or None if not open or acked."""
        rec = self._open.get(fp)
        if rec is None or rec.state == "acknowledged":
            return None
        rec.state = "acknowledged"
        rec.acked_by = by
        logger.info("alert %s acknowledged by %s", rec.alert.id, by)
        rec.alert = self._copy(rec, "acknowledged", self._at(t))
        return rec.alert

    def resolve(self, fp: str, by: str, *, t: float | None = None) -> Alert | None:
        """Resolve an open alert by hand; it fires again if its problem is still there."""
        rec = self._open.pop(fp, None)
        if rec is None:
            return None
        logger.info("alert %s resolved by %s", rec.alert.id, by)
        at = self._at(t)
        alert = self._copy(rec, "resolved", at, state="resolved",
                           summary=f"Resolved by {by}: {rec.alert.summary}")
        return alert

    def assess(self, fp: str, assessment: Assessment, *, t: float | None = None
               ) -> Alert | None:
        """Attach an LLM's assessment to an open alert; returns the change ("assessed").

        The assessment stays on every later version of the alert until a newer one arrives;
        its suggested actions become the alert's (the rule's stay when it suggests none).
        """
        rec = self._open.get(fp)
        if rec is None or rec.llm == assessment:
            return None  # gone, or the same (cached) answer again: nothing new to publish
        rec.llm = assessment
        prev = rec.alert
        alert = self._copy(rec, "assessed", self._at(t))
        rec.alert = alert.model_copy(update={
            "assessment": assessment,
            "suggested_actions": assessment.suggested_actions or prev.suggested_actions})
        rec.change = "assessed"
        return rec.alert

    def silence(self, matchers: Mapping[str, str], until: datetime, *, by: str = "",
                comment: str = "", silence_id: str | None = None, t: float | None = None
                ) -> tuple[Silence, list[Alert]]:
        """Add a silence; returns it and the open alerts it silenced (as changes)."""
        if not matchers:
            raise ValueError("a silence needs at least one matcher (use host='*' for all)")
        if until.tzinfo is None:
            until = until.replace(tzinfo=timezone.utc)
        # Random ids: a counter would restart at 1 and collide with silences restored from
        # before a restart.
        sid = silence_id or f"silence-{uuid.uuid4().hex[:12]}"
        s = Silence(id=sid, matchers=dict(matchers), until=until, by=by, comment=comment)
        self._silences[sid] = s
        logger.info("silence %s added by %s until %s: %s", sid, by or "?", until.isoformat(),
                    dict(matchers))
        return s, self._apply_silences(self._at(t))

    def unsilence(self, silence_id: str, *, t: float | None = None) -> list[Alert]:
        """Remove a silence; returns the open alerts it no longer silences (as changes)."""
        if self._silences.pop(silence_id, None) is None:
            return []
        return self._apply_silences(self._at(t))

    # ----------------------------------------------------------------- restart

    def restore(self, alerts: Iterable[Alert]) -> list[Alert]:
        """Re-open the alerts whose latest event is not resolved; returns them.

        Pass the Alert events emitted before a restart, in any order; the latest event of
        each fingerprint wins. Nothing is emitted: these alerts were published already.
        """
        latest: dict[str, Alert] = {}
        for alert in alerts:
            if alert.host != self.host:
                continue
            prev = latest.get(alert.fingerprint)
            if prev is None or alert.at >= prev.at:
                latest[alert.fingerprint] = alert
        restored = []
        for fp, alert in latest.items():
            if alert.state == "resolved" or fp in self._open:
                continue
            llm = alert.assessment if alert.assessment and alert.assessment.source == "llm" \
                else None
            self._open[fp] = _Open(
                alert=alert, severity=alert.severity, state=alert.state, cause=None,
                acked_by=alert.labels.get("acked_by"),
                flapping=alert.labels.get("flapping") == "true",
                escalated=alert.labels.get("escalated"), llm=llm, peak=alert.peak,
                published_t=alert.at.timestamp(), published_value=alert.value,
                change=_change_kind(alert.labels.get("change")))
            self._fingerprints[(alert.rule, alert.metric, alert.dimension)] = fp
            restored.append(alert)
        self._resilence = True
        return restored

    # ----------------------------------------------------------------- internals

    @staticmethod
    def _since(rec: _Open) -> float:
        return rec.alert.since.timestamp()

    def _at(self, t: float | None) -> float:
        if t is not None:
            return t
        return self._now if self._now is not None else 0.0

    def _transition(self, fp: str, t: float) -> None:
        q = self._transitions.get(fp)
        if q is None:
            q = self._transitions[fp] = deque()
        q.append(t)

    def _flap_count(self, fp: str, t: float) -> int:
        q = self._transitions.get(fp)
        if not q:
            return 0
        horizon = t - self.flap_window_s
        while q and q[0] < horizon:
            q.popleft()
        return len(q)

    def _prune_transitions(self, t: float) -> None:
        for fp in list(self._transitions):
            if fp not in self._open and self._flap_count(fp, t) == 0:
                del self._transitions[fp]

    def _silenced(self, alert: Alert) -> bool:
        return any(s.matches(alert) for s in self._silences.values())

    def _apply_silences(self, t: float) -> list[Alert]:
        changes = []
        for rec in self._open.values():
            silenced = self._silenced(rec.alert)
            if silenced != rec.alert.silenced:
                rec.alert = self._copy(rec, "silenced" if silenced else "unsilenced", t,
                                       silenced=silenced)
                changes.append(rec.alert)
        return changes

    def _labels(self, rec: _Open, base: Mapping[str, str], kind: ChangeKind) -> dict[str, str]:
        labels = dict(base)
        labels["change"] = kind
        if rec.acked_by is not None and rec.state == "acknowledged":
            labels["acked_by"] = rec.acked_by
        if rec.flapping:
            labels["flapping"] = "true"
        if rec.escalated:
            labels["escalated"] = rec.escalated
        return labels

    def _described(self, rec: _Open) -> Description:
        """The last emitted words of an alert, as a Description to amend."""
        a = rec.alert
        base = {k: v for k, v in a.labels.items()
                if k not in ("change", "acked_by", "flapping", "escalated")}
        assessment = a.assessment
        return Description(
            summary=a.summary, context=a.context, labels=base, actions=a.suggested_actions,
            likely_cause=assessment.likely_cause if assessment else "",
            confidence=assessment.confidence if assessment else 0.5,
            expected=assessment.expected if assessment else False,
            evidence=assessment.evidence if assessment else ())

    def _emit(self, rec: _Open, kind: ChangeKind, t: float, f: Finding | None,
              desc: Description, *, state: AlertState | None = None) -> Alert:
        prev = rec.alert
        state = state or rec.state
        labels = self._labels(rec, desc.labels, kind)
        actions = desc.actions
        # An LLM's assessment stays on later versions; the rules' words are in the summary.
        assessment = rec.llm or self._rule_assessment(desc, actions)
        draft = prev.model_copy(update={
            "at": _utc(t), "severity": rec.severity, "state": state,
            "value": f.value if f is not None else prev.value, "peak": rec.peak,
            "threshold": f.threshold if f is not None else prev.threshold,
            "baseline": f.baseline if f is not None else prev.baseline,
            "summary": desc.summary, "context": desc.context, "labels": labels,
            "suggested_actions": actions, "assessment": assessment,
        })
        silenced = self._silenced(draft)
        alert = draft.model_copy(update={"silenced": silenced}) if silenced else draft
        if state != "resolved":
            rec.alert = alert
        rec.published_t = t
        rec.published_value = alert.value
        rec.change = kind
        # DEBUG only: the CommunicatorAgent tells users about alerts, once, in plain words.
        logger.debug("alert %s %s: %s", kind, alert.id, alert.summary)
        return alert

    def _copy(self, rec: _Open, kind: ChangeKind, t: float, *,
              state: AlertState | None = None, silenced: bool | None = None,
              summary: str | None = None) -> Alert:
        prev = rec.alert
        base = {k: v for k, v in prev.labels.items()
                if k not in ("change", "acked_by", "flapping", "escalated")}
        update: dict[str, Any] = {
            "at": _utc(t), "state": state or rec.state,
            "labels": self._labels(rec, base, kind),
            "silenced": prev.silenced if silenced is None else silenced,
        }
        if summary is not None:
            update["summary"] = summary
        rec.change = kind
        return prev.model_copy(update=update)
