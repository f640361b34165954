"""The remediator's book of declared services: what each one does, and what is done about it.

One entry per declared service gathers what the RemediatorAgent sees first: the exit of a
managed process (the moment it happens), each sensor tick's state and check results, the
policy's verdicts on its restarts (refused for cooldown until 22:10:09, waiting for approval,
given up by flap protection), the attempts run and whether they stayed up for the stability
window. From that it derives the service's *condition* (ok, down, unhealthy, restarting,
crash_looping, failing) and one sentence on what was done and what comes next. ``changes()``
returns a :class:`~watchkeeper.events.ServiceReport` for every service whose condition or
remediation changed since the last call (what the agent publishes on ``services.<host>``);
``reports()`` returns every service's current one (what the API shows).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from watchkeeper.events import ServiceCondition, ServiceInfo, ServiceReport
from watchkeeper.remediation.policy import Decision
from watchkeeper.remediation.services.base import ServiceExit

#: Restarts in a row that did not stay up after which a down service is crash-looping.
CRASH_LOOP_AFTER = 2

_VERB = {"restart_service": "restart", "start_service": "start"}


def clock_time(at: datetime) -> str:
    """22:10:09 in this host's local time (what a person reading the log expects)."""
    return at.astimezone().strftime("%H:%M:%S")


def reset_hint(name: str) -> str:
    """How a person resets a failing service, in words."""
    return (f'reset it with POST /api/actions/reset {{"service": "{name}"}} or the Reset '
            "button on the dashboard")


@dataclass
class _Entry:
    name: str
    manager: str
    seen: bool = False
    state: str = "unknown"
    healthy: bool | None = None
    pid: int | None = None
    detail: str = ""
    last_check_at: datetime | None = None
    last_check_ok: bool | None = None
    last_check: str = ""
    restarts: int = 0
    unstable: int = 0
    busy: bool = False
    last_action: str | None = None
    last_action_at: datetime | None = None
    last_outcome: str | None = None
    last_message: str = ""
    refused: str | None = None
    refused_why: str = ""
    next_try_at: datetime | None = None
    approval_id: int | None = None
    failing_why: str | None = None
    since: datetime | None = None
    #: When the current pid was first seen: a new process may not answer its checks yet.
    pid_since: datetime | None = None
    condition: ServiceCondition | None = None
    published: tuple[object, ...] | None = None


