"""POST /api/command {"command": "remediate"}: an operator's request goes through the policy."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from watchkeeper.agents.remediator import RemediatorAgent

from .test_api_harness import READER, Api, api_settings, serve_api


def _old_file(path: Path, size: int = 4096) -> Path:
    path.write_bytes(b"x" * size)
    old = time.time() - 3 * 86400
    os.utime(path, (old, old))
    return path


async def _remediate(api: Api, **body: object) -> dict[str, object]:
    r = await api.client.post("/api/command", headers=api.auth(),
                              json={"command": "remediate", **body})
    assert r.status_code == 200, r.text
    decision = r.json()["decision"]
    assert isinstance(decision, dict)
    return decision


async def test_dry_run_says_what_would_happen_and_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "scratch"
    root.mkdir()
    junk = [_old_file(root / f"build-{i}.tmp") for i in range(3)]
    keep = root / "notes.txt"
    keep.write_text("mine")
    settings = api_settings(tmp_path, remediation={
        "startup_grace_s": 0, "actions": {"clean_disk": "auto"},
        "cleanup_roots": [{"path": str(root), "patterns": ["*.tmp"], "min_age_hours": 1}]})
    async with serve_api(settings) as api:
        decision = await _remediate(api, action="clean_disk", params={"root": str(root)},
                                    dry_run=True, reason="what would this free?")
        assert decision["verdict"] == "dry_run"
        assert "a dry run was asked for" in str(decision["why"])
        assert "would run" in str(decision["why"])  # clean_disk is auto here
        assert "3 files" in str(decision["preview"]), decision
        assert all(p.exists() for p in [*junk, keep])
        entries = api.runtime.audit.entries()
        assert [e.kind for e in entries] == ["decision"]  # audited, no intent: nothing ran
        assert entries[0].source == "operator"


async def test_a_real_request_runs_through_the_policy_and_is_verified(tmp_path: Path) -> None:
    root = tmp_path / "scratch"
    root.mkdir()
    junk = _old_file(root / "old.tmp")
    settings = api_settings(tmp_path, remediation={
        "startup_grace_s": 0, "actions": {"clean_disk": "auto"},
        "cleanup_roots": [{"path": str(root), "patterns": ["*.tmp"], "min_age_hours": 1}]})
    async with serve_api(settings) as api:
        decision = await _remediate(api, action="clean_disk", params={"root": str(root)})
        assert decision["verdict"] == "auto"
        assert "proposed by an operator" in str(decision["why"])
        remediator = next(a for a in api.runtime.agents if isinstance(a, RemediatorAgent))
        await remediator.wait_idle()
        assert not junk.exists()
        outcome = api.runtime.audit.entries(kind="outcome")
        assert [e.outcome for e in outcome] == ["ok"]


async def test_approve_mode_makes_the_request_wait_for_a_human(tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path)) as api:  # notify_only: approve
        decision = await _remediate(api, action="notify_only",
                                    params={"message": "disk on db1 needs a look"})
        assert decision["verdict"] == "approve"
        approval_id = decision["approval_id"]
        assert isinstance(approval_id, int)
        pending = (await api.client.get("/api/actions")).json()["pending"]
        assert [p["id"] for p in pending] == [approval_id]
        # Asking again does not queue a second approval for the same target.
        again = await _remediate(api, action="notify_only",
                                 params={"message": "disk on db1 needs a look"})
        assert again["approval_id"] == approval_id
        r = await api.client.post(f"/api/actions/{approval_id}/approve", headers=api.auth())
        assert r.status_code == 200 and r.json()["verdict"] == "auto", r.text


async def test_refusals_are_answers_not_errors(tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        # "web" is not a declared service: the policy says no, and why.
        decision = await _remediate(api, action="restart_service", params={"service": "web"})
        assert decision["verdict"] == "refused"
        assert decision["check"] in {"mode", "target"}
        assert str(decision["why"]).startswith("refused:")
        assert api.runtime.audit.entries(kind="intent") == []


@pytest.mark.parametrize(("body", "says"), [
    ({"action": "rm_rf", "params": {}}, "unknown action"),
    ({"action": "clean_disk", "params": {}}, "root"),
    ({"action": "notify_only", "params": {"message": "a\x00b"}}, "NUL"),
    ({"action": "notify_only", "params": {"message": "hi"}, "surprise": 1}, "surprise"),
    ({"action": "notify_only", "params": {"a": {"b": {"c": {"d": {"e": {"f": {}}}}}}}},
     "deeply"),
    ({"action": "notify_only", "dry_run": "sometimes"}, "dry_run"),
])
async def test_bad_requests_are_422_and_change_nothing(tmp_path: Path, body: dict[str, object],
                                                       says: str) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        r = await api.client.post("/api/command", headers=api.auth(),
                                  json={"command": "remediate", **body})
        assert r.status_code == 422, r.text
        assert says in r.text
        assert api.runtime.audit.entries() == []


async def test_remediate_needs_the_operator_token(tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        for headers in ({}, api.auth(READER)):
            r = await api.client.post("/api/command", headers=headers, json={
                "command": "remediate", "action": "notify_only", "dry_run": True})
            assert r.status_code == 401
        assert api.runtime.audit.entries() == []


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A real process this test may ask to stop; killed afterwards if it is still there."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait(10)


async def test_stop_process_is_checked_when_asked_and_bound_to_the_live_process(
        tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    """The operator names a pid; its create_time is looked up at once, so the approval given
    later is for that very process (a pid alone would be refused after the approval)."""
    settings = api_settings(tmp_path, remediation={"startup_grace_s": 0})  # stop_process: approve
    async with serve_api(settings) as api:
        decision = await _remediate(api, action="stop_process",
                                    params={"pid": sleeper.pid, "grace_s": 5})
        assert decision["verdict"] == "approve", decision
        (pending,) = api.runtime.audit.pending()
        assert pending.decision.params["create_time"] == pytest.approx(
            psutil.Process(sleeper.pid).create_time(), abs=0.001)
        r = await api.client.post(f"/api/actions/{decision['approval_id']}/approve",
                                  headers=api.auth())
        assert r.status_code == 200, r.text
        remediator = next(a for a in api.runtime.agents if isinstance(a, RemediatorAgent))
        await remediator.wait_idle()
        assert await asyncio.to_thread(sleeper.wait, 10) == -signal.SIGTERM
        (outcome,) = api.runtime.audit.entries(kind="outcome")
        assert outcome.outcome == "ok", outcome.message


async def test_stop_process_of_an_unknown_or_reused_pid_is_422_at_once(
        tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(10)  # exited and reaped: its pid names no process now
    started = psutil.Process(sleeper.pid).create_time()
    async with serve_api(api_settings(tmp_path)) as api:
        for params, says in (
                ({"pid": gone.pid}, f"no process with pid {gone.pid}"),
                ({"pid": sleeper.pid, "create_time": started - 100},
                 f"pid {sleeper.pid} is another process now")):
            r = await api.client.post("/api/command", headers=api.auth(), json={
                "command": "remediate", "action": "stop_process", "params": params})
            assert r.status_code == 422, r.text
            assert says in r.json()["detail"]
        assert api.runtime.audit.entries() == []
        assert api.runtime.audit.pending() == []
    assert sleeper.poll() is None
