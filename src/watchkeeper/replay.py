"""Shadow replay: the rules and the remediation policy over stored history, acting on nothing.

:func:`replay` reads one host's stored snapshots and service reports in time order (through
the read-only :class:`~watchkeeper.store.reader.HistoryReader`), feeds them to a fresh
:class:`~watchkeeper.analysis.engine.Analyzer` on the candidate settings, and hands each
alert's suggested actions (and each down service's restart) to a
:class:`~watchkeeper.remediation.policy.Policy` on the same settings, whose clocks follow the
snapshots' own times. Every action is decided, none is executed: there is no action runner,
no audit log and no store writer here, and an ``auto`` verdict only counts as an attempt
for the policy's own limits (budgets, cooldown, backoff, flap protection), as if it ended at
once with an unknown outcome. What did happen (the stored alert and remediation events in the
same range) is read alongside, and each alert is matched with what the analyzer said then.

Not replayed: LLM assessments and the actions an LLM proposed (only what happened is shown),
and what a service's process did: its exits and restarts are history; a restart the
candidate policy would have refused or allowed cannot change what the process did next.
"""

from __future__ import annotations

import heapq
import math
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from watchkeeper.analysis.engine import Analyzer
from watchkeeper.config import Settings
from watchkeeper.events import Alert, MetricSnapshot, RemediationEvent, ServiceReport
from watchkeeper.remediation.actions import get_action
from watchkeeper.remediation.actions.base import ActionContext, Refused
from watchkeeper.remediation.policy import ActionRequest, Decision, Policy
from watchkeeper.remediation.registry import ActionRefused, Params
from watchkeeper.store.reader import HistoryReader

#: Two firings of one problem this close (s) are "the same time": one sensor tick apart.
SAME_WITHIN_S = 1.0

#: Conditions of a service report under which the remediator asks for a restart.
_NEEDS_RESTART = ("down", "unhealthy", "crash_looping", "failing")

Change = Literal["same", "new", "gone", "earlier", "later", "open_before"]


class ReplayError(ValueError):
    """Bad replay input (a range, a time): the message says what and how to fix it."""


# --------------------------------------------------------------------------- times

_RELATIVE = re.compile(r"^-?(\d{1,7}(?:\.\d{1,6})?)\s*(s|m|min|h|d|w)$")
_UNIT_S = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
#: The furthest back a relative time may reach (no history is older than this).
_MAX_BACK_S = 10 * 365 * 86400


def parse_time(text: str, now: datetime, *, what: str) -> datetime:
    """``text`` as an aware UTC time: ISO 8601 (naive = UTC), ``now``, or relative (``-24h``,
    ``-30m``, ``-90s``, ``-2d``: before ``now``); ReplayError with the accepted forms."""
    raw = text.strip()
    if raw.lower() == "now":
        return now
    m = _RELATIVE.match(raw.lower())
    if m:
        back = float(m.group(1)) * _UNIT_S[m.group(2)]
        if not math.isfinite(back) or back > _MAX_BACK_S:
            raise ReplayError(f"{what} {text!r} reaches back more than ten years")
        try:
            return now - timedelta(seconds=back)
        except OverflowError:
            raise ReplayError(f"{what} {text!r} is before the year 1") from None
    try:
        at = datetime.fromisoformat(raw)
    except ValueError:
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise ReplayError(f"{what} {shown!r} is not a time: give ISO 8601 "
                          "(2026-12-05T14:00, UTC unless it says otherwise), 'now', or a "
                          "time before now like -24h, -30m, -90s, -2d") from None
    return at if at.tzinfo is not None else at.replace(tzinfo=timezone.utc)


