"""Health history: incidents, uptime, time to detect/recover and remediation success.

Computed on demand from the store (the events table's alerts, remediation and service
reports; the snapshots table's timestamps), never kept twice.

An *incident* groups the alert episodes (one ``Alert.id``: fired once, resolved at most
once) of one problem on one host: episodes whose time spans overlap or touch and that share
a subject (the service for a service alert, else metric and dimension), or that one
remediation attempt names (by the alert's fingerprint, or by a target equal to the alert's
dimension while it fires). Its start is the first episode's ``since``; its end the last
resolution; it is open while any episode still fires at the range's end.

A range holds the incidents with an alert event inside it (its value updates aside) or an
alert still open at its start (opened at most LOOKBACK before it).
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from watchkeeper.api.schemas import (
    DurationStats,
    HealthHistoryBody,
    HostUptime,
    Incident,
    IncidentAction,
    IncidentAlert,
    ServiceUptime,
    SuccessRate,
)
from watchkeeper.events import Alert, RemediationEvent, ServiceReport
from watchkeeper.remediation.learning import StrategyStats, attempt_worked
from watchkeeper.store.base import StoredEvent
from watchkeeper.store.sqlite import SnapshotGap, SqliteStore

#: Most events one answer reads (alerts but their value updates, finished remediation,
#: service reports); past it the newest are used and the answer says ``truncated``. A day
#: of a busy host is a few thousand.
MAX_EVENTS = 50_000
#: Longest range one answer covers.
MAX_RANGE = timedelta(days=366)
#: How far before the range an alert still open at its start is looked for.
LOOKBACK = timedelta(days=7)
#: Default range: the last day.
DEFAULT_RANGE = timedelta(hours=24)
#: A gap between two snapshots longer than this many sensor intervals counts as unknown.
GAP_INTERVALS = 3
#: Service conditions that count as down time: not running, or running and failing its
#: checks past the start window (``starting``, a process still proving itself, is up).
DOWN_CONDITIONS = frozenset({"down", "crash_looping", "failing", "restarting", "unhealthy"})

_SEVERITY = {"info": 0, "warning": 1, "critical": 2}
_RELATIVE = re.compile(r"^-([0-9]{1,6})([smhdw])$", re.ASCII)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class RangeError(ValueError):
    """A from/to that cannot be read, or a range that is backwards or too long."""


def parse_when(text: str, now: datetime, *, name: str) -> datetime:
    """An ISO 8601 time (naive is UTC), ``now``, or relative like ``-24h`` (s, m, h, d, w)."""
    value = text.strip()
    if value == "now":
        return now
    m = _RELATIVE.match(value)
    try:
        if m:
            return now - timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
        # Digits only in ASCII: fromisoformat would read other scripts' digits too.
        if not value.isascii():
            raise ValueError(value)
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise RangeError(f"{name}={text[:64]!r} is not a time: use ISO 8601 "
                         "(2026-12-01T08:00:00Z), 'now', or relative like -24h, -30m, -7d"
                         ) from None
    except OverflowError:
        raise RangeError(f"{name}={text[:64]!r} is before the year 1") from None
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at


def resolve_range(start: str | None, end: str | None, now: datetime
                  ) -> tuple[datetime, datetime]:
    """The [from, to] a request names; defaults: the last 24 h up to now. A ``to`` in the
    future is taken as now (nothing is known about it); a ``from`` there is refused."""
    to = min(parse_when(end, now, name="to") if end else now, now)
    try:
        frm = parse_when(start, now, name="from") if start else to - DEFAULT_RANGE
    except OverflowError:
        raise RangeError("from: 24 h before to is before the year 1") from None
    if frm > now:
        raise RangeError(f"from ({frm.isoformat()}) is in the future")
    if frm >= to:
        raise RangeError(f"from ({frm.isoformat()}) must be before to ({to.isoformat()})")
    if to - frm > MAX_RANGE:
        raise RangeError(f"the range is longer than {MAX_RANGE.days} days: ask for less")
    return frm, to


# --------------------------------------------------------------------------- incidents


@dataclass
class _Episode:
    alert: Alert
    fired_at: datetime | None
    resolved_at: datetime | None = None
    severity: str = ""

    @property
    def subject(self) -> str:
        a = self.alert
        return f"service:{a.dimension}" if a.rule == "service" else f"{a.metric}:{a.dimension}"

    def end_or(self, open_end: datetime) -> datetime:
        return self.resolved_at if self.resolved_at is not None else open_end


@dataclass
class _Step:
    event: RemediationEvent
    success: bool | None
    episodes: list[int] = field(default_factory=list)


def _success(ev: RemediationEvent) -> bool | None:
    """Whether a finished attempt worked, as the learning counters judge it."""
    return attempt_worked(ev.outcome, ev.verified)


class _Union:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _episodes(alerts: Iterable[StoredEvent]) -> list[_Episode]:
    by_id: dict[tuple[str, str], _Episode] = {}
    for stored in alerts:
        a = stored.event
        if not isinstance(a, Alert):
            continue
        key = (a.host, a.id)
        ep = by_id.get(key)
        if ep is None:
            fired = a.at if a.labels.get("change") == "new" else None
            ep = by_id[key] = _Episode(alert=a, fired_at=fired)
        elif not ep.alert.summary and a.summary:
            ep.alert = a
        if ep.severity == "" or (a.state != "resolved"
                                 and _SEVERITY.get(a.severity, 0) > _SEVERITY[ep.severity]):
            ep.severity = a.severity
        if a.state == "resolved":
            ep.resolved_at = a.at
    return sorted(by_id.values(), key=lambda e: (e.alert.since, e.alert.id))


class _Spans:
    """Episodes of one (host, dimension), sorted by start, for "which ones span t" in
    O(log n + answer): a running maximum of their ends stops the backwards scan."""

    def __init__(self, episodes: list[_Episode], idx: list[int], open_end: datetime) -> None:
        self.idx = idx  # already in start order: episodes are sorted
        self.starts = [episodes[i].alert.since for i in idx]
        self.ends = [episodes[i].end_or(open_end) for i in idx]
        self.reach: list[datetime] = []
        for end in self.ends:
            self.reach.append(max(end, self.reach[-1]) if self.reach else end)


def _spanning(spans: _Spans | None, at: datetime) -> list[int]:
    if spans is None:
        return []
    out = []
    j = bisect.bisect_right(spans.starts, at) - 1
    while j >= 0 and spans.reach[j] >= at:
        if spans.ends[j] >= at:
            out.append(spans.idx[j])
        j -= 1
    return out


def _link(episodes: list[_Episode], steps: list[_Step], open_end: datetime) -> _Union:
    union = _Union(len(episodes))
    # Same host and subject, spans overlapping or touching: one problem.
    last: dict[tuple[str, str], int] = {}
    for i, ep in enumerate(episodes):
        key = (ep.alert.host, ep.subject)
        j = last.get(key)
        if j is not None and ep.alert.since <= episodes[j].end_or(open_end):
            union.join(i, j)
            if ep.end_or(open_end) < episodes[j].end_or(open_end):
                continue  # the earlier one reaches further: keep it as the one to touch
        last[key] = i
    # One remediation attempt names the alerts of one problem.
    by_fp: dict[tuple[str, str], list[int]] = {}
    dims: dict[tuple[str, str], list[int]] = {}
    for i, ep in enumerate(episodes):
        by_fp.setdefault((ep.alert.host, ep.alert.fingerprint), []).append(i)
        if ep.alert.dimension:
            dims.setdefault((ep.alert.host, ep.alert.dimension), []).append(i)
    by_dim = {key: _Spans(episodes, idx, open_end) for key, idx in dims.items()}
    for step in steps:
        ev = step.event
        found: list[int] = []
        for i in by_fp.get((ev.host, ev.fingerprint or ""), []):
            if episodes[i].alert.since <= ev.at:
                found = [i]  # the latest episode of that fingerprint begun before it
        found += [i for i in _spanning(by_dim.get((ev.host, ev.target)), ev.at)
                  if i not in found]
        for i in found[1:]:
            union.join(found[0], i)
        step.episodes = found
    return union


def _incident(host: str, eps: list[_Episode], steps: list[_Step], open_end: datetime
              ) -> Incident:
    start = min(e.alert.since for e in eps)
    fired = [e.fired_at for e in eps if e.fired_at is not None]
    first_fired = min(fired) if fired else None
    is_open = any(e.resolved_at is None for e in eps)
    end = None if is_open else max(e.end_or(open_end) for e in eps)
    worst = max(eps, key=lambda e: (_SEVERITY.get(e.severity, 0), -e.alert.since.timestamp()))
    first = min(eps, key=lambda e: (e.alert.since, e.alert.id))
    ttd = None if first_fired is None else max(0.0, (first_fired - start).total_seconds())
    ttr = None if first_fired is None or end is None else max(
        0.0, (end - first_fired).total_seconds())
    return Incident(
        id=f"{host}/{first.alert.id}", host=host, state="open" if is_open else "resolved",
        severity=worst.severity, title=worst.alert.summary or first.alert.summary,
        start=start, end=end, ttd_s=ttd, ttr_s=ttr,
        alerts=[IncidentAlert(id=e.alert.id, fingerprint=e.alert.fingerprint,
                              rule=e.alert.rule, metric=e.alert.metric,
                              dimension=e.alert.dimension, severity=e.severity,
                              summary=e.alert.summary, since=e.alert.since,
                              fired_at=e.fired_at, resolved_at=e.resolved_at) for e in eps],
        actions=[IncidentAction(at=s.event.at, action=s.event.action, target=s.event.target,
                                source=s.event.source, outcome=s.event.outcome,
                                success=s.success)
                 for s in sorted(steps, key=lambda s: s.event.at)])


def incidents(alerts: Sequence[StoredEvent], finished: Sequence[RemediationEvent],
              open_end: datetime) -> list[Incident]:
    """Incidents from stored alert events and finished remediation events, oldest first."""
    episodes = _episodes(alerts)
    steps = [_Step(ev, _success(ev)) for ev in finished]
    union = _link(episodes, steps, open_end)
    groups: dict[int, list[_Episode]] = {}
    for i, ep in enumerate(episodes):
        groups.setdefault(union.find(i), []).append(ep)
    step_of: dict[int, list[_Step]] = {}
    for step in steps:
        if step.episodes:
            step_of.setdefault(union.find(step.episodes[0]), []).append(step)
    out = [_incident(eps[0].alert.host, eps, step_of.get(root, []), open_end)
           for root, eps in groups.items()]
    return sorted(out, key=lambda i: (i.start, i.id))


# --------------------------------------------------------------------------- statistics


def _percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def duration_stats(values: Sequence[float]) -> DurationStats:
    """Count, mean, p50 and p90 (None when there is no value)."""
    if not values:
        return DurationStats(count=0, mean_s=None, p50_s=None, p90_s=None)
    return DurationStats(count=len(values), mean_s=sum(values) / len(values),
                         p50_s=_percentile(values, 0.5), p90_s=_percentile(values, 0.9))


def success_rates(finished: Iterable[RemediationEvent]
                  ) -> tuple[list[SuccessRate], list[SuccessRate]]:
    """Per action and per target, counted as learning.py's StrategyStats counts."""
    by_action: dict[str, StrategyStats] = {}
    by_target: dict[str, StrategyStats] = {}
    for ev in finished:
        ok = _success(ev)
        if ok is None:
            continue
        by_action.setdefault(ev.action, StrategyStats()).record(ok)
        by_target.setdefault(f"{ev.host}/{ev.target or ev.action}",
                             StrategyStats()).record(ok)

    def rows(stats: dict[str, StrategyStats]) -> list[SuccessRate]:
        return [SuccessRate(key=k, successes=s.successes, failures=s.failures,
                            success_rate=s.successes / s.attempts if s.attempts else None)
                for k, s in sorted(stats.items())]
    return rows(by_action), rows(by_target)


