"""Audit log of remediation: decisions, intents, outcomes and approvals; append-only, durable.

Design, in short:

* Its own SQLite file (``<data_dir>/audit.db``), not a table in the history database: history
  has retention that deletes old rows, the audit log never deletes anything, and a separate
  file keeps the two write paths (batched history, one-at-a-time audit) from waiting on
  each other.
* WAL with ``synchronous=FULL``, and every write is its own transaction committed before the
  method returns: once ``record_intent`` returned, the intent survives a kill -9 and a power
  cut, so the agent records it *before* the side effect and, after a crash, finds it in
  ``unfinished_intents()`` and checks the live state instead of repeating it blindly.
* Append-only: one ``entries`` table, and triggers that abort any UPDATE or DELETE. An
  outcome is a new row pointing at its intent, an approval a new row pointing at its request;
  partial unique indexes allow one outcome per intent and one resolution per approval, even
  between processes (the CLI may approve while the agent runs).
* Writes run on one writer thread with its own connection (as in store/sqlite.py), so the
  event loop never waits on an fsync; reads use a second connection behind a lock and are
  safe from any thread.
* Tamper-evident: each entry carries the keyed hash of the one before (auditchain.py),
  computed in the transaction that appends it. ``chain_status()`` verifies the chain (all
  of it at first and every hour, only the new entries in between) and says where it broke.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar, cast, get_args

from pydantic import Field, JsonValue

from watchkeeper.config import StorageConfig
from watchkeeper.events import Frozen
from watchkeeper.redact import redact_text
from watchkeeper.remediation import auditchain
from watchkeeper.remediation.actions.base import ActionResult, Verification
from watchkeeper.remediation.auditchain import (
    GENESIS,
    ChainBreak,
    ChainKeyError,
    ChainStatus,
    Head,
    Progress,
)
from watchkeeper.remediation.policy import Decision
from watchkeeper.sqlitedb import SqliteDb, from_epoch, time_range

log = logging.getLogger(__name__)

T = TypeVar("T")

AUDIT_FILENAME = "audit.db"

EntryKind = Literal["decision", "intent", "outcome", "approval_requested", "approved",
                    "rejected"]
#: What became of an intent: the action's own outcome, or ``verify_failed`` (it ran but the
#: problem stayed), or ``interrupted`` (watchkeeper died in between; set at reconciliation).
AuditOutcome = Literal["ok", "failed", "refused", "dry_run", "verify_failed", "interrupted"]
#: ``expired``: nobody answered within its time to live. Computed when read, never written:
#: the state follows the clock even while watchkeeper is down.
ApprovalState = Literal["pending", "approved", "rejected", "expired"]

_KINDS: tuple[str, ...] = get_args(EntryKind)
#: An approval request's expiry (epoch seconds, or NULL) from its row aliased ``r``.
#: (json_valid first: a tampered row with broken JSON must not fail every read.)
_EXPIRES = "(CASE WHEN json_valid(r.data) THEN json_extract(r.data, '$.expires_at') END)"
_OUTCOMES: tuple[str, ...] = get_args(AuditOutcome)
_MAX_TEXT = 4000


class AuditError(Exception):
    """The audit log cannot be opened, written or read, or a write makes no sense."""


class ApprovalError(AuditError):
    """An approval that does not exist, was decided already or expired; nothing changed."""


class AuditEntry(Frozen):
    """One row of the audit log."""

    id: int
    at: datetime
    kind: EntryKind
    host: str | None = None
    action: str | None = None
    target: str | None = None
    source: str | None = None
    verdict: str | None = None
    outcome: str | None = None
    decision_id: str | None = None
    intent_id: int | None = None
    approval_id: int | None = None
    actor: str | None = None
    message: str = ""
    data: dict[str, JsonValue] = Field(default_factory=dict)


class Approval(Frozen):
    """A decision waiting for (or decided by) a human."""

    id: int
    decision: Decision
    requested_at: datetime
    state: ApprovalState
    by: str | None = None
    reason: str = ""
    resolved_at: datetime | None = None
    expires_at: datetime | None = Field(
        None, description="when it expires unanswered (none: never, from an older version)")


# --------------------------------------------------------------------------- schema

Migration = Callable[[sqlite3.Connection], None]


def _migrate_to_1(conn: sqlite3.Connection) -> None:
    kinds = ", ".join(f"'{k}'" for k in _KINDS)
    outcomes = ", ".join(f"'{o}'" for o in _OUTCOMES)
    statements = [
        f"""CREATE TABLE entries (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at REAL NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ({kinds})),
            host TEXT,
            action TEXT,
            target TEXT,
            source TEXT,
            verdict TEXT,
            outcome TEXT CHECK (outcome IS NULL OR outcome IN ({outcomes})),
            decision_id TEXT,
            intent_id INTEGER,
            approval_id INTEGER,
            actor TEXT,
            message TEXT NOT NULL DEFAULT '',
            data TEXT NOT NULL DEFAULT '{{}}'
        )""",
        "CREATE INDEX entries_at ON entries (at)",
        "CREATE INDEX entries_action_at ON entries (action, at)",
        "CREATE INDEX entries_target_at ON entries (target, at)",
        "CREATE INDEX entries_decision ON entries (decision_id)",
        # One outcome per intent, one resolution per approval request; enforced by SQLite
        # itself, so two processes racing to approve cannot both win.
        "CREATE UNIQUE INDEX entries_one_outcome ON entries (intent_id) WHERE kind = 'outcome'",
        "CREATE UNIQUE INDEX entries_one_resolution ON entries (approval_id) "
        "WHERE kind IN ('approved', 'rejected')",
        """CREATE TRIGGER entries_no_update BEFORE UPDATE ON entries
           BEGIN SELECT RAISE(ABORT, 'audit log is append-only: entries cannot be changed'); END""",
        """CREATE TRIGGER entries_no_delete BEFORE DELETE ON entries
           BEGIN SELECT RAISE(ABORT, 'audit log is append-only: entries cannot be deleted'); END""",
    ]
    for sql in statements:
        conn.execute(sql)


_NO_UPDATE = """CREATE TRIGGER entries_no_update BEFORE UPDATE ON entries
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only: entries cannot be changed'); END"""


