"""RemediatorAgent: the fixer. Every action goes through the policy and the audit log.

Requests come from three places: a managed service's exit (noticed the moment it happens,
for the fastest recovery), a declared service the sensor sees down or unhealthy, and the
actions suggested on alerts (by rules or the LLM, which get no special treatment). Each is
decided by the policy; an ``auto`` decision's intent is committed to the audit log before
the side effect, the action runs, its verification decides success, and the outcome is
appended. ``approve`` decisions wait in the audit log for one call to approve or reject.

A ``manager: process`` service that is down is restarted as a process supervisor would
(``ActionRequest.supervised``: no start-up grace, no cooldown); when backoff holds it back,
the agent asks again at the backoff's end rather than at the next tick, and an exit during
an attempt's stability window fails that attempt first, so backoff and flap protection
count it. What each declared service does and what is done about it is kept in a
:class:`~watchkeeper.remediation.servicebook.ServiceBook` and published as a ServiceReport
on ``services.<host>`` when it changes (the analyzer turns it into the service's alert). A
person's ``reset`` of a failing target is audited and announced like every other step.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import Field, JsonValue

from watchkeeper.agents.base import BaseAgent
from watchkeeper.agents.commands import Args, CommandError, Name, NoArgs, Text, Verb
from watchkeeper.bus import Subscription
from watchkeeper.config import Settings
from watchkeeper.events import Alert, Command, MetricSnapshot, RemediationEvent
from watchkeeper.personality import mark
from watchkeeper.remediation.actions import get_action
from watchkeeper.remediation.actions.base import ActionContext, Refused
from watchkeeper.remediation.actions.stop_process import pin
from watchkeeper.remediation.actions.stop_process import refusal as stop_process_refusal
from watchkeeper.remediation.audit import Approval, ApprovalError, ApprovalState, AuditLog
from watchkeeper.remediation.learning import success_of
from watchkeeper.remediation.policy import (
    ActionRequest,
    Decision,
    Policy,
    PolicyError,
    Target,
    plain_secs,
)
from watchkeeper.remediation.registry import (
    REGISTRY,
    ActionRefused,
    Params,
    StopProcessParams,
    parse_params,
)
from watchkeeper.remediation.servicebook import ServiceBook
from watchkeeper.remediation.services import Services
from watchkeeper.remediation.services.base import ServiceExit, UnknownService

log = logging.getLogger(__name__)


def actions_topic(host: str) -> str:
    return f"actions.{host}"


def services_topic(host: str) -> str:
    return f"services.{host}"


class UnknownTarget(LookupError):
    """A reset named a target that is neither declared nor known to the policy."""


#: Ids stored in SQLite are signed 64-bit integers; anything larger cannot exist.
MAX_ID = 2**63 - 1

ApprovalId = Annotated[int, Field(ge=1, le=MAX_ID)]


class ApprovalArgs(Args):
    approval_id: ApprovalId


class RejectArgs(Args):
    approval_id: ApprovalId
    reason: Text = ""


class ResetArgs(Args):
    #: kind:name, e.g. service:web
    target: Annotated[Text, Field(min_length=3,
                                  pattern=r"^(service|pid|root|log|script|host|action):.+$")]


class ApprovalsArgs(Args):
    state: ApprovalState | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 100


class ActionsArgs(Args):
    limit: Annotated[int, Field(ge=1, le=1000)] = 200


class RemediateArgs(Args):
    action: Name
    params: dict[str, JsonValue] = Field(default_factory=dict)
    dry_run: bool = False
    reason: Text = ""


class RemediatorAgent(BaseAgent):
    """Heals what the policy allows, verifies it worked, and says so."""

    name = "remediator"

    def __init__(self, *, services: Services, policy: Policy, audit: AuditLog,
                 psutil_module: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.services = services
        self.policy = policy
        self.audit = audit
        self._psutil = psutil_module
        self._sub: Subscription | None = None
        self._requests: list[ActionRequest] = []
        self._tasks: set[asyncio.Task[None]] = set()
        # A target refused for a reason that passes with time is not asked again (and not
        # audited again) before then: one audit row per refusal, not one per tick.
        self._quiet_until: dict[str, float] = {}
        self._unsubscribe: Any = None
        # Ticks in a row each service has been seen running but failing its checks.
        self._unhealthy_ticks: dict[str, int] = {}
        self._reconciled = False
        # Approvals that expired unanswered since this agent started are announced once.
        self._expiry_seen_until = datetime.now(timezone.utc)
        self._next_expiry_check = 0.0
        #: What each declared service does and what is done about it (API, alerts).
        self.book = ServiceBook(self.host, wall=lambda: self._wall().timestamp(),
                                stable_s=lambda: self.config.current.remediation.stable_window_s)
        #: Services with an attempt in flight -> whether it died meanwhile.
        self._in_flight: dict[str, bool] = {}
        #: Supervised restarts held back by backoff: the timer that asks again.
        self._retries: dict[str, asyncio.TimerHandle] = {}

    # ------------------------------------------------------------------ lifecycle

    def interval(self, settings: Settings) -> float:
        return 0.01  # event-driven: each check waits in next_item (see _perform_check)

    async def setup(self) -> None:
        if self._sub is None:
            self._sub = self.bus.subscribe(f"*.{self.host}", name=self.name, maxsize=1000)
        if self._unsubscribe is None:
            self._unsubscribe = self.services.on_exit(self._on_exit)
        self._declare()
        if not self._reconciled:
            self._reconciled = True
            await self._reconcile()

    async def teardown(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.config.current.agents.check_timeout)
        await self.policy.persist()

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        for handle in self._retries.values():
            handle.cancel()
        self._retries.clear()

    def _declare(self) -> None:
        """Keep the book in line with the declared services (they change on reload)."""
        names = self.services.names
        self.book.declare((n, self.services.config(n).manager) for n in names)
        failing = {f.target.name: f"flap protection: {f.why}" for f in self.policy.failing()
                   if f.host == self.host and f.target.kind == "service"}
        for name in names:
            self.book.failing(name, failing.get(name))

    def _managed(self, name: str) -> bool:
        """Whether watchkeeper itself runs ``name`` (manager: process), as a supervisor."""
        try:
            return self.services.config(name).manager == "process"
        except UnknownService:
            return False

    async def _reconcile(self) -> None:
        """Intents without an outcome (killed between the two): check, never repeat blindly."""
        for intent in self.audit.unfinished_intents():
            target = intent.target or "?"
            live = ""
            if intent.action in ("restart_service", "start_service"):
                name = target.split(":", 1)[-1]
                if name in self.services:
                    status = await self.services.status(name)
                    live = f"; {name} is now {status.state}" + (
                        "" if status.healthy is None else
                        f", {'healthy' if status.healthy else 'unhealthy'}")
            await self.audit.record_outcome(
                intent.id, outcome="interrupted",
                message=f"watchkeeper stopped before {intent.action} on {target} reported back"
                        f"{live}; not repeated blindly: the policy decides again if needed")
            log.warning("remediation: %s on %s was interrupted by a restart%s", intent.action,
                        target, live)

    # ------------------------------------------------------------------ inputs

    def _on_exit(self, event: ServiceExit) -> None:
        if event.expected:
            return
        self.book.exited(event)
        if event.service in self._in_flight:
            # Its own attempt is still settling: that attempt fails now, and asks again
            # once it has ended (see _run), so the policy counts it first.
            self._in_flight[event.service] = True
        else:
            self._requests.append(self._supervised(
                event.service, f"{event.service} exited unexpectedly: {event.message}"))
        self.wake()  # an exit is acted on (and reported) now, not at the next tick

    def _supervised(self, name: str, reasoning: str) -> ActionRequest:
        return ActionRequest(action="restart_service", params={"service": name},
                             host=self.host, reasoning=reasoning,
                             supervised=self._managed(name))

    def _from_snapshot(self, snap: MetricSnapshot) -> None:
        if set(self.services.names) != self.book.names:
            self._declare()  # the services section was reloaded
        for svc in snap.services:
            self.book.observe(svc, snap.at)
            target = Target.service(svc.name)
            if svc.state == "running" and svc.healthy is not False:
                self._unhealthy_ticks.pop(svc.name, None)
                if self.policy.mark_healthy(target, host=self.host):
                    self.book.failing(svc.name, None)
                continue
            if svc.state == "starting" or svc.name in self._in_flight:
                continue  # its own attempt decides; a restart stops it on purpose
            if svc.state == "running":
                # Running but failing its checks: a process that appeared less than
                # remediation.stable_window_s ago (started by watchkeeper or anyone) may not
                # answer yet, and after that one bad tick is not enough; stopped or failed
                # acts at once.
                if self.book.fresh(svc.name):
                    continue
                ticks = self._unhealthy_ticks[svc.name] = self._unhealthy_ticks.get(
                    svc.name, 0) + 1
                if ticks < 2:
                    continue
            self.policy.mark_unhealthy(target, host=self.host)
            if svc.name in self._retries:
                continue  # a supervised retry is already timed
            why = "; ".join(svc.failing) or svc.detail or svc.state
            reasoning = (f"{svc.name} is {svc.state}"
                         f"{', failing its checks' if svc.healthy is False else ''}: {why}")
            if svc.state in ("stopped", "failed") and self._managed(svc.name):
                self._requests.append(self._supervised(svc.name, reasoning))
            else:
                self._requests.append(ActionRequest(
                    action="restart_service", params={"service": svc.name}, host=self.host,
                    reasoning=reasoning))

    def _from_alert(self, alert: Alert) -> None:
        if alert.state != "firing" or alert.silenced:
            return
        change = alert.labels.get("change", "new")
        if change not in ("new", "escalated", "updated", "assessed"):
            return
        for suggestion in alert.suggested_actions:
            if suggestion.action == "notify_only":
                continue  # telling people is the communicator's job
            if change == "assessed" and suggestion.source != "llm":
                continue  # the rules' own suggestions were submitted with the alert already
            self._requests.append(ActionRequest.from_suggestion(
                suggestion, host=self.host, fingerprint=alert.fingerprint))

    # ------------------------------------------------------------------ the check

    async def _perform_check(self) -> None:
        sub = self._sub
        if sub is None:
            return
        await self._announce_expired()
        if not self._requests:  # a service exit already waits: act on it first
            for _topic, event in await self.next_batch(sub):
                if isinstance(event, MetricSnapshot):
                    self._from_snapshot(event)
                elif isinstance(event, Alert):
                    self._from_alert(event)
        requests, self._requests = self._requests, []
        for request in requests:
            if request.supervised and await self._running_already(request):
                continue
            await self.submit(request)
        await self.publish_reports()

    async def _running_already(self, request: ActionRequest) -> bool:
        """A supervised restart is for a process that is down: not if it runs again."""
        name = str(request.params.get("service", ""))
        if name in self._in_flight or self.services.reconfiguring:
            # Being set up anew (a reload): its stop was on purpose and its start is the
            # reload's; if it is still down afterwards, the next tick asks again.
            return True
        status = await self.services.status(name, checks=False)
        return status.state in ("running", "starting")

    async def publish_reports(self) -> None:
        """Publish the services whose condition or remediation changed (services.<host>)."""
        for report in self.book.changes():
            await self.bus.publish(services_topic(self.host), report)


    async def submit(self, request: ActionRequest, *, approved_by: str | None = None
                     ) -> Decision:
        """Decide one request, audit the decision, and run it if the policy says auto."""
        key = (f"{request.action}:{sorted(request.params.items())}"
               f"{':supervised' if request.supervised else ''}")
        now = time.monotonic()
        # A person asking (API, dashboard) always gets a fresh verdict, and their what-ifs
        # and refusals do not hold back the agent's own requests.
        human = request.source == "operator"
        if approved_by is None and not human and self._quiet_until.get(key, 0.0) > now:
            return Decision(request=request, verdict="refused", check="cooldown",
                            why="already refused recently; waiting before asking again")
        decision = self.policy.decide(request, approved_by=approved_by,
                                      check=self._checker(request.action),
                                      target_refusal=await self._target_refusal(request))
        if not human:
            self._note_refusal(key, decision, approved_by, now)
            self.book.decided(decision)
            if decision.verdict == "refused" and decision.check in ("flap", "learning") \
                    and decision.target is not None and decision.target.kind == "service":
                self.book.failing(decision.target.name, self._gave_up(decision))
            if request.supervised:
                self._retry_later(request, decision)
        # One request per target waits for a human. The agent's own asking again is not
        # audited once per tick while it waits; a person's request is, and gets that one.
        waiting = (self._waiting(decision)
                   if decision.verdict == "approve" and approved_by is None else None)
        if waiting is not None and not human:
            self._quiet_until[key] = now + self.config.current.agents.check_interval * 5
            self.book.waiting(decision, waiting.id)
            return waiting.decision
        await self.audit.record_decision(decision)
        # The communicator tells people about these events; the agent only publishes them.
        if decision.notice is not None:
            await self._publish("notice", decision, message=decision.notice.message)
        if decision.escalate:
            await self._publish("escalated", decision)
        if decision.runs:
            try:
                self.policy.begin(decision)  # synchronously after decide: no slot race
            except PolicyError as exc:
                log.warning("remediation: %s", exc)
                return decision
            if decision.target is not None and decision.target.kind == "service":
                self._in_flight.setdefault(decision.target.name, False)
                self.book.started(decision)
            task = asyncio.create_task(self._run(decision), name=f"action-{decision.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif waiting is not None:
            return waiting.decision
        elif decision.verdict == "approve" and approved_by is None:
            approval = await self.audit.add_pending(
                decision, ttl_s=self.config.current.remediation.approval_ttl_s)
            log.debug("remediation: %s on %s waits for approval #%d", request.action,
                      decision.target, approval)
            # The target shown is the checked one; the parameters as the proposer gave them
            # go with it, so what a human approves cannot be mislabelled.
            await self._publish("pending", decision, approval_id=approval,
                                message=f"{decision.why}; parameters as given: "
                                        f"{_compact(request.params)}")
            if not human:
                self.book.waiting(decision, approval)
        elif decision.verdict == "dry_run":
            preview = await get_action(request.action).preview(decision.params,
                                                               self.action_context())
            decision = decision.model_copy(update={"preview": preview.summary})
            log.info(mark(self.config.current.personality.level, "🧪") + "dry run: %s",
                     preview.summary)
            await self._publish("decided", decision, message=preview.summary)
        else:
            log.debug("remediation: %s", decision.why)
            await self._publish("decided", decision)
        return decision

    def _checker(self, name: str) -> Callable[[Params], Params] | None:
        """The action's own check of its parameters, for the policy's first step (None for
        an action the registry does not know: the policy refuses it by itself)."""
        try:
            action = get_action(name)
        except ActionRefused:
            return None
        ctx = self.action_context()

        def check(params: Params) -> Params:
            try:
                return action.check(params, ctx)
            except Refused as exc:
                raise ActionRefused(str(exc)) from None
        return check

    async def _target_refusal(self, request: ActionRequest) -> str | None:
        """Why the live target can never be acted on, checked when asked (and again when
        approved): an approval that cannot succeed is refused at once, not queued."""
        if request.action != "stop_process":
            return None
        try:
            params = parse_params(request.action, request.params)
        except ActionRefused:
            return None  # the policy's registry check says why
        assert isinstance(params, StopProcessParams)
        return await asyncio.to_thread(stop_process_refusal, self.action_context(), params)

    async def _announce_expired(self) -> None:
        """Tell people (and open dashboards) when an approval expires unanswered."""
        now = time.monotonic()
        if now < self._next_expiry_check:
            return
        self._next_expiry_check = now + self.config.current.agents.check_interval
        expired = [a for a in self.audit.approvals("expired", limit=100)
                   if a.expires_at is not None and a.expires_at > self._expiry_seen_until]
        for approval in sorted(expired, key=lambda a: (a.expires_at, a.id)):
            assert approval.expires_at is not None
            self._expiry_seen_until = max(self._expiry_seen_until, approval.expires_at)
            asked = approval.expires_at - approval.requested_at
            await self._publish("expired", approval.decision, approval_id=approval.id,
                                message=f"approval #{approval.id} expired unanswered after "
                                        f"{plain_secs(round(asked.total_seconds(), 3))}")

    def _waiting(self, decision: Decision) -> Approval | None:
        """The pending approval for the same action on the same target, if one waits."""
        return next((a for a in self.audit.pending()
                     if a.decision.request.action == decision.request.action
                     and a.decision.target == decision.target), None)

    def _note_refusal(self, key: str, decision: Decision, approved_by: str | None,
                      now: float) -> None:
        """Ask again only once the refusal can have passed: at its retry time; for an action
        still running on the target, next tick; for a lasting refusal (mode off, not
        allowed, failing) in five minutes."""
        if decision.verdict != "refused" or approved_by is not None:
            self._quiet_until.pop(key, None)
            return
        if decision.retry_after_s is not None:
            quiet = decision.retry_after_s
        elif decision.check == "concurrency":
            quiet = self.config.current.agents.check_interval
        else:
            quiet = 300.0
        self._quiet_until[key] = now + quiet

    def _gave_up(self, decision: Decision) -> str:
        """Why automatic tries stopped on a service, short (for its report and alert)."""
        marked = next((f for f in self.policy.failing()
                       if f.host == self.host and f.target == decision.target), None)
        if marked is not None:
            return f"flap protection: {marked.why}"
        why = decision.why.removeprefix("refused: ").removeprefix("escalate: ")
        return why.split("; ", 1)[0]

    def _retry_later(self, request: ActionRequest, decision: Decision) -> None:
        """A supervised restart held back for a while (backoff, breaker) is asked again at
        its time, as supervisord does: not at the next tick, nor after a cooldown."""
        name = str(request.params.get("service", ""))
        old = self._retries.pop(name, None)
        if old is not None:
            old.cancel()
        if decision.verdict != "refused" or decision.retry_after_s is None:
            return

        def again() -> None:
            self._retries.pop(name, None)
            self._requests.append(self._supervised(
                name, f"{name} is still down; retrying after {decision.check}"))
            self.wake()

        # A hair after the refusal's end, so the quiet period is over when it is asked.
        self._retries[name] = asyncio.get_running_loop().call_later(
            decision.retry_after_s + 0.02, again)

    async def _run(self, decision: Decision) -> None:
        action = get_action(decision.request.action)
        success: bool | None = None
        try:
            await self.policy.persist()  # the attempt counts even if we die mid-action
            intent = await self.audit.record_intent(decision)
            await self._publish("started", decision, intent_id=intent)
            ctx = self.action_context()
            result = await action.execute(decision.params, ctx)
            verification = None
            if result.outcome == "ok":
                verification = await action.verify(decision.params, ctx, result)
            success = success_of(result, verification)
            await self.audit.record_outcome(intent, result, verification)
            text = result.message + (f"; {verification.message}" if verification else "")
            state = verification.details.get("state") if verification is not None else None
            self.book.finished(decision, ok=bool(success), outcome=result.outcome,
                               message=verification.message if verification else result.message,
                               state=state if isinstance(state, str) else None)
            await self._publish("finished", decision, intent_id=intent, outcome=result.outcome,
                                verified=None if verification is None else verification.ok,
                                message=text, duration_s=result.duration_s)
        except Exception:
            log.exception("remediation: running %s failed", decision.request.action)
            success = False
            self.book.finished(decision, ok=False, outcome="failed",
                               message="the action raised; the log has the details")
        finally:
            self.policy.end(decision, success=success)
            await self.policy.persist()
            self._ended(decision)

    def _ended(self, decision: Decision) -> None:
        """After an attempt on a service: if it died meanwhile, the supervisor asks again
        (now that the failed attempt counts for backoff and flap protection)."""
        target = decision.target
        if target is None or target.kind != "service":
            return
        died = self._in_flight.pop(target.name, False)
        if died:
            self._requests.append(self._supervised(
                target.name, f"{target.name} exited again while its restart settled"))
        self.wake()  # publish its report now

    def action_context(self) -> ActionContext:
        """What actions run with: the current settings, psutil, the service managers."""
        settings = self.config.current
        extra: dict[str, Any] = {"psutil": self._psutil} if self._psutil is not None else {}
        return ActionContext(settings=settings.remediation, services=self.services,
                             verify_timeout_s=settings.remediation.verify_timeout_s, **extra)

    async def _publish(self, phase: Literal["decided", "pending", "rejected", "expired",
                                            "started", "finished", "escalated", "notice",
                                            "reset"],
                       decision: Decision, **fields: Any) -> None:
        req = decision.request
        fields.setdefault("message", decision.why)
        fields.setdefault("by", decision.approved_by)
        await self.bus.publish(actions_topic(self.host), RemediationEvent(
            host=self.host, phase=phase, action=req.action,
            target=str(decision.target) if decision.target else "", verdict=decision.verdict,
            why=decision.why, source="supervisor" if req.supervised else req.source,
            decision_id=decision.id,
            fingerprint=req.fingerprint, **fields))

    # ------------------------------------------------------------------ commands

    def verbs(self) -> dict[str, Verb]:
        """approve, reject, reset, remediate; the declared services (a read)."""
        return {**super().verbs(),
                "approve": Verb(self._approve_verb, ApprovalArgs),
                "reject": Verb(self._reject_verb, RejectArgs),
                "reset": Verb(self._reset_verb, ResetArgs),
                "remediate": Verb(self._remediate_verb, RemediateArgs),
                "services": Verb(self._services_verb, mutating=False, any_state=True),
                "approvals": Verb(self._approvals_verb, ApprovalsArgs, mutating=False,
                                  any_state=True),
                "actions": Verb(self._actions_verb, ActionsArgs, mutating=False,
                                any_state=True)}

    def _pending_approval(self, approval_id: int) -> None:
        approval = self.audit.approval(approval_id)
        if approval is None:
            raise CommandError("not_found", f"no approval #{approval_id}")
        if approval.state in ("approved", "rejected"):  # expired: the audit log says when
            raise CommandError("conflict", f"approval #{approval_id} was {approval.state} "
                                           "already")

    async def _approve_verb(self, args: ApprovalArgs, command: Command) -> dict[str, Any]:
        self._pending_approval(args.approval_id)
        try:
            decision = await self.approve(args.approval_id, command.actor)
        except ApprovalError as exc:  # decided by someone else in the meantime
            raise CommandError("conflict", str(exc)) from None
        return {"approval_id": args.approval_id, "verdict": decision.verdict,
                "why": decision.why}

    async def _reject_verb(self, args: RejectArgs, command: Command) -> dict[str, Any]:
        self._pending_approval(args.approval_id)
        try:
            approval = await self.reject(args.approval_id, command.actor, args.reason)
        except ApprovalError as exc:
            raise CommandError("conflict", str(exc)) from None
        return {"approval": approval.model_dump(mode="json")}

    async def _reset_verb(self, args: ResetArgs, command: Command) -> dict[str, Any]:
        kind, _, name = args.target.partition(":")
        try:
            target = self.target_of(kind, name)
        except UnknownTarget as exc:
            raise CommandError("not_found", str(exc)) from None
        cleared = await self.reset(target, command.actor)
        detail = (f"{target.key} reset: automatic tries allowed again" if cleared else
                  f"{target.key} was not held back (no failing mark, failure streak or "
                  "backoff); nothing to clear")
        return {"target": target.key, "cleared": cleared, "detail": detail}

    async def _remediate_verb(self, args: RemediateArgs, command: Command) -> dict[str, Any]:
        """One action asked for by a person, decided by the policy like any other."""
        if args.action not in REGISTRY:
            raise CommandError("invalid", f"unknown action {args.action!r}; known: "
                                          f"{', '.join(sorted(REGISTRY))}")
        params: dict[str, Any] = dict(args.params)
        try:
            parsed = parse_params(args.action, params)
            if isinstance(parsed, StopProcessParams):
                # Checked when asked, not after an approval: the live process, by its start
                # time, and everything the process guard holds it against (a thread,
                # protected, another user's, not allowed), so that no approval is asked for
                # what can never run.
                pinned = await asyncio.to_thread(pin, self.action_context(), parsed)
                params = {**params, "create_time": pinned.create_time}
        except ActionRefused as exc:  # the caller's mistake, not the policy's verdict
            raise CommandError("invalid", str(exc)) from None
        decision = await self.submit(ActionRequest(
            action=args.action, params=params, host=self.host, source="operator",
            reasoning=f"{command.actor}: {args.reason or 'asked for through the API'}",
            dry_run=args.dry_run))
        approval = next((a.id for a in self.audit.pending() if a.decision.id == decision.id),
                        None)
        return {"decision_id": decision.id, "action": args.action,
                "target": str(decision.target) if decision.target else None,
                "verdict": decision.verdict, "check": decision.check, "why": decision.why,
                "preview": decision.preview, "approval_id": approval}

    async def _approvals_verb(self, args: ApprovalsArgs, _command: Command
                              ) -> dict[str, Any]:
        """This host's approval requests (a central lists every host's this way)."""
        def read() -> dict[str, Any]:
            return {"approvals": [a.model_dump(mode="json")
                                  for a in self.audit.approvals(args.state, args.limit)],
                    "audit_chain": self.audit.chain_status().model_dump(mode="json")}
        return await asyncio.to_thread(read)

    async def _actions_verb(self, args: ActionsArgs, _command: Command) -> dict[str, Any]:
        """This host's newest audit entries and its pending approvals."""
        def read() -> dict[str, Any]:
            return {"entries": [e.model_dump(mode="json")
                                for e in self.audit.entries(limit=args.limit)],
                    "pending": [a.model_dump(mode="json") for a in self.audit.pending()],
                    "audit_chain": self.audit.chain_status().model_dump(mode="json")}
        return await asyncio.to_thread(read)

    async def _services_verb(self, _args: NoArgs, _command: Command) -> dict[str, Any]:
        """Every declared service: its live state (no checks run here: those are the
        sensor's) with what remediation did and does, in configured order."""
        out: list[dict[str, Any]] = []
        now = self._wall().timestamp()
        for report in self.book.reports():
            if report.service not in self.services:
                continue  # removed by a reload (or a simulation's end): no longer declared
            status = await self.services.status(report.service, checks=False)
            uptime = None
            if status.state == "running" and status.create_time is not None:
                uptime = round(max(0.0, now - status.create_time), 1)
            checked_at, checked_ok, checked = self.book.checked(report.service)
            body = report.model_dump(mode="json", include={
                "manager", "condition", "healthy", "detail", "since", "restarts",
                "last_action", "last_action_at", "last_outcome", "last_message", "refused",
                "next_try_at", "remediation"})
            out.append({**body, "name": report.service,
                        "state": status.state if status.state != "unknown" else report.state,
                        "pid": status.pid if status.pid is not None else report.pid,
                        "uptime_s": uptime,
                        "last_check_at": checked_at.isoformat() if checked_at else None,
                        "last_check_ok": checked_ok, "last_check": checked})
        return {"services": out}

    # ------------------------------------------------------------------ humans

    async def approve(self, approval_id: int, by: str) -> Decision:
        """Approve a pending action (one call); it then runs if the policy still allows."""
        approval: Approval = await self.audit.approve(approval_id, by)
        return await self.submit(approval.decision.request, approved_by=by)

    async def reject(self, approval_id: int, by: str, reason: str = "") -> Approval:
        """Reject a pending action (one call)."""
        approval = await self.audit.reject(approval_id, by, reason)
        await self._publish("rejected", approval.decision, approval_id=approval_id, by=by,
                            message=reason or f"rejected by {by}")
        return approval

    def target_of(self, kind: str, name: str) -> Target:
        """The target a person names, checked: a declared service, or one the policy has a
        record of; UnknownTarget (with what is known) otherwise."""
        try:
            target = Target.model_validate({"kind": kind, "name": name})
        except ValueError:
            raise UnknownTarget(f"unknown target kind {kind!r}; use service:<name>, "
                                "pid:<n>, root:<path>, log:<path> or script:<name>") from None
        if target.kind == "service":
            try:
                self.services.backend(name)
            except UnknownService as exc:
                raise UnknownTarget(str(exc)) from None
        elif not self.policy.knows(target, host=self.host):
            failing = ", ".join(f.target.key for f in self.policy.failing()) or "none"
            raise UnknownTarget(f"the policy has no record of {target.key}; failing "
                                f"targets: {failing}")
        return target

    async def reset(self, target: Target, by: str) -> bool:
        """A human resets ``target``: its failing mark, failure streak and backoff are
        cleared, audited with who and announced; a managed service that is down is
        restarted at once. Returns whether anything was cleared."""
        cleared = self.policy.reset(target, by=by, host=self.host)
        await self.policy.persist()
        what = (f"{target} reset by {by}; automatic tries allowed again" if cleared else
                f"{target} reset by {by}; nothing was holding it back")
        await self.audit.record_reset(host=self.host, target=str(target), by=by, message=what)
        await self.bus.publish(actions_topic(self.host), RemediationEvent(
            host=self.host, phase="reset", action="reset", target=str(target),
            source="operator", by=by, message=what, why=what))
        self._quiet_until.clear()  # a person acted: every request gets a fresh verdict
        if target.kind == "service" and target.name in self.book:
            self.book.failing(target.name, None)
            handle = self._retries.pop(target.name, None)
            if handle is not None:
                handle.cancel()
            if self._managed(target.name) and target.name not in self._in_flight:
                status = await self.services.status(target.name, checks=False)
                if status.state not in ("running", "starting"):
                    self._requests.append(self._supervised(
                        target.name, f"{target.name} is {status.state}; reset by {by}"))
        self.wake()
        return cleared

    async def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until no action is running (for tests and shutdown)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)



def _compact(params: dict[str, Any]) -> str:
    """Parameters as one line of JSON (what a proposer gave, shown beside the target)."""
    return json.dumps(params, sort_keys=True, default=str, ensure_ascii=True)
