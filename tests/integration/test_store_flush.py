"""Flushing happens on the writer thread: the event loop keeps running meanwhile."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import watchkeeper.store.sqlite as sqlite_store
from watchkeeper import series
from watchkeeper.events import CpuStats, DiskUsage, MetricSnapshot, NetIO
from watchkeeper.series import Sample
from watchkeeper.store.sqlite import SqliteStore

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def _snapshot(i: int) -> MetricSnapshot:
    return MetricSnapshot(
        host="h", at=T0 + timedelta(seconds=i), seq=i, interval_s=1.0,
        cpu=CpuStats(percent=float(i % 100), per_core=tuple(float(c) for c in range(16))),
        disks=tuple(DiskUsage(mountpoint=f"/m{d}", device=f"d{d}", fstype="ext4",
                              percent=float(d)) for d in range(8)),
        net=tuple(NetIO(interface=f"eth{n}", bytes_sent_per_s=1.0, bytes_recv_per_s=2.0,
                        packets_sent_per_s=3.0, packets_recv_per_s=4.0, errors_in=0,
                        errors_out=0, drops_in=0, drops_out=0) for n in range(4)),
    )


async def test_flush_runs_off_the_event_loop(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The batch is encoded and written while the loop goes on running.

    Deterministic rather than timed: the writer's work waits until a task on the loop has
    run after the flush began. Were the flush done on the loop, that task could never run
    and the wait would time out. (A timed check was flaky: a garbage collection pass in
    the writer thread holds the GIL and stalls the loop for a moment either way.)
    """
    flush_threads: set[int] = set()
    flush_began = threading.Event()
    loop_ran_meanwhile = threading.Event()
    real_flatten = series.flatten

    def spy(snap: MetricSnapshot) -> Iterator[Sample]:
        flush_threads.add(threading.get_ident())
        if not flush_began.is_set():
            flush_began.set()
            loop_ran_meanwhile.wait(10)
        return real_flatten(snap)

    monkeypatch.setattr(sqlite_store, "flatten", spy)
    store = SqliteStore(tmp_path / "wk.db")
    try:
        for i in range(2000):
            store.add_snapshot(_snapshot(i))
        assert not flush_threads  # queuing did no work

        async def witness() -> int:
            ticks = 0
            while not flush_began.is_set():
                await asyncio.sleep(0.001)
            while not flush.done():  # the loop keeps serving while the batch is written
                loop_ran_meanwhile.set()
                ticks += 1
                await asyncio.sleep(0.001)
            return ticks

        flush = asyncio.ensure_future(store.flush())
        ticks = await witness()
        assert await flush == 2000
        assert loop_ran_meanwhile.is_set()
        assert flush_threads and threading.get_ident() not in flush_threads
        assert ticks >= 1
    finally:
        await store.close()


async def test_reads_from_threads_while_flushing(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "wk.db")
    stop = threading.Event()
    end = T0 + timedelta(days=1)

    def reader() -> int:
        reads = 0
        while not stop.is_set():
            store.series("cpu.percent", T0, end, step_s=60)
            store.latest_snapshot()
            store.dimensions("disk.percent")
            reads += 1
        return reads

    try:
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(reader) for _ in range(4)]
            for batch in range(10):
                for i in range(batch * 50, batch * 50 + 50):
                    store.add_snapshot(_snapshot(i))
                await store.flush()
            stop.set()
            assert all(f.result() > 0 for f in futures)
        points = store.series("cpu.percent", T0, end)
        assert len(points) == 500
    finally:
        stop.set()
        await store.close()