def _migrate_to_2(conn: sqlite3.Connection, *, key: bytes, head_file: Path) -> None:
    """Chain the entries: ``prev_hash`` and ``hash`` columns, existing rows chained once."""
    head = auditchain.read_head(head_file)
    rows = conn.execute(f"SELECT {', '.join(auditchain.COLUMNS)} FROM entries ORDER BY id"
                        ).fetchall()
    if head is not None and head.id > 0 and rows:
        # Chained before, and now without its chain: rewritten. Chaining it again would
        # bless whatever was changed.
        raise AuditError(f"{head_file} says the audit log was chained up to #{head.id}, but "
                         "the database has no chain: it was rewritten. Move audit.db aside "
                         "(keep it as evidence) together with audit.head, and start again")
    conn.execute("ALTER TABLE entries ADD COLUMN prev_hash TEXT")
    conn.execute("ALTER TABLE entries ADD COLUMN hash TEXT")
    conn.execute("DROP TRIGGER entries_no_update")
    prev, last_id = GENESIS, 0
    for row in rows:
        digest = auditchain.link_hash(key, prev, row)
        conn.execute("UPDATE entries SET prev_hash = ?, hash = ? WHERE id = ?",
                     (prev, digest, row[0]))
        prev, last_id = digest, int(row[0])
    conn.execute(_NO_UPDATE)
    if head is not None and head.id > 0:
        # A new, empty log where a chained one was (deleted?): the old head stays, so the
        # chain reports the entries missing until someone moves audit.head aside too.
        log.error("audit log %s is new, but %s says #%d was written: the old log is gone",
                  head_file.with_suffix(".db"), head_file, head.id)
        return
    # Written before the migration commits: if the commit fails, the next open chains the
    # same rows to the same hashes again, so the head file is never wrong.
    auditchain.write_head(head_file, Head(last_id, prev, auditchain.key_id(key)))
    if rows:
        log.info("audit log: %d existing entries chained (protected from now on)", len(rows))


def migrations(key: bytes, head_file: Path) -> tuple[Migration, ...]:
    """``migrations(...)[n]`` takes the schema from version n to n + 1. Append, never edit."""
    return (_migrate_to_1, functools.partial(_migrate_to_2, key=key, head_file=head_file))


SCHEMA_VERSION = 2
#: How often the whole chain is verified again while running (in between: new entries).
FULL_CHECK_EVERY_S = 3600.0

_COLUMNS = auditchain.COLUMNS
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM entries"


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


