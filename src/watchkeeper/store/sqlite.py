"""SQLite history store: batched writes on one writer thread, raw samples plus rollups.

Design, in short:

* ``add_snapshot``/``add_event`` only append to an in-memory queue. ``flush()`` hands the
  queue to a single writer thread (all writes happen on that one thread and its one
  connection) which writes it in one transaction. The database runs in WAL mode with
  ``synchronous=FULL``: the WAL is fsynced on every commit, so once ``flush()`` returns,
  everything queued before the call survives a kill -9 and a power cut. What is lost on a
  crash is at most what was queued since the last flush (one ``flush_interval``).
* Reads use a second connection behind a lock; WAL lets them run while the writer writes.
* Each snapshot is kept whole (zlib-compressed JSON, for the dashboard and the CLI) and as
  scalar samples from ``series.flatten``, keyed by a small ``series`` lookup table
  (host, metric, dimension) -> integer id so a sample row is three numbers.
* ``apply_retention`` rolls raw samples into ``rollup_step_s`` buckets as soon as a bucket is
  complete, then deletes raw data past ``raw_retention_hours``: history stays continuous,
  and because a rollup is recomputed wholly from raw samples (never incremented), running it
  twice counts nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import sqlite3
import threading
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from watchkeeper.config import StorageConfig
from watchkeeper.events import Event, MetricSnapshot, decode, encode, utcnow
from watchkeeper.series import flatten
from watchkeeper.sqlitedb import SqliteDb, epoch, from_epoch, time_range
from watchkeeper.store.base import SeriesPoint, StoredEvent

log = logging.getLogger(__name__)

T = TypeVar("T")

DB_FILENAME = "watchkeeper.db"

#: Seconds between retention runs done by the flusher.
DEFAULT_RETENTION_INTERVAL_S = 300.0

#: Queued items kept while the database is failing; beyond this the oldest are dropped.
DEFAULT_MAX_PENDING = 100_000

#: zlib level of stored snapshots: 1 compresses a 50-process snapshot 2.8 times faster than 6
#: (42 against 116 us) for 10 % more bytes (1,706 against 1,552), a central's dearest write.
_ZLIB_LEVEL = 1


class StoreError(Exception):
    """The history database cannot be opened, written or read (message says why)."""


@dataclass(frozen=True)
class SnapshotGap:
    """A gap between two of a host's snapshots (epoch seconds) and the machine's boot time
    on each side (None when a snapshot does not say): a later boot time is a reboot."""

    host: str
    before: float
    after: float
    boot_before: float | None
    boot_after: float | None


@dataclass(frozen=True)
class HostCoverage:
    """How one host's snapshots cover a range (epoch seconds; ``previous``: the last
    snapshot before the range, if any)."""

    host: str
    count: int
    first: float
    last: float
    covered_s: float
    gaps: int
    previous: float | None


@dataclass(frozen=True)
class RetentionResult:
    """What one retention run did (row counts)."""

    rollups_written: int
    samples_deleted: int
    snapshots_deleted: int
    rollups_deleted: int
    events_deleted: int


# --------------------------------------------------------------------------- schema

Migration = Callable[[sqlite3.Connection], None]


def _migrate_to_1(conn: sqlite3.Connection) -> None:
    statements = [
        # Small key/value state: retention watermarks.
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID",
        # One row per (host, metric, dimension); samples refer to it by integer id, which
        # keeps sample rows at three numbers and serves as the metric/dimension lookup.
        """CREATE TABLE series (
            id INTEGER PRIMARY KEY,
            metric TEXT NOT NULL,
            dimension TEXT NOT NULL,
            host TEXT NOT NULL,
            UNIQUE (metric, dimension, host)
        )""",
        # WITHOUT ROWID: the primary key *is* the (series, time) index, no second B-tree,
        # and a snapshot delivered twice (bus redelivery) cannot be counted twice.
        """CREATE TABLE samples (
            series_id INTEGER NOT NULL,
            at REAL NOT NULL,
            value REAL NOT NULL,
            PRIMARY KEY (series_id, at)
        ) WITHOUT ROWID""",
        """CREATE TABLE rollups (
            series_id INTEGER NOT NULL,
            step INTEGER NOT NULL,
            bucket INTEGER NOT NULL,
            min REAL NOT NULL,
            max REAL NOT NULL,
            sum REAL NOT NULL,
            count INTEGER NOT NULL,
            PRIMARY KEY (series_id, step, bucket)
        ) WITHOUT ROWID""",
        """CREATE TABLE snapshots (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            host TEXT NOT NULL,
            seq INTEGER NOT NULL,
            data BLOB NOT NULL
        )""",
        "CREATE UNIQUE INDEX snapshots_host_at ON snapshots (host, at)",
        "CREATE INDEX snapshots_at ON snapshots (at)",
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at REAL NOT NULL,
            topic TEXT NOT NULL,
            kind TEXT NOT NULL,
            host TEXT NOT NULL,
            payload TEXT NOT NULL
        )""",
        "CREATE INDEX events_at ON events (at)",
        "CREATE INDEX events_kind_at ON events (kind, at)",
    ]
    for sql in statements:
        conn.execute(sql)


