"""Security corpus: a tampered audit log (issue 11: "append-only but not tamper-evident").

The attacker can write ``audit.db`` with SQL: drop the append-only triggers, change, delete,
insert or reorder entries, put the triggers back (``integrity_check`` stays ok). Each case is
a real SQLite file changed that way; the promise: ``watchkeeper audit verify`` (a real
subprocess) exits 1 naming the first broken link and what happened there, and a real
server's API says the chain is broken, ``/api/health`` is degraded with the reason, and
Prometheus shows ``watchkeeper_audit_chain_ok 0``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import signal
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest

from watchkeeper.config import StorageConfig
from watchkeeper.remediation import auditchain
from watchkeeper.remediation.audit import AuditError, AuditLog, _migrate_to_1, verify_file

from ..integration.test_api_harness import api_settings, serve_api, until
from ..integration.test_audit import decision, result, verification
from ..integration.test_cli import start_run
from ..integration.test_cli import wk as cli

T0 = datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc).timestamp()


def data_dir(tmp_path: Path) -> Path:
    """The data dir api_settings (and the CLI's environment) use."""
    return tmp_path / "data"


async def fill(tmp_path: Path) -> Path:
    """Twelve entries as the remediator writes them: decisions, an intent and its outcome,
    an approval and who gave it, a refusal, a reset."""
    clock = [T0]

    def wall() -> float:
        clock[0] += 60
        return clock[0]

    audit = AuditLog.open(StorageConfig(data_dir=data_dir(tmp_path)), wall=wall)
    try:
        web = decision(service="web")
        await audit.record_decision(web)                                       # 1
        intent = await audit.record_intent(web, argv=["systemctl", "restart", "web"])  # 2
        await audit.record_outcome(intent, result(), verification(True))       # 3
        api = decision("approve", service="api")
        await audit.record_decision(api)                                       # 4
        approval = await audit.add_pending(api)                                # 5
        await audit.approve(approval, "alice")                                 # 6
        await audit.record_decision(decision("refused", service="db"))         # 7
        s8 = decision(service="s8")
        await audit.record_decision(s8)                                        # 8
        intent = await audit.record_intent(s8)                                 # 9
        await audit.record_outcome(intent, result(), verification(False))      # 10
        await audit.record_reset(host="h1", target="service:s8", by="bob",
                                 message="reset by bob")                       # 11
        await audit.record_decision(decision("refused", service="x"))          # 12
        assert audit.chain_status().ok
    finally:
        await audit.close()
    return audit.path


def sql(db: Path, *statements: str, keep_triggers_dropped: bool = False) -> None:
    """What the attacker did: triggers dropped, the statements run, triggers recreated."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        triggers = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"
                                ).fetchall()
        conn.execute("BEGIN")
        for name, _ in triggers:
            conn.execute(f"DROP TRIGGER {name}")
        for statement in statements:
            conn.execute(statement)
        if not keep_triggers_dropped:
            for _, create in triggers:
                conn.execute(create)
        conn.execute("COMMIT")
        # What fooled the last audit: SQLite itself sees nothing wrong.
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()


def forged(id_: int | None = None, prev: str | None = None, digest: str | None = None) -> str:
    """An INSERT of an entry nobody wrote: alice decided to restart db."""
    cols = "at, kind, host, action, target, source, verdict, actor, message"
    vals = (f"{T0 + 3600}, 'decision', 'h1', 'restart_service', 'service:db', 'operator', "
            "'auto', 'alice', 'auto: restart db, as alice asked'")
    if id_ is not None:
        cols, vals = "id, " + cols, f"{id_}, " + vals
    link = ["NULL" if v is None else repr(v) for v in (prev, digest)]
    cols, vals = cols + ", prev_hash, hash", vals + f", {link[0]}, {link[1]}"
    return f"INSERT INTO entries ({cols}) VALUES ({vals})"


def stored_hash(db: Path, id_: int) -> str:
    with sqlite3.connect(db) as conn:
        return str(conn.execute("SELECT hash FROM entries WHERE id = ?", (id_,)).fetchone()[0])


def rechain_with_a_guessed_key(db: Path) -> None:
    """Edit #5 and recompute every hash from there, with a key the attacker made up."""
    guess = secrets.token_bytes(32)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        triggers = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"
                                ).fetchall()
        conn.execute("BEGIN")
        for name, _ in triggers:
            conn.execute(f"DROP TRIGGER {name}")
        conn.execute("UPDATE entries SET message = 'approved by mallory' WHERE id = 5")
        prev = conn.execute("SELECT hash FROM entries WHERE id = 4").fetchone()[0]
        cols = ", ".join(auditchain.COLUMNS)
        for row in conn.execute(f"SELECT {cols} FROM entries WHERE id >= 5 ORDER BY id"
                                ).fetchall():
            digest = auditchain.link_hash(guess, prev, row)
            conn.execute("UPDATE entries SET prev_hash = ?, hash = ? WHERE id = ?",
                         (prev, digest, row[0]))
            prev = digest
        for _, create in triggers:
            conn.execute(create)
        conn.execute("COMMIT")
    finally:
        conn.close()


