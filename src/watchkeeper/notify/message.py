"""Notification text: what is wrong, why, what was done, and a link; hostile text defused.

Everything in a message that came from the host or the LLM (summaries, process names, likely
causes, action messages) is untrusted: :func:`defuse` puts it on one line (a forged
"RESOLVED" line cannot be slipped in), escapes control characters, breaks markdown and Slack
link syntax and silences mass mentions (``@everyone``, ``<!channel>``), and caps its length.
The personality level shapes our own words only: ``off`` plain, ``professional`` emoji as
status marks, ``witty`` one short line more. Nothing here ends up in structured data.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Literal

from watchkeeper.analysis.alerts import fmt_duration
from watchkeeper.config import PersonalityLevel
from watchkeeper.events import Alert, RemediationEvent
from watchkeeper.safetext import printable

MessageKind = Literal["firing", "repeat", "resolved", "escalation", "remediation", "summary",
                      "test"]
#: apprise's notify types: how a channel colours or marks a message.
NotifyType = Literal["info", "success", "warning", "failure"]

#: Characters of one untrusted field kept in a message.
FIELD_MAX = 300
#: Alerts listed one by one in a grouped message; the rest are counted.
LIST_MAX = 20

_ZWSP = "\u200b"
_MENTION = re.compile(r"@(everyone|here|channel|all|room)\b", re.IGNORECASE)
_SLACK_SPECIAL = re.compile(r"<([!@#][^>]*)>")
_MD_LINK = re.compile(r"\]\s*\(")
_MD_AUTOLINK = re.compile(r"<(https?://[^>]*)>", re.IGNORECASE)
_WS = re.compile(r"\s+")

_ICONS = {"critical": "🔥", "warning": "⚠️", "info": "ℹ️", "resolved": "✅", "escalation": "📣",
          "fixed": "🔧", "failed": "❌", "human": "✋", "summary": "📭", "test": "🔔"}
_WITTY = (
    "Somebody has to stay awake; tonight it is you and me.",
    "I would fix it myself, but I lack thumbs.",
    "Coffee first, then this.",
    "Not a drill. Probably.",
    "The servers send their regards.",
)


def defuse(text: str | None, max_len: int = FIELD_MAX) -> str:
    """Untrusted text made safe for any channel: one line, no controls, no links, no pings."""
    if not text:
        return ""
    one_line = _WS.sub(" ", text).strip()
    safe = printable(one_line, max_len=max_len)
    safe = _SLACK_SPECIAL.sub(lambda m: "‹" + m.group(1) + "›", safe)
    safe = _MD_AUTOLINK.sub(lambda m: m.group(1), safe)
    safe = _MD_LINK.sub("] (", safe)
    return _MENTION.sub(lambda m: "@" + _ZWSP + m.group(1), safe)


def _icon(level: PersonalityLevel, name: str) -> str:
    return "" if level == "off" else _ICONS[name] + " "


def _witty(level: PersonalityLevel, seed: str) -> str:
    if level != "witty":
        return ""
    digest = int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16)
    return "\n" + _WITTY[digest % len(_WITTY)]


@dataclass(frozen=True)
class Message:
    """One notification for one route, rendered once and kept in the outbox as it is."""

    route: str
    kind: MessageKind
    title: str
    body: str
    notify_type: NotifyType = "info"
    #: Fingerprints of the alerts it is about (for the state and the tests, not the text).
    fingerprints: tuple[str, ...] = field(default_factory=tuple)


def _when(t: datetime | None) -> str:
    if t is None:
        return ""
    return t.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def remediation_line(ev: RemediationEvent) -> str:
    """What was done about an alert and whether it worked, in one defused line."""
    what = defuse(f"{ev.action} {ev.target}".strip(), 120)
    detail = defuse(ev.message or ev.why, 200)
    if ev.phase == "finished":
        worked = ev.outcome == "ok" and ev.verified is not False
        verdict = "worked" if worked else f"did not work ({defuse(ev.outcome or 'failed', 40)})"
        return f"{what}: {verdict}" + (f" - {detail}" if detail else "")
    if ev.phase == "started":
        return f"{what}: started"
    if ev.phase == "pending":
        return f"{what}: waits for a human's approval #{ev.approval_id}" + (
            f" - {detail}" if detail else "")
    if ev.phase == "escalated":
        return f"needs a human: {defuse(ev.why or ev.message, 200)}"
    return f"{what}: {ev.phase}" + (f" - {detail}" if detail else "")


def needs_human(ev: RemediationEvent) -> bool:
    """A remediation step a person must act on: it failed, gave up, or waits for approval."""
    if ev.phase in ("escalated", "pending", "expired"):
        return True
    return ev.phase == "finished" and not (ev.outcome == "ok" and ev.verified is not False)


def _alert_block(alert: Alert, now: float, remediations: Sequence[RemediationEvent],
                 *, resolved: bool = False, new: bool = False) -> list[str]:
    sev = alert.severity.upper()
    tag = "RESOLVED" if resolved else sev
    lines = [f"[{tag}] {defuse(alert.host, 64)}: {defuse(alert.summary)}"
             + (" (new)" if new and not resolved else "")]
    if not resolved:
        lines.append(f"  since {_when(alert.since)} "
                     f"({fmt_duration(now - alert.since.timestamp())})")
    a = alert.assessment
    if a is not None and not resolved:
        if a.summary and a.summary != alert.summary:
            lines.append(f"  analysis: {defuse(a.summary)}")
        if a.likely_cause:
            lines.append(f"  likely cause: {defuse(a.likely_cause)} "
                         f"(confidence {a.confidence * 100:.0f}%, {a.source})")
    if alert.context and not resolved:
        lines.append(f"  context: {defuse(alert.context)}")
    for ev in remediations[-3:]:
        lines.append(f"  done: {remediation_line(ev)}")
    return lines


def _link(dashboard: str) -> str:
    return f"Dashboard: {dashboard}"


def render_group(route: str, *, level: PersonalityLevel, dashboard: str, now: float,
                 firing: Sequence[Alert], resolved: Sequence[Alert], new: set[str],
                 remediations: dict[str, list[RemediationEvent]], repeat: bool = False
                 ) -> Message:
    """A group's message: what fires (new ones marked), what resolved, and what was done."""
    worst = "info"
    for a in firing:
        if a.severity == "critical" or (a.severity == "warning" and worst == "info"):
            worst = a.severity
    if firing:
        kind: MessageKind = "repeat" if repeat else "firing"
        icon = _icon(level, "critical" if worst == "critical" else
                     "warning" if worst == "warning" else "info")
        host = defuse(firing[0].host, 64)
        count = f"{len(firing)} alerts" if len(firing) > 1 else defuse(firing[0].summary, 120)
        title = f"{icon}[{worst.upper()}] {host}: {count}" + (" (still firing)" if repeat
                                                               else "")
        ntype: NotifyType = "failure" if worst == "critical" else "warning"
    else:
        kind = "resolved"
        host = defuse(resolved[0].host, 64)
        count = f"{len(resolved)} alerts" if len(resolved) > 1 else defuse(resolved[0].summary,
                                                                           120)
        title = f"{_icon(level, 'resolved')}[RESOLVED] {host}: {count}"
        ntype = "success"
    lines: list[str] = []
    for a in list(firing)[:LIST_MAX]:
        lines += _alert_block(a, now, remediations.get(a.fingerprint, ()),
                              new=a.fingerprint in new)
    if len(firing) > LIST_MAX:
        lines.append(f"... and {len(firing) - LIST_MAX} more firing")
    room = max(0, LIST_MAX - len(firing))
    for a in list(resolved)[:room]:
        lines += _alert_block(a, now, remediations.get(a.fingerprint, ()), resolved=True)
    if len(resolved) > room:
        lines.append(f"... and {len(resolved) - room} more resolved")
    lines.append(_link(dashboard))
    seed = ",".join(sorted(a.fingerprint for a in (*firing, *resolved)))
    return Message(route=route, kind=kind, title=title,
                   body="\n".join(lines) + _witty(level, seed + kind), notify_type=ntype,
                   fingerprints=tuple(a.fingerprint for a in (*firing, *resolved)))


