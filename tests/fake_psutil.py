"""A fake psutil for tests: the functions SnapshotCollector calls, with scriptable failures.

Pass a FakePsutil where the psutil module goes. Every value is a plain attribute to set;
``fail(name, exc)`` makes a function raise and ``hang(name, event)`` makes it block until the
event is set (a dead NFS mount, a stuck /proc read). Exceptions are psutil's own classes.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import psutil


class CpuTimes(NamedTuple):
    """Same fields as psutil's Linux scputimes."""

    user: float = 0.0
    nice: float = 0.0
    system: float = 0.0
    idle: float = 0.0
    iowait: float = 0.0
    irq: float = 0.0
    softirq: float = 0.0
    steal: float = 0.0
    guest: float = 0.0
    guest_nice: float = 0.0


class VirtualMemory(NamedTuple):
    total: int
    available: int
    percent: float
    used: int
    free: int


class SwapMemory(NamedTuple):
    total: int
    used: int
    free: int
    percent: float
    sin: int = 0
    sout: int = 0


class Partition(NamedTuple):
    device: str
    mountpoint: str
    fstype: str
    opts: str = "rw"


class DiskUsage(NamedTuple):
    total: int
    used: int
    free: int
    percent: float


class StatVfs(NamedTuple):
    """The two os.statvfs fields the disk collector reads."""

    f_files: int
    f_ffree: int


class DiskIOCounters(NamedTuple):
    read_count: int = 0
    write_count: int = 0
    read_bytes: int = 0
    write_bytes: int = 0
    read_time: int = 0
    write_time: int = 0
    busy_time: int = 0


class NetIOCounters(NamedTuple):
    bytes_sent: int = 0
    bytes_recv: int = 0
    packets_sent: int = 0
    packets_recv: int = 0
    errin: int = 0
    errout: int = 0
    dropin: int = 0
    dropout: int = 0


class NicStats(NamedTuple):
    isup: bool
    duplex: int = 0
    speed: int = 0
    mtu: int = 1500
    flags: str = ""


class MemoryInfo(NamedTuple):
    rss: int
    vms: int = 0


class FakeProcess:
    """A process for FakePsutil.process_iter; ``errors`` maps a method name to what it raises."""

    def __init__(
        self,
        pid: int,
        name: str,
        *,
        cpu_percent: float = 0.0,
        rss: int = 0,
        status: str = "sleeping",
        num_threads: int = 1,
        create_time: float = 0.0,
        username: str = "root",
        cmdline: Sequence[str] = (),
        errors: dict[str, BaseException] | None = None,
    ) -> None:
        self.pid = pid
        self.info: dict[str, Any] = {}
        self.values: dict[str, Any] = {
            "pid": pid,
            "name": name,
            "cpu_percent": cpu_percent,
            "memory_info": MemoryInfo(rss=rss),
            "status": status,
            "num_threads": num_threads,
            "create_time": create_time,
            "username": username,
            "cmdline": list(cmdline),
        }
        self.errors: dict[str, BaseException] = dict(errors or {})
        self.calls: Counter[str] = Counter()

    def _get(self, attr: str) -> Any:
        self.calls[attr] += 1
        if attr in self.errors:
            raise self.errors[attr]
        return self.values[attr]

    def as_dict(self, attrs: Sequence[str], ad_value: Any = None) -> dict[str, Any]:
        """Like psutil: AccessDenied and ZombieProcess give ``ad_value``; NoSuchProcess raises."""
        out: dict[str, Any] = {}
        for attr in attrs:
            try:
                out[attr] = self._get(attr)
            except (psutil.AccessDenied, psutil.ZombieProcess):
                out[attr] = ad_value
        return out

    def cmdline(self) -> list[str]:
        """The argv list (or the scripted error)."""
        value: list[str] = self._get("cmdline")
        return value

    def username(self) -> str:
        """The owner (or the scripted error)."""
        value: str = self._get("username")
        return value