def parse_range(start: str | None, end: str | None, now: datetime) -> tuple[datetime, datetime]:
    """The replay range; default the last 24 h. ReplayError for a range that is not one."""
    t1 = parse_time(end, now, what="--to") if end is not None else now
    try:
        t0 = (parse_time(start, now, what="--from") if start is not None
              else t1 - timedelta(hours=24))
    except OverflowError:
        raise ReplayError(f"--to {t1:%Y-%m-%d} leaves no room for the default 24 h before "
                          "it: give --from") from None
    if t0 >= t1:
        raise ReplayError(f"--from ({t0:%Y-%m-%d %H:%M:%S} UTC) must be before --to "
                          f"({t1:%Y-%m-%d %H:%M:%S} UTC)")
    return t0, t1


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def _epoch(at: datetime) -> float:
    return (at if at.tzinfo is not None else at.replace(tzinfo=timezone.utc)).timestamp()


# --------------------------------------------------------------------------- results


@dataclass
class Episode:
    """One alert from its firing to its resolution (None: still open at the range's end)."""

    rule: str
    metric: str
    dimension: str
    severity: str
    fired: float
    resolved: float | None = None
    summary: str = ""
    suggested: tuple[str, ...] = ()
    #: Opened before the range began (known only for what did happen).
    before: bool = False

    @property
    def key(self) -> tuple[str, str, str]:
        """The problem: rule, metric, dimension."""
        return (self.rule, self.metric, self.dimension)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"rule": self.rule, "metric": self.metric, "dimension": self.dimension,
                "severity": self.severity, "fired_at": _utc(self.fired).isoformat(),
                "resolved_at": None if self.resolved is None else _utc(self.resolved).isoformat(),
                "open_before_range": self.before, "summary": self.summary,
                "suggested_actions": list(self.suggested)}


@dataclass(frozen=True)
class ShadowDecision:
    """What the candidate policy would have decided about one request (nothing ran)."""

    at: float
    action: str
    target: str
    source: str
    verdict: str
    check: str
    why: str
    answers: str  # the alert's "rule metric dimension", or "service <name>"

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"at": _utc(self.at).isoformat(), "action": self.action, "target": self.target,
                "source": self.source, "verdict": self.verdict, "check": self.check,
                "why": self.why, "answers": self.answers}


@dataclass(frozen=True)
class StoredAction:
    """A remediation step that did happen (a stored RemediationEvent)."""

    at: float
    phase: str
    action: str
    target: str
    source: str
    verdict: str
    outcome: str | None
    message: str

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"at": _utc(self.at).isoformat(), "phase": self.phase, "action": self.action,
                "target": self.target, "source": self.source, "verdict": self.verdict,
                "outcome": self.outcome, "message": self.message}


@dataclass(frozen=True)
class AlertDiff:
    """One problem's alert, as it would fire next to as it did fire."""

    change: Change
    would: Episode | None
    did: Episode | None

    @property
    def key(self) -> tuple[str, str, str]:
        """Rule, metric, dimension."""
        ep = self.would or self.did
        assert ep is not None
        return ep.key

    @property
    def delta_s(self) -> float | None:
        """Would-fire time minus did-fire time (negative: earlier)."""
        if self.would is None or self.did is None:
            return None
        return self.would.fired - self.did.fired

    def to_json(self) -> dict[str, Any]:
        """JSON-ready."""
        rule, metric, dim = self.key
        return {"rule": rule, "metric": metric, "dimension": dim, "change": self.change,
                "delta_s": self.delta_s,
                "would": None if self.would is None else self.would.to_json(),
                "did": None if self.did is None else self.did.to_json()}


