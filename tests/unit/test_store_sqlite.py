"""SqliteStore: round-trips, queries, retention and rollups, errors, on real SQLite files."""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
import stat
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from watchkeeper.config import StorageConfig
from watchkeeper.events import (
    AgentError,
    AgentHealth,
    ConfigChanged,
    CpuStats,
    DiskUsage,
    Heartbeat,
    MemoryStats,
    MetricSnapshot,
    NetIO,
    ProcessInfo,
    ProcessSummary,
)
from watchkeeper.store.base import SeriesPoint
from watchkeeper.store.sqlite import DB_FILENAME, SCHEMA_VERSION, SqliteStore, StoreError

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)  # aligned on every rollup step used here


def snap(at: datetime, seq: int = 0, *, cpu: float | None = 10.0, host: str = "h1",
         disks: tuple[str, ...] = ()) -> MetricSnapshot:
    return MetricSnapshot(
        host=host, at=at, seq=seq, interval_s=10.0,
        cpu=CpuStats(percent=cpu, load_1=0.5, per_core=(1.0, 2.0)),
        memory=MemoryStats(total=8_000, used=4_000, available=4_000, percent=50.0),
        disks=tuple(DiskUsage(mountpoint=m, device="sda", fstype="ext4", total=100, used=40,
                              free=60, percent=40.0) for m in disks),
    )


def full_snap(at: datetime) -> MetricSnapshot:
    proc = ProcessInfo(pid=42, create_time=1.5, name="postgres", user="pg", cpu_percent=12.5,
                       rss=1_000_000, cmdline="postgres -D /var/lib/pg")
    return MetricSnapshot(
        host="h1", at=at, seq=7, interval_s=5.0,
        cpu=CpuStats(percent=12.5, per_core=(10.0, 15.0), load_1=0.1, count_logical=2),
        memory=MemoryStats(total=10, available=5, used=5, percent=50.0, swap_percent=1.0),
        disks=(DiskUsage(mountpoint="/", device="vda", fstype="ext4", percent=22.0),),
        net=(NetIO(interface="eth0", is_up=True, bytes_sent_per_s=1.0, bytes_recv_per_s=2.0,
                   packets_sent_per_s=3.0, packets_recv_per_s=4.0, errors_in=0, errors_out=0,
                   drops_in=1, drops_out=0),),
        processes=ProcessSummary(total=100, running=2, zombies=0, top_cpu=(proc,)),
        uptime_s=1234.0, comment="round trip",
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "wk.db")
    yield s
    await s.close()


def cfg(**kw: object) -> StorageConfig:
    return StorageConfig.model_validate({"raw_retention_hours": 1, "rollup_step_s": 300,
                                         "rollup_retention_days": 2,
                                         "event_retention_days": 1, **kw})


# --------------------------------------------------------------------------- round trips


async def test_snapshot_round_trip(store: SqliteStore) -> None:
    original = full_snap(T0)
    store.add_snapshot(original)
    store.add_snapshot(snap(T0 + timedelta(seconds=10), 8))
    assert await store.flush() == 2
    got = store.snapshots(T0, T0 + timedelta(minutes=1))
    assert got[0] == original
    assert [s.seq for s in got] == [7, 8]
    latest = store.latest_snapshot()
    assert latest is not None and latest.seq == 8
    assert latest.at.tzinfo is not None


async def test_snapshots_limit_keeps_newest_in_time_order(store: SqliteStore) -> None:
    for i in range(10):
        store.add_snapshot(snap(T0 + timedelta(seconds=i), i))
    await store.flush()
    got = store.snapshots(T0, T0 + timedelta(hours=1), limit=3)
    assert [s.seq for s in got] == [7, 8, 9]
    assert store.snapshots(T0 + timedelta(seconds=2), T0 + timedelta(seconds=4)) == [
        snap(T0 + timedelta(seconds=i), i) for i in (2, 3, 4)]


async def test_latest_snapshot_empty_and_per_host(store: SqliteStore) -> None:
    assert store.latest_snapshot() is None
    store.add_snapshot(snap(T0, 1, host="a"))
    store.add_snapshot(snap(T0 + timedelta(seconds=1), 2, host="b"))
    await store.flush()
    latest_a = store.latest_snapshot(host="a")
    assert latest_a is not None and latest_a.seq == 1
    assert store.snapshots(T0, T0 + timedelta(minutes=1), host="b")[0].seq == 2


async def test_duplicate_snapshot_is_stored_once(store: SqliteStore) -> None:
    s = snap(T0, 1)
    store.add_snapshot(s)
    store.add_snapshot(s)  # e.g. redelivered by the bus
    assert await store.flush() == 1
    assert len(store.series("cpu.percent", T0, T0 + timedelta(minutes=1))) == 1


