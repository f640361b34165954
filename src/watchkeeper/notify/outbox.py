"""The outbox: notifications persisted before they are sent, per route, in order.

A SQLite file in the data directory (``notify_outbox.db``; WAL, ``synchronous=FULL``, via
:class:`~watchkeeper.sqlitedb.SqliteDb`). The router's messages and its state (what each
route was told) are committed in one transaction, so after a kill -9 either both are there
or neither. A message leaves the outbox only once its channel accepted it; a route's
messages go out oldest first, one at a time. Bounds per route: ``outbox_max_messages``
waiting, none older than ``outbox_max_age_s``; past either, the oldest are replaced by ONE
summary message at the head of the route's queue ("N messages for route X were dropped
while it was unreachable"), which absorbs later drops: a route is never silently emptied.

Each route's delivery record (:class:`RouteStats`: sent, failed tries, dropped, last success,
last error, failing since) is kept in the same file and updated in the transaction that
removes, retries or drops a message, so it survives a restart exactly as the queue does.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from watchkeeper.config import PersonalityLevel
from watchkeeper.notify.message import Message, render_summary
from watchkeeper.safetext import printable
from watchkeeper.sqlitedb import SqliteDb
from watchkeeper.store.sqlite import StoreError

OUTBOX_FILE = "notify_outbox.db"
SCHEMA_VERSION = 1


class OutboxError(StoreError):
    """The outbox database cannot be opened, written or read (the message says why); a
    StoreError, so every command that opens the data directory reports it the same way."""


def _v1(conn: sqlite3.Connection) -> None:
    conn.execute("""
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            route TEXT NOT NULL,
            created_at REAL NOT NULL,
            kind TEXT NOT NULL,
            title TEXT NOT NULL,
            body TEXT NOT NULL,
            notify_type TEXT NOT NULL,
            fingerprints TEXT NOT NULL DEFAULT '[]',
            attempts INTEGER NOT NULL DEFAULT 0,
            next_try_at REAL NOT NULL,
            last_error TEXT,
            dropped INTEGER NOT NULL DEFAULT 0,
            dropped_oldest REAL,
            dropped_titles TEXT NOT NULL DEFAULT '[]'
        )""")
    conn.execute("CREATE INDEX outbox_route ON outbox(route, id)")
    conn.execute("CREATE TABLE notify_state (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


@dataclass(frozen=True)
class Pending:
    """One message waiting in the outbox."""

    id: int
    route: str
    created_at: float
    kind: str
    title: str
    body: str
    notify_type: str
    fingerprints: tuple[str, ...]
    attempts: int
    next_try_at: float
    last_error: str | None


@dataclass(frozen=True)
class RouteStats:
    """One route's delivery record (epoch seconds); kept across restarts."""

    sent: int = 0
    failed: int = 0
    dropped: int = 0
    last_success_at: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    #: First failed try since the last success (None: not failing).
    failing_since: float | None = None


@dataclass(frozen=True)
class Waiting:
    """What waits for one route: how many, the oldest's creation time (a summary counts from
    the oldest message it replaced), and the head's tries and next try."""

    count: int
    oldest_at: float
    head_attempts: int
    head_next_try_at: float


_STATS_PREFIX = "route:"
#: Longest last error kept (it is shown on one line; apprise's answer can be long).
MAX_ERROR = 2000


def _stats_of(raw: str | None) -> RouteStats:
    if raw is None:
        return RouteStats()
    try:
        data = json.loads(raw)
        known = {f.name for f in fields(RouteStats)}
        return RouteStats(**{k: v for k, v in data.items() if k in known})
    except (ValueError, TypeError, AttributeError):  # damaged: start the record afresh
        return RouteStats()


def _update_stats(conn: sqlite3.Connection, route: str, **change: Any) -> None:
    """Apply ``change`` to ``route``'s record inside the caller's transaction; integer
    values are added to the counters, others replace the field."""
    key = _STATS_PREFIX + route
    row = conn.execute("SELECT value FROM notify_state WHERE key = ?", (key,)).fetchone()
    data = asdict(_stats_of(row[0] if row else None))
    for name, value in change.items():
        if name in ("sent", "failed", "dropped"):
            data[name] += value
        else:
            data[name] = value
    conn.execute("INSERT OR REPLACE INTO notify_state (key, value) VALUES (?, ?)",
                 (key, json.dumps(data)))


_COLUMNS = ("id, route, created_at, kind, title, body, notify_type, fingerprints, attempts, "
            "next_try_at, last_error")


def _pending(row: Sequence[Any]) -> Pending:
    return Pending(id=row[0], route=row[1], created_at=row[2], kind=row[3], title=row[4],
                   body=row[5], notify_type=row[6], fingerprints=tuple(json.loads(row[7])),
                   attempts=row[8], next_try_at=row[9], last_error=row[10])