@dataclass
class ReplayReport:
    """What would have fired and been done, next to what did, over one host's range."""

    host: str
    start: datetime
    end: datetime
    config: str
    db_mode: str
    snapshots: int = 0
    service_reports: int = 0
    took_s: float = 0.0
    would_alerts: list[Episode] = field(default_factory=list)
    did_alerts: list[Episode] = field(default_factory=list)
    diffs: list[AlertDiff] = field(default_factory=list)
    would_actions: list[ShadowDecision] = field(default_factory=list)
    did_actions: list[StoredAction] = field(default_factory=list)

    def rules(self) -> dict[str, dict[str, int]]:
        """Per rule: alerts that would fire and did, and how many of each change."""
        out: dict[str, dict[str, int]] = {}
        blank = {"would": 0, "did": 0, "same": 0, "new": 0, "gone": 0, "earlier": 0,
                 "later": 0, "open_before": 0}
        for d in self.diffs:
            row = out.setdefault(d.key[0], dict(blank))
            row[d.change] += 1
            row["would"] += d.would is not None
            row["did"] += d.did is not None
        return dict(sorted(out.items()))

    def to_json(self) -> dict[str, Any]:
        """The whole report, JSON-ready (what ``--json`` prints)."""
        return {"host": self.host, "from": self.start.isoformat(), "to": self.end.isoformat(),
                "config": self.config, "database_opened": self.db_mode,
                "snapshots": self.snapshots, "service_reports": self.service_reports,
                "took_s": round(self.took_s, 3), "executed": 0,
                "alerts": [d.to_json() for d in self.diffs],
                "rules": self.rules(),
                "would_do": [a.to_json() for a in self.would_actions],
                "did_do": [a.to_json() for a in self.did_actions]}


# --------------------------------------------------------------------------- the shadow


class _DeclaredServices:
    """What a service action's check asks of the service managers: names only. Nothing
    here can start, stop or query a service."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = tuple(names)

    def __contains__(self, name: object) -> bool:
        return name in self.names


class _NoRunner:
    """An action runner that refuses: a replay never runs a command."""

    def resolve(self, argv: Any) -> tuple[str, ...]:
        raise RuntimeError("replay never runs a command")

    async def run(self, argv: Any, *, timeout_s: float) -> Any:
        raise RuntimeError("replay never runs a command")


class Shadow:
    """A fresh analyzer and policy on candidate settings, driven by history's clock."""

    def __init__(self, settings: Settings, host: str, start: float) -> None:
        self.settings = settings
        self.host = host
        self.now = start
        provider = lambda: settings  # noqa: E731 - the candidate settings never change
        self.analyzer = Analyzer(provider, host=host, cleanup_roots=[
            str(r.path) for r in settings.remediation.cleanup_roots])
        # The server whose history this is was already running: no start-up grace.
        self.policy = Policy(provider, monotonic=self._clock, wall=self._clock,
                             started_at=start - settings.remediation.startup_grace_s)
        # For the actions' own parameter checks (pure, no I/O); nothing here can act.
        self._ctx = ActionContext(settings=settings.remediation, runner=_NoRunner(),
                                  psutil=None, services=_DeclaredServices(settings.services))
        self.open: dict[str, Episode] = {}
        self.episodes: list[Episode] = []
        self.decisions: list[ShadowDecision] = []
        self._quiet_until: dict[str, float] = {}
        self._pending: dict[tuple[str, str], float] = {}

    def _clock(self) -> float:
        return self.now

    # ------------------------------------------------------------------ input

    def snapshot(self, snap: MetricSnapshot) -> None:
        """One stored snapshot, through the rules."""
        self.now = max(self.now, _epoch(snap.at))
        for alert in self.analyzer.observe(snap):
            self._alert(alert)

    def service_report(self, report: ServiceReport) -> None:
        """One stored service report, through the service rule and the restart policy."""
        self.now = max(self.now, _epoch(report.at))
        for alert in self.analyzer.observe_service(report):
            self._alert(alert)
        if report.condition in _NEEDS_RESTART:
            supervised = (report.state in ("stopped", "failed", "exited")
                          and self.settings.services.get(report.service) is not None
                          and self.settings.services[report.service].manager == "process")
            self._submit(ActionRequest(
                action="restart_service", params={"service": report.service}, host=self.host,
                reasoning=f"{report.service} is {report.condition}", supervised=supervised),
                f"service {report.service}")

    # ------------------------------------------------------------------ alerts

    def _alert(self, alert: Alert) -> None:
        change = alert.labels.get("change", "new")
        ep = self.open.get(alert.fingerprint)
        if alert.state == "resolved":
            if ep is not None:
                ep.resolved = _epoch(alert.at)
                del self.open[alert.fingerprint]
            return
        if ep is None:
            ep = Episode(alert.rule, alert.metric, alert.dimension, alert.severity,
                         _epoch(alert.at), summary=alert.summary,
                         suggested=tuple(s.action for s in alert.suggested_actions))
            self.open[alert.fingerprint] = ep
            self.episodes.append(ep)
        elif _RANK[alert.severity] > _RANK[ep.severity]:
            ep.severity = alert.severity
        # The remediator's own rule (agents/remediator.py _from_alert): what it submits.
        if alert.state != "firing" or alert.silenced or \
                change not in ("new", "escalated", "updated"):
            return
        answers = f"{alert.rule} {alert.metric} {alert.dimension}".rstrip()
        for s in alert.suggested_actions:
            if s.action == "notify_only":
                continue
            self._submit(ActionRequest.from_suggestion(s, host=self.host,
                                                       fingerprint=alert.fingerprint), answers)

    # ------------------------------------------------------------------ the policy

    def _checker(self, name: str) -> Any:
        try:
            action = get_action(name)
        except ActionRefused:
            return None
        ctx = self._ctx

        def check(params: Params) -> Params:
            try:
                return action.check(params, ctx)
            except Refused as exc:
                raise ActionRefused(str(exc)) from None
        return check

    def _submit(self, request: ActionRequest, answers: str) -> None:
        """Decide like the remediator's submit, record it, run nothing."""
        key = (f"{request.action}:{sorted(request.params.items())}"
               f"{':supervised' if request.supervised else ''}")
        now = self.now
        if self._quiet_until.get(key, 0.0) > now:
            return  # the remediator does not ask again (nor audit) before then
        decision = self.policy.decide(request, check=self._checker(request.action))
        target = str(decision.target) if decision.target is not None else ""
        if decision.verdict == "refused":
            quiet = (decision.retry_after_s if decision.retry_after_s is not None
                     else self.settings.agents.check_interval
                     if decision.check == "concurrency" else 300.0)
            self._quiet_until[key] = now + quiet
        else:
            self._quiet_until.pop(key, None)
        if decision.verdict == "approve":
            # One approval per action and target waits; it expires unanswered in a replay.
            pk = (request.action, target)
            if self._pending.get(pk, -math.inf) > now:
                self._quiet_until[key] = now + self.settings.agents.check_interval * 5
                return
            self._pending[pk] = now + self.settings.remediation.approval_ttl_s
        self.decisions.append(ShadowDecision(
            at=now, action=request.action, target=target,
            source="supervisor" if request.supervised else request.source,
            verdict=decision.verdict, check=decision.check, why=decision.why,
            answers=answers))
        if decision.runs:
            self._count(decision)

    def _count(self, decision: Decision) -> None:
        """An auto verdict counts as an attempt that ended at once, outcome unknown: the
        budgets, cooldown, backoff and flap protection see it; nothing runs."""
        self.policy.begin(decision)
        self.policy.end(decision, success=None)


