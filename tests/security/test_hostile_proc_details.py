"""Security corpus: hostile /proc content on the Linux detail path (issue 14, item 4).

A top-list row's user and command line are read from /proc/<pid>/status and cmdline, which
any local user controls in part (a command line is theirs to write; a process exits or a pid
is reused between two reads). Whatever those files hold, a row never carries a control
character, a secret, or unbounded text; it never names another process's details; and an
unreadable or malformed file costs that one field, with a note, never the tick. Each case
writes a /proc tree of its own (the scanner takes its root), so the payloads need no real
process.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
import pytest

from watchkeeper.collectors.common import MissingLog
from watchkeeper.collectors.processes import read_processes
from watchkeeper.collectors.procfs import ProcScanner
from watchkeeper.events import ProcessInfo
from watchkeeper.redact import DEFAULT_MAX_LEN

TCK = os.sysconf("SC_CLK_TCK")
BOOT = 1_700_000_000


def _proc(root: Path, pid: int, *, comm: str = "victim", status: bytes | None = None,
          cmdline: bytes | None = b"/bin/victim\x00", start: int = 100) -> None:
    """One process under ``root``: busy (so it tops the CPU list on the second scan)."""
    rest = ["R", "1", "1", "1", "0", "-1", "0", "0", "0", "0", "0", "0", "0", "0", "0",
            "20", "0", "1", "0", str(start), "1000", "10", "0"]
    d = root / str(pid)
    d.mkdir(exist_ok=True)
    (d / "stat").write_bytes(f"{pid} ({comm}) {' '.join(rest)}\n".encode())
    (d / "statm").write_text("900 10 5 1 0 40 0\n")
    if status is not None:
        (d / "status").write_bytes(status)
    if cmdline is not None:
        (d / "cmdline").write_bytes(cmdline)


def _busier(root: Path, pid: int, ticks: int) -> None:
    """Give ``pid`` CPU time since the first scan (utime, field 14)."""
    stat = root / str(pid) / "stat"
    head, _, tail = stat.read_bytes().rpartition(b")")
    fields = tail.split()
    fields[11] = str(ticks).encode()
    stat.write_bytes(head + b") " + b" ".join(fields) + b"\n")


def _row(root: Path, pid: int = 42) -> tuple[ProcessInfo, dict[str, str]]:
    """Scan twice (so CPU % exists) and read the details of ``pid``'s top-list row."""
    now = [100.0]
    scanner = ProcScanner(str(root), monotonic=lambda: now[0], boot_time=BOOT)
    scanner.scan()
    now[0] += 1.0
    _busier(root, pid, TCK)
    log = MissingLog(psutil)
    summary = read_processes(psutil, log, 1, time.time(), None, scanner.scan, scanner.details)
    (row,) = summary.top_cpu
    assert row.pid == pid
    return row, {m.key: m.reason for m in log.entries}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "stat").write_text(f"cpu  1 2 3\nbtime {BOOT}\n")
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "stat").write_text("1 (x) S")
    return tmp_path


UID_LINE = b"Name:\tx\nUid:\t0\t0\t0\t0\n"

CMDLINES = {
    "newline-forges-a-log-line": b"job\x00\nERROR root login ok\x00",
    "terminal-escape": b"job\x00\x1b]0;owned\x07\x1b[2J\x00",
    "bidi-override": b"job\x00\xe2\x80\xaetxt.exe\x00",
    "password-flag": b"mysql\x00--password=hunter2\x00-h\x00db\x00",
    "url-with-credentials": b"curl\x00https://admin:s3cret@example.org/x\x00",
    "megabyte-of-arguments": b"job\x00" + b"A" * 1_000_000 + b"\x00",
    "not-utf8": b"job\x00\xff\xfe\x00",
    "only-nul-bytes": b"\x00\x00\x00",
}


@pytest.mark.parametrize("raw", list(CMDLINES.values()), ids=list(CMDLINES))
def test_a_hostile_command_line_is_printable_redacted_and_bounded(root: Path,
                                                                  raw: bytes) -> None:
    _proc(root, 42, status=UID_LINE, cmdline=raw)
    row, _gaps = _row(root)
    assert row.cmdline.isprintable()
    assert len(row.cmdline) <= DEFAULT_MAX_LEN
    assert "hunter2" not in row.cmdline and "s3cret" not in row.cmdline
    assert "\u202e" not in row.cmdline


