"""Pure helpers of the collector families: partition and device selection, CPU maths."""

from __future__ import annotations

import pytest

from tests.fake_psutil import CpuTimes, DiskUsage, FakePsutil, Partition
from watchkeeper.collectors import SnapshotCollector
from watchkeeper.collectors.cpu import CpuReading, cpu_stats, read_cpu
from watchkeeper.collectors.diskio import physical_disks
from watchkeeper.collectors.disks import PSEUDO_FSTYPES, select_partitions
from watchkeeper.config import SensorConfig
from watchkeeper.events import CpuStats, Missing


def test_every_pseudo_filesystem_is_skipped() -> None:
    parts = [Partition(t, f"/{t}", t) for t in sorted(PSEUDO_FSTYPES)]
    assert select_partitions(parts) == []
    for fstype in ("proc", "sysfs", "tmpfs", "devtmpfs", "squashfs", "cgroup", "cgroup2",
                   "devpts", "mqueue", "tracefs", "debugfs", "securityfs", "pstore", "bpf",
                   "autofs", "fusectl", "configfs", "nsfs", "binfmt_misc", "hugetlbfs",
                   "ramfs", "rpc_pipefs", "efivarfs"):
        assert fstype in PSEUDO_FSTYPES


def test_network_and_fuse_mounts_are_kept_kernel_only_mounts_are_not() -> None:
    parts = [Partition("nas:/export", "/mnt/nas", "nfs4"),
             Partition("//srv/share", "/mnt/smb", "cifs"),
             Partition("bob@host:/home", "/mnt/sshfs", "fuse.sshfs"),
             Partition("", "/sys/kernel/config", "configfs"),
             Partition("", "/mnt/odd", "weirdfs"),
             Partition("lxcfs", "/proc/cpuinfo", "fuse.lxcfs")]
    assert [p.mountpoint for p in select_partitions(parts)] == [
        "/mnt/nas", "/mnt/smb", "/mnt/sshfs"]


def test_overlay_kept_only_as_the_container_root() -> None:
    parts = [Partition("overlay", "/", "overlay"),
             Partition("overlay", "/var/lib/docker/overlay2/x/merged", "overlay"),
             Partition("/dev/vda1", "/etc/hosts", "ext4"),
             Partition("/dev/vda1", "/etc/resolv.conf", "ext4")]
    chosen = [(p.device, p.mountpoint) for p in select_partitions(parts)]
    # The backing disk appears once, at its shortest mount point.
    assert chosen == [("overlay", "/"), ("/dev/vda1", "/etc/hosts")]


def test_odd_entries_are_skipped() -> None:
    parts = [Partition("D:\\", "D:\\", "", "cdrom"),
             Partition("E:\\", "E:\\", "CDFS", "ro,cdrom"),
             Partition("/dev/sda1", "/boot/efi", "vfat"),
             Partition("/dev/sda2", "/", "ext4")]
    chosen = select_partitions(parts, ignore_mounts=["/boot/*"])
    assert [p.mountpoint for p in chosen] == ["/"]


def test_a_writable_loop_mount_is_watched_read_only_mounts_and_images_are_not() -> None:
    """A read-write ext4 on a loop device fills up like any disk; what is mounted read-only
    or is an image format (snap's squashfs, an ISO) cannot be filled from here."""
    parts = [Partition("/dev/loop0", "/mnt/data", "ext4", "rw,relatime"),
             Partition("/dev/loop1", "/mnt/backup", "xfs", "ro,relatime"),
             Partition("/dev/loop2", "/snap/core22/1234", "squashfs", "ro,nodev,relatime"),
             Partition("/dev/loop3", "/media/dvd", "iso9660", "ro,nosuid"),
             Partition("/dev/loop4", "/media/bd", "udf", "ro"),
             Partition("/dev/sdb1", "/srv/archive", "ext4", "ro,noatime"),
             Partition("/dev/sda2", "/", "ext4", "rw,relatime,errors=remount-ro")]
    chosen = select_partitions(parts)
    assert [(p.device, p.mountpoint) for p in chosen] == [
        ("/dev/sda2", "/"), ("/dev/loop0", "/mnt/data")]


def test_a_full_writable_loop_mount_is_in_the_snapshot() -> None:
    """Through the collector with psutil faked at the boundary: the loop mount is read."""
    fake = FakePsutil()
    fake.partitions = [Partition("/dev/sda2", "/", "ext4"),
                       Partition("/dev/loop0", "/mnt/data", "ext4", "rw,relatime"),
                       Partition("/dev/loop2", "/snap/core22/1", "squashfs", "ro,nodev")]
    fake.usage["/mnt/data"] = DiskUsage(total=100, used=100, free=0, percent=100.0)
    snap = SnapshotCollector(fake, config=SensorConfig(), host="t", statvfs=None)
    try:
        disks = {d.mountpoint: d for d in snap.collect(1, 1.0).disks}
    finally:
        snap.close()
    assert set(disks) == {"/", "/mnt/data"}
    assert disks["/mnt/data"].device == "/dev/loop0"
    assert disks["/mnt/data"].percent == 100.0


def test_physical_disks_drop_partitions_and_virtual_devices() -> None:
    names = ["sda", "sda1", "sda2", "nvme0n1", "nvme0n1p1", "nvme0n10", "mmcblk0", "mmcblk0p2",
             "loop0", "ram0", "zram0", "dm-0", "md127", "sr0", "vda", "vda1", "xvdb", "disk0",
             "disk0s1"]
    assert sorted(physical_disks(dict.fromkeys(names))) == [
        "disk0", "mmcblk0", "nvme0n1", "nvme0n10", "sda", "vda", "xvdb"]


def _stats(prev: CpuReading | None, cur: CpuReading) -> tuple[CpuStats, list[Missing]]:
    notes: list[Missing] = []
    stats = cpu_stats(prev, cur, lambda k, r: notes.append(Missing(key=k, reason=r)))
    return stats, notes


def test_cpu_percent_clamped_and_guest_time_not_counted_twice() -> None:
    fake = FakePsutil()
    fake.cpu_total = CpuTimes(user=100, idle=100, guest=50)
    first = read_cpu(fake)
    # 50 s of user time, 40 of it guest time (already inside user), 50 s idle.
    fake.cpu_total = CpuTimes(user=150, idle=150, guest=90)
    stats, notes = _stats(first, read_cpu(fake))
    assert notes == []
    assert stats.percent == pytest.approx(50.0)


def test_no_elapsed_cpu_time_is_missing_not_a_division_by_zero() -> None:
    fake = FakePsutil()
    first = read_cpu(fake)
    stats, notes = _stats(first, read_cpu(fake))
    assert stats.percent is None
    assert [n.key for n in notes] == ["cpu.percent"]


def test_core_count_change_drops_per_core_for_one_tick() -> None:
    fake = FakePsutil()
    first = read_cpu(fake)
    fake.cpu_total = CpuTimes(user=200, idle=900)
    fake.cpu_cores = [CpuTimes(user=60, idle=440)] * 3
    stats, notes = _stats(first, read_cpu(fake))
    assert stats.per_core == () and stats.percent is not None
    assert [n.key for n in notes] == ["cpu.per_core"]
