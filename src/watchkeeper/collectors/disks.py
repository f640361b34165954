"""Filesystem usage of every writable mount, each mount under its own time limit.

A stale NFS or FUSE mount makes statvfs() block forever in the kernel; nothing can interrupt
that thread. So each mount is read on a pool thread with a deadline, a mount whose previous
call never returned is not tried again until it does (one stuck thread per dead mount, not
one per tick), and it is reported in ``missing`` meanwhile.
"""

from __future__ import annotations

import fnmatch
import functools
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from watchkeeper.collectors.common import (
    CollectorTimeout,
    MissingLog,
    PsutilLike,
    TimeLimiter,
    describe_error,
)
from watchkeeper.events import DiskUsage

#: Kernel and virtual filesystems: no disk behind them, or usage that means nothing
#: (read-only images such as squashfs snaps, erofs, ISO 9660 and UDF are always 100 % full).
PSEUDO_FSTYPES: frozenset[str] = frozenset({
    "autofs", "autofs4", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "cpuset",
    "debugfs", "devfs", "devpts", "devtmpfs", "efivarfs", "erofs", "fdescfs", "fuse.gvfsd-fuse",
    "fuse.lxcfs", "fuse.portal", "fuse.snapfuse", "fusectl", "hugetlbfs", "iso9660",
    "linprocfs", "linsysfs", "mqueue", "nfsd", "nsfs", "nullfs", "pipefs", "proc", "procfs",
    "pstore", "ramfs", "rootfs", "rpc_pipefs", "securityfs", "selinuxfs", "sockfs", "squashfs",
    "sysfs", "tmpfs", "tracefs", "udf",
})

#: Union filesystems: in a container the root is one of these and is worth watching;
#: elsewhere (docker's per-container layers on the host) they repeat the backing disk.
ROOT_ONLY_FSTYPES: frozenset[str] = frozenset({"overlay", "aufs", "fuse-overlayfs"})

StatVfs = Callable[[str], Any]


@dataclass(frozen=True)
class _Reading:
    total: int
    used: int
    free: int
    percent: float
    inodes_percent: float | None
    inodes_error: str | None


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def select_partitions(
    partitions: Sequence[Any],
    ignore_fstypes: Iterable[str] = (),
    ignore_mounts: Iterable[str] = (),
) -> list[Any]:
    """Writable real filesystems worth reporting, one per device, sorted by mount point.

    What is mounted read-only (``ro``) or is an image format (squashfs, iso9660, udf, erofs)
    cannot be filled by this host, so it is skipped; a loop device as such is not: a
    read-write ext4 image on /dev/loop0 fills up like any disk.
    A device mounted several times (bind mounts, docker's /etc/hosts) is reported once, at
    its shortest mount point: the numbers would be identical for every one of them.
    """
    skip_types = PSEUDO_FSTYPES | {t.lower() for t in ignore_fstypes}
    ignore_mounts = tuple(ignore_mounts)
    chosen: dict[str, Any] = {}
    for part in partitions:
        fstype = (part.fstype or "").lower()
        mount = part.mountpoint
        if not fstype or fstype in skip_types:
            continue  # an empty fstype is a drive without media (Windows CD-ROM)
        if not part.device:
            continue  # psutil turns a "none" source into "": a kernel-only mount
        if fstype in ROOT_ONLY_FSTYPES and mount != "/":
            continue
        opts = (part.opts or "").split(",")
        if "cdrom" in opts or "ro" in opts:
            continue
        if _matches(mount, ignore_mounts):
            continue
        key = part.device or mount
        kept = chosen.get(key)
        if kept is None or (len(mount), mount) < (len(kept.mountpoint), kept.mountpoint):
            chosen[key] = part
    return sorted(chosen.values(), key=lambda p: p.mountpoint)


class DiskCollector:
    """Reads usage of each selected mount under a deadline, skipping mounts still hung."""

    def __init__(self, ps: PsutilLike, limiter: TimeLimiter, statvfs: StatVfs | None) -> None:
        self._ps = ps
        self._limiter = limiter
        self._statvfs = statvfs

    def _read(self, mount: str) -> _Reading:
        usage = self._ps.disk_usage(mount)
        inodes: float | None = None
        inodes_error: str | None = None
        if self._statvfs is not None:
            try:
                st = self._statvfs(mount)
                # btrfs and some network filesystems report 0 inodes: no inode limit at all.
                if st.f_files > 0:
                    inodes = (st.f_files - st.f_ffree) / st.f_files * 100.0
            except Exception as exc:
                inodes_error = describe_error(self._ps, exc)
        return _Reading(
            total=int(usage.total),
            used=int(usage.used),
            free=int(usage.free),
            percent=float(usage.percent),
            inodes_percent=inodes,
            inodes_error=inodes_error,
        )

    def collect(
        self,
        log: MissingLog,
        deadline: float,
        timeout: float,
        ignore_fstypes: Iterable[str] = (),
        ignore_mounts: Iterable[str] = (),
    ) -> tuple[DiskUsage, ...]:
        """Usage of every selected mount that answered by ``deadline`` (time.monotonic)."""
        # all=True, filtered by us: psutil's all=False on Linux drops every "nodev"
        # filesystem, which includes NFS, CIFS and FUSE mounts (the ones that fill up
        # unnoticed, and the ones that hang) and the overlay root of a container.
        partitions = select_partitions(
            self._ps.disk_partitions(all=True), ignore_fstypes, ignore_mounts
        )
        pending: list[tuple[Any, str, Future[_Reading]]] = []
        for part in partitions:
            key = f"disk:{part.mountpoint}"
            fut = self._limiter.submit(key, functools.partial(self._read, str(part.mountpoint)))
            if fut is None:
                log.note(key, f"timed out after {timeout:g}s (still hung)")
            else:
                pending.append((part, key, fut))
        disks: list[DiskUsage] = []
        for part, key, fut in pending:
            try:
                r = self._limiter.wait(key, fut, deadline)
            except CollectorTimeout:
                log.note(key, f"timed out after {timeout:g}s")
                continue
            except Exception as exc:
                log.note(key, describe_error(self._ps, exc))
                continue
            if r.inodes_error is not None:
                log.note(f"{key}.inodes", r.inodes_error)
            disks.append(DiskUsage(
                mountpoint=part.mountpoint,
                device=str(part.device),
                fstype=str(part.fstype),
                total=r.total,
                used=r.used,
                free=r.free,
                percent=r.percent,
                inodes_percent=r.inodes_percent,
            ))
        return tuple(disks)


def default_statvfs() -> StatVfs | None:
    """os.statvfs where the platform has it (not on Windows)."""
    return getattr(os, "statvfs", None)