STATUS_FILES = {
    "no-uid-line": b"Name:\tx\nState:\tR\n",
    "uid-not-a-number": b"Name:\tx\nUid:\troot\t0\t0\t0\n",
    "uid-line-cut-short": b"Name:\tx\nUid:",
    "empty": b"",
    "binary-garbage": b"\x00\xff" * 64,
}


@pytest.mark.parametrize("raw", list(STATUS_FILES.values()), ids=list(STATUS_FILES))
def test_a_malformed_status_costs_only_the_user(root: Path, raw: bytes) -> None:
    _proc(root, 42, status=raw, cmdline=b"/bin/victim\x00--flag\x00")
    row, gaps = _row(root)
    assert row.user is None
    assert row.cmdline == "/bin/victim --flag"
    assert "process:42.username" in gaps


def test_a_uid_without_a_passwd_entry_is_shown_as_its_number(root: Path) -> None:
    _proc(root, 42, status=b"Name:\tx\nUid:\t4000000001\t0\t0\t0\n")
    row, _gaps = _row(root)
    assert row.user == "4000000001"


def test_a_name_posing_as_a_user_line_is_not_read_as_one(root: Path) -> None:
    """The Name line comes first and is the process's to choose: a name holding
    "\\nUid:\\t0" (the kernel escapes a newline in it as "\\n") cannot make a user root."""
    status = b"Name:\tevil\\nUid:\t0\nUmask:\t0022\nUid:\t1000\t1000\t1000\t1000\n"
    _proc(root, 42, status=status)
    row, _gaps = _row(root)
    assert row.user != "root"


def test_a_pid_reused_before_the_details_are_read_names_nobody_else(root: Path) -> None:
    """The scan saw one process; by the time its details are read the pid belongs to a
    newer one, whose user and command line must not be shown as the first one's."""
    _proc(root, 42, status=UID_LINE, cmdline=b"/bin/first\x00")
    now = [100.0]
    scanner = ProcScanner(str(root), monotonic=lambda: now[0], boot_time=BOOT)
    scanner.scan()
    now[0] += 1.0
    _busier(root, 42, TCK)
    real_scan = scanner.scan

    def scan_then_reuse() -> list:  # type: ignore[type-arg]
        rows = real_scan()
        _proc(root, 42, status=UID_LINE, cmdline=b"/bin/intruder\x00", start=900)
        return rows

    log = MissingLog(psutil)
    summary = read_processes(psutil, log, 1, time.time(), None, scan_then_reuse,
                             scanner.details)
    (row,) = summary.top_cpu
    assert row.pid == 42 and row.cmdline == "" and row.user is None
    assert {m.key: m.reason for m in log.entries}["process:42"] == "process vanished"


def test_a_process_gone_before_its_details_keeps_what_the_scan_saw(root: Path) -> None:
    _proc(root, 42, comm="short-lived", status=None, cmdline=None)
    row, gaps = _row(root)
    assert row.name == "short-lived" and row.cmdline == ""
    assert gaps["process:42"] == "process vanished"


def test_a_garbled_stat_at_detail_time_costs_only_that_row(root: Path) -> None:
    """The stat file read again for the details no longer parses (a start time that is not
    a number): the row is reported vanished, the tick goes on."""
    _proc(root, 42, status=UID_LINE)
    now = [100.0]
    scanner = ProcScanner(str(root), monotonic=lambda: now[0], boot_time=BOOT)
    scanner.scan()
    now[0] += 1.0
    _busier(root, 42, TCK)
    real_scan = scanner.scan

    def scan_then_garble() -> list:  # type: ignore[type-arg]
        rows = real_scan()
        stat = root / "42" / "stat"
        stat.write_bytes(stat.read_bytes().replace(b" 100 1000 ", b" x 1000 "))
        return rows

    log = MissingLog(psutil)
    summary = read_processes(psutil, log, 1, time.time(), None, scan_then_garble,
                             scanner.details)
    assert summary.total == 1 and summary.top_cpu[0].pid == 42
    assert {m.key: m.reason for m in log.entries}["process:42"] == "process vanished"