_RANK = {"info": 0, "warning": 1, "critical": 2}


# --------------------------------------------------------------------------- what did happen


def stored_alerts(events: Iterable[tuple[float, Alert]], start: float) -> list[Episode]:
    """The alert episodes the analyzer published, from the stored alert events."""
    open_: dict[str, Episode] = {}
    out: list[Episode] = []
    for at, alert in events:
        ep = open_.get(alert.fingerprint)
        if alert.state == "resolved":
            if ep is None:  # opened before the range, resolved in it
                ep = _episode(alert, start)
                out.append(ep)
            ep.resolved = at
            open_.pop(alert.fingerprint, None)
            continue
        if ep is None:
            ep = _episode(alert, start)
            open_[alert.fingerprint] = ep
            out.append(ep)
        elif _RANK[alert.severity] > _RANK[ep.severity]:
            ep.severity = alert.severity
    return out


def _episode(alert: Alert, start: float) -> Episode:
    since = _epoch(alert.since)
    new = alert.labels.get("change") == "new"
    fired = _epoch(alert.at) if new else since
    return Episode(alert.rule, alert.metric, alert.dimension, alert.severity, fired,
                   summary=alert.summary,
                   suggested=tuple(s.action for s in alert.suggested_actions),
                   before=not new and fired < start)