@dataclass(frozen=True)
class Attack:
    name: str
    run: Callable[[Path], None]
    problem: str
    at: int | None  # the record named as the first broken link


ATTACKS = [
    Attack("edit-a-verdict-refused-to-auto", lambda db: sql(
        db, "UPDATE entries SET verdict = 'auto', message = 'auto' WHERE id = 7"), "edited", 7),
    Attack("edit-who-approved", lambda db: sql(
        db, "UPDATE entries SET actor = 'mallory' WHERE id = 6"), "edited", 6),
    Attack("backdate-an-outcome", lambda db: sql(
        db, "UPDATE entries SET at = at - 86400 WHERE id = 3"), "edited", 3),
    Attack("edit-the-argv-inside-the-json-data", lambda db: sql(
        db, "UPDATE entries SET data = json_set(data, '$.argv', json('[\"true\"]')) "
            "WHERE id = 2"), "edited", 2),
    Attack("write-a-blob-where-text-was", lambda db: sql(
        db, "UPDATE entries SET message = X'00ff7f' WHERE id = 7"), "edited", 7),
    Attack("break-the-json-of-an-approval-request", lambda db: sql(
        db, "UPDATE entries SET data = '{not json' WHERE id = 5"), "edited", 5),
    Attack("edit-and-recompute-the-chain-without-the-key", rechain_with_a_guessed_key,
           "edited", 5),
    Attack("issue-11-edit-one-delete-another-triggers-recreated", lambda db: sql(
        db, "UPDATE entries SET outcome = 'ok', message = 'restarted web' WHERE id = 10",
        "DELETE FROM entries WHERE id = 7"), "deleted", 8),
    Attack("delete-a-middle-entry", lambda db: sql(db, "DELETE FROM entries WHERE id = 5"),
           "deleted", 6),
    Attack("delete-a-middle-entry-and-renumber-the-rest", lambda db: sql(
        db, "DELETE FROM entries WHERE id = 5",
        "UPDATE entries SET id = id + 100 WHERE id > 5",
        "UPDATE entries SET id = id - 101 WHERE id > 100"), "deleted", 5),
    Attack("insert-a-forged-entry-at-the-end", lambda db: sql(db, forged()), "inserted", 13),
    Attack("insert-a-forged-entry-linked-to-the-last", lambda db: sql(
        db, forged(prev=stored_hash(db, 12), digest="v1:" + "ab" * 32)), "inserted", 13),
    Attack("insert-a-forged-entry-in-the-middle", lambda db: sql(
        db, "UPDATE entries SET id = id + 100 WHERE id >= 7",
        "UPDATE entries SET id = id - 99 WHERE id >= 107",
        forged(7, prev=stored_hash(db, 6), digest="v1:" + "cd" * 32)), "inserted", 7),
    Attack("reorder-two-entries", lambda db: sql(
        db, "UPDATE entries SET id = -8 WHERE id = 8",
        "UPDATE entries SET id = 8 WHERE id = 9",
        "UPDATE entries SET id = 9 WHERE id = -8"), "reordered", 8),
    Attack("truncate-the-tail", lambda db: sql(db, "DELETE FROM entries WHERE id >= 10"),
           "truncated", 10),
    Attack("truncate-the-tail-and-reset-the-id-sequence", lambda db: sql(
        db, "DELETE FROM entries WHERE id >= 10",
        "UPDATE sqlite_sequence SET seq = 9 WHERE name = 'entries'"), "truncated", 10),
    Attack("drop-the-append-only-triggers", lambda db: sql(db, keep_triggers_dropped=True),
           "triggers", None),
    Attack("delete-the-head-file", lambda db: auditchain.head_path(db).unlink(),
           "head", None),
    Attack("replace-the-key-file", lambda db: auditchain.key_path(db).write_text(
        secrets.token_hex(32) + "\n"), "key", None),
]