def _decision_data(decision: Decision) -> dict[str, Any]:
    """The decision as JSON; the proposer's reasoning (LLM text) redacted before storing."""
    data: dict[str, Any] = decision.model_dump(mode="json")
    data["request"]["reasoning"] = _clip(redact_text(decision.request.reasoning))
    return data


def _row_entry(row: Sequence[Any]) -> AuditEntry:
    values = dict(zip(_COLUMNS, row, strict=True))
    values["at"] = from_epoch(values["at"])
    values["data"] = json.loads(values["data"] or "{}")
    return AuditEntry.model_validate(values)


def _readable(rows: Sequence[Sequence[Any]]) -> list[AuditEntry]:
    """The rows as entries; one that no longer parses (a tampered file: a blob, broken
    JSON) is left out with a warning, not a failed read. The chain check names it."""
    out = []
    for row in rows:
        try:
            out.append(_row_entry(row))
        except (ValueError, TypeError, OverflowError, OSError) as exc:
            log.warning("audit entry #%s cannot be read (%s); left out", row[0],
                        str(exc).splitlines()[0])
    return out


# --------------------------------------------------------------------------- the log


class AuditLog:
    """The remediation audit log in one SQLite file (see the module docstring).

    Writes are coroutines that return once the entry is committed and fsynced. Reads are
    synchronous and thread-safe. Opening does blocking file I/O.
    """

    def __init__(self, path: Path | str, *, wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 full_check_every_s: float = FULL_CHECK_EVERY_S) -> None:
        self.path = Path(path)
        self._wall = wall
        self._monotonic = monotonic
        self._full_every = full_check_every_s
        self.key_file = auditchain.key_path(self.path)
        self.head_file = auditchain.head_path(self.path)
        try:
            key = auditchain.load_key(self.key_file, create=True)
        except ChainKeyError as exc:
            raise AuditError(str(exc)) from None
        assert key is not None  # create=True
        self._key: bytes = key
        self._key_id = auditchain.key_id(self._key)
        #: Set by an append on the writer thread: the head to record once it is committed.
        self._appended: Head | None = None
        self._chain_lock = threading.Lock()
        self._progress: Progress | None = None
        self._status: ChainStatus | None = None
        self._full_at = 0.0
        self._db = SqliteDb(self.path, what="audit log", error=AuditError,
                            schema_version=SCHEMA_VERSION,
                            migrations=migrations(self._key, self.head_file),
                            thread_name="watchkeeper-audit", on_open=self._on_open)

    def _on_open(self, conn: sqlite3.Connection) -> None:
        # An empty log without a head file (new, or everything gone): start one, so that
        # from the first entry on a deleted tail is told.
        if auditchain.read_head(self.head_file) is None and conn.execute(
                "SELECT 1 FROM entries LIMIT 1").fetchone() is None:
            auditchain.write_head(self.head_file, Head(0, GENESIS, self._key_id))

    @classmethod
    def open(cls, config: StorageConfig, **kwargs: Any) -> AuditLog:
        """Open (creating if needed) ``<data_dir>/audit.db``; the directory gets 0700."""
        try:
            config.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise AuditError(f"cannot create data directory {config.path}: "
                             f"{exc.strerror or exc}") from None
        return cls(config.path / AUDIT_FILENAME, **kwargs)

    # ------------------------------------------------------------------ connections

    @property
    def _closed(self) -> bool:
        return self._db.closed

    async def _on_writer(self, fn: Callable[[], T]) -> T:
        return await self._db.on_writer(fn)

    def _write_txn(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return self._db.write_txn()

    def _read(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return self._db.read()

    async def close(self) -> None:
        """Close both connections and the writer thread (idempotent)."""
        await self._db.close()

    def _insert(self, conn: sqlite3.Connection, kind: EntryKind, *,
                decision: Decision | None = None, message: str = "",
                data: dict[str, Any] | None = None, **columns: Any) -> int:
        values: dict[str, Any] = {"at": self._wall(), "kind": kind}
        if decision is not None:
            values.update(host=decision.request.host, action=decision.request.action,
                          target=None if decision.target is None else str(decision.target),
                          source=decision.request.source, verdict=decision.verdict,
                          decision_id=decision.id)
        values.update(columns)
        values["message"] = _clip(message)
        values["data"] = json.dumps(data or {}, separators=(",", ":"), default=str)
        # The chain link, in this transaction (it holds the write lock, so "the one before"
        # stays the one before). The id is chosen here because the hash covers it; as
        # AUTOINCREMENT would, never reusing one, so a deleted tail leaves a gap.
        seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'entries'").fetchone()
        last = conn.execute("SELECT id, hash FROM entries ORDER BY id DESC LIMIT 1").fetchone()
        values["id"] = max(int(seq[0]) if seq else 0, int(last[0]) if last else 0) + 1
        row = auditchain.normalise(values)
        prev = str(last[1]) if last is not None and last[1] is not None else GENESIS
        digest = auditchain.link_hash(self._key, prev, row)
        names = ", ".join((*_COLUMNS, "prev_hash", "hash"))
        marks = ", ".join("?" * (len(_COLUMNS) + 2))
        conn.execute(f"INSERT INTO entries ({names}) VALUES ({marks})", (*row, prev, digest))
        self._appended = Head(int(values["id"]), digest, self._key_id) if self._head_holds(
            conn) else None
        return int(values["id"])

    def _head_holds(self, conn: sqlite3.Connection) -> bool:
        """The head file still names a record that is there, unchanged: it may move on.

        If not (the tail was deleted, or the head file is gone while entries exist), it is
        left alone, so the evidence stays until someone looks.
        """
        head = auditchain.read_head(self.head_file)
        if head is None:
            return bool(conn.execute("SELECT count(*) FROM entries").fetchone()[0] == 1)
        if head.key_id != self._key_id:
            return False
        if head.id == 0:
            return True
        row = conn.execute("SELECT hash FROM entries WHERE id = ?", (head.id,)).fetchone()
        return row is not None and row[0] == head.hash

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            self._appended = None
            try:
                with self._write_txn() as conn:
                    result = fn(conn)
            except sqlite3.Error as exc:
                raise AuditError(f"cannot write audit log {self.path}: {exc}") from exc
            # After the commit, never before: the head file may lag behind the database
            # (a crash right here), never run ahead of it.
            head, self._appended = self._appended, None
            if head is not None:
                self._advance_head(head)
            return result
        return await self._on_writer(run)

    def _advance_head(self, head: Head) -> None:
        current = auditchain.read_head(self.head_file)
        if current is not None and current.id >= head.id:
            return  # another process wrote a later one
        try:
            auditchain.write_head(self.head_file, head)
        except OSError as exc:  # the entry is committed; a stale head only lags behind
            log.warning("cannot update the audit head file %s: %s", self.head_file, exc)

    async def record_decision(self, decision: Decision) -> int:
        """Append a decision (every one, refusals included): who proposed it, why, the verdict."""
        return await self._write(lambda conn: self._insert(
            conn, "decision", decision=decision, message=decision.why,
            data={"decision": _decision_data(decision)}))

    async def record_reset(self, *, host: str, target: str, by: str, message: str) -> int:
        """Append a human's reset of a failing target (a decision of theirs: action
        ``reset``, verdict ``reset``, ``actor`` who)."""
        return await self._write(lambda conn: self._insert(
            conn, "decision", host=host, action="reset", target=target, source="operator",
            verdict="reset", actor=by, message=message))

    async def record_intent(self, decision: Decision, *, argv: Sequence[str] = (),
                            plan: str = "", approval_id: int | None = None) -> int:
        """Append, commit and fsync the intent to run ``decision``; returns the intent id.

        Call it before the side effect: a crash after this leaves an unfinished intent.
        """
        if decision.verdict != "auto":
            raise AuditError(f"only an auto decision runs; this one is {decision.verdict}: "
                             f"{decision.why}")
        message = plan or f"about to run {decision.request.action} {decision.target}"
        return await self._write(lambda conn: self._insert(
            conn, "intent", decision=decision, message=message, approval_id=approval_id,
            data={"decision": _decision_data(decision), "argv": list(argv), "plan": plan}))

    async def record_outcome(self, intent_id: int, result: ActionResult | None = None,
                             verification: Verification | None = None, *,
                             outcome: AuditOutcome | None = None,
                             message: str | None = None) -> int:
        """Append what became of an intent (once); ``outcome`` defaults from the result.

        Without a result (reconciliation after a crash) ``outcome`` and ``message`` say what
        the live state showed. Raises AuditError for an unknown intent or a second outcome.
        """
        if outcome is None:
            if result is None:
                raise ValueError("record_outcome needs a result or an explicit outcome")
            if result.outcome != "ok":
                outcome = result.outcome
            elif verification is not None and not verification.ok:
                outcome = "verify_failed"
            else:
                outcome = "ok"
        if message is None:
            parts = [result.message] if result is not None else []
            if verification is not None:
                parts.append(f"verify: {verification.message}")
            message = "; ".join(parts) or outcome
        data: dict[str, Any] = {
            "result": None if result is None else result.model_dump(mode="json"),
            "verification": None if verification is None else verification.model_dump(
                mode="json")}
        final_outcome, final_message = outcome, message

        def write(conn: sqlite3.Connection) -> int:
            intent = conn.execute(
                "SELECT host, action, target, source, verdict, decision_id FROM entries "
                "WHERE id = ? AND kind = 'intent'", (intent_id,)).fetchone()
            if intent is None:
                raise AuditError(f"no intent {intent_id} in the audit log")
            done = conn.execute(
                "SELECT outcome, at FROM entries WHERE intent_id = ? AND kind = 'outcome'",
                (intent_id,)).fetchone()
            if done is not None:
                raise AuditError(f"intent {intent_id} already has an outcome ({done[0]} at "
                                 f"{from_epoch(done[1]):%Y-%m-%d %H:%M:%S} UTC)")
            host, action, target, source, verdict, decision_id = intent
            return self._insert(conn, "outcome", message=final_message, data=data,
                                host=host, action=action, target=target, source=source,
                                verdict=verdict, decision_id=decision_id,
                                outcome=final_outcome, intent_id=intent_id)
        return await self._write(write)

    async def add_pending(self, decision: Decision, *, ttl_s: float | None = None) -> int:
        """Store a decision that waits for a human; returns the approval id.

        After ``ttl_s`` seconds unanswered it expires: approving a fix for the state of an
        hour ago could do harm now, so the agent asks again if the problem is still there.
        """
        if decision.verdict != "approve":
            raise AuditError(f"only an approve decision waits for a human; this one is "
                             f"{decision.verdict}")
        if ttl_s is not None and not ttl_s > 0:
            raise ValueError(f"ttl_s must be > 0, not {ttl_s}")
        data: dict[str, Any] = {"decision": _decision_data(decision)}

        def write(conn: sqlite3.Connection) -> int:
            at = self._wall()
            if ttl_s is not None:
                data["expires_at"] = at + ttl_s
            return self._insert(conn, "approval_requested", decision=decision,
                                message=decision.why, data=data, at=at)
        return await self._write(write)

    async def approve(self, approval_id: int, by: str) -> Approval:
        """Approve a pending decision, in one durable call; ApprovalError if not pending."""
        return await self._resolve(approval_id, "approved", by, "")

    async def reject(self, approval_id: int, by: str, reason: str = "") -> Approval:
        """Reject a pending decision, in one durable call; ApprovalError if not pending."""
        return await self._resolve(approval_id, "rejected", by, reason)

    async def _resolve(self, approval_id: int, kind: Literal["approved", "rejected"], by: str,
                       reason: str) -> Approval:
        if not by.strip():
            raise ValueError("say who decides (by)")

        def write(conn: sqlite3.Connection) -> None:
            request = conn.execute(
                f"SELECT {_EXPIRES} FROM entries r WHERE id = ? AND kind = 'approval_requested'",
                (approval_id,)).fetchone()
            if request is None:
                raise ApprovalError(f"no approval {approval_id}")
            done = conn.execute(
                "SELECT kind, actor, at FROM entries WHERE approval_id = ? "
                "AND kind IN ('approved', 'rejected')", (approval_id,)).fetchone()
            if done is not None:
                when = from_epoch(done[2])
                raise ApprovalError(f"approval {approval_id} was already {done[0]} by {done[1]} "
                                    f"at {when:%Y-%m-%d %H:%M:%S} UTC; nothing changed")
            expires = request[0]
            if expires is not None and self._wall() >= expires:
                raise ApprovalError(
                    f"approval {approval_id} expired unanswered at "
                    f"{from_epoch(expires):%Y-%m-%d %H:%M:%S} UTC; nothing changed (if the "
                    f"problem is still there, a new approval is asked for)")
            row = conn.execute(f"{_SELECT} WHERE id = ?", (approval_id,)).fetchone()
            entry = _row_entry(row)
            self._insert(conn, kind, message=reason or f"{kind} by {by}",
                         host=entry.host, action=entry.action, target=entry.target,
                         source=entry.source, verdict=entry.verdict,
                         decision_id=entry.decision_id, approval_id=approval_id, actor=by)

        await self._write(write)
        approval = self.approval(approval_id)
        assert approval is not None  # committed just now, never deleted
        log.info("approval %d %s by %s", approval_id, kind, by)
        return approval

    # ------------------------------------------------------------------ reads

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check``: "ok" when the database is sound."""
        with self._read() as conn:
            return "\n".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check"))

    def chain_status(self) -> ChainStatus:
        """Verify the chain (in full at first and every ``full_check_every_s``, else only
        the entries appended since) and say whether it holds; thread-safe."""
        if not self._chain_lock.acquire(blocking=self._status is None):
            return self._status  # type: ignore[return-value]  # another thread is at it
        try:
            return self._check_chain()
        finally:
            self._chain_lock.release()

    def _check_chain(self) -> ChainStatus:
        now = self._monotonic()
        full = self._progress is None or now - self._full_at >= self._full_every
        if not full and self._status is not None and not self._status.ok:
            return self._status  # a break does not heal by itself; the next full walk tells
        done = auditchain.START if full else self._progress
        assert done is not None
        # Read before the database: the head file never runs ahead of what we read.
        head = auditchain.read_head(self.head_file)
        try:
            if full:  # on its own connection: the shared one stays free for the API
                conn = self._db.connect()
                try:
                    conn.execute("PRAGMA query_only = ON")
                    conn.execute("BEGIN")
                    progress, broken = auditchain.check(conn, self._key, head,
                                                        self.head_file, done)
                finally:
                    conn.close()
            else:
                with self._read() as conn:
                    progress, broken = auditchain.check(conn, self._key, head,
                                                        self.head_file, done)
        except (sqlite3.Error, AuditError) as exc:
            progress, broken = done, ChainBreak(problem="unreadable",
                                                message=f"the audit log cannot be read: {exc}")
        if full:
            self._full_at = now
        self._progress = progress
        was = self._status
        self._status = ChainStatus(ok=broken is None, checked=progress.checked,
                                   head_id=progress.last_id, broken_at=broken,
                                   checked_at=from_epoch(self._wall()))
        if broken is not None and (was is None or was.ok):
            log.error("audit log %s: chain broken at %s: %s: %s", self.path,
                      "?" if broken.id is None else f"#{broken.id}", broken.problem,
                      broken.message)
        elif broken is None and was is not None and not was.ok:
            log.info("audit log %s: chain verifies again (%d entries)", self.path,
                     progress.checked)
        return self._status

    def entry(self, entry_id: int) -> AuditEntry | None:
        """One entry by id."""
        with self._read() as conn:
            row = conn.execute(f"{_SELECT} WHERE id = ?", (entry_id,)).fetchone()
        found = None if row is None else _readable([row])
        return found[0] if found else None

    def entries(self, start: datetime | None = None, end: datetime | None = None, *,
                kind: EntryKind | None = None, host: str | None = None,
                action: str | None = None, target: str | None = None,
                outcome: str | None = None, verdict: str | None = None,
                source: str | None = None, intent_id: int | None = None,
                decision_id: str | None = None, limit: int = 1000) -> list[AuditEntry]:
        """Entries matching every given filter, oldest first (the newest ``limit`` if more).

        ``intent_id`` matches the intent and its outcome.
        """
        where, args = time_range(start, end)
        for column, value in (("kind", kind), ("host", host), ("action", action),
                              ("target", target), ("outcome", outcome), ("verdict", verdict),
                              ("source", source), ("decision_id", decision_id)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if intent_id is not None:
            where.append("(id = ? AND kind = 'intent' OR intent_id = ?)")
            args += [intent_id, intent_id]
        sql = _SELECT + (" WHERE " + " AND ".join(where) if where else "")
        with self._read() as conn:
            rows = conn.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return _readable(rows[::-1])

    def unfinished_intents(self) -> list[AuditEntry]:
        """Intents without an outcome, oldest first: reconcile them with the live state."""
        with self._read() as conn:
            rows = conn.execute(
                f"""{_SELECT} WHERE kind = 'intent' AND NOT EXISTS (
                        SELECT 1 FROM entries o WHERE o.kind = 'outcome'
                        AND o.intent_id = entries.id)
                    ORDER BY id""").fetchall()
        return _readable(rows)

    def _approvals(self, where: str, args: Sequence[Any], limit: int) -> list[Approval]:
        now = self._wall()
        with self._read() as conn:
            rows = conn.execute(
                f"""SELECT r.id, r.at, r.data, s.kind, s.actor, s.message, s.at, {_EXPIRES}
                    FROM entries r LEFT JOIN entries s ON s.approval_id = r.id
                         AND s.kind IN ('approved', 'rejected')
                    WHERE r.kind = 'approval_requested' {where}
                    ORDER BY r.id DESC LIMIT ?""", (*args, limit)).fetchall()
        out = []
        for id_, at, data, state, actor, message, resolved_at, expires in reversed(rows):
            try:
                decision = Decision.model_validate(json.loads(data)["decision"])
            except (ValueError, TypeError, KeyError) as exc:  # tampered; the chain says so
                log.warning("approval #%s cannot be read (%s); left out", id_,
                            str(exc).splitlines()[0])
                continue
            if state is None:
                state = "expired" if expires is not None and now >= expires else "pending"
            out.append(Approval(
                id=id_, decision=decision, requested_at=from_epoch(at),
                state=cast(ApprovalState, state), by=actor,
                reason=message if state == "rejected" else "",
                resolved_at=None if resolved_at is None else from_epoch(resolved_at),
                expires_at=None if expires is None else from_epoch(expires)))
        return out

    def pending(self, limit: int = 1000) -> list[Approval]:
        """Decisions still waiting for a human (not expired), oldest first."""
        return self._approvals(f"AND s.id IS NULL AND ({_EXPIRES} IS NULL OR {_EXPIRES} > ?)",
                               (self._wall(),), limit)

    def approval(self, approval_id: int) -> Approval | None:
        """One approval request and its state."""
        found = self._approvals("AND r.id = ?", (approval_id,), 1)
        return found[0] if found else None

    def approvals(self, state: ApprovalState | None = None, limit: int = 1000
                  ) -> list[Approval]:
        """Approval requests (of one state, or all), oldest first."""
        if state is None:
            return self._approvals("", (), limit)
        if state == "pending":
            return self.pending(limit)
        if state == "expired":
            return self._approvals(f"AND s.id IS NULL AND {_EXPIRES} <= ?", (self._wall(),),
                                   limit)
        return self._approvals("AND s.kind = ?", (state,), limit)


def verify_file(path: Path, *, wall: Callable[[], float] = time.time) -> ChainStatus:
    """Verify the whole chain of an audit log file, read-only (``watchkeeper audit verify``).

    Raises AuditError when there is nothing to verify (no file, not chained yet, no key).
    """
    if not path.is_file():
        raise AuditError(f"no audit log at {path}")
    head_file = auditchain.head_path(path)
    try:
        key = auditchain.load_key(auditchain.key_path(path), create=False)
    except ChainKeyError as exc:
        raise AuditError(str(exc)) from None
    head = auditchain.read_head(head_file)  # before the database, as chain_status does
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                               isolation_level=None)
    except sqlite3.Error as exc:
        raise AuditError(f"cannot open audit log {path}: {exc}") from None
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version < SCHEMA_VERSION:
            if head is not None and head.id > 0:
                raise AuditError(f"audit log {path} has no chain (schema version {version}), "
                                 f"but {head_file} says it was chained up to #{head.id}: it "
                                 "was rewritten")
            raise AuditError(f"audit log {path} is not chained yet (schema version {version}):"
                             " start watchkeeper once to chain its entries")
        if version > SCHEMA_VERSION:
            raise AuditError(f"audit log {path} has schema version {version}, newer than this "
                             f"watchkeeper supports ({SCHEMA_VERSION}); upgrade watchkeeper")
        if key is None:
            raise AuditError(f"no audit key at {auditchain.key_path(path)}: without it the "
                             "chain cannot be verified (restore it from a backup)")
        conn.execute("BEGIN")
        progress, broken = auditchain.check(conn, key, head, head_file)
    except sqlite3.Error as exc:
        raise AuditError(f"cannot read audit log {path}: {exc}") from None
    finally:
        conn.close()
    return ChainStatus(ok=broken is None, checked=progress.checked, head_id=progress.last_id,
                       broken_at=broken, checked_at=from_epoch(wall()))