#: The migration hook: ``MIGRATIONS[n]`` takes the schema from version n to n + 1 and runs
#: inside the transaction that also bumps ``PRAGMA user_version``. Append, never edit.
def _migrate_to_2(conn: sqlite3.Connection) -> None:
    # The digest of an event's topic and stored form: an event delivered twice (a fleet's
    # central killed after storing it, before the broker heard so) is stored once. Rows
    # written before this version have none (NULLs never collide).
    conn.execute("ALTER TABLE events ADD COLUMN digest TEXT")
    conn.execute("CREATE UNIQUE INDEX events_digest ON events (digest)")


MIGRATIONS: tuple[Migration, ...] = (_migrate_to_1, _migrate_to_2)
SCHEMA_VERSION = len(MIGRATIONS)


# --------------------------------------------------------------------------- helpers


def _floor(ts: float, step: int) -> int:
    return math.floor(ts / step) * step


def _digest(topic: str, payload: bytes) -> str:
    """One event's identity in the history: its topic and exact stored form."""
    return hashlib.blake2b(topic.encode() + b"\0" + payload, digest_size=16).hexdigest()


def _kind(event: Event) -> str:
    kind = getattr(event, "kind", None)
    return kind if isinstance(kind, str) else type(event).__name__


def _explain(path: Path, exc: BaseException) -> str:
    """A readable reason for an open failure, with the likely fix."""
    text = str(exc)
    # OperationalError (locked, cannot open, ...) is a DatabaseError too, but not damage.
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
        return (f"{path} is not a SQLite database or is damaged ({text}); move it away "
                "or point storage.data_dir elsewhere")
    if "readonly" in text or isinstance(exc, PermissionError):
        return f"history database {path} is not writable ({text}); check its permissions"
    if not path.parent.is_dir():
        return (f"cannot create history database {path}: directory {path.parent} does not "
                "exist or is not a directory")
    if isinstance(exc, OSError):
        return f"cannot open history database {path}: {exc.strerror or text}"
    return f"cannot open history database {path}: {text}"


_Item = tuple[str, Any, str]  # ("s", snapshot, "") or ("e", event, topic)


# --------------------------------------------------------------------------- the store


