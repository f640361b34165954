"""SnapshotCollector with a fake psutil: composition, rates, failures and time limits."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import pytest

from tests.fake_psutil import (
    CpuTimes,
    DiskIOCounters,
    DiskUsage,
    FakePsutil,
    NetIOCounters,
    NicStats,
    Partition,
)
from watchkeeper.collectors import SnapshotCollector
from watchkeeper.collectors.common import FIRST_SAMPLE
from watchkeeper.config import SensorConfig
from watchkeeper.events import MetricSnapshot, decode, encode

GIB = 1024**3


@dataclass
class Clock:
    """A settable clock; calling it returns the current value."""

    t: float

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def fake() -> FakePsutil:
    return FakePsutil()


@pytest.fixture
def mono() -> Clock:
    """The injected monotonic clock (named apart from conftest's FakeClock ``clock``)."""
    return Clock(1000.0)


@pytest.fixture
def wall() -> Clock:
    return Clock(1_700_000_500.0)


class Make(Protocol):
    def __call__(self, **config: Any) -> SnapshotCollector: ...


@pytest.fixture
def make(fake: FakePsutil, mono: Clock, wall: Clock) -> Iterator[Make]:
    """Build collectors over the fake; every one is closed after the test."""
    made: list[SnapshotCollector] = []

    def build(**config: Any) -> SnapshotCollector:
        c = SnapshotCollector(
            fake, monotonic=mono, wall_clock=wall, config=SensorConfig.model_validate(config),
            host="test-host", statvfs=fake.statvfs,
        )
        made.append(c)
        return c

    yield build
    for c in made:
        c.close()


def missing(snap: MetricSnapshot) -> dict[str, str]:
    return {m.key: m.reason for m in snap.missing}


def test_first_tick_reports_rates_missing_not_zero(make: Make) -> None:
    snap = make().collect(1, 5.0)
    gaps = missing(snap)
    assert gaps == {"cpu.percent": FIRST_SAMPLE, "disk_io": FIRST_SAMPLE, "net": FIRST_SAMPLE}
    assert snap.cpu.percent is None and snap.cpu.per_core == ()
    assert snap.disk_io == () and snap.net == ()
    # Everything that is not a rate is there from the first tick.
    assert snap.cpu.load_1 == 0.5 and snap.cpu.count_logical == 2
    assert snap.memory.total == 8 * GIB and snap.memory.percent == 25.0
    assert [d.mountpoint for d in snap.disks] == ["/"]
    assert snap.disks[0].inodes_percent == 25.0
    assert snap.processes.total == 1
    assert snap.host == "test-host" and snap.seq == 1 and snap.interval_s == 5.0
    assert snap.identity is not None and snap.identity.boot_time == 1_700_000_000.0
    assert snap.uptime_s == 500.0
    assert snap.collect_ms is not None and snap.collect_ms >= 0
    assert decode(encode(snap)) == snap


def test_second_tick_computes_rates_from_deltas(
    make: Make, fake: FakePsutil, mono: Clock
) -> None:
    c = make()
    fake.disk_io = {"sda": DiskIOCounters(read_count=10, write_count=20, read_bytes=1000,
                                          write_bytes=2000, busy_time=100)}
    fake.net_io = {"lo": NetIOCounters(bytes_sent=5), "eth0": NetIOCounters(
        bytes_sent=100, bytes_recv=200, packets_sent=1, packets_recv=2, errin=1)}
    c.collect(1, 2.0)

    mono.t += 2.0
    fake.cpu_total = CpuTimes(user=130.0, system=50.0, idle=910.0, iowait=10.0)
    fake.cpu_cores = [CpuTimes(user=90.0, system=25.0, idle=435.0),    # +40 busy / 50
                      CpuTimes(user=50.0, system=25.0, idle=475.0)]    # +0 busy / 50
    fake.disk_io = {"sda": DiskIOCounters(read_count=30, write_count=60, read_bytes=5000,
                                          write_bytes=4000, busy_time=600)}
    fake.net_io = {"lo": NetIOCounters(bytes_sent=999), "eth0": NetIOCounters(
        bytes_sent=2100, bytes_recv=4200, packets_sent=11, packets_recv=22, errin=4, dropin=2)}
    fake.nic_stats["eth0"] = NicStats(False)
    snap = c.collect(2, 2.0)

    assert missing(snap) == {}
    # 100 s of CPU time passed: 30 user, 60 idle, 10 iowait -> 30 % busy, 10 % iowait.
    assert snap.cpu.percent == pytest.approx(30.0)
    assert snap.cpu.iowait_percent == pytest.approx(10.0)
    assert snap.cpu.per_core == pytest.approx((80.0, 0.0))
    (sda,) = snap.disk_io
    assert sda.device == "sda"
    assert sda.read_bytes_per_s == 2000.0 and sda.write_bytes_per_s == 1000.0
    assert sda.read_ops_per_s == 10.0 and sda.write_ops_per_s == 20.0
    assert sda.busy_percent == pytest.approx(25.0)   # 500 ms busy in 2 s
    (eth0,) = snap.net                                # lo ignored by default
    assert eth0.interface == "eth0" and eth0.is_up is False
    assert eth0.bytes_sent_per_s == 1000.0 and eth0.bytes_recv_per_s == 2000.0
    assert eth0.packets_sent_per_s == 5.0 and eth0.packets_recv_per_s == 10.0
    # Errors and drops are counts during the interval, not totals since boot.
    assert (eth0.errors_in, eth0.errors_out, eth0.drops_in, eth0.drops_out) == (3, 0, 2, 0)


def test_new_device_and_counter_reset_cost_only_that_device(
    make: Make, fake: FakePsutil, mono: Clock
) -> None:
    c = make(ignore_interfaces=["lo", "veth*"])
    fake.net_io = {"eth0": NetIOCounters(bytes_recv=5000), "veth1a": NetIOCounters()}
    fake.disk_io = {"sda": DiskIOCounters(read_bytes=10)}
    c.collect(1, 1.0)
    mono.t += 1.0
    fake.net_io = {"eth0": NetIOCounters(bytes_recv=10), "wg0": NetIOCounters(bytes_recv=1),
                   "veth1a": NetIOCounters(bytes_recv=9)}
    fake.disk_io = {"sda": DiskIOCounters(read_bytes=20), "sdb": DiskIOCounters()}
    snap = c.collect(2, 1.0)
    gaps = {k: v for k, v in missing(snap).items() if not k.startswith("cpu")}
    assert gaps == {
        "net:eth0": "counters went backwards (interface reset)",
        "net:wg0": FIRST_SAMPLE,
        "disk_io:sdb": FIRST_SAMPLE,
    }
    assert [d.device for d in snap.disk_io] == ["sda"]
    assert snap.net == ()


def test_pseudo_filesystems_skipped_and_bind_mounts_deduped(
    make: Make, fake: FakePsutil
) -> None:
    fake.partitions = [
        Partition("proc", "/proc", "proc"),
        Partition("tmpfs", "/run", "tmpfs"),
        Partition("/dev/loop3", "/snap/core/1", "squashfs"),
        Partition("overlay", "/var/lib/docker/overlay2/abc/merged", "overlay"),
        Partition("cgroup2", "/sys/fs/cgroup", "cgroup2"),
        Partition("/dev/sda1", "/", "ext4"),
        Partition("/dev/sda1", "/var/lib/kubelet/pods/x", "ext4"),   # bind mount of /
        Partition("/dev/sdb1", "/data", "xfs"),
        Partition("/dev/sdc1", "/scratch", "vfat"),
    ]
    fake.usage["/data"] = DiskUsage(10 * GIB, 9 * GIB, GIB, 90.0)
    snap = make(ignore_fstypes=["VFAT"]).collect(1, 5.0)
    assert [(d.mountpoint, d.device, d.fstype) for d in snap.disks] == [
        ("/", "/dev/sda1", "ext4"), ("/data", "/dev/sdb1", "xfs"),
    ]
    assert snap.disks[1].percent == 90.0
    assert snap.disks[1].inodes_percent is None      # statvfs reports no inode table
    assert fake.calls["disk_usage"] == 2


def test_failing_values_cost_only_themselves(
    make: Make, fake: FakePsutil
) -> None:
    fake.fail("swap_memory", OSError(13, "Permission denied"))
    fake.fail("getloadavg", RuntimeError("no loadavg here"))
    fake.fail("net_if_stats", fake.AccessDenied())
    fake.fail("disk_usage:/", fake.AccessDenied())
    snap = make().collect(1, 5.0)
    gaps = missing(snap)
    assert gaps["memory.swap"] == "PermissionError: Permission denied"
    assert gaps["cpu.load"] == "RuntimeError: no loadavg here"
    assert gaps["net.is_up"] == "access denied"
    assert gaps["disk:/"] == "access denied"
    assert snap.memory.percent == 25.0 and snap.memory.swap_percent is None
    assert snap.cpu.load_1 is None and snap.cpu.count_logical == 2
    assert snap.disks == ()


def test_a_failing_family_costs_only_that_family(
    make: Make, fake: FakePsutil
) -> None:
    fake.fail("disk_partitions", RuntimeError("boom"))
    fake.fail("virtual_memory", fake.AccessDenied())
    snap = make().collect(1, 5.0)
    gaps = missing(snap)
    assert gaps["disks"] == "RuntimeError: boom"
    assert gaps["memory"] == "access denied"
    # processes also read virtual_memory (for memory %), and lose only that.
    assert gaps["processes.memory_percent"] == "access denied"
    assert snap.processes.total == 1 and snap.cpu.count_logical == 2


def test_hung_mount_costs_only_that_mount_and_one_thread(
    make: Make, fake: FakePsutil
) -> None:
    fake.partitions = [Partition("/dev/sda1", "/", "ext4"),
                       Partition("nas:/export", "/mnt/nas", "nfs4")]
    fake.usage["/mnt/nas"] = DiskUsage(GIB, 0, GIB, 0.0)
    release = threading.Event()
    fake.hang("disk_usage:/mnt/nas", release)
    threads_before = threading.active_count()
    c = make(collector_timeout=0.4)
    try:
        started = time.monotonic()
        snap = c.collect(1, 5.0)
        took = time.monotonic() - started
        assert took < 0.4 + 0.3
        assert [d.mountpoint for d in snap.disks] == ["/"]
        assert missing(snap)["disk:/mnt/nas"] == "timed out after 0.4s"
        assert "disks" not in missing(snap)
        assert c.hung() == ["disk:/mnt/nas"]

        for seq in range(2, 22):
            started = time.monotonic()
            snap = c.collect(seq, 5.0)
            # Nothing waits on the hung mount any more: the tick is fast.
            assert time.monotonic() - started < 0.4
        assert missing(snap)["disk:/mnt/nas"] == "timed out after 0.4s (still hung)"
        assert [d.mountpoint for d in snap.disks] == ["/"]
        # The hung mount was called once, so it holds exactly one stuck thread ...
        assert fake.calls["disk_usage:/mnt/nas"] == 1
        # ... and the pool stays within one thread per concurrent call (7 families + 2
        # mounts), instead of growing with every tick.
        assert threading.active_count() - threads_before <= 9
    finally:
        release.set()
    deadline = time.monotonic() + 5
    while c.hung() and time.monotonic() < deadline:
        time.sleep(0.01)
    snap = c.collect(7, 5.0)
    assert [d.mountpoint for d in snap.disks] == ["/", "/mnt/nas"]
    assert "disk:/mnt/nas" not in missing(snap)
    assert fake.calls["disk_usage:/mnt/nas"] == 2


def test_hung_family_is_time_limited_and_not_restarted(
    make: Make, fake: FakePsutil
) -> None:
    release = threading.Event()
    fake.hang("process_iter", release)
    c = make(collector_timeout=0.3)
    try:
        started = time.monotonic()
        snap = c.collect(1, 5.0)
        assert time.monotonic() - started < 0.3 + 0.3
        assert missing(snap)["processes"] == "timed out after 0.3s"
        assert snap.processes.total is None
        assert snap.memory.total == 8 * GIB and snap.disks   # the rest of the tick survived
        snap = c.collect(2, 5.0)
        assert missing(snap)["processes"] == "timed out after 0.3s (still hung)"
        assert fake.calls["process_iter"] == 1
    finally:
        release.set()


def test_outage_logged_once_and_recovery_once(
    make: Make, fake: FakePsutil, caplog: pytest.LogCaptureFixture
) -> None:
    c = make()
    caplog.set_level(logging.DEBUG, logger="watchkeeper.collectors.snapshot")
    fake.fail("swap_memory", OSError(5, "Input/output error"))
    for seq in range(1, 4):
        c.collect(seq, 5.0)
    fake._errors.clear()
    for seq in range(4, 6):
        c.collect(seq, 5.0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert warnings == ["cannot read memory.swap: OSError: Input/output error"]
    assert infos == ["memory.swap is readable again"]


def test_config_can_be_replaced_between_ticks(
    make: Make, fake: FakePsutil
) -> None:
    fake.partitions.append(Partition("/dev/sdb1", "/data", "ext4"))
    fake.usage["/data"] = DiskUsage(GIB, 0, GIB, 0.0)
    c = make()
    assert len(c.collect(1, 5.0).disks) == 2
    c.config = SensorConfig(ignore_mounts=("/da*",))
    assert [d.mountpoint for d in c.collect(2, 5.0).disks] == ["/"]


def test_identity_is_read_once(make: Make, fake: FakePsutil,
                               wall: Clock) -> None:
    c = make()
    c.collect(1, 5.0)
    wall.t += 10
    snap = c.collect(2, 5.0)
    assert fake.calls["boot_time"] == 1
    assert snap.uptime_s == 510.0
    assert snap.identity is not None and snap.identity.cpu_count == 2
