"""What watchkeeper noticed and did about a run, read back from a running server's API:
time to detect, the alert, actions and outcomes, time to recover; as lines or JSON."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from watchkeeper.safetext import printable
from watchkeeper.simulate.limits import fmt_size
from watchkeeper.simulate.runner import Outcome

#: Seconds past the run's end a late detection is still waited for (a tick or two).
LATE_DETECT_S = 10.0
#: Events at most this long before the start still count (clocks read at different moments).
SLACK = timedelta(seconds=1)

Fetch = Callable[[str, dict[str, Any]], Any]


@dataclass(frozen=True)
class Culprit:
    """How an alert names this run: a worker's pid or process name, its disk, its log."""

    pids: frozenset[int]
    names: tuple[str, ...]
    mountpoint: str | None = None
    path: str | None = None

    def rank(self, alert: dict[str, Any]) -> int | None:
        """How ``alert`` (an Alert event as JSON) names this run: 0 as its subject (its pid
        label or dimension: the run's process, service, disk), 1 in its words only (a busy
        host's CPU alert naming the runaway as the cause), None not at all."""
        labels = alert.get("labels")
        pid = str(labels.get("pid", "")) if isinstance(labels, dict) else ""
        if pid.isdigit() and int(pid) in self.pids:
            return 0
        dimension = str(alert.get("dimension") or "")
        if any(n in dimension for n in self.names) or (
                self.mountpoint is not None and str(alert.get("metric", "")).startswith("disk")
                and dimension == self.mountpoint):
            return 0
        text = " ".join(str(alert.get(k) or "") for k in ("summary", "context"))
        if any(n in text for n in self.names) or (self.path is not None and self.path in text):
            return 1
        return None


@dataclass
class Response:
    """What the server shows about one run."""

    url: str
    detected_at: datetime | None = None
    detect_s: float | None = None
    alert: dict[str, Any] | None = None
    #: The alert's firing updates whose words changed (down -> crash-looping -> failing).
    updates: list[dict[str, Any]] = field(default_factory=list)
    resolved: dict[str, Any] | None = None
    resolved_at: datetime | None = None
    recover_s: float | None = None
    open_s: float | None = None
    actions: list[dict[str, Any]] = field(default_factory=list)
    other_alerts: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        a = self.alert or {}
        return {"url": self.url,
                "detected_at": self.detected_at.isoformat() if self.detected_at else None,
                "time_to_detect_s": _r(self.detect_s),
                "alert": _brief(a) if a else None,
                "updates": [_brief(u) for u in self.updates],
                "resolved_summary": (self.resolved or {}).get("summary"),
                "resolved_at": self.resolved_at.isoformat() if self.resolved_at else None,
                "time_to_recover_s": _r(self.recover_s), "alert_open_s": _r(self.open_s),
                "actions": self.actions, "other_alerts": self.other_alerts}


def _brief(a: dict[str, Any]) -> dict[str, Any]:
    return {k: a.get(k) for k in ("rule", "metric", "dimension", "severity", "summary",
                                  "fingerprint")}


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def _at(item: dict[str, Any]) -> datetime | None:
    try:
        return datetime.fromisoformat(str(item.get("at")).replace("Z", "+00:00"))
    except ValueError:
        return None


def read_response(fetch: Fetch, url: str, outcome: Outcome, culprit: Culprit) -> Response:
    """One read of the server's activity since the run started."""
    body = fetch("/api/activity", {"limit": 1000, "kind": ["alert", "remediation"]})
    items = body.get("events") if isinstance(body, dict) else None
    resp = Response(url=url)
    since = outcome.started_at - SLACK
    events: list[tuple[datetime, str, dict[str, Any]]] = []
    for item in items if isinstance(items, list) else []:
        at = _at(item) if isinstance(item, dict) else None
        event = item.get("event") if isinstance(item, dict) else None
        if at is not None and at >= since and isinstance(event, dict):
            events.append((at, str(item.get("kind")), event))
    # The alert of its own if there is one, else the first that names the run in its words
    # and opened during it (an alert already open before the run does not count).
    found: dict[int, tuple[datetime, dict[str, Any]]] = {}
    for at, kind, event in events:
        if kind != "alert" or event.get("state") != "firing":
            continue
        rank = culprit.rank(event)
        if rank is None or rank in found:
            continue
        opened = _at({"at": event.get("since")})
        if rank == 0 or (opened is not None and opened >= since):
            found[rank] = (at, event)
    fingerprint = None
    if found:
        resp.detected_at, resp.alert = found[min(found)]
        fingerprint = str(resp.alert.get("fingerprint", ""))
        resp.detect_s = (resp.detected_at - outcome.started_at).total_seconds()
    others: dict[str, str] = {}
    for at, kind, event in events:
        if kind == "alert":
            fp = str(event.get("fingerprint", ""))
            state = event.get("state")
            if fp == fingerprint and event is resp.alert:
                continue
            elif (fp == fingerprint and state == "firing" and resp.resolved_at is None
                  and event.get("summary") != ([resp.alert or {}, *resp.updates][-1]
                                               .get("summary"))):
                resp.updates.append(event)
            elif fp == fingerprint and state == "resolved" and resp.resolved_at is None:
                resp.resolved_at, resp.resolved = at, event
                resp.recover_s = max(0.0, (at - outcome.ended_at).total_seconds())
                assert resp.detected_at is not None
                resp.open_s = (at - resp.detected_at).total_seconds()
            elif fp != fingerprint and state == "firing":
                others[fp] = printable(f"{event.get('severity')} {event.get('rule')}: "
                                       f"{event.get('summary')}", 200)
        elif kind == "remediation":
            target = str(event.get("target", ""))
            if (fingerprint is not None and event.get("fingerprint") == fingerprint) or any(
                    target.endswith(f":{pid}") for pid in culprit.pids) or any(
                    n in target for n in culprit.names):
                resp.actions.append({
                    "at": at.isoformat(), "phase": event.get("phase"),
                    "action": event.get("action"), "target": target,
                    "verdict": event.get("verdict"), "outcome": event.get("outcome"),
                    "message": printable(str(event.get("message") or event.get("why") or ""),
                                         200)})
    resp.other_alerts = list(others.values())[:10]
    return resp


