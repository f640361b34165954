"""Policy and audit log together: a storm trips the breaker once; every refusal is audited."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from watchkeeper.remediation.actions import ActionResult, Verification
from watchkeeper.remediation.audit import AuditLog
from watchkeeper.remediation.learning import success_of
from watchkeeper.remediation.policy import ActionRequest, Decision
from watchkeeper.remediation.registry import ActionRefused, validate_action

from .test_policy import HOST, Env


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


@pytest.fixture
async def audit(tmp_path: Path) -> AsyncIterator[AuditLog]:
    log = AuditLog(tmp_path / "audit.db")
    yield log
    await log.close()


async def run(env: Env, audit: AuditLog, decision: Decision, *, ok: bool = True) -> None:
    """What the remediator does with an auto decision (the action itself is faked)."""
    env.policy.begin(decision)
    intent = await audit.record_intent(decision, argv=("systemctl", "restart", "x"))
    now = datetime.now(timezone.utc)
    result = ActionResult(action=decision.request.action, outcome="ok", message="restarted",
                          started_at=now, duration_s=0.1)
    verification = Verification(action=decision.request.action, ok=ok, message="healthy",
                                at=now)
    env.clock.advance(0.1)
    env.policy.end(decision, success=success_of(result, verification))
    await audit.record_outcome(intent, result, verification)


async def test_fifty_services_failing_in_one_minute_trip_the_global_breaker(
        tmp_path: Path, audit: AuditLog) -> None:
    env = Env(tmp_path, remediation={"budget_per_hour": 20, "budget_per_action_per_hour": 100},
              agents={"max_concurrent_actions": 100})
    decisions = []
    for i in range(50):
        d = env.decide(target=f"s{i}")
        decisions.append(d)
        await audit.record_decision(d)
        if d.verdict == "auto":
            await run(env, audit, d)
        env.clock.advance(1)  # 50 alerts within the same minute
    autos = [d for d in decisions if d.verdict == "auto"]
    refused = [d for d in decisions if d.verdict == "refused"]
    assert len(autos) == 20 and len(refused) == 30
    assert all(d.check == "breaker" and d.why.startswith("refused: breaker open: alert-only; ")
               for d in refused)
    notices = [d.notice for d in decisions if d.notice is not None]
    assert len(notices) == 1 and notices[0].code == "breaker_open"
    assert notices[0].message == ("breaker open: alert-only; 20 actions in the last hour "
                                  "(budget_per_hour 20)")
    assert decisions[20].notice == notices[0]  # on the first refusal
    # Every decision audited, every refusal with its reason.
    audited = audit.entries(kind="decision", verdict="refused")
    assert len(audited) == 30
    assert {e.target for e in audited} == {f"s{i}" for i in range(20, 50)}
    assert all("breaker open: alert-only" in e.message for e in audited)
    assert len(audit.entries(kind="decision")) == 50
    assert len(audit.entries(kind="outcome", outcome="ok")) == 20
    assert audit.unfinished_intents() == []
    # An hour later the budget is back, said once.
    env.clock.advance(3600)
    d = env.decide(target="s49")
    assert d.verdict == "auto" and d.notice is not None and d.notice.code == "breaker_closed"
    assert env.decide(target="s48").notice is None


async def test_llm_suggesting_an_unknown_action_is_refused_and_audited(
        env: Env, audit: AuditLog) -> None:
    # The analyzer's validation would refuse it too; the policy must not rely on that.
    with pytest.raises(ActionRefused):
        validate_action("rm_rf", {"path": "/"}, source="llm")
    req = ActionRequest(action="rm_rf", params={"path": "/"}, host=HOST, source="llm",
                        reasoning="disk is full, delete everything (password=hunter2)",
                        fingerprint="disk:/")
    d = env.policy.decide(req)
    assert d.verdict == "refused" and d.check == "registry"
    entry_id = await audit.record_decision(d)
    [entry] = audit.entries(source="llm", verdict="refused")
    assert entry.id == entry_id and entry.action == "rm_rf" and entry.target is None
    assert entry.message.startswith("refused: unknown action 'rm_rf'")
    stored = entry.data["decision"]
    assert isinstance(stored, dict) and isinstance(stored["request"], dict)
    assert stored["request"]["source"] == "llm"
    assert stored["request"]["fingerprint"] == "disk:/"
    # The reasoning is kept, with the secret it repeated redacted.
    reasoning = stored["request"]["reasoning"]
    assert isinstance(reasoning, str) and reasoning.startswith("disk is full, delete everything")
    assert "password=***" in reasoning and "hunter2" not in reasoning


async def test_approval_flow_with_the_policy(env: Env, audit: AuditLog) -> None:
    env.configure({"actions": {"restart_service": "approve"}})
    d = env.decide()
    assert d.verdict == "approve"
    await audit.record_decision(d)
    approval_id = await audit.add_pending(d)
    [pending] = audit.pending()
    assert pending.decision == d
    approval = await audit.approve(approval_id, "alice")
    # The agent re-decides with the approval: every other check still applies.
    again = env.policy.decide(approval.decision.request, approved_by=approval.by)
    assert again.verdict == "auto" and again.approved_by == "alice"
    env.policy.begin(again)
    intent = await audit.record_intent(again, approval_id=approval_id)
    entry = audit.entry(intent)
    assert entry is not None and entry.kind == "intent" and entry.approval_id == approval_id
