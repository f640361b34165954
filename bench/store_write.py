"""Benchmark SqliteStore writes: flush throughput, per-flush latency, bytes per snapshot.

Run: python bench/store_write.py [--snapshots 20000] [--batch 5]
A host at the default 5 s interval writes one snapshot per flush; --batch 1 measures the
fsync-bound worst case, larger batches show how batching amortises the commit.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from watchkeeper.events import CpuStats, DiskUsage, MemoryStats, MetricSnapshot, NetIO
from watchkeeper.series import flatten
from watchkeeper.store.sqlite import SqliteStore

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def snapshot(i: int) -> MetricSnapshot:
    """A typical small server: 4 cores, 3 mounts, 2 NICs."""
    return MetricSnapshot(
        host="bench", at=T0 + timedelta(seconds=5 * i), seq=i, interval_s=5.0,
        cpu=CpuStats(percent=float(i % 100), per_core=(1.0, 2.0, 3.0, 4.0), load_1=0.5,
                     load_5=0.4, load_15=0.3, iowait_percent=0.1),
        memory=MemoryStats(total=8 << 30, available=4 << 30, used=4 << 30, percent=50.0,
                           swap_percent=0.0, swap_used=0),
        disks=tuple(DiskUsage(mountpoint=m, device="vda", fstype="ext4", total=100 << 30,
                              used=40 << 30, free=60 << 30, percent=40.0, inodes_percent=3.0)
                    for m in ("/", "/var", "/home")),
        net=tuple(NetIO(interface=n, bytes_sent_per_s=1e5, bytes_recv_per_s=2e5,
                        packets_sent_per_s=100.0, packets_recv_per_s=200.0, errors_in=0,
                        errors_out=0, drops_in=0, drops_out=0) for n in ("eth0", "eth1")),
        uptime_s=float(i * 5),
    )


async def run(total: int, batch: int, directory: Path) -> None:
    db = directory / "bench.db"
    store = SqliteStore(db)
    latencies: list[float] = []
    started = time.perf_counter()
    for first in range(0, total, batch):
        for i in range(first, min(first + batch, total)):
            store.add_snapshot(snapshot(i))
        t = time.perf_counter()
        await store.flush()
        latencies.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - started
    await store.close()
    size = db.stat().st_size
    samples = sum(1 for _ in flatten(snapshot(0)))
    latencies.sort()
    print(f"{total} snapshots ({samples} samples each) in batches of {batch}: "
          f"{elapsed:.2f}s, {total / elapsed:,.0f} snapshots/s")
    print(f"flush latency: median {statistics.median(latencies) * 1000:.2f} ms, "
          f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.2f} ms")
    print(f"database: {size / 1e6:.1f} MB, {size / total:,.0f} bytes per snapshot "
          f"(whole snapshot + samples + indexes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--snapshots", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the database")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        asyncio.run(run(args.snapshots, args.batch, Path(tmp)))


if __name__ == "__main__":
    main()
