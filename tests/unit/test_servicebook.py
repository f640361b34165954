"""The ServiceBook: a service's condition and, in words, what remediation did and does next,
from real policy decisions on injected clocks (no test depends on today's date)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from watchkeeper.analysis.services import ServiceDetector
from watchkeeper.events import ServiceInfo
from watchkeeper.remediation.policy import ActionRequest, Decision, Policy, PolicyState
from watchkeeper.remediation.servicebook import ServiceBook, clock_time
from watchkeeper.remediation.services.base import ServiceExit

from ..conftest import FakeClock, make_settings

HOST = "h1"
#: A fixed instant for the wall clock: 2030-03-04 05:06:07 UTC.
WALL0 = datetime(2030, 3, 4, 5, 6, 7, tzinfo=timezone.utc).timestamp()


class Env:
    def __init__(self, tmp_path: Path, **remediation: Any) -> None:
        rem: dict[str, Any] = {"startup_grace_s": 0, **remediation}
        self.settings = make_settings(tmp_path, services={"web": {"start": ["/bin/true"]}},
                                      remediation=rem, agents={"healing_cooldown": 60})
        self.mono = FakeClock(1000.0)
        self.wall = FakeClock(WALL0)
        self.policy = Policy(lambda: self.settings, monotonic=self.mono, wall=self.wall,
                             state=PolicyState())
        self.book = ServiceBook(HOST, wall=self.wall, stable_s=lambda: 5.0)
        self.book.declare([("web", "process")])

    def decide(self, *, supervised: bool = False) -> Decision:
        d = self.policy.decide(ActionRequest(action="restart_service",
                                             params={"service": "web"}, host=HOST,
                                             supervised=supervised, reasoning="test"))
        self.book.decided(d)
        return d

    def observe(self, state: str, healthy: bool | None, *failing: str) -> None:
        self.book.observe(ServiceInfo(name="web", manager="process", state=state,
                                      healthy=healthy, pid=42 if state == "running" else None,
                                      failing=failing),
                          datetime.fromtimestamp(self.wall(), timezone.utc))

    def report(self) -> Any:
        report = self.book.report("web")
        assert report is not None
        return report


def test_a_cooldown_refusal_names_the_time_of_the_next_try(tmp_path: Path) -> None:
    env = Env(tmp_path)
    env.observe("running", True)
    first = env.decide()
    env.policy.begin(first)
    env.book.started(first)
    env.policy.end(first, success=True)
    env.book.finished(first, ok=True, outcome="ok", message="web is running and healthy")
    env.observe("running", False, "http://127.0.0.1:1/: connection refused")
    env.mono.advance(10)
    env.wall.advance(10)
    refused = env.decide()
    assert refused.check == "cooldown"
    report = env.report()
    at = datetime.fromtimestamp(WALL0 + 10 + 50, timezone.utc)
    assert report.condition == "unhealthy" and report.refused == "cooldown"
    assert report.next_try_at == at
    assert report.remediation == (f"watchkeeper restarted it 1 time; restart refused: "
                                  f"cooldown, next try at {clock_time(at)}")
    # The alert carries the same words, and its summary says what is wrong.
    desc = ServiceDetector.describe(report)
    assert desc.summary == ("Service web fails its health checks: "
                            "http://127.0.0.1:1/: connection refused")
    assert desc.context == report.remediation


def test_waiting_for_approval_and_lasting_refusals_are_said_plainly(tmp_path: Path) -> None:
    env = Env(tmp_path, actions={"restart_service": "approve"})
    env.book.exited(ServiceExit(service="web", pid=42, returncode=-9, signal="SIGKILL",
                                expected=False, uptime_s=3.25, message="killed by SIGKILL"))
    d = env.decide(supervised=True)
    assert d.verdict == "approve"
    env.book.waiting(d, 7)
    report = env.report()
    assert report.condition == "down" and report.detail == "killed by SIGKILL after 3.2 s"
    assert report.remediation == "restart waits for approval #7"
    env.settings = make_settings(tmp_path, services={"web": {"start": ["/bin/true"]}},
                                 remediation={"actions": {"restart_service": "off"}})
    env.decide(supervised=True)
    assert env.report().remediation == (
        "restart refused: mode: restart_service is off (remediation.actions.restart_service)")


def test_the_breaker_says_when_budget_is_free_again(tmp_path: Path) -> None:
    env = Env(tmp_path, budget_per_hour=1, backoff_initial_s=0)
    env.observe("running", True)
    d = env.decide(supervised=True)
    env.policy.begin(d)
    env.book.started(d)
    env.policy.end(d, success=False)
    env.book.finished(d, ok=False, outcome="ok", message="web exited with code 1")
    env.mono.advance(100)
    env.wall.advance(100)
    assert env.decide(supervised=True).check == "breaker"
    at = datetime.fromtimestamp(WALL0 + 3600, timezone.utc)
    report = env.report()
    assert report.next_try_at == at and report.last_outcome == "unstable"
    assert report.remediation.endswith(f"restart refused: breaker, next try at {clock_time(at)}")


def test_conditions_through_a_crash_loop(tmp_path: Path) -> None:
    env = Env(tmp_path)
    assert env.book.changes() == []  # nothing said before the service was seen at all
    env.observe("running", True)
    (first,) = env.book.changes()
    assert first.condition == "ok" and first.remediation == ""
    assert env.book.changes() == []  # only changes are reported
    conditions = []
    for _ in range(3):
        env.book.exited(ServiceExit(service="web", pid=42, returncode=1, expected=False,
                                    uptime_s=2.0, message="exited with code 1"))
        conditions.append(env.report().condition)
        d = env.decide(supervised=True)
        env.policy.begin(d)
        env.book.started(d)
        conditions.append(env.report().condition)
        env.policy.end(d, success=False)
        env.book.finished(d, ok=False, outcome="ok", message="web exited with code 1")
        env.mono.advance(10)
    assert conditions == ["down", "restarting", "down", "restarting", "crash_looping",
                          "crash_looping"]
    env.book.failing("web", "flap protection: 3 attempts within 300 s")
    report = env.report()
    assert report.condition == "failing" and "remediation gave up (flap protection" in \
        report.remediation
    env.book.failing("web", None)  # reset
    assert env.report().condition == "down"


def _report(condition: str, at: float, **extra: Any) -> Any:
    from watchkeeper.events import ServiceReport

    t = datetime.fromtimestamp(at, timezone.utc)
    return ServiceReport(host=HOST, at=t, service="web", manager="process",
                         condition=condition,  # type: ignore[arg-type]
                         state="failed" if condition != "ok" else "running", since=t, **extra)


def test_a_service_alert_is_acked_like_any_other_and_resolves_after_a_restart(
        tmp_path: Path) -> None:
    """Through the engine's AlertManager: fires, updates with what remediation does,
    acknowledges, and a restored open alert resolves at the next good report."""
    from watchkeeper.analysis.engine import Analyzer

    settings = make_settings(tmp_path)
    engine = Analyzer(lambda: settings, host=HOST)
    (fired,) = engine.observe_service(_report("down", WALL0, detail="killed by SIGKILL"))
    assert (fired.rule, fired.metric, fired.dimension) == ("service", "service.up", "web")
    assert fired.labels["change"] == "new" and fired.severity == "critical"
    assert fired.summary == "Service web is down: killed by SIGKILL"
    (updated,) = engine.observe_service(_report(
        "down", WALL0 + 1, detail="killed by SIGKILL",
        remediation="restart refused: backoff, next try at 05:06:09"))
    assert updated.labels["change"] == "updated" and updated.id == fired.id
    assert updated.context == "restart refused: backoff, next try at 05:06:09"
    acked = engine.ack(fired.fingerprint, "alice")
    assert acked is not None and acked.state == "acknowledged"

    # watchkeeper restarts: the open alert is restored from the history, not dropped...
    later = Analyzer(lambda: settings, host=HOST)
    assert [a.id for a in later.restore([fired, updated, acked])] == [fired.id]
    # ...and resolves when the remediator next reports the service healthy.
    (resolved,) = later.observe_service(_report("ok", WALL0 + 60))
    assert resolved.state == "resolved" and resolved.id == fired.id
    assert resolved.summary == "Service web is running and healthy again"
    assert later.active_alerts() == []


def test_a_process_that_just_started_is_starting_not_unhealthy(tmp_path: Path) -> None:
    """At watchkeeper's start the first tick often comes before the service answers: no
    alert for that, unless it still fails its checks after the stability window."""
    env = Env(tmp_path)
    env.observe("running", False, "connection refused")
    assert env.report().condition == "starting"
    env.wall.advance(4.9)
    env.observe("running", False, "connection refused")
    assert env.report().condition == "starting"
    env.wall.advance(0.2)
    env.observe("running", False, "connection refused")
    assert env.report().condition == "unhealthy"


def test_a_service_no_longer_declared_resolves_its_alert(tmp_path: Path) -> None:
    from watchkeeper.analysis.engine import Analyzer

    env = Env(tmp_path)
    engine = Analyzer(lambda: env.settings, host=HOST)
    env.book.exited(ServiceExit(service="web", pid=42, returncode=1, expected=False,
                                message="exited with code 1"))
    (down,) = env.book.changes()
    (fired,) = engine.observe_service(down)
    env.book.declare([])  # reloaded without it
    env.wall.advance(1)
    (gone,) = env.book.changes()
    assert gone.condition == "removed" and env.book.reports() == []
    (resolved,) = engine.observe_service(gone)
    assert resolved.id == fired.id and resolved.state == "resolved"
    assert resolved.summary == "Service web is no longer declared"
    assert env.book.changes() == []