# --------------------------------------------------------------------------- uptime


#: Seconds a boot time may differ between two snapshots without being a reboot (the
#: kernel's btime is whole seconds, and an NTP step moves it).
REBOOT_SLACK_S = 5.0


def host_uptime(store: SqliteStore, start: datetime, end: datetime, gap_s: float
                ) -> list[HostUptime]:
    """Per host, the machine's uptime: time covered by snapshots no further apart than
    ``gap_s`` is up. A longer gap is down from its last snapshot to the machine's next boot
    when the boot time moved (a reboot), and up after that boot; without a reboot the
    machine kept running while nobody watched (watchkeeper stopped, the link to the central
    cut): up, and counted as unwatched too. A gap whose boot times are not known, and the
    end of the range past ``gap_s`` after the last snapshot (silent now), are unknown: left
    out of the percentage, as Prometheus leaves out missing samples."""
    lo, hi = start.timestamp(), end.timestamp()
    gaps_by_host: dict[str, list[SnapshotGap]] = {}
    for gap in store.host_gaps(start, end, gap_s):
        gaps_by_host.setdefault(gap.host, []).append(gap)
    out = []
    for c in store.host_coverage(start, end, gap_s):
        up = c.covered_s
        down = unwatched = unknown = 0.0
        reboots = 0
        if c.previous is not None and c.first - c.previous <= gap_s:
            up += c.first - lo  # watched across the range's start
        # Without an earlier snapshot, watching began at the first one: nothing before it.
        gaps = gaps_by_host.get(c.host, [])
        for g in gaps:
            begin = max(g.before, lo)  # the head gap counts from the range's start
            span = g.after - begin
            if g.boot_before is None or g.boot_after is None:
                unknown += span
            elif g.boot_after > g.boot_before + REBOOT_SLACK_S:
                reboots += 1
                lost = min(max(g.boot_after - begin, 0.0), span)
                down += lost
                up += span - lost
            else:
                unwatched += span
                up += span
        tail = hi - c.last
        silent = tail > gap_s
        if silent:
            unknown += tail
        else:
            up += tail
        known = up + down
        out.append(HostUptime(
            host=c.host, up_s=round(up, 3), down_s=round(down, 3),
            unwatched_s=round(unwatched, 3), unknown_s=round(unknown, 3),
            gaps=len(gaps) + int(silent), reboots=reboots,
            uptime_percent=round(100 * up / known, 3) if known > 0 else None))
    return out


