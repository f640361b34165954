"""The audit log on a real SQLite file: durable intents, append-only, approvals, queries."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from watchkeeper.config import StorageConfig
from watchkeeper.remediation.actions import ActionResult, Verification
from watchkeeper.remediation.audit import ApprovalError, AuditError, AuditLog, verify_file
from watchkeeper.remediation.policy import ActionRequest, Decision, Target

from .test_cli import wk


def decision(verdict: str = "auto", service: str = "web", source: str = "rule",
             action: str = "restart_service") -> Decision:
    req = ActionRequest(action=action, params={"service": service}, host="h1",
                        source=source, reasoning="it stopped answering")
    return Decision(request=req, verdict=verdict, why=f"{verdict}: {action} {service}",
                    check="ok", target=Target.service(service), params={"service": service},
                    risk="medium", mode="auto" if verdict == "auto" else "approve")


def result(outcome: str = "ok") -> ActionResult:
    return ActionResult(action="restart_service", outcome=outcome, message="restarted web",
                        argv=("/usr/bin/systemctl", "restart", "web"), exit_code=0,
                        output="done", started_at=datetime.now(timezone.utc), duration_s=0.25)


def verification(ok: bool) -> Verification:
    return Verification(action="restart_service", ok=ok,
                        message="healthy again" if ok else "still not answering",
                        at=datetime.now(timezone.utc))


@pytest.fixture
async def audit(tmp_path: Path) -> AsyncIterator[AuditLog]:
    log = AuditLog(tmp_path / "audit.db")
    yield log
    await log.close()


# --------------------------------------------------------------------------- durability

CHILD = r"""
import asyncio, os, signal, sys
from pathlib import Path
from watchkeeper.remediation.audit import AuditLog
from tests.integration.test_audit import decision

async def main() -> None:
    audit = AuditLog(sys.argv[1])
    effects = Path(sys.argv[2])
    print("ready", flush=True)
    i = 0
    while True:
        d = decision(service=f"s{i}")
        await audit.record_decision(d)
        intent = await audit.record_intent(d, argv=["systemctl", "restart", f"s{i}"])
        # The side effect, only once the intent is on disk.
        with effects.open("a") as fh:
            fh.write(f"{intent}\n")
        if sys.argv[3] == "once":
            os.kill(os.getpid(), signal.SIGKILL)
        if i % 2:
            await audit.record_outcome(intent, outcome="ok", message="done")
        i += 1