def render_escalation(route: str, source_route: str, *, level: PersonalityLevel,
                      dashboard: str, now: float, alerts: Sequence[Alert], after_s: float,
                      remediations: dict[str, list[RemediationEvent]]) -> Message:
    """Alerts left unacknowledged on ``source_route`` past its escalate_after_s."""
    host = defuse(alerts[0].host, 64)
    title = (f"{_icon(level, 'escalation')}[ESCALATED] {host}: {len(alerts)} alert"
             f"{'s' if len(alerts) != 1 else ''} unacknowledged for "
             f"{fmt_duration(after_s)}")
    lines = [f"Escalated from route {source_route}: nobody acknowledged these."]
    for a in list(alerts)[:LIST_MAX]:
        lines += _alert_block(a, now, remediations.get(a.fingerprint, ()))
    lines.append(_link(dashboard))
    seed = ",".join(a.fingerprint for a in alerts)
    return Message(route=route, kind="escalation", title=title,
                   body="\n".join(lines) + _witty(level, seed + "esc"), notify_type="failure",
                   fingerprints=tuple(a.fingerprint for a in alerts))


def render_remediation(route: str, ev: RemediationEvent, alert: Alert | None, *,
                       level: PersonalityLevel, dashboard: str, escalated_from: str | None
                       ) -> Message:
    """A remediation step worth a message: it worked, failed, gave up, or waits for a human."""
    human = needs_human(ev)
    ntype: NotifyType
    if ev.phase == "finished" and not human:
        icon, tag, ntype = _icon(level, "fixed"), "FIXED", "success"
    elif ev.phase == "finished":
        icon, tag, ntype = _icon(level, "failed"), "FIX FAILED", "failure"
    else:
        icon, tag, ntype = _icon(level, "human"), "NEEDS A HUMAN", "warning"
    host = defuse(ev.host, 64)
    what = defuse(f"{ev.action} {ev.target}".strip(), 120)
    title = f"{icon}[{tag}] {host}: {what}"
    lines: list[str] = []
    if escalated_from:
        lines.append(f"Escalated from route {escalated_from}: a remediation needs a human.")
    lines.append(remediation_line(ev))
    if alert is not None:
        lines.append(f"about: [{alert.severity.upper()}] {defuse(alert.summary)}")
    lines.append(_link(dashboard))
    fps = (alert.fingerprint,) if alert is not None else ()
    return Message(route=route, kind="remediation", title=title,
                   body="\n".join(lines) + _witty(level, f"{ev.decision_id}{ev.phase}"),
                   notify_type=ntype, fingerprints=fps)