def service_uptime(before: Sequence[StoredEvent], reports: Sequence[StoredEvent],
                   start: datetime, end: datetime) -> list[ServiceUptime]:
    """Per (host, service): share of the known time not spent down, crash looping or
    failing, from its reports (the last one before the range gives the condition at start)."""
    timeline: dict[tuple[str, str], list[tuple[datetime, str]]] = {}
    for stored in [*before, *reports]:
        r = stored.event
        if isinstance(r, ServiceReport):
            at = max(stored.at, start)
            timeline.setdefault((r.host, r.service), []).append((at, r.condition))
    out = []
    for (host, service), changes in sorted(timeline.items()):
        changes.sort(key=lambda c: c[0])
        down = known = 0.0
        for (at, condition), nxt in zip(changes, [*changes[1:], (end, "")], strict=True):
            if condition == "removed":
                continue  # no longer declared: neither up nor down
            span = max(0.0, (nxt[0] - at).total_seconds())
            known += span
            if condition in DOWN_CONDITIONS:
                down += span
        pct = round(100 * (known - down) / known, 3) if known > 0 else None
        out.append(ServiceUptime(host=host, service=service, uptime_percent=pct,
                                 down_s=round(down, 3), known_s=round(known, 3)))
    return out


# --------------------------------------------------------------------------- all of it