class FakePsutil:
    """Stands in for the psutil module; set attributes to script what the host looks like."""

    NoSuchProcess = psutil.NoSuchProcess
    ZombieProcess = psutil.ZombieProcess
    AccessDenied = psutil.AccessDenied

    def __init__(self) -> None:
        self.cpu_total = CpuTimes(user=100.0, system=50.0, idle=850.0)
        self.cpu_cores: list[CpuTimes] = [
            CpuTimes(user=50.0, system=25.0, idle=425.0),
            CpuTimes(user=50.0, system=25.0, idle=425.0),
        ]
        self.loadavg = (0.5, 0.4, 0.3)
        self.logical_cpus = 2
        gib = 1024**3
        self.memory = VirtualMemory(
            total=8 * gib, available=6 * gib, percent=25.0, used=2 * gib, free=6 * gib
        )
        self.swap = SwapMemory(total=2 * gib, used=0, free=2 * gib, percent=0.0)
        self.partitions: list[Partition] = [Partition("/dev/sda1", "/", "ext4")]
        # mount -> usage; missing mounts raise FileNotFoundError like a vanished path.
        self.usage: dict[str, DiskUsage] = {
            "/": DiskUsage(total=100 * gib, used=40 * gib, free=60 * gib, percent=40.0)
        }
        self.statvfs_result: dict[str, StatVfs] = {"/": StatVfs(f_files=1000, f_ffree=750)}
        self.disk_io: dict[str, DiskIOCounters] = {"sda": DiskIOCounters()}
        self.net_io: dict[str, NetIOCounters] = {
            "lo": NetIOCounters(), "eth0": NetIOCounters()
        }
        self.nic_stats: dict[str, NicStats] = {"lo": NicStats(True), "eth0": NicStats(True)}
        self.processes: list[FakeProcess] = [FakeProcess(1, "init", status="sleeping")]
        #: If set, process_iter raises it after yielding this many processes.
        self.iter_error: tuple[int, BaseException] | None = None
        self.boot = 1_700_000_000.0
        self.calls: Counter[str] = Counter()
        self._errors: dict[str, BaseException] = {}
        self._hangs: dict[str, threading.Event] = {}

    # ------------------------------------------------------------------ scripting

    def fail(self, name: str, exc: BaseException) -> None:
        """Make ``name`` (a function, or ``disk_usage:<mount>``) raise ``exc``."""
        self._errors[name] = exc

    def hang(self, name: str, release: threading.Event) -> None:
        """Make ``name`` (a function, or ``disk_usage:<mount>``) block until ``release``."""
        self._hangs[name] = release

    def _enter(self, name: str) -> None:
        self.calls[name] = self.calls[name] + 1
        event = self._hangs.get(name)
        if event is not None:
            event.wait()
        if name in self._errors:
            raise self._errors[name]

    # ------------------------------------------------------------------ psutil API

    def cpu_times(self, percpu: bool = False) -> Any:
        """psutil.cpu_times."""
        self._enter("cpu_times")
        return list(self.cpu_cores) if percpu else self.cpu_total

    def cpu_count(self, logical: bool = True) -> int:
        """psutil.cpu_count."""
        self._enter("cpu_count")
        return self.logical_cpus

    def getloadavg(self) -> tuple[float, float, float]:
        """psutil.getloadavg."""
        self._enter("getloadavg")
        return self.loadavg

    def virtual_memory(self) -> VirtualMemory:
        """psutil.virtual_memory."""
        self._enter("virtual_memory")
        return self.memory

    def swap_memory(self) -> SwapMemory:
        """psutil.swap_memory."""
        self._enter("swap_memory")
        return self.swap

    def disk_partitions(self, all: bool = False) -> list[Partition]:
        """psutil.disk_partitions."""
        self._enter("disk_partitions")
        return list(self.partitions)

    def disk_usage(self, path: str) -> DiskUsage:
        """psutil.disk_usage."""
        self._enter("disk_usage")
        self._enter(f"disk_usage:{path}")
        if path not in self.usage:
            raise FileNotFoundError(2, "No such file or directory", path)
        return self.usage[path]

    def statvfs(self, path: str) -> StatVfs:
        """os.statvfs stand-in (pass as SnapshotCollector's ``statvfs``)."""
        self._enter(f"statvfs:{path}")
        return self.statvfs_result.get(path, StatVfs(0, 0))

    def disk_io_counters(self, perdisk: bool = False, nowrap: bool = True) -> Any:
        """psutil.disk_io_counters (perdisk=True only)."""
        self._enter("disk_io_counters")
        return dict(self.disk_io)

    def net_io_counters(self, pernic: bool = False, nowrap: bool = True) -> Any:
        """psutil.net_io_counters (pernic=True only)."""
        self._enter("net_io_counters")
        return dict(self.net_io)

    def net_if_stats(self) -> dict[str, NicStats]:
        """psutil.net_if_stats."""
        self._enter("net_if_stats")
        return dict(self.nic_stats)

    def process_iter(
        self, attrs: Sequence[str] | None = None, ad_value: Any = None
    ) -> Iterator[FakeProcess]:
        """psutil.process_iter: skips processes that vanish while their attrs are read."""
        self._enter("process_iter")
        for i, proc in enumerate(list(self.processes)):
            if self.iter_error is not None and i == self.iter_error[0]:
                raise self.iter_error[1]
            try:
                proc.info = proc.as_dict(attrs or [], ad_value)
            except psutil.NoSuchProcess:
                continue
            yield proc

    def boot_time(self) -> float:
        """psutil.boot_time."""
        self._enter("boot_time")
        return self.boot