class SqliteStore:
    """History in one SQLite file; implements the Store protocol (store/base.py).

    Opening does blocking file I/O (in async code: ``await asyncio.to_thread(...)`` if that
    matters); every later write from async code runs on the writer thread. Read methods are
    synchronous and thread-safe: call them from API/CLI threads (or via ``to_thread``).
    """

    def __init__(self, path: Path | str, config: StorageConfig | None = None, *,
                 clock: Callable[[], datetime] = utcnow,
                 retention_interval_s: float = DEFAULT_RETENTION_INTERVAL_S,
                 max_pending: int = DEFAULT_MAX_PENDING) -> None:
        self.path = Path(path)
        self.config = config or StorageConfig()
        self._clock = clock
        self._retention_interval_s = retention_interval_s
        self._max_pending = max_pending
        self._pending: list[_Item] = []
        self._pending_lock = threading.Lock()
        self._dropped = 0
        self._closed = False  # no more add_*
        self._writer_down = False  # no more flush / retention
        self._failing = False
        self._flusher: asyncio.Task[None] | None = None
        self._series_ids: dict[tuple[str, str, str], int] = {}
        self._db = SqliteDb(self.path, what="history database", error=StoreError,
                            schema_version=SCHEMA_VERSION, migrations=MIGRATIONS,
                            thread_name="watchkeeper-store", explain=_explain,
                            on_open=self._load_series_ids)

    def _load_series_ids(self, conn: sqlite3.Connection) -> None:
        for sid, metric, dim, host in conn.execute(
                "SELECT id, metric, dimension, host FROM series"):
            self._series_ids[(metric, dim, host)] = sid

    @classmethod
    def open(cls, config: StorageConfig, **kwargs: Any) -> SqliteStore:
        """Open (creating if needed) ``<data_dir>/watchkeeper.db``; the directory gets 0700."""
        data_dir = config.path
        try:
            data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create data directory {data_dir}: "
                             f"{exc.strerror or exc}") from None
        return cls(data_dir / DB_FILENAME, config, **kwargs)

    # ------------------------------------------------------------------ connections

    async def _on_writer(self, fn: Callable[[], T]) -> T:
        if self._writer_down:
            raise StoreError("history store is closed")
        return await self._db.on_writer(fn)

    def _write_txn(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return self._db.write_txn()

    def _read(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return self._db.read()

    # ------------------------------------------------------------------ writes

    @property
    def pending(self) -> int:
        """Items queued and not yet written."""
        return len(self._pending)

    def add_snapshot(self, snap: MetricSnapshot) -> None:
        """Queue a snapshot for the next batch (no I/O)."""
        self._enqueue(("s", snap, ""))

    def add_event(self, topic: str, event: Event) -> None:
        """Queue an event for the next batch (no I/O)."""
        self._enqueue(("e", event, topic))

    def _enqueue(self, item: _Item) -> None:
        if self._closed:
            raise StoreError("history store is closed")
        # A lock rather than bare list ops: flush swaps the list from the writer thread.
        with self._pending_lock:
            self._pending.append(item)
            over = len(self._pending) - self._max_pending
            if over > 0:
                # Only reached while the database keeps failing: bound the memory.
                del self._pending[:over]
                if not self._dropped:
                    log.warning("history store: queue full, dropping the oldest items")
                self._dropped += over

    async def flush(self) -> int:
        """Write everything queued in one transaction on the writer thread.

        Returns the number of snapshots and events written. Returning (not raising) is the
        acknowledgement: everything queued before the call is committed and fsynced. On a
        failure the batch goes back to the queue for the next flush and StoreError is raised.
        """
        if not self.pending and not self._writer_down:
            return 0  # nothing queued: skip the thread hop (this runs every second)
        return await self._on_writer(self._flush_sync)

    def _flush_sync(self) -> int:
        with self._pending_lock:
            batch, self._pending = self._pending, []
        if not batch:
            return 0
        try:
            written, new_ids = self._write_batch(batch)
        except BaseException as exc:
            with self._pending_lock:
                # Back in front, so order is kept and the next flush retries it.
                self._pending[:0] = batch
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot write history to {self.path}: {exc}") from exc
            raise
        # Only now: ids from a rolled-back transaction must not be remembered.
        self._series_ids.update(new_ids)
        with self._pending_lock:
            dropped, self._dropped = self._dropped, 0
        if dropped:
            log.warning("history store: %d queued items were dropped while writes failed",
                        dropped)
        return written

    def _write_batch(self, batch: list[_Item]) -> tuple[int, dict[tuple[str, str, str], int]]:
        snaps: list[tuple[float, str, int, bytes]] = []
        samples: list[tuple[tuple[str, str, str], float, float]] = []
        events: list[tuple[float, str, str, str, str, str]] = []
        for tag, obj, topic in batch:
            # Encode outside the transaction and item by item: one unencodable event is
            # logged and skipped instead of failing (and endlessly retrying) the batch.
            try:
                if tag == "s":
                    at = epoch(obj.at)
                    snaps.append((at, obj.host, obj.seq, zlib.compress(encode(obj), _ZLIB_LEVEL)))
                    for s in flatten(obj):
                        # NaN would become NULL and violate NOT NULL; inf has no meaning.
                        if math.isfinite(s.value):
                            samples.append(((s.metric, s.dimension, obj.host), at, s.value))
                else:
                    payload = encode(obj)
                    events.append((epoch(obj.at), topic, _kind(obj), obj.host,
                                   payload.decode(), _digest(topic, payload)))
            except Exception:
                log.exception("history store: skipping an item that cannot be stored")
        new_ids: dict[tuple[str, str, str], int] = {}
        with self._write_txn() as conn:
            written = 0
            if snaps:
                written += conn.executemany(
                    "INSERT OR IGNORE INTO snapshots (at, host, seq, data) VALUES (?, ?, ?, ?)",
                    snaps).rowcount
            if samples:
                rows = []
                for key, at, value in samples:
                    sid = self._series_ids.get(key) or new_ids.get(key)
                    if sid is None:
                        cur = conn.execute(
                            "INSERT INTO series (metric, dimension, host) VALUES (?, ?, ?)", key)
                        sid = new_ids[key] = int(cur.lastrowid or 0)
                    rows.append((sid, at, value))
                conn.executemany(
                    "INSERT OR IGNORE INTO samples (series_id, at, value) VALUES (?, ?, ?)", rows)
                # Tell retention which buckets must be (re)rolled up, late arrivals included.
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('rollup_dirty_from', ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = min(value, excluded.value)",
                    (min(at for _, at, _ in samples),))
            if events:
                written += conn.executemany(
                    "INSERT OR IGNORE INTO events (at, topic, kind, host, payload, digest) "
                    "VALUES (?, ?, ?, ?, ?, ?)", events).rowcount
        return written, new_ids

    async def apply_retention(self, now: datetime | None = None) -> RetentionResult:
        """Roll up completed buckets, then delete what is past its retention (writer thread)."""
        when = now or self._clock()
        return await self._on_writer(lambda: self._retention_sync(when))

    def _retention_sync(self, now: datetime) -> RetentionResult:
        cfg = self.config
        step = cfg.rollup_step_s
        now_ts = epoch(now)
        complete_end = _floor(now_ts, step)  # buckets starting before this are complete
        raw_cutoff = now_ts - cfg.raw_retention_hours * 3600
        with self._write_txn() as conn:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            # Raw samples are deleted on bucket boundaries only, so every bucket at or after
            # raw_from still has all its raw samples and can be recomputed exactly.
            prev_raw_from = float(meta.get("raw_from", -math.inf))
            raw_from = max(float(_floor(raw_cutoff, step)), prev_raw_from)
            rolled = 0
            dirty = meta.get("rollup_dirty_from")
            if dirty is not None:
                lo = max(float(_floor(float(dirty), step)), prev_raw_from)
                if lo < complete_end:
                    # INSERT OR REPLACE of whole buckets recomputed from raw: idempotent.
                    rolled = conn.execute(
                        """INSERT OR REPLACE INTO rollups
                               (series_id, step, bucket, min, max, sum, count)
                           SELECT series_id, :step, CAST(at / :step AS INTEGER) * :step,
                                  min(value), max(value), sum(value), count(*)
                           FROM samples
                           WHERE series_id IN (SELECT id FROM series)
                             AND at >= :lo AND at < :hi
                           GROUP BY series_id, CAST(at / :step AS INTEGER)""",
                        {"step": step, "lo": lo, "hi": complete_end}).rowcount
                conn.execute("UPDATE meta SET value = ? WHERE key = 'rollup_dirty_from'",
                             (max(float(dirty), float(complete_end)),))
            samples_deleted = conn.execute(
                "DELETE FROM samples WHERE series_id IN (SELECT id FROM series) AND at < ?",
                (raw_from,)).rowcount
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('raw_from', ?)",
                         (raw_from,))
            snapshots_deleted = conn.execute(
                "DELETE FROM snapshots WHERE at < ?", (raw_cutoff,)).rowcount
            rollups_deleted = conn.execute(
                "DELETE FROM rollups WHERE series_id IN (SELECT id FROM series) AND step = ? "
                "AND bucket < ?", (step, now_ts - cfg.rollup_retention_days * 86400)).rowcount
            events_deleted = conn.execute(
                "DELETE FROM events WHERE at < ?",
                (now_ts - cfg.event_retention_days * 86400,)).rowcount
        return RetentionResult(rolled, samples_deleted, snapshots_deleted, rollups_deleted,
                               events_deleted)

    # ------------------------------------------------------------------ flusher / lifecycle

    async def start(self, interval: float | None = None) -> None:
        """Start the background flusher task (every ``interval`` or ``flush_interval`` s)."""
        if self._closed:
            raise StoreError("history store is closed")
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self.run_flusher(interval),
                                                name="watchkeeper-store-flusher")

    async def run_flusher(self, interval: float | None = None) -> None:
        """Flush every ``interval`` seconds and apply retention every few minutes, forever."""
        every = interval if interval is not None else self.config.flush_interval
        loop = asyncio.get_running_loop()
        next_retention = loop.time()  # once at start: catches up after downtime
        while True:
            await asyncio.sleep(every)
            try:
                await self.flush()
                if loop.time() >= next_retention:
                    next_retention = loop.time() + self._retention_interval_s
                    await self.apply_retention()
            except Exception as exc:
                # An outage is logged once and its recovery once, not every tick; the task
                # must not die on it (a dead flusher would silently stop all history).
                if not self._failing:
                    log.error("history store: writes failing, will retry: %s", exc)
                self._failing = True
                continue
            if self._failing:
                log.info("history store: writes work again")
                self._failing = False

    async def close(self) -> None:
        """Stop the flusher, flush what is queued and close the database (idempotent)."""
        if self._writer_down:
            return
        self._closed = True  # reject add_* from here on, so the last flush gets everything
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        try:
            await self.flush()
        finally:
            self._writer_down = True
            await self._db.close()

    # ------------------------------------------------------------------ reads

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check``: "ok" when the database is sound, else the problems."""
        with self._read() as conn:
            rows = conn.execute("PRAGMA integrity_check").fetchall()
        return "\n".join(str(r[0]) for r in rows)

    def latest_snapshot(self, host: str | None = None) -> MetricSnapshot | None:
        """The most recent stored snapshot (of ``host``, or of any host)."""
        sql = "SELECT data FROM snapshots"
        args: tuple[Any, ...] = ()
        if host is not None:
            sql += " WHERE host = ?"
            args = (host,)
        with self._read() as conn:
            row = conn.execute(sql + " ORDER BY at DESC LIMIT 1", args).fetchone()
        return None if row is None else self._snapshot(row[0])

    def hosts(self, start: datetime) -> list[str]:
        """Hosts with a stored snapshot taken at or after ``start``, by name."""
        with self._read() as conn:
            rows = conn.execute("SELECT DISTINCT host FROM snapshots WHERE at >= ? "
                                "ORDER BY host", (epoch(start),)).fetchall()
        return [r[0] for r in rows]

    def snapshots(self, start: datetime, end: datetime, limit: int = 1000, *,
                  host: str | None = None) -> list[MetricSnapshot]:
        """Snapshots with start <= at <= end, oldest first; the newest ``limit`` if more."""
        sql = "SELECT data FROM snapshots WHERE at >= ? AND at <= ?"
        args: list[Any] = [epoch(start), epoch(end)]
        if host is not None:
            sql += " AND host = ?"
            args.append(host)
        with self._read() as conn:
            rows = conn.execute(sql + " ORDER BY at DESC LIMIT ?", (*args, limit)).fetchall()
        return [self._snapshot(r[0]) for r in reversed(rows)]

    def _snapshot(self, data: bytes) -> MetricSnapshot:
        snap = decode(zlib.decompress(data))
        if not isinstance(snap, MetricSnapshot):
            raise StoreError(f"history database {self.path}: snapshots table holds a "
                             f"{type(snap).__name__}")
        return snap

    def events(self, start: datetime | None = None, end: datetime | None = None, *,
               kinds: Sequence[str] = (), limit: int = 1000) -> list[StoredEvent]:
        """Events in [start, end] of the given kinds (all if empty), oldest first.

        When more than ``limit`` match, the newest ``limit`` are returned.
        """
        where, args = time_range(start, end)
        if kinds:
            where.append(f"kind IN ({', '.join('?' * len(kinds))})")
            args.extend(kinds)
        sql = "SELECT id, at, topic, kind, payload FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._read() as conn:
            rows = conn.execute(sql + " ORDER BY at DESC, id DESC LIMIT ?",
                                (*args, limit)).fetchall()
        return self._decoded(reversed(rows))

    def history_events(self, start: datetime, end: datetime, *, limit: int
                       ) -> list[StoredEvent]:
        """Alerts, finished remediation and service reports in [start, end], oldest first
        (the newest ``limit`` if more); an open alert's value updates are left in SQL."""
        sql = """SELECT id, at, topic, kind, payload FROM events
                 WHERE kind IN ('alert', 'remediation', 'service_report')
                 AND at >= ? AND at <= ?
                 AND NOT (kind = 'alert'
                          AND json_extract(payload, '$.labels.change') IS 'value')
                 AND NOT (kind = 'remediation'
                          AND json_extract(payload, '$.phase') IS NOT 'finished')
                 ORDER BY at DESC, id DESC LIMIT ?"""
        with self._read() as conn:
            rows = conn.execute(sql, (epoch(start), epoch(end), limit)).fetchall()
        return self._decoded(reversed(rows))

    def alert_edges(self, start: datetime, end: datetime, *, limit: int
                    ) -> list[StoredEvent]:
        """Only the opening ("new") and "resolved" alert events in [start, end), oldest
        first (the newest ``limit`` if more): enough to know which alerts were open at end."""
        sql = """SELECT id, at, topic, kind, payload FROM events
                 WHERE kind = 'alert' AND at >= ? AND at < ?
                 AND json_extract(payload, '$.labels.change') IN ('new', 'resolved')
                 ORDER BY at DESC, id DESC LIMIT ?"""
        with self._read() as conn:
            rows = conn.execute(sql, (epoch(start), epoch(end), limit)).fetchall()
        return self._decoded(reversed(rows))

    @staticmethod
    def _decoded(rows: Iterable[Any]) -> list[StoredEvent]:
        out: list[StoredEvent] = []
        for id_, at, topic, kind, payload in rows:
            try:
                event = decode(payload)
            except ValueError as exc:
                # A kind this version does not know (written by a newer one): skip, say so.
                log.warning("history store: skipping event %d (%s) that cannot be read: %s",
                            id_, kind, exc)
                continue
            out.append(StoredEvent(id=id_, at=from_epoch(at), topic=topic, kind=kind, event=event))
        return out

    def host_coverage(self, start: datetime, end: datetime, gap_s: float
                      ) -> list[HostCoverage]:
        """Per host, how the snapshots in [start, end] cover it: one pass over the
        (host, at) index, gaps computed in SQL."""
        args = {"start": epoch(start), "end": epoch(end), "gap": gap_s}
        with self._read() as conn:
            rows = conn.execute(
                """SELECT host, count(*), min(at), max(at),
                          total(CASE WHEN gap <= :gap THEN gap ELSE 0 END),
                          total(CASE WHEN gap > :gap THEN 1 ELSE 0 END)
                   FROM (SELECT host, at, at - LAG(at) OVER (PARTITION BY host ORDER BY at)
                                AS gap
                         FROM snapshots WHERE at >= :start AND at <= :end)
                   GROUP BY host ORDER BY host""", args).fetchall()
            before = dict(conn.execute(
                "SELECT host, max(at) FROM snapshots WHERE at < :start GROUP BY host",
                args).fetchall())
        return [HostCoverage(host=h, count=n, first=lo, last=hi, covered_s=cov, gaps=int(g),
                             previous=before.get(h))
                for h, n, lo, hi, cov, g in rows]

    def host_gaps(self, start: datetime, end: datetime, gap_s: float) -> list[SnapshotGap]:
        """Every gap longer than ``gap_s`` between a host's snapshots that ends in [start,
        end] (the first may begin before ``start``), with the boot time on each side: two
        snapshots decoded per gap, none otherwise."""
        args = {"start": epoch(start), "end": epoch(end), "gap": gap_s}
        with self._read() as conn:
            pairs = conn.execute(
                """SELECT host, prev_at, at, prev_id, id FROM (
                       SELECT host, at, id,
                              LAG(at) OVER (PARTITION BY host ORDER BY at) AS prev_at,
                              LAG(id) OVER (PARTITION BY host ORDER BY at) AS prev_id
                       FROM snapshots WHERE at >= :start AND at <= :end)
                   WHERE at - prev_at > :gap""", args).fetchall()
            # The gap that spans the range's start: the last snapshot before it and the
            # first in it (SQLite takes the bare columns from the min/max row).
            firsts = {h: (at, id_) for h, at, id_ in conn.execute(
                """SELECT host, min(at), id FROM snapshots WHERE at >= :start AND at <= :end
                   GROUP BY host""", args)}
            for host, at, id_ in conn.execute(
                    "SELECT host, max(at), id FROM snapshots WHERE at < :start GROUP BY host",
                    args).fetchall():
                if host in firsts and firsts[host][0] - at > gap_s:
                    pairs.append((host, at, firsts[host][0], id_, firsts[host][1]))
            ids = {i for row in pairs for i in row[3:]}
            boots: dict[int, float | None] = {}
            for id_, data in conn.execute(
                    f"SELECT id, data FROM snapshots WHERE id IN ({', '.join('?' * len(ids))})",
                    list(ids)) if ids else ():
                try:
                    identity = self._snapshot(data).identity
                except (StoreError, ValueError, zlib.error):
                    identity = None
                boots[id_] = identity.boot_time if identity is not None else None
        return sorted((SnapshotGap(host=h, before=b, after=a, boot_before=boots.get(bi),
                                   boot_after=boots.get(ai)) for h, b, a, bi, ai in pairs),
                      key=lambda g: (g.host, g.before))

    def last_service_reports(self, before: datetime) -> list[StoredEvent]:
        """The newest service report before ``before`` of every (host, service)."""
        with self._read() as conn:
            rows = conn.execute(
                """SELECT id, at, topic, kind, payload FROM events WHERE id IN (
                       SELECT max(id) FROM events WHERE kind = 'service_report' AND at < ?
                       GROUP BY host, json_extract(payload, '$.service'))
                   ORDER BY at, id""", (epoch(before),)).fetchall()
        out: list[StoredEvent] = []
        for id_, at, topic, kind, payload in rows:
            try:
                event = decode(payload)
            except ValueError:
                continue  # written by a newer version; events() says so when it meets it
            out.append(StoredEvent(id=id_, at=from_epoch(at), topic=topic, kind=kind, event=event))
        return out

    def dimensions(self, metric: str, *, host: str | None = None) -> list[str]:
        """Dimensions of ``metric`` that still have data ("" for host-wide metrics)."""
        sql = """SELECT DISTINCT dimension FROM series s WHERE metric = ?
                 AND (EXISTS (SELECT 1 FROM samples WHERE series_id = s.id)
                      OR EXISTS (SELECT 1 FROM rollups WHERE series_id = s.id))"""
        args: list[Any] = [metric]
        if host is not None:
            sql += " AND host = ?"
            args.append(host)
        with self._read() as conn:
            return [r[0] for r in conn.execute(sql + " ORDER BY dimension", args)]

    def series(self, metric: str, start: datetime, end: datetime, *, dimension: str = "",
               step_s: int | None = None, host: str | None = None) -> list[SeriesPoint]:
        """History of one metric in [start, end], oldest first.

        Without ``step_s``: raw points while raw samples still cover ``start``, otherwise
        points of ``rollup_step_s``. With ``step_s``: avg/min/max/count per bucket of
        ``step_s`` seconds (aligned on the epoch), from raw samples where they are kept and
        rollups before. ``host`` None means every host (their values are merged).
        """
        if step_s is not None and step_s < 1:
            raise ValueError(f"step_s must be a positive number of seconds, got {step_s}")
        start_ts, end_ts = epoch(start), epoch(end)
        ids_sql = "SELECT id FROM series WHERE metric = :metric AND dimension = :dim"
        params: dict[str, Any] = {"metric": metric, "dim": dimension, "start": start_ts,
                                  "end": end_ts}
        if host is not None:
            ids_sql += " AND host = :host"
            params["host"] = host
        with self._read() as conn:
            row = conn.execute("SELECT value FROM meta WHERE key = 'raw_from'").fetchone()
            raw_from = -math.inf if row is None else float(row[0])
            if step_s is None and start_ts >= raw_from:
                return [SeriesPoint(from_epoch(at), v, v, v, 1) for at, v in conn.execute(
                    f"""SELECT at, value FROM samples WHERE series_id IN ({ids_sql})
                        AND at >= :start AND at <= :end ORDER BY at""", params)]
            step = step_s or self.config.rollup_step_s
            params["step"] = step
            buckets: dict[int, list[float]] = {}
            if start_ts < raw_from:
                # Before raw_from only rollups remain; re-bucket them to the asked step.
                params["rstep"] = self.config.rollup_step_s
                params["rlo"] = _floor(start_ts, self.config.rollup_step_s)
                params["raw_from"] = raw_from
                rows = conn.execute(
                    f"""SELECT CAST(bucket / :step AS INTEGER) * :step AS b, min(min), max(max),
                               sum(sum), sum(count)
                        FROM rollups WHERE series_id IN ({ids_sql}) AND step = :rstep
                        AND bucket >= :rlo AND bucket <= :end AND bucket < :raw_from
                        GROUP BY b""", params).fetchall()
                _merge(buckets, rows)
            if end_ts >= raw_from:
                params["lo"] = max(start_ts, raw_from)
                rows = conn.execute(
                    f"""SELECT CAST(at / :step AS INTEGER) * :step AS b, min(value), max(value),
                               sum(value), count(*)
                        FROM samples WHERE series_id IN ({ids_sql})
                        AND at >= :lo AND at <= :end GROUP BY b""", params).fetchall()
                _merge(buckets, rows)
        return [SeriesPoint(from_epoch(b), s / n, lo, hi, int(n))
                for b, (lo, hi, s, n) in sorted(buckets.items())]


def _merge(buckets: dict[int, list[float]], rows: list[Any]) -> None:
    """Combine (bucket, min, max, sum, count) rows into ``buckets``."""
    for b, lo, hi, total, n in rows:
        cur = buckets.get(b)
        if cur is None:
            buckets[b] = [lo, hi, total, n]
        else:
            cur[0] = min(cur[0], lo)
            cur[1] = max(cur[1], hi)
            cur[2] += total
            cur[3] += n
