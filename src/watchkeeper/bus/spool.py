"""The spool: what a fleet agent could not send to its broker, on disk, in order, bounded.

A host agent publishes to the central through a network bus. While the broker cannot be
reached (or refuses), its events go here instead (``fleet_spool.db`` in the data directory;
SQLite WAL, ``synchronous=FULL`` through :class:`~watchkeeper.sqlitedb.SqliteDb`), and once it
answers they are sent again oldest first, each with its message id, so that the broker's
de-duplication drops a copy sent twice (a kill -9 between the broker's acknowledgement and
the row's removal). A row leaves the spool only after the broker acknowledged it.

Bounds (``max_events``, ``max_bytes``, ``max_age_s``): past any of them the oldest rows go,
droppable ones (metric snapshots) before the rest, and what went is kept as one gap (how
many, from when to when) for the central to show as a gap marker, never a silent hole. The
batch being sent (at most 200 rows) is never dropped: the spool may exceed its bounds by it
for the moment the broker takes it, so a gap counts only what the central never gets.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from watchkeeper.sqlitedb import SqliteDb
from watchkeeper.store.sqlite import StoreError

SPOOL_FILE = "fleet_spool.db"
SCHEMA_VERSION = 1

#: Defaults (README, "Fleet"): a day of a host's events at 5 s, in at most 256 MiB.
MAX_EVENTS = 100_000
MAX_BYTES = 256 * 1024 * 1024
MAX_AGE_S = 86_400.0


class SpoolError(StoreError):
    """The spool file cannot be opened, written or read (the message says why)."""


def _v1(conn: sqlite3.Connection) -> None:
    conn.execute("""
        CREATE TABLE spool (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            topic TEXT NOT NULL,
            msg_id TEXT NOT NULL,
            at REAL NOT NULL,
            droppable INTEGER NOT NULL,
            size INTEGER NOT NULL,
            payload BLOB NOT NULL
        )""")
    conn.execute("CREATE TABLE gap (one INTEGER PRIMARY KEY CHECK (one = 1), "
                 "dropped INTEGER NOT NULL, first_at REAL NOT NULL, last_at REAL NOT NULL)")


@dataclass(frozen=True)
class Spooled:
    """One event waiting to be sent."""

    id: int
    topic: str
    msg_id: str
    at: float
    payload: bytes


@dataclass(frozen=True)
class Gap:
    """Events the bounds made the spool drop: how many, and the times they covered."""

    dropped: int
    first_at: float
    last_at: float


@dataclass(frozen=True)
class Entry:
    """What to spool: the topic, the message id the broker de-duplicates on, the event's
    time (epoch s), whether it may be dropped first, and its encoded bytes."""

    topic: str
    msg_id: str
    at: float
    droppable: bool
    payload: bytes


class Spool:
    """An agent's unsent events, oldest first."""

    def __init__(self, path: Path, *, max_events: int = MAX_EVENTS, max_bytes: int = MAX_BYTES,
                 max_age_s: float = MAX_AGE_S) -> None:
        if max_events < 1 or max_bytes < 1 or not max_age_s > 0:
            raise ValueError("spool bounds must be positive")
        self.path = path
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        #: Rows up to this id are being sent: the bounds leave them alone (a row dropped
        #: while the broker takes it would be counted in a gap it never was in).
        self._sending = 0
        self._db = SqliteDb(path, what="fleet spool", error=SpoolError,
                            schema_version=SCHEMA_VERSION, migrations=[_v1],
                            thread_name="watchkeeper-spool")

    @classmethod
    def open(cls, data_dir: Path, *, max_events: int = MAX_EVENTS, max_bytes: int = MAX_BYTES,
             max_age_s: float = MAX_AGE_S) -> Spool:
        """The spool in ``data_dir`` (created 0600 if missing)."""
        data_dir.mkdir(parents=True, exist_ok=True)
        return cls(data_dir / SPOOL_FILE, max_events=max_events, max_bytes=max_bytes,
                   max_age_s=max_age_s)

    async def close(self) -> None:
        await self._db.close()

    # ----------------------------------------------------------------- writes

    async def append(self, entries: Sequence[Entry], *, now: float) -> int:
        """Keep ``entries`` (durable on return), then enforce the bounds; returns how many
        rows the bounds dropped."""
        def write() -> int:
            with self._db.write_txn() as conn:
                conn.executemany(
                    "INSERT INTO spool (topic, msg_id, at, droppable, size, payload) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [(e.topic, e.msg_id, e.at, int(e.droppable), len(e.payload), e.payload)
                     for e in entries])
                return self._bound(conn, now)
        return await self._db.on_writer(write)

    def _bound(self, conn: sqlite3.Connection, now: float) -> int:
        # The batch being sent does not count: it is on its way out.
        count, size = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM spool WHERE id > ?",
            (self._sending,)).fetchone()
        victims: list[tuple[int, float, int]] = []
        # Too old: whatever it is.
        old = conn.execute("SELECT id, at, size FROM spool WHERE at < ? AND id > ? "
                           "ORDER BY id", (now - self.max_age_s, self._sending)).fetchall()
        victims += old
        count -= len(old)
        size -= sum(r[2] for r in old)
        gone = {r[0] for r in old}
        # Too many or too big: the oldest snapshots first, then the oldest of the rest.
        for droppable in (1, 0):
            if count <= self.max_events and size <= self.max_bytes:
                break
            for row in conn.execute("SELECT id, at, size FROM spool WHERE droppable = ? "
                                    "AND id > ? ORDER BY id", (droppable, self._sending)):
                if count <= self.max_events and size <= self.max_bytes:
                    break
                if row[0] in gone:
                    continue
                victims.append(row)
                gone.add(row[0])
                count -= 1
                size -= row[2]
        if not victims:
            return 0
        conn.executemany("DELETE FROM spool WHERE id = ?", [(r[0],) for r in victims])
        first = min(r[1] for r in victims)
        last = max(r[1] for r in victims)
        conn.execute(
            "INSERT INTO gap (one, dropped, first_at, last_at) VALUES (1, ?, ?, ?) "
            "ON CONFLICT(one) DO UPDATE SET dropped = dropped + excluded.dropped, "
            "first_at = MIN(first_at, excluded.first_at), "
            "last_at = MAX(last_at, excluded.last_at)", (len(victims), first, last))
        return len(victims)

    def sending(self, upto: int) -> None:
        """Rows up to id ``upto`` are being sent (0: none): the bounds may be exceeded by
        them until they are sent, rather than count them dropped."""
        self._sending = upto

    async def sent(self, ids: Sequence[int]) -> None:
        """The broker acknowledged these rows: they leave the spool."""
        def write() -> None:
            with self._db.write_txn() as conn:
                conn.executemany("DELETE FROM spool WHERE id = ?", [(i,) for i in ids])
        await self._db.on_writer(write)

    async def gap_sent(self, gap: Gap) -> None:
        """The gap marker for ``gap`` was acknowledged: forget what it covered (a later gap,
        grown meanwhile, keeps the rest)."""
        def write() -> None:
            with self._db.write_txn() as conn:
                conn.execute("UPDATE gap SET dropped = dropped - ? WHERE one = 1",
                             (gap.dropped,))
                conn.execute("DELETE FROM gap WHERE dropped <= 0")
        await self._db.on_writer(write)

    # ----------------------------------------------------------------- reads

    def head(self, limit: int = 500) -> list[Spooled]:
        """The oldest ``limit`` rows, in the order they were spooled."""
        with self._db.read() as conn:
            rows = conn.execute("SELECT id, topic, msg_id, at, payload FROM spool ORDER BY id "
                                "LIMIT ?", (limit,)).fetchall()
        return [Spooled(id=r[0], topic=r[1], msg_id=r[2], at=r[3], payload=bytes(r[4]))
                for r in rows]

    def gap(self) -> Gap | None:
        """What the bounds dropped and no gap marker has covered yet."""
        with self._db.read() as conn:
            row = conn.execute("SELECT dropped, first_at, last_at FROM gap").fetchone()
        return None if row is None else Gap(dropped=row[0], first_at=row[1], last_at=row[2])

    def stats(self) -> tuple[int, int, float | None]:
        """Rows, bytes and the oldest row's time (None when empty)."""
        with self._db.read() as conn:
            count, size, oldest = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(at) FROM spool").fetchone()
        return count, size, oldest

    def __len__(self) -> int:
        return self.stats()[0]
