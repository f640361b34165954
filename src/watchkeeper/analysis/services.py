"""Service outages as alerts: ServiceReports in, findings for the AlertManager out.

The RemediatorAgent publishes a :class:`~watchkeeper.events.ServiceReport` the moment a
declared service's condition or its remediation changes (an exit at once, a failed check run
at the tick that ran it). Each report becomes one finding of the rule ``service`` (metric
``service.up``, dimension the service's name), so a service outage goes through the same
AlertManager as every other problem: de-duplication, ack, silences, storage, restore after a
restart, the live stream. The alert says what is wrong and, in its context, what remediation
did and will do next; a change of either is published as an update of the same alert.
"""

from __future__ import annotations

from datetime import datetime, timezone

from watchkeeper.analysis.alerts import Description, Finding
from watchkeeper.events import Alert, ServiceReport, Severity

RULE = "service"
METRIC = "service.up"

_WORDS = {
    "down": "is down",
    "restarting": "is down",
    "crash_looping": "is crash-looping",
    "failing": "is failing; remediation gave up",
    "unhealthy": "fails its health checks",
}


def _epoch(at: datetime | None, default: float) -> float:
    if at is None:
        return default
    return (at if at.tzinfo is not None else at.replace(tzinfo=timezone.utc)).timestamp()


def severity_of(report: ServiceReport) -> Severity | None:
    """None when the service is fine (or starting): its alert, if any, resolves."""
    if report.condition in ("ok", "starting", "removed"):
        return None
    return "warning" if report.condition == "unhealthy" else "critical"


class ServiceDetector:
    """Turns each ServiceReport into a finding; remembers nothing but the last report."""

    def __init__(self) -> None:
        self._last: dict[str, ServiceReport] = {}

    def finding(self, report: ServiceReport) -> Finding | None:
        """The finding for ``report``; None for a service that is starting (no change)."""
        if report.condition == "starting":
            return None
        self._last[report.service] = report
        t = _epoch(report.at, 0.0)
        severity = severity_of(report)
        return Finding(
            rule=RULE, metric=METRIC, dimension=report.service, severity=severity,
            value=1.0 if severity is None else 0.0, since=_epoch(report.since, t),
            describe=lambda since: self.describe(report),
            cause=f"{report.condition}|{report.detail}|{report.remediation}",
            worse=None)  # up (1) or down (0): no peak worth keeping

    @staticmethod
    def describe(report: ServiceReport) -> Description:
        """The alert's words: what is wrong, and what remediation did and will do next."""
        name = report.service
        labels = {"service": name, "manager": report.manager, "condition": report.condition}
        if report.condition == "removed":
            return Description(summary=f"Service {name} is no longer declared",
                               context=report.remediation or None, labels=labels,
                               confidence=1.0)
        if severity_of(report) is None:
            summary = f"Service {name} is running and healthy again"
            return Description(summary=summary, context=report.remediation or None,
                               labels=labels, confidence=1.0)
        what = _WORDS.get(report.condition, f"is {report.condition}")
        summary = f"Service {name} {what}" + (f": {report.detail}" if report.detail else "")
        evidence = (f"state {report.state}, pid {report.pid or '-'}, "
                    f"{report.restarts} restart(s) by watchkeeper",)
        return Description(summary=summary, context=report.remediation or None, labels=labels,
                           likely_cause=report.detail, confidence=1.0, evidence=evidence)

    def seed(self, alert: Alert) -> bool:
        """Whether a restored alert is one of ours (it resolves at the next good report)."""
        return alert.rule == RULE and alert.metric == METRIC
