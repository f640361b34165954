"""The /proc scan against psutil on this live host: the same processes, start times, memory
and CPU %, and the collector's top lists still name the whole process with its details."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from watchkeeper.collectors.common import MissingLog
from watchkeeper.collectors.processes import read_processes
from watchkeeper.collectors.procfs import ProcScanner
from watchkeeper.redact import redact_cmdline
from watchkeeper.safetext import MAX_NAME, printable

# exclusive: it compares two reads of the whole process table and wants its busy child among
# the machine's top CPU users; a test beside it churns processes and CPU (scripts/test runs
# it alone).
pytestmark = pytest.mark.exclusive

BUSY = [sys.executable, "-c", "while True: pass"]


def _sleeper(children: list[subprocess.Popen[bytes]], argv0: str = "sleep") -> int:
    exe = shutil.which("sleep") or "/bin/sleep"
    children.append(subprocess.Popen([argv0, "600"], executable=exe))
    return children[-1].pid


def test_the_scan_sees_what_psutil_sees(children: list[subprocess.Popen[bytes]]) -> None:
    mine = {_sleeper(children) for _ in range(5)}
    time.sleep(0.2)
    scanner = ProcScanner()
    before = set(psutil.pids())
    rows = {r.pid: r for r in scanner.scan()}
    after = set(psutil.pids())
    stable = before & after
    assert stable <= set(rows) <= before | after
    assert mine <= set(rows)
    compared = 0
    for pid in stable:
        try:
            p = psutil.Process(pid)
            with p.oneshot():
                created, name, status = p.create_time(), p.name(), p.status()
        except psutil.Error:
            continue
        row = rows[pid]
        if abs(created - row.create_time) > 0.01:
            continue  # the pid was reused between the two reads
        compared += 1
        if len(row.name) < 15:  # the kernel's name; psutil completes longer ones
            assert row.name == name, pid
        if pid in mine:
            assert row.status == status == "sleeping"
            assert row.rss == p.memory_info().rss  # idle: its memory does not move
        if pid == 2 or p.ppid() == 2:  # kernel threads (kthreadd's), when the host shows them
            assert row.rss == p.memory_info().rss == 0, pid
    assert compared >= len(mine)


def test_cpu_percent_agrees_with_psutil_over_the_same_window(
        children: list[subprocess.Popen[bytes]]) -> None:
    children.append(subprocess.Popen(BUSY))
    busy = psutil.Process(children[-1].pid)
    idle = psutil.Process(_sleeper(children))
    scanner = ProcScanner()
    time.sleep(0.3)
    busy.cpu_percent(), idle.cpu_percent()
    scanner.scan()
    time.sleep(1.5)
    rows = {r.pid: r for r in scanner.scan()}
    theirs_busy, theirs_idle = busy.cpu_percent(), idle.cpu_percent()
    # Both are CPU time over the time between two reads a few µs apart from each other's.
    assert abs(rows[busy.pid].cpu_percent - theirs_busy) <= 10.0, (rows[busy.pid],
                                                                   theirs_busy)
    assert rows[busy.pid].cpu_percent > 20.0  # it runs, whatever the machine's load
    assert rows[idle.pid].cpu_percent == theirs_idle == 0.0


def test_a_process_that_spins_from_its_start_is_busy_at_its_first_reading(
        children: list[subprocess.Popen[bytes]]) -> None:
    scanner = ProcScanner()
    scanner.scan()
    children.append(subprocess.Popen(BUSY))
    time.sleep(1.5)
    rows = {r.pid: r for r in scanner.scan()}
    assert rows[children[-1].pid].cpu_percent > 20.0  # it runs, whatever the machine's load


@pytest.mark.parametrize("from_proc", [True, False], ids=["details-from-proc",
                                                         "details-from-psutil"])
def test_top_lists_from_the_scan_name_the_whole_process_with_its_user_and_command_line(
        children: list[subprocess.Popen[bytes]], tmp_path: Path, from_proc: bool) -> None:
    long_name = "watchkeeper-test-long-named-sleeper"
    link = tmp_path / long_name
    link.symlink_to(shutil.which("sleep") or "/bin/sleep")
    children.append(subprocess.Popen([str(link), "600"]))
    pid = children[-1].pid
    children.append(subprocess.Popen(BUSY))
    busy = children[-1].pid
    scanner = ProcScanner()
    time.sleep(0.3)
    scanner.scan()
    time.sleep(1.0)
    log = MissingLog(psutil)
    summary = read_processes(psutil, log, 400, time.time(), scan=scanner.scan,
                             details=scanner.details if from_proc else None)
    by_pid = {p.pid: p for p in summary.top_memory}
    # Every row's user and command line as psutil reads them (the reference), where the
    # process is still the same one.
    compared = 0
    for row in by_pid.values():
        try:
            proc = psutil.Process(row.pid)
            with proc.oneshot():
                same = abs(proc.create_time() - row.create_time) <= 0.01
                user, cmdline = proc.username(), proc.cmdline()
        except psutil.Error:
            continue
        if same:
            compared += 1
            assert row.user == printable(user, MAX_NAME), row
            assert row.cmdline == (redact_cmdline(cmdline) if cmdline else ""), row
    assert compared >= 3
    assert by_pid[pid].name == psutil.Process(pid).name() == long_name
    assert by_pid[pid].cmdline == f"{link} 600"
    assert by_pid[pid].user == psutil.Process(pid).username()
    assert summary.top_cpu[0].pid == busy or any(p.pid == busy for p in summary.top_cpu[:3])
    assert summary.total is not None and summary.total >= len(by_pid)
    assert summary.threads == sum(1 for _ in os.scandir("/proc/self/task")) or \
        summary.threads > 0


@pytest.mark.parametrize("path", ["procfs", "psutil"])
def test_the_largest_groups_by_name_count_real_processes(
        children: list[subprocess.Popen[bytes]], tmp_path: Path, path: str) -> None:
    # A fork storm's culprit is named by its group: 40 processes of one executable of ours
    # (the kernel names a process after its executable's file).
    exe = tmp_path / "wkforkcount"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", exe)
    for _ in range(40):
        children.append(subprocess.Popen([str(exe), "600"]))
    time.sleep(0.2)
    scan = ProcScanner().scan if path == "procfs" else None
    summary = read_processes(psutil, MissingLog(psutil), 5, time.time(), scan=scan)
    groups = {g.name: g.count for g in summary.top_names}
    assert groups.get("wkforkcount") == 40
    assert [g.count for g in summary.top_names] == sorted(groups.values(), reverse=True)
    assert summary.total is not None and summary.total >= 40
