"""RemediatorAgent: the fixer. Every action goes through the policy and the audit log.

Requests come from three places: a managed service's exit (noticed the moment it happens,
for the fastest recovery), a declared service the sensor sees down or unhealthy, and the
actions suggested on alerts (by rules or the LLM, which get no special treatment). Each is
decided by the policy; an ``auto`` decision's intent is committed to the audit log before
the side effect, the action runs, its verification decides success, and the outcome is
appended. ``approve`` decisions wait in the audit log for one call to approve or reject.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Any, Literal

from watchkeeper.agents.base import BaseAgent
from watchkeeper.bus import Subscription
from watchkeeper.config import Settings
from watchkeeper.events import Alert, MetricSnapshot, RemediationEvent
from watchkeeper.remediation.actions import get_action
from watchkeeper.remediation.actions.base import ActionContext
from watchkeeper.remediation.audit import Approval, AuditLog
from watchkeeper.remediation.learning import success_of
from watchkeeper.remediation.policy import (
    ActionRequest,
    Decision,
    Policy,
    PolicyError,
    Target,
    plain_secs,
)
from watchkeeper.remediation.services import Services
from watchkeeper.remediation.services.base import ServiceExit

log = logging.getLogger(__name__)


def actions_topic(host: str) -> str:
    return f"actions.{host}"


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

    # ------------------------------------------------------------------ lifecycle

    def interval(self, settings: Settings) -> float:
        return 0.01  # event-driven: each check waits in next_item (see _perform_check)

    async def setup(self) -> None:
        if self._sub is None:
            self._sub = self.bus.subscribe(f"*.{self.host}", name=self.name, maxsize=1000)
        if self._unsubscribe is None:
            self._unsubscribe = self.services.on_exit(self._on_exit)
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
        self._requests.append(ActionRequest(
            action="restart_service", params={"service": event.service}, host=self.host,
            reasoning=f"{event.service} exited unexpectedly: {event.message}"))
        self.wake()  # an exit is acted on now, not at the next tick

    def _from_snapshot(self, snap: MetricSnapshot) -> None:
        for svc in snap.services:
            target = Target.service(svc.name)
            if svc.state == "running" and svc.healthy is not False:
                self._unhealthy_ticks.pop(svc.name, None)
                self.policy.mark_healthy(target, host=self.host)
                continue
            if svc.state == "starting":
                continue
            if svc.state == "running":
                # Running but failing its checks: a service just (re)started may not answer
                # yet, so one bad tick is not enough; stopped or failed acts at once.
                ticks = self._unhealthy_ticks[svc.name] = self._unhealthy_ticks.get(
                    svc.name, 0) + 1
                if ticks < 2:
                    continue
            self.policy.mark_unhealthy(target, host=self.host)
            why = "; ".join(svc.failing) or svc.detail or svc.state
            self._requests.append(ActionRequest(
                action="restart_service", params={"service": svc.name}, host=self.host,
                reasoning=f"{svc.name} is {svc.state}"
                          f"{', failing its checks' if svc.healthy is False else ''}: {why}"))

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
            await self.submit(request)

    async def submit(self, request: ActionRequest, *, approved_by: str | None = None
                     ) -> Decision:
        """Decide one request, audit the decision, and run it if the policy says auto."""
        key = f"{request.action}:{sorted(request.params.items())}"
        now = time.monotonic()
        # A person asking (API, dashboard) always gets a fresh verdict, and their what-ifs
        # and refusals do not hold back the agent's own requests.
        human = request.source == "operator"
        if approved_by is None and not human and self._quiet_until.get(key, 0.0) > now:
            return Decision(request=request, verdict="refused", check="cooldown",
                            why="already refused recently; waiting before asking again")
        decision = self.policy.decide(request, approved_by=approved_by)
        if not human:
            self._note_refusal(key, decision, approved_by, now)
        # One request per target waits for a human. The agent's own asking again is not
        # audited once per tick while it waits; a person's request is, and gets that one.
        waiting = (self._waiting(decision)
                   if decision.verdict == "approve" and approved_by is None else None)
        if waiting is not None and not human:
            self._quiet_until[key] = now + self.config.current.agents.check_interval * 5
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
            await self._publish("pending", decision, approval_id=approval)
        elif decision.verdict == "dry_run":
            preview = await get_action(request.action).preview(decision.params, self._ctx())
            decision = decision.model_copy(update={"preview": preview.summary})
            log.info("🧪 dry run: %s", preview.summary)
            await self._publish("decided", decision, message=preview.summary)
        else:
            log.debug("remediation: %s", decision.why)
            await self._publish("decided", decision)
        return decision

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

    async def _run(self, decision: Decision) -> None:
        action = get_action(decision.request.action)
        success: bool | None = None
        try:
            await self.policy.persist()  # the attempt counts even if we die mid-action
            intent = await self.audit.record_intent(decision)
            await self._publish("started", decision, intent_id=intent)
            ctx = self._ctx()
            result = await action.execute(decision.params, ctx)
            verification = None
            if result.outcome == "ok":
                verification = await action.verify(decision.params, ctx, result)
            success = success_of(result, verification)
            await self.audit.record_outcome(intent, result, verification)
            text = result.message + (f"; {verification.message}" if verification else "")
            await self._publish("finished", decision, intent_id=intent, outcome=result.outcome,
                                verified=None if verification is None else verification.ok,
                                message=text, duration_s=result.duration_s)
        except Exception:
            log.exception("remediation: running %s failed", decision.request.action)
            success = False
        finally:
            self.policy.end(decision, success=success)
            await self.policy.persist()

    def _ctx(self) -> ActionContext:
        settings = self.config.current
        extra: dict[str, Any] = {"psutil": self._psutil} if self._psutil is not None else {}
        return ActionContext(settings=settings.remediation, services=self.services,
                             verify_timeout_s=settings.remediation.verify_timeout_s, **extra)

    async def _publish(self, phase: Literal["decided", "pending", "rejected", "expired",
                                            "started", "finished", "escalated", "notice"],
                       decision: Decision, **fields: Any) -> None:
        req = decision.request
        fields.setdefault("message", decision.why)
        fields.setdefault("by", decision.approved_by)
        await self.bus.publish(actions_topic(self.host), RemediationEvent(
            host=self.host, phase=phase, action=req.action,
            target=str(decision.target) if decision.target else "", verdict=decision.verdict,
            why=decision.why, source=req.source, decision_id=decision.id,
            fingerprint=req.fingerprint, **fields))

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

    async def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait until no action is running (for tests and shutdown)."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