class ServiceBook:
    """Per declared service: state, checks, attempts and refusals (not thread-safe: the
    agent's event loop writes it; the API reads whole reports, which are immutable)."""

    def __init__(self, host: str, *, wall: Callable[[], float] = time.time,
                 stable_s: Callable[[], float] = lambda: 5.0) -> None:
        self.host = host
        self._wall = wall
        self._stable_s = stable_s
        self._entries: dict[str, _Entry] = {}
        #: Reports of services no longer declared, not yet published.
        self._gone: list[ServiceReport] = []

    # ------------------------------------------------------------------ declared services

    def declare(self, services: Iterable[tuple[str, str]]) -> None:
        """The declared services as (name, manager); others are forgotten."""
        wanted = dict(services)
        for name in list(self._entries):
            if name not in wanted or self._entries[name].manager != wanted[name]:
                e = self._entries.pop(name)
                if e.seen and name not in wanted:
                    # Its alert, if one is open, resolves: there is nothing left to watch.
                    e.detail = ""
                    self._gone.append(self._report(e, "removed", self._now()).model_copy(
                        update={"remediation": "no longer declared in the configuration"}))
        for name, manager in wanted.items():
            self._entries.setdefault(name, _Entry(name, manager))

    @property
    def names(self) -> set[str]:
        """The services in the book."""
        return set(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._wall(), timezone.utc)

    # ------------------------------------------------------------------ what is seen

    def observe(self, info: ServiceInfo, at: datetime) -> None:
        """One sensor tick's view of the service (state and check results)."""
        e = self._entries.get(info.name)
        if e is None:
            return
        e.seen = True
        e.last_check_at = at
        e.last_check_ok = info.healthy
        e.last_check = ("; ".join(info.failing) or info.detail if info.healthy is False
                        else "all checks passed" if info.healthy else "no checks")
        if e.busy:
            # The attempt in flight knows better (a restart stops the process on purpose,
            # and a new one may not answer yet).
            return
        if info.pid != e.pid or e.pid_since is None:
            e.pid_since = at
        e.state, e.healthy, e.pid = info.state, info.healthy, info.pid
        detail = "; ".join(info.failing) or info.detail if (
            info.healthy is False or info.state != "running") else ""
        if not (detail and e.detail.startswith(detail)):  # keep the exit's fuller words
            e.detail = detail
        if info.state == "running" and info.healthy is not False and not e.busy:
            e.refused, e.refused_why, e.next_try_at, e.approval_id = None, "", None, None

    def exited(self, item: ServiceExit) -> None:
        """A managed process ended unexpectedly (seen the moment it happened)."""
        e = self._entries.get(item.service)
        if e is None:
            return
        e.seen = True
        e.state, e.healthy, e.pid = "failed", False, None
        up = f" after {item.uptime_s:.1f} s" if item.uptime_s is not None else ""
        e.detail = f"{item.message}{up}"

    # ------------------------------------------------------------------ what is done

    def decided(self, decision: Decision) -> None:
        """The policy's verdict on an automatic request for a service."""
        e = self._target(decision)
        if e is None:
            return
        if decision.verdict == "auto":
            e.refused, e.refused_why, e.next_try_at, e.approval_id = None, "", None, None
            return
        if decision.verdict == "approve":
            return  # ``waiting`` says so, with the approval's number
        e.refused = decision.check if decision.verdict == "refused" else "dry_run"
        e.refused_why = decision.why
        e.next_try_at = None
        if decision.retry_after_s is not None:
            e.next_try_at = datetime.fromtimestamp(self._wall() + decision.retry_after_s,
                                                   timezone.utc)

    def waiting(self, decision: Decision, approval_id: int | None) -> None:
        """The request waits for a human's approval (``approval_id``)."""
        e = self._target(decision)
        if e is not None:
            e.refused, e.refused_why, e.next_try_at = "approval", decision.why, None
            e.approval_id = approval_id

    def started(self, decision: Decision) -> None:
        """An attempt on the service runs now (until its stability window is over)."""
        e = self._target(decision)
        if e is None:
            return
        e.busy = True
        e.restarts += 1
        e.last_action = decision.request.action
        e.last_action_at = self._now()
        e.last_outcome, e.last_message = "running", ""
        e.refused, e.refused_why, e.next_try_at, e.approval_id = None, "", None, None

    def finished(self, decision: Decision, *, ok: bool, outcome: str, message: str,
                 state: str | None = None) -> None:
        """The attempt is over: ``ok`` only if the service stayed up for the window."""
        e = self._target(decision)
        if e is None:
            return
        e.busy = False
        e.last_message = message
        if ok:
            e.last_outcome, e.unstable = "ok", 0
            e.state, e.healthy, e.detail = "running", True, ""
        else:
            # It ran but did not hold: "unstable"; it could not even run: its outcome.
            e.last_outcome = "unstable" if outcome == "ok" else outcome
            e.unstable += 1
            if e.state == "failed" and e.pid is None:
                return  # its exit said why already
            if state is not None and state != "running":
                e.state, e.pid = state, None
            if e.state == "running":
                e.healthy = False
            e.detail = message

    def fresh(self, name: str) -> bool:
        """Whether the service's process appeared less than the stability window ago: a
        new process may not answer its checks yet (a start period, like Docker's)."""
        e = self._entries.get(name)
        return e is not None and e.pid_since is not None and (
            self._now() - e.pid_since).total_seconds() < self._stable_s()

    def failing(self, name: str, why: str | None) -> None:
        """The policy's failing mark (None: cleared, by a reset or a healthy window)."""
        e = self._entries.get(name)
        if e is not None:
            e.failing_why = why
            if why is None:
                e.unstable = 0
                if e.refused in ("flap", "learning"):
                    e.refused, e.refused_why, e.next_try_at = None, "", None

    # ------------------------------------------------------------------ reading

    def _target(self, decision: Decision) -> _Entry | None:
        t = decision.target
        if t is None or t.kind != "service":
            return None
        return self._entries.get(t.name)

    def _condition(self, e: _Entry) -> ServiceCondition:
        if e.failing_why is not None:
            return "failing"
        if e.busy:
            return "crash_looping" if e.unstable >= CRASH_LOOP_AFTER else "restarting"
        if e.state == "starting":
            return "starting"
        if e.state == "running":
            if e.healthy is not False:
                return "ok"
            # A process that started moments ago (watchkeeper's own start, a restart by
            # someone else) may not answer yet: for the stability window that is
            # starting, not an outage.
            return "starting" if self.fresh(e.name) else "unhealthy"
        if e.state == "unknown":
            return "unhealthy"
        return "crash_looping" if e.unstable >= CRASH_LOOP_AFTER else "down"

    def _remediation(self, e: _Entry, condition: ServiceCondition) -> str:
        verb = _VERB.get(e.last_action or "", "restart")
        done = (f"watchkeeper restarted it {e.restarts} time{'s' if e.restarts != 1 else ''}"
                if e.restarts else "")
        if condition == "failing":
            next_ = f"remediation gave up ({e.failing_why}); {reset_hint(e.name)}"
        elif e.busy:
            stable = self._stable_s()
            next_ = (f"{verb} running; it counts as fixed after {stable:g} s up and healthy"
                     if stable > 0 else f"{verb} running")
        elif e.refused == "approval":
            which = f" #{e.approval_id}" if e.approval_id is not None else ""
            next_ = f"{verb} waits for approval{which}"
        elif e.refused is not None:
            if e.next_try_at is not None:
                next_ = f"{verb} refused: {e.refused}, next try at {clock_time(e.next_try_at)}"
            else:
                why = e.refused_why.removeprefix("refused: ")
                next_ = f"{verb} refused: {e.refused}: {why}"
        elif condition != "ok" and e.last_outcome not in (None, "ok", "running"):
            next_ = f"last {verb} {e.last_outcome}: {e.last_message}"
        else:
            next_ = ""
        return "; ".join(p for p in (done, next_) if p)

    def _report(self, e: _Entry, condition: ServiceCondition, at: datetime) -> ServiceReport:
        return ServiceReport(
            host=self.host, at=at, service=e.name, manager=e.manager, condition=condition,
            state=e.state, healthy=e.healthy, pid=e.pid,
            detail=e.detail if condition != "ok" else "", since=e.since, restarts=e.restarts,
            last_action=e.last_action, last_action_at=e.last_action_at,
            last_outcome=e.last_outcome, last_message=e.last_message, refused=e.refused,
            next_try_at=e.next_try_at, remediation=self._remediation(e, condition))

    def _current(self, e: _Entry, at: datetime) -> ServiceReport:
        condition = self._condition(e)
        if condition != e.condition:
            fine = ("ok", "starting")
            # "since" is when the outage (or the good stretch) began, not the last step.
            if e.condition is None or (condition in fine) != (e.condition in fine):
                e.since = at
            e.condition = condition
        return self._report(e, condition, at)

    def changes(self) -> list[ServiceReport]:
        """Reports of the services whose condition or remediation changed since last time
        (only once the service was seen at all)."""
        at = self._now()
        out, self._gone = self._gone, []
        for e in self._entries.values():
            if not e.seen:
                continue
            report = self._current(e, at)
            key = (report.condition, report.remediation, report.detail, report.pid,
                   report.state, report.healthy)
            if key != e.published:
                e.published = key
                out.append(report)
        return out

    def reports(self) -> list[ServiceReport]:
        """Every declared service's current report, in configured order."""
        at = self._now()
        return [self._current(e, at) for e in self._entries.values()]

    def report(self, name: str) -> ServiceReport | None:
        """The current report of ``name``, or None when it is not declared."""
        e = self._entries.get(name)
        return None if e is None else self._current(e, self._now())

    def checked(self, name: str) -> tuple[datetime | None, bool | None, str]:
        """When the checks of ``name`` last ran, whether they passed, and what they said."""
        e = self._entries.get(name)
        if e is None:
            return None, None, ""
        return e.last_check_at, e.last_check_ok, e.last_check

    def counters(self) -> list[tuple[str, bool, int]]:
        """(name, up, restarts) per service, for the Prometheus exposition."""
        return [(e.name, self._condition(e) == "ok", e.restarts)
                for e in self._entries.values()]
