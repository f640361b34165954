"""SnapshotCollector: one MetricSnapshot per tick from every collector family.

Families run concurrently on daemon threads, each under the same deadline, so a hung psutil
call anywhere costs that family's values (marked in ``missing``) and never the tick.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from datetime import datetime, timezone
from typing import Any

import psutil

from watchkeeper.collectors.common import (
    FIRST_SAMPLE,
    CollectorTimeout,
    DaemonPool,
    MissingLog,
    PsutilLike,
    TimeLimiter,
    describe_error,
)
from watchkeeper.collectors.cpu import CpuReading, cpu_stats, read_cpu
from watchkeeper.collectors.demand import DemandMeter
from watchkeeper.collectors.diskio import CounterReading, disk_io_rates, read_disk_io
from watchkeeper.collectors.disks import DiskCollector, StatVfs, default_statvfs
from watchkeeper.collectors.host import read_identity, uptime
from watchkeeper.collectors.logs import LogWatcher
from watchkeeper.collectors.memory import read_memory
from watchkeeper.collectors.network import NetReading, net_rates, read_net
from watchkeeper.collectors.processes import DetailReader, linux_thread_total, read_processes
from watchkeeper.collectors.procfs import ProcScanner, ProcStat
from watchkeeper.config import SensorConfig
from watchkeeper.events import (
    CpuStats,
    DiskIO,
    DiskUsage,
    HostIdentity,
    MemoryStats,
    MetricSnapshot,
    Missing,
    NetIO,
    ProcessSummary,
)

logger = logging.getLogger(__name__)

_DEFAULT_STATVFS: Any = object()  # sentinel: "use the platform's default"


class SnapshotCollector:
    """Builds MetricSnapshots from psutil (or a fake); call collect() from a worker thread.

    Rates (CPU %, disk and network throughput) are deltas against the previous collect(), so
    the first snapshot reports them in ``missing`` instead of inventing zeros.
    """

    def __init__(
        self,
        psutil_module: PsutilLike = psutil,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        config: SensorConfig | None = None,
        host: str = "localhost",
        statvfs: StatVfs | None = _DEFAULT_STATVFS,
        thread_total: Callable[[], int | None] | Any | None = _DEFAULT_STATVFS,
        proc_scan: Callable[[], list[ProcStat]] | Any | None = _DEFAULT_STATVFS,
        log_watcher: LogWatcher | Any | None = _DEFAULT_STATVFS,
    ) -> None:
        self._ps = psutil_module
        linux = psutil_module is psutil and psutil.LINUX
        if thread_total is _DEFAULT_STATVFS:
            # Real psutil on Linux: the host's thread count is one read of /proc/loadavg.
            thread_total = linux_thread_total if linux else None
        self._thread_total: Callable[[], int | None] | None = thread_total
        if proc_scan is _DEFAULT_STATVFS:
            # Real psutil on Linux: the process pass reads /proc/<pid>/stat itself, a
            # fraction of psutil's cost per process (psutil: elsewhere, and fakes in tests).
            # Its rows' users and command lines come from /proc too.
            scanner = ProcScanner() if linux and ProcScanner.available() else None
            proc_scan = None if scanner is None else scanner.scan
            self._proc_details: DetailReader | None = None if scanner is None \
                else scanner.details
        else:
            self._proc_details = None
        self._proc_scan: Callable[[], list[ProcStat]] | None = proc_scan
        if log_watcher is _DEFAULT_STATVFS:
            # The real host's files go with the real psutil; a fake host has no logs.
            log_watcher = LogWatcher() if psutil_module is psutil else None
        self._logs: LogWatcher | None = log_watcher
        self._demand: DemandMeter | None = (
            DemandMeter() if linux and os.path.exists("/proc/self/schedstat") else None)
        # The injected clocks timestamp readings; deadlines use the real time.monotonic,
        # because they wait on real threads.
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self._config = config or SensorConfig()
        self._host = host
        self._pool = DaemonPool("watchkeeper-collect")
        self._limiter = TimeLimiter(self._pool)
        self._disks = DiskCollector(
            psutil_module,
            self._limiter,
            default_statvfs() if statvfs is _DEFAULT_STATVFS else statvfs,
        )
        # One collect() at a time: rate state belongs to the previous tick.
        self._lock = threading.Lock()
        self._prev_cpu: CpuReading | None = None
        self._prev_disk_io: CounterReading | None = None
        self._prev_net: NetReading | None = None
        self._identity: HostIdentity | None = None
        self._last_missing: dict[str, str] = {}

    @property
    def config(self) -> SensorConfig:
        """Sensor settings; assign a new one to apply it from the next collect()."""
        return self._config

    @config.setter
    def config(self, value: SensorConfig) -> None:
        self._config = value

    def close(self) -> None:
        """Stop the worker threads (threads stuck in a hung call exit when it returns)."""
        self._pool.close()

    def hung(self) -> list[str]:
        """Families and mounts whose last call never returned (threads still blocked)."""
        return self._limiter.hung()

    def collect(self, seq: int, interval_s: float) -> MetricSnapshot:
        """Read every family once (blocking, bounded by ~collector_timeout)."""
        with self._lock:
            return self._collect(seq, interval_s)

    def _families(self, cfg: SensorConfig, mount_deadline: float) -> dict[str, Callable[[], Any]]:
        ps = self._ps
        families: dict[str, Callable[[], Any]] = {
            "cpu": lambda: read_cpu(ps),
            "memory": lambda: self._with_log(lambda log: read_memory(ps, log)),
            "disks": lambda: self._with_log(lambda log: self._disks.collect(
                log, mount_deadline, cfg.collector_timeout, cfg.ignore_fstypes, cfg.ignore_mounts
            )),
            "disk_io": lambda: read_disk_io(ps, self._monotonic),
            "net": lambda: read_net(ps, self._monotonic, cfg.ignore_interfaces),
            "processes": lambda: self._with_log(
                lambda log: read_processes(ps, log, cfg.top_processes, self._wall_clock(),
                                           self._thread_total, self._proc_scan,
                                           self._proc_details)
            ),
        }
        logs = self._logs
        if logs is not None and cfg.log_paths:
            families["logs"] = lambda: logs.collect(cfg.log_paths, self._monotonic(),
                                                    cfg.top_processes)
        if self._identity is None:
            families["host"] = lambda: self._with_log(lambda log: read_identity(ps, log))
        return families

    def _with_log(self, fn: Callable[[MissingLog], Any]) -> tuple[Any, list[Missing]]:
        log = MissingLog(self._ps)
        return fn(log), log.entries

    def _collect(self, seq: int, interval_s: float) -> MetricSnapshot:
        started = time.perf_counter()
        # A snapshot is stamped when its reading starts (as Prometheus stamps a scrape), so
        # its time says when the tick ran; how long the reading took is collect_ms.
        now = self._wall_clock()
        cfg = self._config
        timeout = cfg.collector_timeout
        deadline = time.monotonic() + timeout
        # Mounts finish a little before their family's deadline so a hung mount costs only
        # itself, not the whole disks family.
        mount_deadline = deadline - min(0.2, 0.1 * timeout)
        missing: list[Missing] = []

        def note(key: str, reason: str) -> None:
            missing.append(Missing(key=key, reason=reason))

        futures: dict[str, Future[Any]] = {}
        for name, fn in self._families(cfg, mount_deadline).items():
            fut = self._limiter.submit(name, fn)
            if fut is None:
                note(name, f"timed out after {timeout:g}s (still hung)")
            else:
                futures[name] = fut
        results: dict[str, Any] = {}
        for name, fut in futures.items():
            try:
                results[name] = self._limiter.wait(name, fut, deadline)
            except CollectorTimeout:
                note(name, f"timed out after {timeout:g}s")
            except Exception as exc:
                note(name, describe_error(self._ps, exc))

        cpu = CpuStats()
        cpu_reading: CpuReading | None = results.get("cpu")
        if cpu_reading is not None:
            missing.extend(cpu_reading.missing)
            cpu = cpu_stats(self._prev_cpu, cpu_reading, note)
            self._prev_cpu = cpu_reading
        memory: MemoryStats = self._unpack(results.get("memory"), missing, MemoryStats())
        disks: tuple[DiskUsage, ...] = self._unpack(results.get("disks"), missing, ())
        processes: ProcessSummary = self._unpack(
            results.get("processes"), missing, ProcessSummary()
        )
        if self._demand is not None and processes.top_cpu:
            processes = processes.model_copy(update={"top_cpu": self._demand.annotate(
                processes.top_cpu, time.monotonic())})
        disk_io_reading: CounterReading | None = results.get("disk_io")
        disk_io: tuple[DiskIO, ...] = ()
        if disk_io_reading is not None:
            disk_io = disk_io_rates(self._prev_disk_io, disk_io_reading, note)
            self._prev_disk_io = disk_io_reading
        net_reading: NetReading | None = results.get("net")
        net: tuple[NetIO, ...] = ()
        if net_reading is not None:
            missing.extend(net_reading.missing)
            net = net_rates(self._prev_net, net_reading, note)
            self._prev_net = net_reading
        identity = self._identity
        if "host" in results:
            identity = self._unpack(results["host"], missing, None)
            # Without a boot time there is no uptime: read the identity again next tick.
            if identity is not None and identity.boot_time is not None:
                self._identity = identity

        missing.sort(key=lambda m: m.key)
        self._log_changes(missing)
        return MetricSnapshot(
            host=self._host,
            at=datetime.fromtimestamp(now, timezone.utc),
            seq=seq,
            interval_s=interval_s,
            cpu=cpu,
            memory=memory,
            disks=disks,
            disk_io=disk_io,
            net=net,
            processes=processes,
            uptime_s=uptime(identity, now),
            identity=identity,
            missing=tuple(missing),
            collect_ms=(time.perf_counter() - started) * 1000.0,
            logs=results.get("logs") or (),
        )

    @staticmethod
    def _unpack(result: tuple[Any, list[Missing]] | None, missing: list[Missing],
                default: Any) -> Any:
        if result is None:
            return default
        value, entries = result
        missing.extend(entries)
        return value

    def _log_changes(self, missing: list[Missing]) -> None:
        """Log each value that went missing once, and once when it is readable again."""
        current = {m.key: m.reason for m in missing}
        for key, reason in current.items():
            if key in self._last_missing:
                continue  # same outage, even if its reason changed (timed out -> still hung)
            # First-tick rates are expected; per-process details vanish all the time.
            quiet = reason == FIRST_SAMPLE or key.startswith("process:")
            logger.log(logging.DEBUG if quiet else logging.WARNING,
                       "cannot read %s: %s", key, reason)
        for key in self._last_missing.keys() - current.keys():
            quiet = self._last_missing[key] == FIRST_SAMPLE or key.startswith("process:")
            logger.log(logging.DEBUG if quiet else logging.INFO, "%s is readable again", key)
        self._last_missing = current