class Outbox:
    """The persisted queue of notifications and the router's state."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = SqliteDb(path, what="notification outbox", error=OutboxError,
                            schema_version=SCHEMA_VERSION, migrations=[_v1],
                            thread_name="watchkeeper-outbox")

    @classmethod
    def open(cls, data_dir: Path) -> Outbox:
        """The outbox in ``data_dir`` (created 0600 if missing)."""
        data_dir.mkdir(parents=True, exist_ok=True)
        return cls(data_dir / OUTBOX_FILE)

    async def close(self) -> None:
        await self._db.close()

    # ----------------------------------------------------------------- writes

    async def commit(self, messages: Sequence[Message], state: dict[str, Any] | None,
                     now: float) -> None:
        """Enqueue ``messages`` and save ``state`` in one transaction (durable on return)."""
        def write() -> None:
            with self._db.write_txn() as conn:
                conn.executemany(
                    "INSERT INTO outbox (route, created_at, kind, title, body, notify_type, "
                    "fingerprints, next_try_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(m.route, now, m.kind, m.title, m.body, m.notify_type,
                      json.dumps(list(m.fingerprints)), now) for m in messages])
                if state is not None:
                    conn.execute("INSERT OR REPLACE INTO notify_state (key, value) "
                                 "VALUES ('router', ?)", (json.dumps(state),))
        await self._db.on_writer(write)

    async def delivered(self, message_id: int, *, route: str | None = None,
                        now: float | None = None) -> None:
        """The channel accepted it: it leaves the outbox (and, given ``route`` and ``now``,
        counts as that route's success: it is no longer failing)."""
        def write() -> None:
            with self._db.write_txn() as conn:
                conn.execute("DELETE FROM outbox WHERE id = ?", (message_id,))
                if route is not None:
                    _update_stats(conn, route, sent=1, last_success_at=now,
                                  failing_since=None)
        await self._db.on_writer(write)

    async def failed(self, message_id: int, error: str, next_try_at: float, *,
                     route: str | None = None, now: float | None = None) -> None:
        """A try failed: count it, say why, and when to try again (and, given ``route`` and
        ``now``, in that route's record: failing since its first failed try)."""
        # On one line and encodable: a channel's answer may hold a lone surrogate (bytes that
        # were not UTF-8), which SQLite cannot store, and would fail every pass.
        error = printable(error, MAX_ERROR)

        def write() -> None:
            with self._db.write_txn() as conn:
                conn.execute("UPDATE outbox SET attempts = attempts + 1, last_error = ?, "
                             "next_try_at = ? WHERE id = ?", (error, next_try_at,
                                                              message_id))
                if route is not None:
                    key = _STATS_PREFIX + route
                    row = conn.execute("SELECT value FROM notify_state WHERE key = ?",
                                       (key,)).fetchone()
                    since = _stats_of(row[0] if row else None).failing_since
                    _update_stats(conn, route, failed=1, last_error=error,
                                  last_error_at=now,
                                  failing_since=since if since is not None else now)
        await self._db.on_writer(write)

    async def drop_routes(self, keep: Collection[str]) -> dict[str, int]:
        """Delete what waits for routes not in ``keep`` (a reload removed them), and their
        delivery records (a route added again later under that name starts afresh, not
        "failing" since long ago); returns how many messages each such route had."""
        def write() -> dict[str, int]:
            with self._db.write_txn() as conn:
                counts = {r: n for r, n in conn.execute(
                    "SELECT route, COUNT(*) FROM outbox GROUP BY route") if r not in keep}
                conn.executemany("DELETE FROM outbox WHERE route = ?",
                                 [(r,) for r in counts])
                conn.executemany("DELETE FROM notify_state WHERE key = ?",
                                 [(_STATS_PREFIX + r,) for r in counts])
            return counts
        return await self._db.on_writer(write)

    async def retry_now(self, route: str, now: float) -> None:
        """The route's waiting messages are due now, backoff forgotten (its URL changed)."""
        def write() -> None:
            with self._db.write_txn() as conn:
                conn.execute("UPDATE outbox SET next_try_at = ? WHERE route = ? AND "
                             "next_try_at > ?", (now, route, now))
        await self._db.on_writer(write)

    async def enforce_bounds(self, *, max_messages: int, max_age_s: float, now: float,
                             level: PersonalityLevel) -> int:
        """Replace what is past the bounds by one summary per route; returns how many
        messages were dropped."""
        return await self._db.on_writer(
            lambda: self._bound(max_messages, max_age_s, now, level))

    def _bound(self, max_messages: int, max_age_s: float, now: float,
               level: PersonalityLevel) -> int:
        # Runs only between sends (the delivery loop calls it), so no message it deletes or
        # whose id the summary takes over is in flight.
        total = 0
        with self._db.write_txn() as conn:
            routes = [r[0] for r in conn.execute("SELECT DISTINCT route FROM outbox")]
            for route in routes:
                rows = conn.execute(
                    "SELECT id, created_at, kind, title, dropped, dropped_oldest, "
                    "dropped_titles, attempts, next_try_at FROM outbox WHERE route = ? "
                    "ORDER BY id",
                    (route,)).fetchall()
                summaries = [r for r in rows if r[2] == "summary"]
                others = [r for r in rows if r[2] != "summary"]
                victims = [r for r in others if r[1] < now - max_age_s]
                keep = [r for r in others if r[1] >= now - max_age_s]
                # A summary (kept or to come) takes one place.
                room = max_messages - 1 if victims or summaries else max_messages
                if len(keep) > room:
                    # Over the count: the oldest go (the summary then takes one place).
                    room = max_messages - 1
                    victims += keep[:len(keep) - room]
                    keep = keep[len(keep) - room:]
                if not victims:
                    if summaries and summaries[0][1] < now - max_age_s:
                        # Only the summary is old: it stays (never silence), counted anew.
                        conn.execute("UPDATE outbox SET created_at = ? WHERE id = ?",
                                     (now, summaries[0][0]))
                    continue
                total += len(victims)
                _update_stats(conn, route, dropped=len(victims))
                dropped = len(victims) + sum(r[4] for r in summaries)
                oldest = min([r[1] for r in victims]
                             + [r[5] if r[5] is not None else r[1] for r in summaries])
                newest = max(r[1] for r in victims)
                titles: list[str] = []
                for r in summaries:
                    titles += json.loads(r[6])
                titles += [r[3] for r in victims]
                title, body = render_summary(route, level=level, dropped=dropped,
                                             oldest=oldest, newest=newest, titles=titles)
                gone = victims + summaries
                # The summary goes first: it takes the smallest id of what it replaces.
                head = min(r[0] for r in gone)
                conn.executemany("DELETE FROM outbox WHERE id = ?", [(r[0],) for r in gone])
                conn.execute(
                    "INSERT INTO outbox (id, route, created_at, kind, title, body, notify_type, "
                    "attempts, next_try_at, dropped, dropped_oldest, dropped_titles) "
                    "VALUES (?, ?, ?, 'summary', ?, ?, 'warning', ?, ?, ?, ?, ?)",
                    # The route's backoff carries over: a new drop is no reason to retry now.
                    (head, route, now, title, body, max(r[7] for r in gone),
                     max(r[8] for r in gone), dropped, oldest, json.dumps(titles[:50])))
        return total

    # ----------------------------------------------------------------- reads

    def state(self) -> dict[str, Any] | None:
        """The router's saved state, if any."""
        with self._db.read() as conn:
            row = conn.execute("SELECT value FROM notify_state WHERE key = 'router'").fetchone()
        if row is None:
            return None
        data: dict[str, Any] = json.loads(row[0])
        return data

    def stats(self) -> dict[str, RouteStats]:
        """Every route's delivery record, by route name."""
        with self._db.read() as conn:
            rows = conn.execute("SELECT key, value FROM notify_state WHERE key LIKE ?",
                                (_STATS_PREFIX + "%",)).fetchall()
        return {key[len(_STATS_PREFIX):]: _stats_of(value) for key, value in rows}

    def waiting(self) -> dict[str, Waiting]:
        """What waits, by route (routes with nothing waiting are absent)."""
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT o.route, c.n, c.oldest, o.attempts, o.next_try_at FROM outbox o JOIN "
                "(SELECT route, COUNT(*) AS n, MIN(COALESCE(dropped_oldest, created_at)) AS "
                "oldest, MIN(id) AS head FROM outbox GROUP BY route) c ON o.id = c.head"
            ).fetchall()
        return {r[0]: Waiting(count=r[1], oldest_at=r[2], head_attempts=r[3],
                              head_next_try_at=r[4]) for r in rows}

    def heads(self) -> list[Pending]:
        """The oldest waiting message of each route (the only one that may be sent)."""
        with self._db.read() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE id IN "
                "(SELECT MIN(id) FROM outbox GROUP BY route) ORDER BY id").fetchall()
        return [_pending(r) for r in rows]

    def pending(self, route: str | None = None) -> list[Pending]:
        """Every waiting message (of one route), oldest first."""
        sql = f"SELECT {_COLUMNS} FROM outbox"
        args: tuple[Any, ...] = ()
        if route is not None:
            sql += " WHERE route = ?"
            args = (route,)
        with self._db.read() as conn:
            rows = conn.execute(sql + " ORDER BY id", args).fetchall()
        return [_pending(r) for r in rows]