def render_test(route: str, *, level: PersonalityLevel, dashboard: str, host: str) -> Message:
    """`watchkeeper notify test`: proves the route reaches a human."""
    title = f"{_icon(level, 'test')}watchkeeper test message for route {route}"
    body = (f"This is a test from watchkeeper on {defuse(host, 64)}. If you read this, route "
            f"{route} works.\n{_link(dashboard)}") + _witty(level, route)
    return Message(route=route, kind="test", title=title, body=body, notify_type="info")


def render_summary(route: str, *, level: PersonalityLevel, dropped: int,
                   oldest: float, newest: float, titles: Sequence[str]) -> tuple[str, str]:
    """The one message that stands for the ones dropped past the outbox's bounds."""
    title = (f"{_icon(level, 'summary')}{dropped} message{'s' if dropped != 1 else ''} for "
             f"route {route} were dropped while it was unreachable")
    span = (f"from {_when(datetime.fromtimestamp(oldest, timezone.utc))} to "
            f"{_when(datetime.fromtimestamp(newest, timezone.utc))}")
    listed = "\n".join(f"- {t}" for t in titles[:10])
    more = f"\n... and {dropped - 10} more" if dropped > 10 else ""
    body = (f"{dropped} message{'s' if dropped != 1 else ''} for route {route} were dropped "
            f"while it was unreachable ({span}): the outbox keeps a bounded number of "
            f"messages per route. Check the dashboard for what happened meanwhile.\n"
            f"{listed}{more}")
    return title, body
