"""HistoryReader: the history database opened read-only, for replay and other offline reads.

Nothing here can change the file or disturb a ``serve`` that writes it:

* while a writer has the database open (its ``-wal`` file exists) the file is opened with
  ``mode=ro``: SQLite refuses every write on that connection, and as a WAL reader it sees
  what was committed up to the moment each read began without ever blocking the writer;
* otherwise (nobody writes it: the WAL was checkpointed and removed at close) it is opened
  ``immutable=1``: no lock and no ``-wal``/``-shm`` file is created, so not a byte in the
  data directory changes (``mode=ro`` alone would leave an empty ``-wal`` and ``-shm``);
* ``PRAGMA query_only`` on top, and every read is a plain SELECT.

Snapshots are read in pages by time (keyset paging on the (host, at) index), so a day of
history is never held twice in memory and the first page arrives at once.
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import threading
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

from pydantic import ValidationError

from watchkeeper.events import Event, MetricSnapshot, decode
from watchkeeper.store.sqlite import SCHEMA_VERSION, StoreError

#: Snapshots fetched per query while paging.
PAGE = 2000


def _inflate(data: bytes) -> bytes | StoreError:
    """A stored snapshot's JSON, or the error its row is (raised where it is read)."""
    try:
        return zlib.decompress(data)
    except zlib.error as exc:
        return StoreError(f"a stored snapshot cannot be read ({exc})")


class HistoryReader:
    """Read-only view of one ``watchkeeper.db`` (see the module docstring for how)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise StoreError(f"no history database at {self.path}: nothing to replay (run "
                             "watchkeeper run or serve first, or point storage.data_dir at "
                             "the data directory that holds it)")
        wal = self.path.with_name(self.path.name + "-wal")
        #: How the file was opened: "ro" (a writer has it open) or "immutable" (nobody does).
        self.mode = "ro" if wal.exists() else "immutable"
        uri = f"file:{quote(str(self.path.resolve()))}?" + (
            "mode=ro" if self.mode == "ro" else "mode=ro&immutable=1")
        try:
            self._conn = sqlite3.connect(uri, uri=True, timeout=10.0, isolation_level=None,
                                         check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open history database {self.path} read-only: {exc}"
                             ) from None
        try:
            self._conn.execute("PRAGMA query_only = ON")
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                raise StoreError(f"history database {self.path} has schema version {version}; "
                                 f"this watchkeeper reads version {SCHEMA_VERSION}")
            self._conn.execute("SELECT 1 FROM snapshots LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            self._conn.close()
            if isinstance(exc, sqlite3.OperationalError) and "no such table" not in str(exc):
                # Locked, or a -wal/-shm a read-only connection cannot use: not damage.
                raise StoreError(f"cannot read history database {self.path} read-only: {exc}"
                                 ) from None
            raise StoreError(f"{self.path} is not a watchkeeper history database or is "
                             f"damaged ({exc})") from None
        except StoreError:
            self._conn.close()
            raise

    def __enter__(self) -> HistoryReader:
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None,
                                   TracebackType | None]) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._conn.close()

    def _rows(self, sql: str, args: Sequence[Any]) -> list[Any]:
        try:
            return self._conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read history database {self.path}: {exc}") from None

    def latest_host(self, start: float, end: float) -> str | None:
        """The host of the newest snapshot in [start, end] (None: no snapshot there)."""
        rows = self._rows("SELECT host FROM snapshots WHERE at >= ? AND at <= ? "
                          "ORDER BY at DESC LIMIT 1", (start, end))
        return str(rows[0][0]) if rows else None

    def count_snapshots(self, start: float, end: float, host: str) -> int:
        """Snapshots of ``host`` in [start, end]."""
        return int(self._rows("SELECT count(*) FROM snapshots WHERE host = ? AND at >= ? "
                              "AND at <= ?", (host, start, end))[0][0])

    def snapshots(self, start: float, end: float, host: str, *, page: int = PAGE
                  ) -> Iterator[MetricSnapshot]:
        """Snapshots of ``host`` with start <= at <= end (epoch s), oldest first, by pages.

        A reader thread fetches the next pages and decompresses them while the caller works
        on this one (SQLite and zlib release the GIL); decoding stays on the caller's thread.
        """
        pages: queue.Queue[list[bytes | StoreError] | BaseException | None] = queue.Queue(maxsize=2)
        stop = threading.Event()

        def fetch() -> None:
            after = None
            try:
                while not stop.is_set():
                    if after is None:
                        rows = self._rows("SELECT at, data FROM snapshots WHERE host = ? AND "
                                          "at >= ? AND at <= ? ORDER BY at LIMIT ?",
                                          (host, start, end, page))
                    else:
                        rows = self._rows("SELECT at, data FROM snapshots WHERE host = ? AND "
                                          "at > ? AND at <= ? ORDER BY at LIMIT ?",
                                          (host, after, end, page))
                    pages.put([_inflate(data) for _at, data in rows])
                    if len(rows) < page:
                        break
                    after = rows[-1][0]  # (host, at) is unique: nothing skipped or read twice
            except BaseException as exc:  # handed to the caller, raised there
                pages.put(exc)
            pages.put(None)

        worker = threading.Thread(target=fetch, name="watchkeeper-history-reader", daemon=True)
        worker.start()
        try:
            while (item := pages.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                for raw in item:
                    yield self._snapshot(raw)
        finally:
            stop.set()
            while worker.is_alive():  # unblock a put() waiting on a full queue
                with contextlib.suppress(queue.Empty):
                    pages.get(timeout=0.05)
            worker.join()

    def _snapshot(self, raw: bytes | StoreError) -> MetricSnapshot:
        if isinstance(raw, StoreError):
            raise StoreError(f"history database {self.path}: {raw}") from None
        try:
            # The concrete model, not the union of every event kind: about twice as fast.
            return MetricSnapshot.model_validate_json(raw)
        except (ValidationError, ValueError) as exc:
            raise StoreError(f"history database {self.path}: a stored snapshot cannot be "
                             f"read ({str(exc).splitlines()[0]})") from None

    def events(self, start: float, end: float, host: str, kinds: Sequence[str]
               ) -> Iterator[tuple[float, Event]]:
        """(at, event) of ``host`` and these kinds in [start, end], oldest first; an event
        this version cannot read (written by a newer one) is skipped."""
        marks = ", ".join("?" * len(kinds))
        last_id = 0
        while True:
            rows = self._rows(
                f"SELECT id, at, payload FROM events WHERE at >= ? AND at <= ? AND host = ? "
                f"AND kind IN ({marks}) AND id > ? ORDER BY id LIMIT ?",
                (start, end, host, *kinds, last_id, PAGE))
            for _id, at, payload in rows:
                try:
                    yield float(at), decode(payload)
                except ValueError:
                    continue
            if len(rows) < PAGE:
                return
            last_id = rows[-1][0]