async def test_event_round_trip_and_filters(store: SqliteStore) -> None:
    health = AgentHealth(name="sensor", state="running", interval_s=5.0)
    events: list[ConfigChanged | AgentError | Heartbeat] = [
        ConfigChanged(host="h1", at=T0, version=2, changed=("thresholds.cpu_warning",)),
        AgentError(host="h1", at=T0 + timedelta(seconds=1), agent="sensor", error="boom",
                   error_type="RuntimeError"),
        Heartbeat(host="h1", at=T0 + timedelta(seconds=2), agent="sensor", health=health),
    ]
    for e in events:
        store.add_event(f"topic.{e.kind}", e)
    assert await store.flush() == 3
    stored = store.events()
    assert [s.event for s in stored] == events
    assert [s.kind for s in stored] == ["config_changed", "agent_error", "heartbeat"]
    assert stored[0].topic == "topic.config_changed"
    assert stored[0].at == T0 and stored[0].id < stored[1].id < stored[2].id
    assert [s.kind for s in store.events(kinds=["heartbeat", "agent_error"])] == [
        "agent_error", "heartbeat"]
    assert [s.kind for s in store.events(start=T0 + timedelta(seconds=1),
                                         end=T0 + timedelta(seconds=1))] == ["agent_error"]
    assert [s.kind for s in store.events(limit=1)] == ["heartbeat"]


async def test_unreadable_event_is_skipped_with_a_warning(
        store: SqliteStore, caplog: pytest.LogCaptureFixture) -> None:
    store.add_event("t", ConfigChanged(host="h1", at=T0, version=1, changed=()))
    await store.flush()
    with sqlite3.connect(store.path) as conn:  # as a newer watchkeeper might have written
        conn.execute("INSERT INTO events (at, topic, kind, host, payload) VALUES "
                     "(?, 't', 'from_the_future', 'h1', '{\"kind\": \"from_the_future\"}')",
                     (T0.timestamp() + 1,))
    conn.close()
    with caplog.at_level(logging.WARNING):
        assert [e.kind for e in store.events()] == ["config_changed"]
    assert "from_the_future" in caplog.text


# --------------------------------------------------------------------------- series


async def test_series_raw_points(store: SqliteStore) -> None:
    for i in range(5):
        store.add_snapshot(snap(T0 + timedelta(seconds=10 * i), i, cpu=float(i)))
    store.add_snapshot(snap(T0 + timedelta(seconds=60), 9, cpu=None))  # missing: no sample
    await store.flush()
    points = store.series("cpu.percent", T0 + timedelta(seconds=10), T0 + timedelta(seconds=30))
    assert points == [SeriesPoint(T0 + timedelta(seconds=10 * i), float(i), float(i), float(i), 1)
                      for i in (1, 2, 3)]
    assert len(store.series("cpu.percent", T0, T0 + timedelta(hours=1))) == 5
    assert store.series("no.such.metric", T0, T0 + timedelta(hours=1)) == []


async def test_series_stepped_aggregates(store: SqliteStore) -> None:
    for i in range(120):  # 20 minutes, one every 10 s, value i
        store.add_snapshot(snap(T0 + timedelta(seconds=10 * i), i, cpu=float(i)))
    await store.flush()
    points = store.series("cpu.percent", T0, T0 + timedelta(hours=1), step_s=600)
    assert [(p.at, p.avg, p.min, p.max, p.count) for p in points] == [
        (T0, 29.5, 0.0, 59.0, 60),
        (T0 + timedelta(minutes=10), 89.5, 60.0, 119.0, 60),
    ]
    with pytest.raises(ValueError, match="step_s"):
        store.series("cpu.percent", T0, T0 + timedelta(hours=1), step_s=0)


async def test_series_dimensions_and_hosts(store: SqliteStore) -> None:
    store.add_snapshot(snap(T0, 1, disks=("/", "/var"), host="a"))
    store.add_snapshot(snap(T0, 1, disks=("/home",), host="b"))
    await store.flush()
    assert store.dimensions("disk.percent") == ["/", "/home", "/var"]
    assert store.dimensions("disk.percent", host="b") == ["/home"]
    assert store.dimensions("cpu.percent") == [""]
    assert store.dimensions("nope") == []
    end = T0 + timedelta(minutes=1)
    assert [p.avg for p in store.series("disk.percent", T0, end, dimension="/var")] == [40.0]
    assert len(store.series("cpu.percent", T0, end)) == 2
    assert len(store.series("cpu.percent", T0, end, host="a")) == 1