def expected_line(attack: Attack) -> str:
    """The start of audit verify's last line: the record, then its time or the problem."""
    return "BROKEN" + ("" if attack.at is None else f" at record #{attack.at}")


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
async def test_audit_verify_names_the_first_broken_link(tmp_path: Path, attack: Attack) -> None:
    db = await fill(tmp_path)
    assert (await asyncio.to_thread(cli, tmp_path, "audit", "verify")).returncode == 0
    attack.run(db)
    out = await asyncio.to_thread(cli, tmp_path, "audit", "verify")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith(expected_line(attack)), last
    assert last[len(expected_line(attack))] in " :", last
    assert f": {attack.problem}: " in last, last
    status = verify_file(db)
    assert not status.ok and status.broken_at is not None
    assert (status.broken_at.problem, status.broken_at.id) == (attack.problem, attack.at)
    assert f"{status.checked} records checked" in out.stdout


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
async def test_the_api_says_the_chain_is_broken(tmp_path: Path, attack: Attack) -> None:
    db = await fill(tmp_path)
    attack.run(db)
    async with serve_api(api_settings(tmp_path)) as api:
        for path, key in (("/api/actions", "entries"), ("/api/actions/approvals", "approvals"),
                          ("/api/activity", "events")):
            r = await api.client.get(path)
            assert r.status_code == 200, r.text
            chain = r.json()["audit_chain"]
            assert chain["ok"] is False, (path, chain)
            assert chain["broken_at"]["problem"] == attack.problem
            assert chain["broken_at"]["id"] == attack.at
            assert chain["checked_at"]
            assert key in r.json()
        health = (await api.client.get("/api/health")).json()
        # Degraded at least (a critical alert on this busy test machine would outrank it).
        assert health["status"] in ("degraded", "critical"), health
        reason = next(r for r in health["reasons"] if r.startswith("audit log chain broken"))
        assert attack.problem in reason
        assert (await api.client.get("/api/system")).json()["status"] in ("degraded",
                                                                            "critical")
        metrics = (await api.client.get("/metrics")).text
        assert f'watchkeeper_audit_chain_ok{{host="{api.runtime.host}"}} 0.0' in metrics


async def test_an_intact_log_is_ok_everywhere(tmp_path: Path) -> None:
    await fill(tmp_path)
    out = await asyncio.to_thread(cli, tmp_path, "audit", "verify")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "ok"
    assert "12 records checked" in out.stdout
    async with serve_api(api_settings(tmp_path)) as api:
        chain = (await api.client.get("/api/actions")).json()["audit_chain"]
        assert chain["ok"] is True and chain["broken_at"] is None and chain["checked"] >= 12
        health = (await api.client.get("/api/health")).json()
        assert not [r for r in health["reasons"] if "audit" in r]
        metrics = (await api.client.get("/metrics")).text
        assert f'watchkeeper_audit_chain_ok{{host="{api.runtime.host}"}} 1.0' in metrics


async def test_tampering_while_the_server_runs_is_seen(tmp_path: Path) -> None:
    """A deleted tail shows at the next request; an edit of an old entry at the next full
    walk (every hour by default; the clock is injected)."""
    db = await fill(tmp_path)
    clock = [1000.0]
    audit = AuditLog(db, monotonic=lambda: clock[0])
    async with serve_api(api_settings(tmp_path), audit=audit) as api:
        assert (await api.client.get("/api/actions")).json()["audit_chain"]["ok"] is True
        sql(db, "UPDATE entries SET actor = 'mallory' WHERE id = 6")
        # Only new entries are checked between full walks: cheap, and blind to this yet.
        assert (await api.client.get("/api/actions")).json()["audit_chain"]["ok"] is True
        clock[0] += 3600
        chain = (await api.client.get("/api/actions")).json()["audit_chain"]
        assert chain["ok"] is False
        assert (chain["broken_at"]["problem"], chain["broken_at"]["id"]) == ("edited", 6)

    fresh = tmp_path / "fresh"
    db = await fill(fresh)
    audit = AuditLog(db, monotonic=lambda: clock[0])
    async with serve_api(api_settings(fresh), audit=audit) as api:
        assert (await api.client.get("/api/actions")).json()["audit_chain"]["ok"] is True
        sql(db, "DELETE FROM entries WHERE id = 12")
        chain = (await api.client.get("/api/health")).json()
        assert any(r.startswith("audit log chain broken at #12: truncated")
                   for r in chain["reasons"]), chain
        # New entries after the deletion do not hide it: the head file stays where it was.
        r = await api.client.post("/api/command", headers=api.auth(), json={
            "command": "remediate", "action": "notify_only", "params": {"message": "hi"}})
        assert r.status_code == 200
        clock[0] += 3600
        chain = (await api.client.get("/api/actions")).json()["audit_chain"]
        assert chain["ok"] is False and chain["broken_at"]["problem"] == "deleted"
    assert verify_file(db).broken_at is not None