asyncio.run(main())
"""


def _run_child(db: Path, effects: Path, mode: str, kill_after: float | None) -> int:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(root / "src")])}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(db), str(effects), mode],
                            stdout=subprocess.PIPE, env=env, cwd=root)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    if kill_after is not None:
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
    code = proc.wait(timeout=30)
    proc.stdout.close()
    return code


async def test_intent_is_durable_before_the_side_effect(tmp_path: Path) -> None:
    db, effects = tmp_path / "audit.db", tmp_path / "effects"
    # Killed right after the side effect, before the outcome: the intent is there, unfinished.
    assert await asyncio.to_thread(_run_child, db, effects, "once", None) == -signal.SIGKILL
    [intent_id] = [int(x) for x in effects.read_text().split()]
    audit = AuditLog(db)
    try:
        [unfinished] = audit.unfinished_intents()
        assert unfinished.id == intent_id and unfinished.target == "s0"
        assert unfinished.data["argv"] == ["systemctl", "restart", "s0"]
        # Reconciliation: the agent checked the live state and says so; not repeated.
        await audit.record_outcome(intent_id, outcome="interrupted",
                                   message="s0 was healthy at restart; not repeated")
        assert audit.unfinished_intents() == []
        assert audit.integrity_check() == "ok"
    finally:
        await audit.close()


async def test_every_side_effect_has_its_intent_after_random_kills(tmp_path: Path) -> None:
    db, effects = tmp_path / "audit.db", tmp_path / "effects"
    rng = random.Random(5)
    for _ in range(3):
        code = await asyncio.to_thread(_run_child, db, effects, "loop", rng.uniform(0.05, 0.2))
        assert code == -signal.SIGKILL
    done = [int(x) for x in effects.read_text().split()]
    assert len(done) > 3
    audit = AuditLog(db)
    try:
        intents = {e.id for e in audit.entries(kind="intent", limit=100_000)}
        assert set(done) <= intents
        assert audit.integrity_check() == "ok"
        # Unfinished = intents without an outcome (the even ones, and any cut short by a kill).
        unfinished = {e.id for e in audit.unfinished_intents()}
        finished = {e.intent_id for e in audit.entries(kind="outcome", limit=100_000)}
        assert unfinished == intents - finished
    finally:
        await audit.close()


async def test_the_chain_verifies_after_every_kill_during_appends(tmp_path: Path) -> None:
    """kill -9 at random instants of a writer appending as fast as it can: whatever was
    committed is chained, and the head file never runs ahead of the database."""
    db, effects = tmp_path / "data" / "audit.db", tmp_path / "effects"
    db.parent.mkdir()
    rng = random.Random(11)
    for _ in range(8):
        code = await asyncio.to_thread(_run_child, db, effects, "loop", rng.uniform(0.05, 0.3))
        assert code == -signal.SIGKILL
        status = verify_file(db)
        assert status.ok, status.broken_at
    assert status.checked > 20
    out = await asyncio.to_thread(wk, tmp_path, "audit", "verify")
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stdout + out.stderr
    audit = AuditLog(db)  # and the next start goes on from there
    try:
        await audit.record_decision(decision())
        assert audit.chain_status().ok
        assert audit.chain_status().checked == status.checked + 1
    finally:
        await audit.close()


async def test_a_head_file_behind_the_database_verifies(tmp_path: Path) -> None:
    """A crash between a commit and the head file's update leaves the head behind: fine;
    the head file is never written before the commit, so it is never ahead."""
    audit = AuditLog(tmp_path / "audit.db")
    try:
        await audit.record_decision(decision())
        behind = audit.head_file.read_bytes()
        await audit.record_decision(decision())
        audit.head_file.write_bytes(behind)
        assert audit.chain_status().ok
        await audit.record_decision(decision())  # and the next append moves it on
        assert audit.chain_status().ok
        assert json.loads(audit.head_file.read_text())["id"] == 3
    finally:
        await audit.close()
    assert verify_file(audit.path).ok


async def test_the_chain_holds_whatever_the_clock_returns(tmp_path: Path) -> None:
    """An integer wall clock is hashed as the REAL SQLite gives back, not as passed."""
    audit = AuditLog(tmp_path / "audit.db", wall=lambda: 1_700_000_000)
    try:
        approval = await audit.add_pending(decision("approve"), ttl_s=60)
        await audit.approve(approval, "alice")
        intent = await audit.record_intent(decision())
        await audit.record_outcome(intent, result(), verification(True))
        status = audit.chain_status()
        assert status.ok and status.checked == 4 and status.head_id == 4
    finally:
        await audit.close()
    assert verify_file(audit.path).ok


async def test_storage_is_wal_full_sync_and_private(audit: AuditLog) -> None:
    await audit.record_decision(decision())
    with sqlite3.connect(audit.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    sync = await audit._db.on_writer(
        lambda: audit._db._wconn.execute("PRAGMA synchronous").fetchone()[0]  # type: ignore[union-attr]
    )
    assert sync == 2  # FULL
    assert oct(audit.path.stat().st_mode & 0o777) == "0o600"
    # The chain key and the head file are private too.
    for path in (audit.key_file, audit.head_file):
        assert oct(path.stat().st_mode & 0o777) == "0o600", path


# --------------------------------------------------------------------------- append-only


async def test_entries_cannot_be_changed_or_deleted(audit: AuditLog) -> None:
    entry_id = await audit.record_decision(decision())
    conn = sqlite3.connect(audit.path)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("UPDATE entries SET verdict = 'auto' WHERE id = ?", (entry_id,))
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM entries")
    finally:
        conn.close()
    entry = audit.entry(entry_id)
    assert entry is not None and entry.verdict == "auto"


async def test_outcomes_append_once_per_intent(audit: AuditLog) -> None:
    d = decision()
    intent = await audit.record_intent(d, plan="would restart web (pid 812)")
    out = await audit.record_outcome(intent, result(), verification(False))
    entry = audit.entry(out)
    assert entry is not None and entry.outcome == "verify_failed" and entry.intent_id == intent
    assert entry.message == "restarted web; verify: still not answering"
    assert entry.target == "web" and entry.decision_id == d.id
    assert isinstance(entry.data["result"], dict)
    assert entry.data["result"]["argv"] == ["/usr/bin/systemctl", "restart", "web"]
    with pytest.raises(AuditError, match=f"intent {intent} already has an outcome"):
        await audit.record_outcome(intent, result())
    with pytest.raises(AuditError, match="no intent 999"):
        await audit.record_outcome(999, result())
    with pytest.raises(AuditError, match="no intent"):
        await audit.record_outcome(out, result())  # an outcome is not an intent
    with pytest.raises(AuditError, match="only an auto decision runs"):
        await audit.record_intent(decision("refused"))
    with pytest.raises(ValueError, match="needs a result or an explicit outcome"):
        await audit.record_outcome(intent)
    i2 = await audit.record_intent(d)
    assert audit.entry(await audit.record_outcome(i2, result("failed"))).outcome == "failed"  # type: ignore[union-attr]
    i3 = await audit.record_intent(d)
    assert audit.entry(await audit.record_outcome(i3, result(), verification(True))  # type: ignore[union-attr]
                       ).outcome == "ok"


# --------------------------------------------------------------------------- approvals


async def test_approve_and_reject_are_one_call_and_final(audit: AuditLog) -> None:
    with pytest.raises(AuditError, match="only an approve decision"):
        await audit.add_pending(decision("auto"))
    first, second = decision("approve", "web"), decision("approve", "api", source="llm")
    a1 = await audit.add_pending(first)
    a2 = await audit.add_pending(second)
    assert [(p.id, p.state, p.decision) for p in audit.pending()] == \
        [(a1, "pending", first), (a2, "pending", second)]
    approved = await audit.approve(a1, "alice")
    assert approved.state == "approved" and approved.by == "alice" and approved.decision == first
    assert approved.resolved_at is not None
    with pytest.raises(ApprovalError, match=f"approval {a1} was already approved by alice at .*"
                                            "nothing changed"):
        await audit.approve(a1, "bob")
    with pytest.raises(ApprovalError, match="already approved"):
        await audit.reject(a1, "bob", "too late")
    rejected = await audit.reject(a2, "bob", "not during the demo")
    assert rejected.state == "rejected" and rejected.reason == "not during the demo"
    with pytest.raises(ApprovalError, match=f"approval {a2} was already rejected by bob"):
        await audit.approve(a2, "alice")
    with pytest.raises(ApprovalError, match="no approval 12345"):
        await audit.approve(12345, "alice")
    with pytest.raises(ApprovalError, match="no approval"):
        await audit.approve(await audit.record_decision(first), "alice")
    with pytest.raises(ValueError, match="who decides"):
        await audit.approve(a1, " ")
    assert audit.pending() == []
    assert [a.state for a in audit.approvals()] == ["approved", "rejected"]
    assert [a.id for a in audit.approvals("rejected")] == [a2]
    assert audit.approval(404) is None
    resolutions = audit.entries(kind="approved") + audit.entries(kind="rejected")
    assert [(e.approval_id, e.actor) for e in resolutions] == [(a1, "alice"), (a2, "bob")]


async def test_an_unanswered_approval_expires_and_can_no_longer_be_approved(
        tmp_path: Path) -> None:
    clock = [1_700_000_000.0]
    audit = AuditLog(tmp_path / "audit.db", wall=lambda: clock[0])
    try:
        with pytest.raises(ValueError, match="ttl_s must be > 0"):
            await audit.add_pending(decision("approve"), ttl_s=0)
        old = await audit.add_pending(decision("approve", "web"), ttl_s=600)
        forever = await audit.add_pending(decision("approve", "db"))  # no ttl: never expires
        answered = await audit.add_pending(decision("approve", "api"), ttl_s=600)
        await audit.approve(answered, "alice")
        (first, _) = audit.pending()
        assert first.id == old and first.state == "pending"
        assert first.expires_at == datetime.fromtimestamp(clock[0] + 600, timezone.utc)

        clock[0] += 599.9
        assert [a.id for a in audit.pending()] == [old, forever]
        clock[0] += 0.1  # its time to live is over, to the tick
        assert [a.id for a in audit.pending()] == [forever]
        assert [(a.id, a.state) for a in audit.approvals()] == \
            [(old, "expired"), (forever, "pending"), (answered, "approved")]
        assert [a.id for a in audit.approvals("expired")] == [old]
        assert audit.approval(answered).state == "approved"  # type: ignore[union-attr]
        before = audit.entries()
        for verb in (audit.approve, audit.reject):
            with pytest.raises(ApprovalError, match=rf"approval {old} expired unanswered at "
                                                    r"2023-11-14 22:23:20 UTC; nothing changed"):
                await verb(old, "bob")
        assert audit.entries() == before  # refused, and nothing written
        # An answer given after the expiry does not turn it back.
        assert audit.approval(old).state == "expired"  # type: ignore[union-attr]
    finally:
        await audit.close()


async def test_expiry_is_kept_across_a_reopen(tmp_path: Path) -> None:
    clock = [1_700_000_000.0]
    first = AuditLog(tmp_path / "audit.db", wall=lambda: clock[0])
    approval_id = await first.add_pending(decision("approve"), ttl_s=60)
    await first.close()
    clock[0] += 61  # watchkeeper was down meanwhile
    second = AuditLog(tmp_path / "audit.db", wall=lambda: clock[0])
    try:
        assert second.pending() == []
        assert second.approval(approval_id).state == "expired"  # type: ignore[union-attr]
    finally:
        await second.close()


async def test_two_processes_approving_at_once_only_one_wins(tmp_path: Path) -> None:
    first = AuditLog(tmp_path / "audit.db")
    second = AuditLog(tmp_path / "audit.db")  # e.g. the CLI while the agent runs
    try:
        approval_id = await first.add_pending(decision("approve"))
        outcomes = await asyncio.gather(first.approve(approval_id, "alice"),
                                        second.approve(approval_id, "bob"),
                                        return_exceptions=True)
        wins = [o for o in outcomes if not isinstance(o, BaseException)]
        losses = [o for o in outcomes if isinstance(o, ApprovalError)]
        assert len(wins) == 1 and len(losses) == 1
        assert "already approved" in str(losses[0])
        seen = first.approval(approval_id)
        assert seen is not None and seen.state == "approved" and seen.by == wins[0].by
    finally:
        await first.close()
        await second.close()


# --------------------------------------------------------------------------- queries


async def test_queries_by_time_action_target_outcome_and_intent(tmp_path: Path) -> None:
    t0 = datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc).timestamp()
    clock = [t0]
    audit = AuditLog(tmp_path / "audit.db", wall=lambda: clock[0])
    try:
        ids = []
        for i, (service, ok) in enumerate([("web", True), ("api", False), ("web", False)]):
            clock[0] = t0 + 60 * i
            d = decision(service=service)
            await audit.record_decision(d)
            intent = await audit.record_intent(d)
            ids.append(intent)
            await audit.record_outcome(intent, result(), verification(ok))
        await audit.record_decision(decision("refused", service="db", action="start_service"))

        def at(minute: int) -> datetime:
            return datetime.fromtimestamp(t0 + 60 * minute, timezone.utc)

        assert {e.target for e in audit.entries(at(1), at(1))} == {"api"}
        assert len(audit.entries(start=at(1))) == 7
        assert len(audit.entries(end=at(0))) == 3
        assert {e.target for e in audit.entries(target="web")} == {"web"}
        assert len(audit.entries(target="web")) == 6
        assert [e.action for e in audit.entries(action="start_service")] == ["start_service"]
        assert [e.intent_id for e in audit.entries(outcome="verify_failed")] == ids[1:]
        assert [e.kind for e in audit.entries(intent_id=ids[0])] == ["intent", "outcome"]
        assert [e.kind for e in audit.entries(target="web", kind="outcome", limit=1)] == \
            ["outcome"]
        assert audit.entries(limit=2)[-1].action == "start_service"  # the newest, oldest first
        assert audit.entries(at(0), at(0))[0].at == at(0)
    finally:
        await audit.close()


async def test_reopen_keeps_everything_and_bad_files_are_explained(tmp_path: Path) -> None:
    audit = AuditLog.open(StorageConfig(data_dir=tmp_path / "data"))
    intent = await audit.record_intent(decision())
    await audit.close()
    await audit.close()  # idempotent
    with pytest.raises(AuditError, match="closed"):
        await audit.record_decision(decision())
    again = AuditLog(tmp_path / "data" / "audit.db")
    try:
        assert [e.id for e in again.unfinished_intents()] == [intent]
    finally:
        await again.close()
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(AuditError, match="not a SQLite database"):
        AuditLog(junk)
    newer = tmp_path / "newer.db"
    with sqlite3.connect(newer) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(AuditError, match="newer than this watchkeeper supports"):
        AuditLog(newer)
