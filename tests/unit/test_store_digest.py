"""The history stores an event delivered twice once (a fleet's central killed after storing
it, before the broker heard so), and a database of the previous schema is upgraded."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from watchkeeper.events import Alert
from watchkeeper.store.sqlite import DB_FILENAME, SCHEMA_VERSION, SqliteStore

from ..conftest import make_settings

AT = datetime(2030, 3, 1, 12, 0, tzinfo=timezone.utc)


def alert(n: int) -> Alert:
    return Alert(host="web-1", at=AT, id=f"a{n}", fingerprint="f", rule="cpu", metric="cpu",
                 severity="critical", since=AT, summary=f"alert {n}")


async def test_the_same_event_twice_is_stored_once_and_distinct_ones_both(
        tmp_path: Path) -> None:
    store = SqliteStore.open(make_settings(tmp_path).storage)
    try:
        store.add_event("alerts.web-1", alert(1))
        assert await store.flush() == 1
        store.add_event("alerts.web-1", alert(1))  # delivered again after a restart
        store.add_event("alerts.web-1", alert(2))  # same time, another event
        assert await store.flush() == 1
        store.add_event("alerts.web-2", alert(1))  # another topic: another event
        assert await store.flush() == 1
        assert [e.event.id for e in store.events()] == ["a1", "a2", "a1"]
    finally:
        await store.close()


async def test_a_history_of_schema_1_is_upgraded_and_keeps_its_events(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    store = SqliteStore.open(settings.storage)
    store.add_event("alerts.web-1", alert(1))
    await store.flush()
    await store.close()
    db = settings.storage.path / DB_FILENAME
    with sqlite3.connect(db) as conn:  # back to schema 1, as an older watchkeeper left it
        conn.execute("DROP INDEX events_digest")
        conn.execute("ALTER TABLE events DROP COLUMN digest")
        conn.execute("PRAGMA user_version = 1")
    conn.close()
    store = SqliteStore.open(settings.storage)
    try:
        store.add_event("alerts.web-1", alert(1))  # no digest on the old row: kept apart
        store.add_event("alerts.web-1", alert(1))
        assert await store.flush() == 1
        assert [e.event.id for e in store.events()] == ["a1", "a1"]
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
        conn.close()
    finally:
        await store.close()