def compare(would: list[Episode], did: list[Episode]) -> list[AlertDiff]:
    """Pair each problem's episodes by overlap in time; what is left over is new or gone."""
    by_key: dict[tuple[str, str, str], tuple[list[Episode], list[Episode]]] = {}
    for ep in would:
        by_key.setdefault(ep.key, ([], []))[0].append(ep)
    for ep in did:
        by_key.setdefault(ep.key, ([], []))[1].append(ep)
    out: list[AlertDiff] = []
    for w_list, d_list in by_key.values():
        left = list(d_list)
        for w in w_list:
            match = next((d for d in left if _overlap(w, d)), None)
            if match is None:
                out.append(AlertDiff("new", w, None))
                continue
            left.remove(match)
            delta = w.fired - match.fired
            change: Change = ("open_before" if match.before else
                              "same" if abs(delta) <= SAME_WITHIN_S else
                              "earlier" if delta < 0 else "later")
            out.append(AlertDiff(change, w, match))
        out.extend(AlertDiff("gone", None, d) for d in left)
    out.sort(key=lambda d: ((d.would or d.did).fired, d.key))  # type: ignore[union-attr]
    return out


def _overlap(a: Episode, b: Episode) -> bool:
    a_end = math.inf if a.resolved is None else a.resolved
    b_end = math.inf if b.resolved is None else b.resolved
    return a.fired <= b_end + SAME_WITHIN_S and b.fired <= a_end + SAME_WITHIN_S


# --------------------------------------------------------------------------- the run


def replay(reader: HistoryReader, settings: Settings, start: datetime, end: datetime, *,
           host: str | None = None, config: str = "current configuration",
           clock: Any = time.perf_counter) -> ReplayReport:
    """Replay ``[start, end]`` of one host's history (default: the newest snapshot's host)."""
    t0, t1 = _epoch(start), _epoch(end)
    began = clock()
    name = host or reader.latest_host(t0, t1) or "-"
    report = ReplayReport(host=name, start=start, end=end, config=config,
                          db_mode=reader.mode)
    kinds = ("alert", "remediation", "service_report")
    alerts: list[tuple[float, Alert]] = []
    services: list[tuple[float, ServiceReport]] = []
    for at, event in sorted(reader.events(t0, t1, name, kinds), key=lambda e: e[0]):
        if isinstance(event, Alert):
            alerts.append((at, event))
        elif isinstance(event, ServiceReport):
            services.append((at, event))
        elif isinstance(event, RemediationEvent):
            report.did_actions.append(StoredAction(
                at, event.phase, event.action, event.target, event.source, event.verdict,
                event.outcome, event.message or event.why))
    shadow = Shadow(settings, name, t0)
    count = 0
    for _at, _order, item in _merged(reader.snapshots(t0, t1, name), services):
        if isinstance(item, MetricSnapshot):
            count += 1
            shadow.snapshot(item)
        else:
            shadow.service_report(item)
    report.snapshots = count
    report.service_reports = len(services)
    report.would_alerts = shadow.episodes
    report.would_actions = shadow.decisions
    report.did_alerts = stored_alerts(alerts, t0)
    report.diffs = compare(report.would_alerts, report.did_alerts)
    report.took_s = clock() - began
    return report


def _merged(snaps: Iterator[MetricSnapshot], reports: list[tuple[float, ServiceReport]]
            ) -> Iterator[tuple[float, int, MetricSnapshot | ServiceReport]]:
    """Snapshots and service reports in one time order (a snapshot first on a tie)."""
    a: Iterator[tuple[float, int, MetricSnapshot | ServiceReport]] = (
        (_epoch(s.at), 0, s) for s in snaps)
    b: Iterator[tuple[float, int, MetricSnapshot | ServiceReport]] = (
        (at, 1, r) for at, r in reports)
    return heapq.merge(a, b, key=lambda x: (x[0], x[1]))
