"""SnapshotCollector against the real psutil on this host."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from watchkeeper.collectors import SnapshotCollector
from watchkeeper.config import SensorConfig

# Burns one core for at most 60 s (so an interrupted test run can't leave it spinning).
BURN = "import time\nend = time.time() + 60\nwhile time.time() < end:\n    pass\n"
# Holds ~200 MiB of written (hence resident) memory, then sleeps.
HOLD = "import time\nb = b'x' * (200 * 2**20)\ntime.sleep(60)\n"


@pytest.fixture
def collector() -> Iterator[SnapshotCollector]:
    c = SnapshotCollector(config=SensorConfig(top_processes=10), host="itest")
    yield c
    c.close()


@pytest.mark.slow
# exclusive: its burner must be among the top CPU users and its holder among the top memory
# users of the whole machine (scripts/test runs it alone).
@pytest.mark.exclusive
def test_two_real_snapshots_are_sane_and_redacted(
    collector: SnapshotCollector, children: list[subprocess.Popen[bytes]]
) -> None:
    children.append(subprocess.Popen([sys.executable, "-c", BURN, "--password=hunter2"]))
    children.append(subprocess.Popen([sys.executable, "-c", HOLD, "--password=hunter2"]))
    burner, holder = children
    time.sleep(0.5)  # let the holder write its memory

    first = collector.collect(1, 1.0)
    assert {m.key for m in first.missing} >= {"cpu.percent", "net", "disk_io"}
    time.sleep(1.0)
    second = collector.collect(2, 1.0)

    assert not [m for m in second.missing if m.key in ("cpu.percent", "disk_io", "net")]
    assert second.cpu.percent is not None and 0.0 <= second.cpu.percent <= 100.0
    assert second.cpu.per_core and all(0.0 <= c <= 100.0 for c in second.cpu.per_core)
    assert second.cpu.count_logical == os.cpu_count()
    assert second.memory.total is not None and second.memory.total > 0
    assert second.memory.percent is not None and 0.0 <= second.memory.percent <= 100.0
    assert "/" in [d.mountpoint for d in second.disks]
    assert all(d.percent is not None and 0.0 <= d.percent <= 100.0 for d in second.disks)
    assert all(n.bytes_recv_per_s >= 0 for n in second.net)
    assert all(d.read_bytes_per_s >= 0 for d in second.disk_io)
    assert second.processes.total is not None and second.processes.total > 2
    assert second.processes.threads is not None
    assert second.processes.threads > 0
    assert second.identity is not None and second.identity.boot_time is not None
    assert second.uptime_s is not None and second.uptime_s > 0

    top_cpu = {p.pid: p for p in second.processes.top_cpu}
    assert burner.pid in top_cpu, [(p.pid, p.name, p.cpu_percent) for p in top_cpu.values()]
    burning = top_cpu[burner.pid]
    assert burning.cpu_percent is not None and burning.cpu_percent > 20.0
    top_memory = {p.pid: p for p in second.processes.top_memory}
    assert holder.pid in top_memory
    rss = top_memory[holder.pid].rss
    assert rss is not None and rss > 150 * 2**20
    for info in (burning, top_memory[holder.pid]):
        assert "--password=***" in info.cmdline
        assert "hunter2" not in info.cmdline
        assert info.user is not None and info.age_s is not None
    assert "hunter2" not in second.model_dump_json()