async def test_non_finite_values_do_not_poison_the_batch(store: SqliteStore) -> None:
    store.add_snapshot(snap(T0, 1, cpu=math.nan))
    store.add_snapshot(snap(T0 + timedelta(seconds=1), 2, cpu=5.0))
    assert await store.flush() == 2
    assert [p.avg for p in store.series("cpu.percent", T0, T0 + timedelta(minutes=1))] == [5.0]


# --------------------------------------------------------------------------- retention


def fill(store: SqliteStore, minutes: int, start: datetime = T0) -> list[float]:
    """One snapshot every 10 s with cpu = index; returns the values."""
    values = [float(i) for i in range(minutes * 6)]
    for i, v in enumerate(values):
        store.add_snapshot(snap(start + timedelta(seconds=10 * i), i, cpu=v))
    return values


def expected_buckets(values: list[float], step_s: int, start: datetime = T0
                     ) -> list[tuple[datetime, float, float, float, int]]:
    per = step_s // 10
    out = []
    for b in range(0, len(values), per):
        chunk = values[b:b + per]
        out.append((start + timedelta(seconds=10 * b), sum(chunk) / len(chunk), min(chunk),
                    max(chunk), len(chunk)))
    return out


def as_tuples(points: list[SeriesPoint]) -> list[tuple[datetime, float, float, float, int]]:
    return [(p.at, p.avg, p.min, p.max, p.count) for p in points]


async def test_retention_rolls_up_then_deletes_raw(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "wk.db", cfg())
    try:
        values = fill(store, 120)  # two hours
        store.add_event("t", ConfigChanged(host="h1", at=T0, version=1, changed=()))
        await store.flush()
        end = T0 + timedelta(hours=2)
        stepped_before = store.series("cpu.percent", T0, end, step_s=600)

        result = await store.apply_retention(end)
        assert result.rollups_written == 24 * 5  # 24 buckets x 5 series (cpu 2, memory 3)
        assert result.samples_deleted == 360 * 5  # the first hour of raw samples
        assert result.snapshots_deleted == 360
        assert result.events_deleted == 0

        # Older than raw retention: rollup points of rollup_step_s, exact aggregates.
        assert as_tuples(store.series("cpu.percent", T0, end)) == expected_buckets(values, 300)
        # Raw points remain within raw retention.
        recent = store.series("cpu.percent", T0 + timedelta(hours=1, minutes=30), end)
        assert len(recent) == 180 and recent[0].count == 1
        # A stepped query across the raw/rollup boundary is unchanged by the rollup.
        assert store.series("cpu.percent", T0, end, step_s=600) == stepped_before
        assert len(store.snapshots(T0, end, limit=10_000)) == 360
    finally:
        await store.close()


async def test_retention_is_idempotent(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "wk.db", cfg())
    try:
        values = fill(store, 120)
        await store.flush()
        end = T0 + timedelta(hours=2)
        await store.apply_retention(end)
        first = store.series("cpu.percent", T0, end)
        again = await store.apply_retention(end)
        assert again.rollups_written == 0 and again.samples_deleted == 0
        assert store.series("cpu.percent", T0, end) == first
        # Later runs (more buckets complete, more raw deleted) never count a sample twice.
        await store.apply_retention(end + timedelta(minutes=7))
        await store.apply_retention(end + timedelta(minutes=50))
        assert as_tuples(store.series("cpu.percent", T0, end)) == expected_buckets(values, 300)
    finally:
        await store.close()


async def test_late_sample_updates_its_bucket(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "wk.db", cfg())
    try:
        fill(store, 120)
        await store.flush()
        end = T0 + timedelta(hours=2)
        await store.apply_retention(end)
        # Arrives after its bucket was rolled up, but raw data for that bucket is still kept.
        late_at = T0 + timedelta(hours=1, minutes=30, seconds=5)
        store.add_snapshot(snap(late_at, 999, cpu=1000.0))
        await store.flush()
        await store.apply_retention(end)
        await store.apply_retention(end + timedelta(hours=1))  # now the bucket is rollup-only
        bucket = T0 + timedelta(hours=1, minutes=30)
        point = next(p for p in store.series("cpu.percent", T0, end) if p.at == bucket)
        assert point.count == 31 and point.max == 1000.0
    finally:
        await store.close()


async def test_retention_deletes_old_rollups_and_events(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "wk.db", cfg())
    try:
        fill(store, 10)
        store.add_event("t", ConfigChanged(host="h1", at=T0, version=1, changed=()))
        await store.flush()
        await store.apply_retention(T0 + timedelta(hours=2))
        assert store.series("cpu.percent", T0, T0 + timedelta(hours=1))
        assert len(store.events()) == 1
        result = await store.apply_retention(T0 + timedelta(days=3))
        assert result.events_deleted == 1 and result.rollups_deleted == 2 * 5
        assert store.series("cpu.percent", T0, T0 + timedelta(hours=1)) == []
        assert store.events() == []
        assert store.dimensions("cpu.percent") == []
    finally:
        await store.close()


