"""The RemediatorAgent in the runtime, with a real managed HTTP service the test kills."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest

from watchkeeper.agents.remediator import RemediatorAgent
from watchkeeper.config import validate
from watchkeeper.events import RemediationEvent
from watchkeeper.remediation.audit import ApprovalError
from watchkeeper.runtime import Runtime

from ..conftest import BusRecorder, make_settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_for(tmp_path: Path, start: list[str], checks: list[dict[str, Any]],
                 **remediation: Any) -> Any:
    return validate({
        "storage": {"data_dir": str(tmp_path / "data"), "flush_interval": 0.1},
        "logging": {"dir": str(tmp_path / "logs"), "color": False},
        "agents": {"check_interval": 0.2, "healing_cooldown": 0},
        "services": {"web": {"start": start, "checks": checks}},
        "remediation": {"startup_grace_s": 0, "backoff_initial_s": 0.05,
                        "verify_timeout_s": 5, **remediation},
    })


def web_settings(tmp_path: Path, **remediation: Any) -> tuple[Any, int]:
    port = free_port()
    start = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    return settings_for(tmp_path, start, [{"http": f"http://127.0.0.1:{port}/",
                                           "timeout_s": 1}], **remediation), port


async def until(cond: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while not (value := cond()):
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
    return value


async def web_pid(rt: Runtime) -> int:
    status = await rt.services.wait_healthy("web", timeout_s=10)
    assert status.healthy and status.pid
    await remediator(rt).wait_idle()
    await asyncio.sleep(0.5)  # a few healthy ticks: nothing is being healed
    assert remediator(rt).policy.in_flight == 0
    return status.pid


def events(recorder: BusRecorder, phase: str) -> list[RemediationEvent]:
    return [e for e in recorder.of(RemediationEvent)
            if isinstance(e, RemediationEvent) and e.phase == phase]


def remediator(rt: Runtime) -> RemediatorAgent:
    return next(a for a in rt.agents if isinstance(a, RemediatorAgent))


@asynccontextmanager
async def running(settings: Any) -> AsyncIterator[tuple[Runtime, BusRecorder]]:
    """The runtime started, with a recorder on its bus; stopped afterwards."""
    rt = Runtime(settings)
    recorder = BusRecorder(rt.bus)  # type: ignore[arg-type]
    await rt.start()
    try:
        yield rt, recorder
    finally:
        await rt.stop()


async def test_killed_service_is_restarted_and_healthy_again(tmp_path: Path) -> None:
    settings, _port = web_settings(tmp_path)
    async with running(settings) as (rt, recorder):
        pid = await web_pid(rt)
        os.kill(pid, signal.SIGKILL)  # the runtime started it for this test
        finished = await until(lambda: events(recorder, "finished"))
        assert finished[0].action == "restart_service" and finished[0].target == "web"
        assert finished[0].outcome == "ok" and finished[0].verified is True
        status = await rt.services.status("web")
        assert status.healthy and status.pid != pid
        entries = rt.audit.entries(action="restart_service")
        assert [e.kind for e in entries][:3] == ["decision", "intent", "outcome"]
        assert entries[2].outcome == "ok"


async def test_approval_mode_waits_for_a_human(tmp_path: Path) -> None:
    settings, _port = web_settings(tmp_path, actions={"restart_service": "approve"})
    async with running(settings) as (rt, recorder):
        pid = await web_pid(rt)
        os.kill(pid, signal.SIGKILL)
        (pending, *_) = await until(lambda: events(recorder, "pending"))
        await asyncio.sleep(0.5)
        assert (await rt.services.status("web")).state != "running"  # nothing ran
        assert [a.id for a in rt.audit.pending()] == [pending.approval_id]
        assert pending.approval_id is not None
        decision = await remediator(rt).approve(pending.approval_id, by="alice")
        assert decision.verdict == "auto" and decision.approved_by == "alice"
        (finished, *_) = await until(lambda: events(recorder, "finished"))
        assert events(recorder, "started")[0].by == finished.by == "alice"  # who said yes
        assert (await rt.services.wait_healthy("web", timeout_s=10)).healthy
        assert rt.audit.pending() == []


async def test_an_expired_approval_is_refused_and_the_agent_asks_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings, _port = web_settings(tmp_path, actions={"restart_service": "approve"},
                                   approval_ttl_s=2.0)
    async with running(settings) as (rt, recorder):
        pid = await web_pid(rt)
        os.kill(pid, signal.SIGKILL)
        (first, *_) = await until(lambda: events(recorder, "pending"))
        # Nobody answers: the service is still down, so a fresh approval is asked for.
        (second, *_) = await until(lambda: events(recorder, "pending")[1:])
        assert second.approval_id != first.approval_id
        assert first.approval_id is not None and second.approval_id is not None
        old = rt.audit.approval(first.approval_id)
        assert old is not None and old.state == "expired"
        # Announced once, so open dashboards drop it from their list.
        (expired,) = await until(lambda: events(recorder, "expired"))
        assert expired.approval_id == first.approval_id and expired.target == "web"
        assert expired.message == f"approval #{first.approval_id} expired unanswered after 2 s"
        await until(lambda: any(  # and the log says so, in the communicator's words
            f"{expired.message}; asked again if still needed" in r.getMessage()
            for r in caplog.records))
        assert [a.id for a in rt.audit.pending()] == [second.approval_id]
        # The agent asked again every second while the first waited; each approval was
        # audited once, not once per asking.
        asked = rt.audit.entries(kind="decision", action="restart_service", verdict="approve")
        assert [e.decision_id for e in asked] == [first.decision_id, second.decision_id]
        with pytest.raises(ApprovalError, match="expired unanswered"):
            await remediator(rt).approve(first.approval_id, by="alice")
        assert events(recorder, "started") == []  # the stale approval ran nothing
        decision = await remediator(rt).approve(second.approval_id, by="alice")
        assert decision.verdict == "auto"
        await until(lambda: events(recorder, "finished"))
        assert (await rt.services.wait_healthy("web", timeout_s=10)).healthy


async def test_dry_run_executes_nothing(tmp_path: Path) -> None:
    settings, _port = web_settings(tmp_path, dry_run=True)
    async with running(settings) as (rt, recorder):
        pid = await web_pid(rt)
        os.kill(pid, signal.SIGKILL)
        decided = await until(lambda: [e for e in events(recorder, "decided")
                                       if e.verdict == "dry_run"])
        assert decided[0].message.startswith("would restart web")
        await asyncio.sleep(0.5)
        assert (await rt.services.status("web")).state != "running"
        assert events(recorder, "started") == []


async def test_crash_looping_service_gets_exactly_three_restarts_then_one_escalation(
        tmp_path: Path) -> None:
    start = [sys.executable, "-c", "import sys; sys.exit(3)"]
    settings = settings_for(tmp_path, start, [{"process": True}], flap_max_attempts=3,
                            flap_window_s=300)
    async with running(settings) as (_rt, recorder):
        await until(lambda: events(recorder, "escalated"), timeout=20)
        await asyncio.sleep(1.5)  # more exits and unhealthy ticks: no more tries
        started = events(recorder, "started")
        assert len(started) == 3
        assert len(events(recorder, "escalated")) == 1
    # The budget is persisted: a new watchkeeper on the same data dir does not try again.
    async with running(settings) as (_rt, recorder):
        await asyncio.sleep(1.5)
        assert events(recorder, "started") == []
    assert not any("import sys; sys.exit(3)" in " ".join(p.info["cmdline"] or [])
                   for p in psutil.process_iter(["cmdline"]))


async def test_intent_without_outcome_is_reconciled_not_repeated(tmp_path: Path) -> None:
    """watchkeeper killed between intent and outcome: the next start checks the live state,
    records the intent as interrupted and does not run the action again blindly."""
    from watchkeeper.remediation.audit import AuditLog
    from watchkeeper.remediation.policy import ActionRequest, Policy

    settings, _port = web_settings(tmp_path)
    audit = AuditLog.open(settings.storage)
    policy = Policy(lambda: settings)
    decision = policy.decide(ActionRequest(action="restart_service", params={"service": "web"},
                                           host="h", reasoning="it crashed"))
    assert decision.verdict == "auto"
    intent = await audit.record_intent(decision)  # ...and then the process died (SIGKILL)
    await audit.close()

    async with running(settings) as (rt, recorder):
        await web_pid(rt)
        (outcome,) = [e for e in rt.audit.entries(kind="outcome") if e.intent_id == intent]
        assert outcome.outcome == "interrupted"
        assert "web is now running" in outcome.message
        assert rt.audit.unfinished_intents() == []
        assert events(recorder, "started") == []  # healthy: nothing re-run


async def test_suggested_clean_disk_from_a_forecast_runs_under_the_policy(
        tmp_path: Path) -> None:
    """A disk-full forecast's suggestion (clean_disk on a configured root) is decided by the
    same policy and run: old matching files go, new ones stay."""
    import time as _time
    from datetime import timedelta

    from watchkeeper.events import Alert, SuggestedAction, utcnow

    root = tmp_path / "cache"
    root.mkdir()
    old, new = root / "old.tmp", root / "new.tmp"
    old.write_bytes(b"x" * 10_000)
    new.write_bytes(b"y" * 10_000)
    # Both ages set on the clock the action reads (time.time), not left to the kernel's
    # stamp: a test run with the wall clock shifted would otherwise see both as old.
    now = _time.time()
    os.utime(old, (now - 7 * 86400, now - 7 * 86400))
    os.utime(new, (now, now))
    settings, _port = web_settings(
        tmp_path, actions={"clean_disk": "auto"},
        cleanup_roots=[{"path": str(root), "patterns": ["*.tmp"], "min_age_hours": 24}])
    async with running(settings) as (rt, recorder):
        await web_pid(rt)
        alert = Alert(host=rt.host, id="a1", fingerprint="f1", rule="disk_full_forecast",
                      metric="disk.full_eta_hours", dimension="/", severity="warning",
                      since=utcnow() - timedelta(minutes=5),
                      summary="Disk / will be full in about 4 h", labels={"change": "new"},
                      suggested_actions=(SuggestedAction(action="clean_disk",
                                                         params={"root": str(root)},
                                                         reason="disk filling"),))
        await rt.bus.publish(f"alerts.{rt.host}", alert)
        finished = await until(lambda: [e for e in events(recorder, "finished")
                                        if e.action == "clean_disk"])
        assert finished[0].outcome == "ok", finished[0].message
        assert not old.exists() and new.exists()
        (outcome,) = [e for e in rt.audit.entries(action="clean_disk") if e.kind == "outcome"]
        assert outcome.outcome == "ok"


async def test_an_llm_assessment_brings_only_the_llms_own_suggestions_to_the_policy(
        tmp_path: Path) -> None:
    """The "assessed" version of an alert carries the rules' suggestions too; only the LLM's
    are new requests (the rules' ones were asked for with the alert already)."""
    from datetime import timedelta

    from watchkeeper.events import Alert, SuggestedAction, utcnow

    rt = Runtime(make_settings(tmp_path))
    remediator = next(a for a in rt.agents if isinstance(a, RemediatorAgent))
    rule = SuggestedAction(action="stop_process", params={"pid": 4242, "create_time": 1.0},
                           reason="runaway")
    llm = SuggestedAction(action="clean_disk", params={"root": "/var/tmp"},
                          reason="the model's idea", source="llm")
    base = Alert(host=rt.host, id="a1", fingerprint="f1", rule="threshold",
                 metric="cpu.percent", severity="critical", since=utcnow() - timedelta(minutes=1),
                 summary="CPU is at 99%", labels={"change": "new"}, suggested_actions=(rule,))
    remediator._from_alert(base)
    remediator._from_alert(base.model_copy(update={
        "labels": {"change": "assessed"}, "suggested_actions": (llm, rule)}))
    remediator._from_alert(base.model_copy(update={"labels": {"change": "value"}}))
    assert [(r.action, r.source) for r in remediator._requests] == [
        ("stop_process", "rule"), ("clean_disk", "llm")]
