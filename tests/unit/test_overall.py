"""The overall status from open alerts and agent health: each rule, and what does not count."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from watchkeeper.events import AgentHealth, AgentState, Alert, AlertState, Severity
from watchkeeper.overall import overall

T = datetime(2024, 3, 4, 12, 0, tzinfo=timezone.utc)


def alert(severity: Severity, state: AlertState = "firing", *, silenced: bool = False,
          n: int = 0) -> Alert:
    return Alert(host="h", at=T, id=f"a{n}", fingerprint=f"fp{n}", rule="threshold",
                 metric="cpu.percent", severity=severity, state=state, since=T,
                 summary="x", silenced=silenced)


def agent(name: str, state: AgentState = "running") -> AgentHealth:
    return AgentHealth(name=name, state=state, interval_s=5.0)


RUNNING = [agent("sensor"), agent("analyzer")]


@pytest.mark.parametrize(("alerts", "agents", "status"), [
    ([], RUNNING, "ok"),
    ([alert("info")], RUNNING, "ok"),  # a baseline anomaly is information
    ([alert("warning")], RUNNING, "warning"),
    ([alert("critical"), alert("warning", n=1)], RUNNING, "critical"),
    ([alert("critical", "acknowledged")], RUNNING, "critical"),  # someone is on it: still down
    ([alert("critical", silenced=True)], RUNNING, "ok"),  # muted
    ([alert("critical", "resolved")], RUNNING, "ok"),
    ([], [agent("sensor", "paused"), agent("analyzer")], "degraded"),
    ([alert("warning")], [agent("sensor", "crashed")], "degraded"),  # blind beats a warning
    ([alert("critical")], [agent("sensor", "paused")], "critical"),  # a known outage first
])
def test_status_rules(alerts: list[Alert], agents: list[AgentHealth], status: str) -> None:
    assert overall(alerts, agents).status == status


def test_counts_and_reasons_say_why() -> None:
    found = overall([alert("critical", "acknowledged"), alert("critical", n=1),
                     alert("warning", silenced=True, n=2)], [agent("sensor", "paused")])
    assert (found.critical, found.warning, found.acknowledged, found.silenced) == (2, 0, 1, 1)
    assert found.reasons == ("2 critical alerts open", "1 of them acknowledged",
                             "agent sensor is paused", "1 silenced alert not counted")
    assert overall([], RUNNING).reasons == ()


def test_without_an_analyzer_the_alerts_are_unknown_and_said_so() -> None:
    found = overall(None, RUNNING)
    assert found.status == "ok"
    assert found.reasons == ("no analyzer in this process: open alerts unknown",)


def test_a_problem_of_watchkeepers_own_records_degrades_with_its_reason() -> None:
    broken = "audit log chain broken at #6: edited (record #6 was changed)"
    found = overall([alert("warning")], RUNNING, [broken])
    assert found.status == "degraded" and broken in found.reasons
    assert overall([alert("critical")], RUNNING, [broken]).status == "critical"
    assert overall([], RUNNING, []).status == "ok"


def test_a_running_agents_problem_degrades_a_warning_but_not_a_critical() -> None:
    """A notification route failing (the notifier's problem): degraded, in its words."""
    said = "notification route ops has failed for 16 min: connection refused"
    notifier = AgentHealth(name="notifier", state="running", interval_s=1, problems=(said,))
    found = overall([alert("warning")], [*RUNNING, notifier])
    assert (found.status, found.reasons) == ("degraded", ("1 warning open", said))
    assert overall([alert("critical")], [*RUNNING, notifier]).status == "critical"
    assert overall([], RUNNING).status == "ok"