def wait_response(fetch: Fetch, url: str, outcome: Outcome, culprit: Culprit, settle_s: float,
                  monotonic: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], None] = time.sleep) -> Response:
    """Read until the culprit's alert resolves, up to ``settle_s`` after the run (only
    LATE_DETECT_S when nothing named it by then)."""
    start = monotonic()
    while True:
        resp = read_response(fetch, url, outcome, culprit)
        waited = monotonic() - start
        if resp.resolved_at is not None or waited >= settle_s or (
                resp.detected_at is None and waited >= min(settle_s, LATE_DETECT_S)):
            return resp
        sleep(1.0)


def lines(outcome: Outcome, resp: Response | None, note: str) -> list[str]:
    """The report as short lines for a terminal."""
    peak = outcome.peak
    seen = []
    if peak.get("cpu_percent"):
        seen.append(f"{peak['cpu_percent']:.0f}% CPU")
    if peak.get("rss_bytes"):
        seen.append(f"{fmt_size(peak['rss_bytes'])} resident")
    if peak.get("processes", 0) > len(outcome.pids):
        seen.append(f"{peak['processes']:.0f} processes")
    if peak.get("file_bytes"):
        seen.append(f"{fmt_size(peak['file_bytes'])} written")
    out = [f"simulate {outcome.scenario}: {printable(outcome.summary, 300)}",
           f"  ran         {outcome.duration_s:.1f} s (ended: {outcome.ended_by}); pids "
           f"{', '.join(map(str, outcome.pids))}; peak {', '.join(seen) or '-'}",
           "  cleaned up  " + ("yes: no process or file of the run is left" if outcome.cleaned
                               else "NO: see the run directory under $TMPDIR/"
                                    "watchkeeper-simulate-UID")]
    if outcome.append_to:
        out.append(f"  appended to {printable(outcome.append_to)} (kept: not the run's file)")
    if resp is None:
        out.append(f"  watchkeeper {note}")
        return out
    out.append(f"  watchkeeper {printable(resp.url)}")
    if resp.alert is None:
        out.append("  detected    no alert named the run's processes, disk or log"
                   + (f" ({len(resp.other_alerts)} other alert(s) fired)"
                      if resp.other_alerts else ""))
    else:
        a = resp.alert
        out.append(f"  detected    after {resp.detect_s:.1f} s: {printable(str(a.get('severity')))}"
                   f" {printable(str(a.get('rule')))}: {printable(str(a.get('summary')), 300)}")
    for update in resp.updates[:10]:
        out.append(f"  then        {printable(str(update.get('severity')))}: "
                   f"{printable(str(update.get('summary')), 300)}")
    for act in resp.actions:
        out.append(f"  action      {act['phase']} {act['action']} {act['target']}"
                   f"{' -> ' + str(act['outcome']) if act.get('outcome') else ''}"
                   f"{': ' + act['message'] if act.get('message') else ''}")
    if resp.alert is not None:
        out.append(f"  recovered   alert resolved {resp.recover_s:.1f} s after the condition "
                   f"ended (open {resp.open_s:.1f} s): "
                   f"{printable(str((resp.resolved or {}).get('summary')), 200)}"
                   if resp.resolved_at is not None
                   else "  recovered   not yet: the alert is still open")
    for other in resp.other_alerts:
        out.append(f"  also fired  {other}")
    return out
