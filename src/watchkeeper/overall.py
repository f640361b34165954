"""The overall status of a host: from its open alerts and the health of watchkeeper's agents.

``critical``  an open critical alert that is not silenced (acknowledged ones count: an
              acknowledged problem is still a problem, someone is on it);
``degraded``  no open critical alert, but an agent is not running (paused, crashed,
              starting, stopped, or marked degraded by failing checks), an agent reports a
              problem (a notification route failing past notify.failing_after_s: nobody
              would be told), or watchkeeper's own records fail a check (the audit log's
              chain is broken): what watchkeeper reports may be incomplete or altered;
``warning``   no critical alert, every agent runs, and an open warning that is not silenced;
``ok``        none of the above. Silenced alerts are muted: they never raise the status;
              ``info`` alerts (anomalies against a learned baseline) do not either.

Every alert the analyzer's engine holds counts the same way, whatever detected it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from watchkeeper.events import AgentHealth, Alert

OverallStatus = Literal["ok", "warning", "critical", "degraded"]


@dataclass(frozen=True)
class Overall:
    """The status, why, and the open alerts it counted."""

    status: OverallStatus
    reasons: tuple[str, ...]
    critical: int = 0
    warning: int = 0
    acknowledged: int = 0
    silenced: int = 0


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def overall(alerts: Iterable[Alert] | None, agents: Iterable[AgentHealth],
            problems: Iterable[str] = ()) -> Overall:
    """Derive the status; ``alerts`` is None when no analyzer runs in this process;
    ``problems`` are watchkeeper's own (e.g. a broken audit chain), each one degrades."""
    critical = warning = acknowledged = silenced = 0
    for a in alerts or ():
        if a.state == "resolved":
            continue
        if a.silenced:
            silenced += 1
            continue
        if a.severity == "critical":
            critical += 1
        elif a.severity == "warning":
            warning += 1
        else:
            continue
        if a.state == "acknowledged":
            acknowledged += 1
    agents = list(agents)
    down = [h for h in agents if h.state != "running"]
    reasons: list[str] = []
    if critical:
        reasons.append(f"{_count(critical, 'critical alert')} open")
    if warning:
        reasons.append(f"{_count(warning, 'warning')} open")
    if acknowledged:
        reasons.append(f"{acknowledged} of them acknowledged")
    reasons += [f"agent {h.name} is {h.state}" for h in down]
    own = [*problems, *(p for h in agents for p in h.problems)]
    reasons += own
    if alerts is None:
        reasons.append("no analyzer in this process: open alerts unknown")
    if silenced:
        reasons.append(f"{_count(silenced, 'silenced alert')} not counted")
    status: OverallStatus = ("critical" if critical else "degraded" if down or own
                             else "warning" if warning else "ok")
    return Overall(status, tuple(reasons), critical, warning, acknowledged, silenced)
