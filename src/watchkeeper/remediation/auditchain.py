"""The audit log's hash chain: every record carries the keyed hash of the one before.

* ``hash = "v1:" + HMAC-SHA256(key, canonical JSON of ["watchkeeper-audit-v1", prev_hash,
  id, at, kind, ..., data])``, ``prev_hash`` the previous record's hash, ``GENESIS`` for the
  first. Computed in the transaction that appends the record, so no committed record lacks
  its link, whatever kills the process.
* The key lives outside the database (``audit.key`` beside it, mode 0600): whoever can
  rewrite the database but cannot read the key cannot recompute the chain.
* A head file (``audit.head``) records the last record appended and its hash, written after
  each commit. A deleted tail leaves the chain itself intact; the head file tells.
* A verifier walks the chain (all of it, or only the records after the last verified one)
  and names the first broken link: edited, deleted, inserted, reordered, truncated.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import os
import secrets
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from watchkeeper.events import Frozen
from watchkeeper.sqlitedb import from_epoch
from watchkeeper.status import write_atomic

log = logging.getLogger(__name__)

#: The fields a record's hash covers, in this order (encoding version 1). A new column
#: needs a new encoding version, never a change to this one.
COLUMNS = ("id", "at", "kind", "host", "action", "target", "source", "verdict", "outcome",
           "decision_id", "intent_id", "approval_id", "actor", "message", "data")
_INTEGER = frozenset({"id", "intent_id", "approval_id"})
_VERSION_TAG = "watchkeeper-audit-v1"
_PREFIX = "v1:"
#: What the first record links to.
GENESIS = _PREFIX + "0" * 64
#: The append-only triggers; a missing one means someone dropped it.
TRIGGERS = ("entries_no_update", "entries_no_delete")

ChainProblem = Literal["edited", "deleted", "inserted", "reordered", "truncated", "key",
                       "head", "triggers", "unreadable"]


class ChainKeyError(Exception):
    """The audit key file cannot be read or created."""


class ChainBreak(Frozen):
    """The first broken link of the chain, in words."""

    id: int | None = None
    at: datetime | None = None
    problem: ChainProblem
    message: str


class ChainStatus(Frozen):
    """The audit log's chain as last verified."""

    ok: bool
    checked: int
    head_id: int
    broken_at: ChainBreak | None = None
    checked_at: datetime


@dataclass(frozen=True)
class Head:
    """The last record appended, as the head file remembers it."""

    id: int
    hash: str
    key_id: str


@dataclass(frozen=True)
class Progress:
    """How far a walk got: records verified, and the last one's id and hash."""

    checked: int
    last_id: int
    last_hash: str


START = Progress(0, 0, GENESIS)


# --------------------------------------------------------------------------- hashing


def normalise(values: dict[str, Any]) -> tuple[Any, ...]:
    """The hashed columns as SQLite will give them back (ints, floats, text or NULL)."""
    out: list[Any] = []
    for name in COLUMNS:
        value = values.get(name)
        if value is None:
            out.append(None)
        elif name in _INTEGER:
            out.append(int(value))
        elif name == "at":
            out.append(float(value))
        else:
            out.append(str(value))
    return tuple(out)


#: JSON with ASCII escapes and no spaces: one byte string for one record, on any platform.
#: One encoder for all (json.dumps with separators builds a new one per call).
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode


@functools.lru_cache(maxsize=8)
def _keyed(key: bytes) -> hmac.HMAC:
    # The key schedule once; each record copies it (a quarter faster than hmac.digest).
    return hmac.new(key, digestmod=hashlib.sha256)


def link_hash(key: bytes, prev: str, row: Sequence[Any]) -> str:
    """The hash of one record (``row`` in COLUMNS order) chained to ``prev``."""
    mac = _keyed(key).copy()
    mac.update(_encode([_VERSION_TAG, prev, *row]).encode("ascii"))
    return _PREFIX + mac.hexdigest()


def key_id(key: bytes) -> str:
    """A fingerprint of the key (which key chained the records), not the key itself."""
    return hmac.digest(key, b"watchkeeper audit key id", "sha256").hex()[:16]


def key_path(db_path: Path) -> Path:
    """``audit.key`` beside ``audit.db``."""
    return db_path.with_suffix(".key")