async def test_flusher_flushes_and_applies_retention(tmp_path: Path) -> None:
    later = T0 + timedelta(days=1)
    store = SqliteStore(tmp_path / "wk.db", cfg(), clock=lambda: later)
    fill(store, 10)
    await store.start(interval=0.01)
    await store.start(interval=0.01)  # a second start does not start a second flusher
    try:
        for _ in range(500):
            if store.pending == 0 and store.series("cpu.percent", T0, later) and \
                    store.latest_snapshot() is None:
                break
            await asyncio.sleep(0.01)
        # Raw snapshots are past retention and gone; their rollups remain.
        assert store.latest_snapshot() is None
        assert [p.count for p in store.series("cpu.percent", T0, later)] == [30, 30]
    finally:
        await store.close()


# --------------------------------------------------------------------------- lifecycle


async def test_close_flushes_and_rejects_further_writes(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "wk.db")
    store.add_snapshot(snap(T0, 1))
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.add_snapshot(snap(T0, 2))
    with pytest.raises(StoreError, match="closed"):
        await store.flush()
    with pytest.raises(StoreError, match="closed"):
        store.latest_snapshot()
    reopened = SqliteStore(tmp_path / "wk.db")
    try:
        latest = reopened.latest_snapshot()
        assert latest is not None and latest.seq == 1
    finally:
        await reopened.close()


async def test_failed_flush_keeps_the_batch_for_the_next_one(store: SqliteStore) -> None:
    with sqlite3.connect(store.path) as conn:
        conn.execute("CREATE TRIGGER boom BEFORE INSERT ON events "
                     "BEGIN SELECT RAISE(ABORT, 'disk on fire'); END")
    conn.close()
    store.add_snapshot(snap(T0, 1))
    store.add_event("t", ConfigChanged(host="h1", at=T0, version=1, changed=()))
    with pytest.raises(StoreError, match="disk on fire"):
        await store.flush()
    assert store.pending == 2
    assert store.latest_snapshot() is None  # the whole transaction rolled back
    with sqlite3.connect(store.path) as conn:
        conn.execute("DROP TRIGGER boom")
    conn.close()
    assert await store.flush() == 2
    assert store.pending == 0
    assert len(store.series("cpu.percent", T0, T0 + timedelta(minutes=1))) == 1


async def test_add_is_queue_only(store: SqliteStore) -> None:
    store.add_snapshot(snap(T0, 1))
    assert store.pending == 1
    assert store.latest_snapshot() is None
    assert await store.flush() == 1
    assert await store.flush() == 0


async def test_queue_is_bounded(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "wk.db", max_pending=3)
    try:
        for i in range(5):
            store.add_snapshot(snap(T0 + timedelta(seconds=i), i))
        assert store.pending == 3
        await store.flush()
        assert [s.seq for s in store.snapshots(T0, T0 + timedelta(minutes=1))] == [2, 3, 4]
    finally:
        await store.close()


# --------------------------------------------------------------------------- the file


async def test_open_creates_private_dir_and_wal_database(tmp_path: Path) -> None:
    data_dir = tmp_path / "deep" / "data"
    store = SqliteStore.open(StorageConfig(data_dir=data_dir))
    try:
        db = data_dir / DB_FILENAME
        assert store.path == db
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE(db.stat().st_mode) == 0o600
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        conn.close()
        assert store.integrity_check() == "ok"
    finally:
        await store.close()


def test_bad_path_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match="is not a directory") as err:
        SqliteStore(blocker / "wk.db")
    assert str(blocker) in str(err.value)
    with pytest.raises(StoreError, match="cannot create data directory"):
        SqliteStore.open(StorageConfig(data_dir=blocker / "data"))


def test_non_database_file_is_a_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "wk.db"
    bogus.write_bytes(b"this is a text file, not a database\n" * 200)
    with pytest.raises(StoreError, match="is not a SQLite database"):
        SqliteStore(bogus)


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "wk.db"
    await SqliteStore(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this watchkeeper supports"):
        SqliteStore(db)


async def test_reopen_keeps_data_and_series_ids(tmp_path: Path) -> None:
    db = tmp_path / "wk.db"
    first = SqliteStore(db)
    first.add_snapshot(snap(T0, 1, disks=("/",)))
    await first.close()
    second = SqliteStore(db)
    try:
        second.add_snapshot(snap(T0 + timedelta(seconds=10), 2, disks=("/",)))
        await second.flush()
        assert len(second.series("disk.percent", T0, T0 + timedelta(minutes=1),
                                 dimension="/")) == 2
        assert second.dimensions("disk.percent") == ["/"]
    finally:
        await second.close()
