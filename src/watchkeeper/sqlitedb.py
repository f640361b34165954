"""SqliteDb: one SQLite file written by one thread and read by many, durably.

The history store and the audit log both need the same things: a private file (0600),
WAL mode with ``synchronous=FULL`` (a commit that returned survives a power cut), schema
migrations one transaction per step, one writer thread that owns the write connection (no
SQLITE_BUSY among our own writes), and a read connection shared under a lock. Each owner
names itself in error messages and brings its own error class and migrations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
Migration = Callable[[sqlite3.Connection], None]


def epoch(dt: datetime) -> float:
    """Epoch seconds, as the ``at`` columns store them; a naive datetime is taken as UTC."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def from_epoch(ts: float) -> datetime:
    """The UTC datetime of an ``at`` column."""
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def time_range(start: datetime | None, end: datetime | None,
               column: str = "at") -> tuple[list[str], list[Any]]:
    """WHERE terms and their arguments for ``start <= column <= end`` (either may be open)."""
    where: list[str] = []
    args: list[Any] = []
    if start is not None:
        where.append(f"{column} >= ?")
        args.append(epoch(start))
    if end is not None:
        where.append(f"{column} <= ?")
        args.append(epoch(end))
    return where, args


def _default_explain(what: str, path: Path, exc: BaseException) -> str:
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
        return (f"{path} is not a SQLite database or is damaged ({exc}); move it away or "
                "point storage.data_dir elsewhere")
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return f"cannot open {what} {path}: {reason}"


class SqliteDb:
    """A SQLite file in WAL mode with ``synchronous=FULL``, one writer thread, shared reads."""

    def __init__(self, path: Path, *, what: str, error: type[Exception], schema_version: int,
                 migrations: Sequence[Migration], thread_name: str,
                 explain: Callable[[Path, BaseException], str] | None = None,
                 on_open: Callable[[sqlite3.Connection], None] | None = None) -> None:
        self.path = path
        self.what = what
        self._error = error
        self._schema_version = schema_version
        self._migrations = migrations
        self._explain = explain or (lambda p, e: _default_explain(what, p, e))
        self._on_open = on_open
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._read_lock = threading.Lock()
        self.closed = False
        try:
            self._writer.submit(self._open_writer).result()
            self._rconn = self.connect()
            self._rconn.execute("PRAGMA query_only = ON")
        except BaseException:
            if self._rconn is not None:
                self._rconn.close()
            self._writer.submit(self._close_writer).result()
            self._writer.shutdown(wait=True)
            raise

    def connect(self) -> sqlite3.Connection:
        """A new connection; a foreign or damaged file is a clear error, not a traceback."""
        try:
            # isolation_level=None: BEGIN/COMMIT are ours, nothing implicit. The read
            # connection is shared between threads under the read lock.
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as exc:
            raise self._error(self._explain(self.path, exc)) from None
        try:
            # Any query fails with "file is not a database" on a foreign file.
            conn.execute("PRAGMA schema_version").fetchone()
        except sqlite3.Error as exc:
            conn.close()
            raise self._error(self._explain(self.path, exc)) from None
        return conn

    def _open_writer(self) -> None:
        """Runs on the writer thread: create (0600), configure and migrate the file."""
        if not self.path.exists():
            # Private: history and audit name processes, command lines and reasoning. SQLite
            # gives its -wal and -shm files the same mode.
            try:
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            except OSError as exc:
                raise self._error(self._explain(self.path, exc)) from None
        conn = self.connect()
        self._wconn = conn
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise self._error(f"{self.what} {self.path} cannot use WAL mode (got {mode!r});"
                                  " is it on a network filesystem?")
            # FULL: the WAL is fsynced at every commit, so what was acknowledged survives a
            # power cut too (NORMAL would only survive a process crash).
            conn.execute("PRAGMA synchronous = FULL")
            self._migrate(conn)
            if self._on_open is not None:
                self._on_open(conn)
        except sqlite3.Error as exc:
            raise self._error(self._explain(self.path, exc)) from None

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > self._schema_version:
            raise self._error(f"{self.what} {self.path} has schema version {version}, newer "
                              f"than this watchkeeper supports ({self._schema_version}); "
                              "upgrade watchkeeper")
        while version < self._schema_version:
            # One transaction per step: a crash mid-migration leaves the old version intact.
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._migrations[version](conn)
                conn.execute(f"PRAGMA user_version = {version + 1}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            version += 1
            log.info("%s %s migrated to schema version %d", self.what, self.path, version)

    def _close_writer(self) -> None:
        if self._wconn is not None:
            self._wconn.close()
            self._wconn = None

    async def on_writer(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the writer thread (all writes go there)."""
        if self.closed:
            raise self._error(f"{self.what} is closed")
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn)

    @contextlib.contextmanager
    def write_txn(self) -> Iterator[sqlite3.Connection]:
        """A write transaction on the writer thread's connection."""
        conn = self._wconn
        if conn is None:
            raise self._error(f"{self.what} is closed")
        # IMMEDIATE takes the write lock up front: another process holding it makes us wait
        # (busy timeout) instead of failing half-way, and what the write reads stays true.
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction (a consistent view) on the shared read connection."""
        with self._read_lock:
            conn = self._rconn
            if conn is None:
                raise self._error(f"{self.what} is closed")
            conn.execute("BEGIN")
            try:
                yield conn
            except sqlite3.Error as exc:
                raise self._error(f"cannot read {self.what} {self.path}: {exc}") from exc
            finally:
                if conn.in_transaction:
                    conn.execute("COMMIT")

    async def close(self) -> None:
        """Close both connections and the writer thread (idempotent)."""
        if self.closed:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(self._writer, self._close_writer)
        finally:
            self.closed = True
            self._writer.shutdown(wait=True)
            with self._read_lock:
                if self._rconn is not None:
                    self._rconn.close()
                    self._rconn = None