def head_path(db_path: Path) -> Path:
    """``audit.head`` beside ``audit.db``."""
    return db_path.with_suffix(".head")


def load_key(path: Path, *, create: bool) -> bytes | None:
    """The chain key from ``path`` (created, mode 0600, when missing and ``create``)."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        text = None
    except (OSError, UnicodeDecodeError) as exc:
        raise ChainKeyError(f"cannot read the audit key {path}: {exc}") from None
    if text is not None:
        try:
            key = bytes.fromhex(text)
        except ValueError:
            key = b""
        if len(key) < 32:
            raise ChainKeyError(f"the audit key {path} is not 64 hex digits; restore it from "
                                "a backup (records chained with another key cannot verify)")
        if os.name == "posix" and path.stat().st_mode & 0o077:
            log.warning("%s was readable by others; restricting it to its owner", path)
            path.chmod(0o600)
        return key
    if not create:
        return None
    key = secrets.token_bytes(32)
    try:
        # The mode is set at creation: never readable by others, not even for a moment.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(key.hex() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
    except FileExistsError:  # another process made it first: use theirs
        return load_key(path, create=False)
    except OSError as exc:
        raise ChainKeyError(f"cannot create the audit key {path}: "
                            f"{exc.strerror or exc}") from None
    log.info("generated the audit chain key %s (keep it with backups of the audit log)", path)
    return key


def read_head(path: Path) -> Head | None:
    """The head file, or None if there is none (or it cannot be read as one)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Head(id=int(data["id"]), hash=str(data["hash"]), key_id=str(data["key_id"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("audit head file %s is unreadable (%s); treated as missing", path, exc)
        return None


def write_head(path: Path, head: Head) -> None:
    """Rewrite the head file atomically (a reader sees the old one or the new one)."""
    write_atomic(path, {"version": 1, "id": head.id, "hash": head.hash,
                        "key_id": head.key_id})


# --------------------------------------------------------------------------- verifying

_WALK = f"SELECT {', '.join(COLUMNS)}, prev_hash, hash FROM entries WHERE id > ? ORDER BY id"


def _at(conn: sqlite3.Connection, record_id: int) -> datetime | None:
    row = conn.execute("SELECT at FROM entries WHERE id = ?", (record_id,)).fetchone()
    try:
        return None if row is None else from_epoch(float(row[0]))
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _owner(conn: sqlite3.Connection, digest: str) -> int | None:
    """The id of the record whose stored hash is ``digest`` (a scan: only on a break)."""
    row = conn.execute("SELECT min(id) FROM entries WHERE hash = ?", (digest,)).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def _broken(conn: sqlite3.Connection, record_id: int | None, problem: ChainProblem,
            message: str) -> ChainBreak:
    at = None if record_id is None else _at(conn, record_id)
    return ChainBreak(id=record_id, at=at, problem=problem, message=message)


def _link_break(conn: sqlite3.Connection, rid: int, prev: str, done: Progress) -> ChainBreak:
    """Record ``rid`` does not link to the one before it: say what happened between."""
    owner = _owner(conn, prev)
    if owner is None:
        missing = (f"#{done.last_id + 1}" if rid == done.last_id + 2 else
                   f"#{done.last_id + 1} to #{rid - 1}" if rid > done.last_id + 1 else
                   "the record it followed")
        return _broken(conn, rid, "deleted",
                       f"records before #{rid} were deleted ({missing} missing): it links to "
                       "a record that is no longer there")
    if owner > rid:
        return _broken(conn, rid, "reordered",
                       f"record #{rid} was written after #{owner}: the records were reordered")
    return _broken(conn, owner + 1, "inserted",
                   f"record #{owner + 1} was inserted: #{rid} follows #{owner} in the chain")


def _content_break(conn: sqlite3.Connection, rid: int, stored: str,
                   head: Head | None) -> ChainBreak:
    """Record ``rid``'s fields do not match its hash: edited, or forged."""
    nxt = conn.execute("SELECT prev_hash FROM entries WHERE id > ? ORDER BY id LIMIT 1",
                       (rid,)).fetchone()
    linked = (nxt is not None and nxt[0] == stored) or (
        head is not None and head.id == rid and head.hash == stored)
    if linked or (nxt is None and head is not None and head.id >= rid):
        return _broken(conn, rid, "edited",
                       f"record #{rid} was changed after it was written: its fields do not "
                       "match its hash")
    return _broken(conn, rid, "inserted",
                   f"record #{rid} was not written by watchkeeper: its hash does not match "
                   "and no record links to it")


def walk(conn: sqlite3.Connection, key: bytes, done: Progress = START,
         head: Head | None = None) -> tuple[Progress, ChainBreak | None]:
    """Verify the records after ``done`` (in one read transaction); stops at the first break."""
    checked, last_id, last_hash = done.checked, done.last_id, done.last_hash
    width = len(COLUMNS)
    for row in conn.execute(_WALK, (last_id,)):
        rid, prev, stored = row[0], row[width], row[width + 1]
        here = Progress(checked, last_id, last_hash)
        if not isinstance(rid, int) or prev is None or stored is None:
            return here, _broken(conn, rid, "inserted",
                                 f"record #{rid} has no chain link: it was not written by "
                                 "watchkeeper")
        if prev != last_hash:
            return here, _link_break(conn, rid, prev, here)
        if rid != last_id + 1:
            missing = f"#{last_id + 1}" + ("" if rid == last_id + 2 else f" to #{rid - 1}")
            return here, _broken(conn, rid, "deleted",
                                 f"records before #{rid} were deleted ({missing} missing)")
        try:
            intact = link_hash(key, prev, row[:width]) == stored
        except (TypeError, ValueError):  # a blob where text was: not what was written
            intact = False
        if not intact:
            return here, _content_break(conn, rid, stored, head)
        checked, last_id, last_hash = checked + 1, rid, stored
    return Progress(checked, last_id, last_hash), None


def check(conn: sqlite3.Connection, key: bytes, head: Head | None, head_file: Path,
          done: Progress = START) -> tuple[Progress, ChainBreak | None]:
    """The whole check: the key, the chain after ``done``, the tail against the head file,
    and the append-only triggers. Read ``head`` *before* opening ``conn``'s transaction:
    the head file is written after the commit, so it is never ahead of what ``conn`` sees."""
    if head is not None and head.key_id != key_id(key):
        return done, ChainBreak(problem="key", message=(
            f"the audit key (id {key_id(key)}) is not the one the chain was written with "
            f"(id {head.key_id}, in {head_file}): restore the key, or the records cannot be "
            "verified"))
    if done.last_id:
        # Still there, unchanged, since the last walk? (A deleted tail shows here at once.)
        row = conn.execute("SELECT hash FROM entries WHERE id = ?", (done.last_id,)).fetchone()
        if row is None:
            top = conn.execute("SELECT max(id) FROM entries").fetchone()[0]
            return done, ChainBreak(id=done.last_id, problem="truncated", message=(
                f"records from #{done.last_id} on were deleted (verified before; the log "
                f"now ends at #{top or 0})"))
        if row[0] != done.last_hash:
            return done, _broken(conn, done.last_id, "edited",
                                 f"record #{done.last_id} was changed after it was verified")
    progress, found = walk(conn, key, done, head)
    if found is not None:
        return progress, found
    if head is None:
        if progress.last_id:
            return progress, ChainBreak(problem="head", message=(
                f"the head file {head_file} is missing: whether records were deleted from "
                "the end cannot be told"))
    elif head.id > progress.last_id:
        return progress, ChainBreak(id=progress.last_id + 1, problem="truncated", message=(
            f"records after #{progress.last_id} were deleted: #{head.id} was written (head "
            f"file {head_file})"))
    elif head.id:
        row = conn.execute("SELECT hash FROM entries WHERE id = ?", (head.id,)).fetchone()
        if row is None or row[0] != head.hash:
            return progress, _broken(conn, head.id, "edited", (
                f"record #{head.id} is not the one watchkeeper wrote (head file "
                f"{head_file}): the chain was rewritten from there"))
    present = {r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'entries'")}
    missing = [t for t in TRIGGERS if t not in present]
    if missing:
        return progress, ChainBreak(problem="triggers", message=(
            f"the append-only trigger{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)} {'were' if len(missing) > 1 else 'was'} dropped: records "
            "can be changed without SQLite refusing"))
    return progress, None