async def test_entries_from_before_the_upgrade_are_chained_once_and_protected(
        tmp_path: Path) -> None:
    """A schema-1 log (as watchkeeper wrote it before the chain) is chained at first open."""
    db = data_dir(tmp_path) / "audit.db"
    db.parent.mkdir(parents=True)
    conn = sqlite3.connect(db, isolation_level=None)
    _migrate_to_1(conn)
    conn.execute("PRAGMA user_version = 1")
    for i in range(5):
        conn.execute("INSERT INTO entries (at, kind, host, action, verdict, message, data) "
                     "VALUES (?, 'decision', 'h1', 'restart_service', 'auto', ?, ?)",
                     (T0 + i, f"old {i}", json.dumps({"i": i})))
    conn.close()
    out = await asyncio.to_thread(cli, tmp_path, "audit", "verify")
    assert out.returncode == 1 and "not chained yet" in out.stderr

    audit = AuditLog(db)
    try:
        await audit.record_decision(decision())
        status = audit.chain_status()
        assert status.ok and status.checked == 6
        assert [e.message for e in audit.entries()][:5] == [f"old {i}" for i in range(5)]
    finally:
        await audit.close()
    assert (await asyncio.to_thread(cli, tmp_path, "audit", "verify")).returncode == 0
    sql(db, "UPDATE entries SET message = 'rewritten' WHERE id = 2")
    status = verify_file(db)
    assert status.broken_at is not None and (status.broken_at.problem,
                                             status.broken_at.id) == ("edited", 2)


async def test_dropping_the_chain_to_have_it_recomputed_is_refused(tmp_path: Path) -> None:
    """Strip the chain columns and set the schema back to 1, so that the next start would
    chain the edited entries anew: refused, the file left as evidence."""
    db = await fill(tmp_path)
    sql(db, "UPDATE entries SET actor = 'mallory' WHERE id = 6",
        "ALTER TABLE entries DROP COLUMN hash", "ALTER TABLE entries DROP COLUMN prev_hash",
        "PRAGMA user_version = 1")
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    with pytest.raises(AuditError, match=r"was chained up to #12, but the database has no "
                                         r"chain: it was rewritten\. Move audit\.db aside"):
        AuditLog(db)
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    out = await asyncio.to_thread(cli, tmp_path, "audit", "verify")
    assert out.returncode == 1 and "was chained up to #12: it was rewritten" in out.stderr
    out = await asyncio.to_thread(cli, tmp_path, "run", "--no-console-log", timeout=60)
    assert out.returncode == 1 and "it was rewritten" in out.stderr
    assert "Traceback" not in out.stderr


async def test_headless_run_logs_a_broken_chain_at_start(tmp_path: Path) -> None:
    """`watchkeeper run` (no API to ask) says it in its log, once."""
    db = await fill(tmp_path)
    sql(db, "DELETE FROM entries WHERE id = 4")
    proc = start_run(tmp_path)
    log_file = tmp_path / "logs" / "agent_system.log"

    async def logged() -> bool:
        return log_file.exists() and "chain broken at #5: deleted" in log_file.read_text()
    try:
        await until(logged, timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = await asyncio.to_thread(proc.communicate, timeout=30)
    assert proc.returncode == 0, err
    assert log_file.read_text().count("chain broken") == 1


async def test_deleting_the_whole_log_is_told(tmp_path: Path) -> None:
    """audit.db (with its -wal and -shm) deleted: watchkeeper starts a new, empty log, and
    the chain says the old entries are missing until audit.head is moved aside too."""
    db = await fill(tmp_path)
    for path in db.parent.glob("audit.db*"):
        path.unlink()
    async with serve_api(api_settings(tmp_path)) as api:
        chain = (await api.client.get("/api/actions")).json()["audit_chain"]
        assert chain["ok"] is False and chain["broken_at"]["problem"] == "truncated"
        assert "#12 was written" in chain["broken_at"]["message"]
        r = await api.client.post("/api/command", headers=api.auth(), json={
            "command": "remediate", "action": "notify_only", "params": {"message": "hi"}})
        assert r.status_code == 200
    out = await asyncio.to_thread(cli, tmp_path, "audit", "verify")
    assert out.returncode == 1 and ": truncated: " in out.stdout, out.stdout + out.stderr
    # On purpose: move both aside, and the new log starts clean.
    for path in db.parent.glob("audit.*"):
        if path.name != "audit.key":
            path.unlink()
    audit = AuditLog(db)
    try:
        await audit.record_decision(decision())
        assert audit.chain_status().ok
    finally:
        await audit.close()


@pytest.mark.parametrize("args", [("audit", "verify", "--bogus"), ("audit", "nope"),
                                  ("audit", "verify", "--config", "missing.yaml")],
                         ids=["unknown-option", "unknown-subcommand", "missing-config-file"])
async def test_audit_verify_usage_errors_exit_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    await fill(tmp_path)
    out = await asyncio.to_thread(cli, tmp_path, *args)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "Traceback" not in out.stderr


async def test_audit_verify_without_a_log_exits_2(tmp_path: Path) -> None:
    out = await asyncio.to_thread(cli, tmp_path, "audit", "verify")
    assert out.returncode == 2 and "no audit log at" in out.stderr