def _open_at(store: SqliteStore, start: datetime) -> list[StoredEvent]:
    """The opening events of alerts still open at ``start`` (opened within LOOKBACK)."""
    earliest = datetime.min.replace(tzinfo=timezone.utc)
    lo = start - LOOKBACK if start - earliest > LOOKBACK else earliest
    edges = store.alert_edges(lo, start, limit=MAX_EVENTS)
    opened: dict[tuple[str, str], StoredEvent] = {}
    for e in edges:
        a = e.event
        if isinstance(a, Alert):
            if a.state == "resolved":
                opened.pop((a.host, a.id), None)
            else:
                opened[(a.host, a.id)] = e
    return list(opened.values())


def health_history(store: SqliteStore, start: datetime, end: datetime, *,
                   interval_s: float, now: datetime) -> HealthHistoryBody:
    """Everything GET /api/history answers, for [start, end] (the future is not counted)."""
    end = min(end, now)
    start = min(start, end)
    events = store.history_events(start, end, limit=MAX_EVENTS + 1)
    truncated = len(events) > MAX_EVENTS
    if truncated:
        events = events[1:]
    alerts = [*_open_at(store, start), *(e for e in events if e.kind == "alert")]
    finished = [e.event for e in events if isinstance(e.event, RemediationEvent)
                and e.event.phase == "finished"]
    reports = [e for e in events if e.kind == "service_report"]
    found = incidents(alerts, finished, end)
    by_action, by_target = success_rates(finished)
    gap_s = GAP_INTERVALS * interval_s
    return HealthHistoryBody(
        start=start, end=end, incidents=found,
        ttd=duration_stats([i.ttd_s for i in found if i.ttd_s is not None]),
        ttr=duration_stats([i.ttr_s for i in found if i.ttr_s is not None]),
        hosts=host_uptime(store, start, end, gap_s),
        services=service_uptime(store.last_service_reports(start), reports, start, end),
        by_action=by_action, by_target=by_target, gap_s=gap_s, truncated=truncated)
