"""The /proc scan parsed from files a test writes: odd names, CPU % between scans, pid reuse."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from watchkeeper.collectors.procfs import ProcessGone, ProcScanner, parse_cmdline

TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def write(root: Path, pid: int, comm: str, *, state: str = "S", utime: int = 0,
          stime: int = 0, start: int = 500, rss_pages: int = 10, threads: int = 1,
          flags: int = 0) -> None:
    # Fields 3.. of proc(5): state ppid pgrp session tty tpgid flags minflt cminflt majflt
    # cmajflt utime stime cutime cstime priority nice num_threads itrealvalue starttime
    # vsize rss ...
    rest = [state, "1", "1", "1", "0", "-1", str(flags), "0", "0", "0", "0", str(utime),
            str(stime),
            "0", "0", "20", "0", str(threads), "0", str(start), "1000",
            str(rss_pages + 1), "0"]  # stat's rss: the kernel's estimate, not what is read
    d = root / str(pid)
    d.mkdir(exist_ok=True)
    (d / "stat").write_bytes(f"{pid} ({comm}) {' '.join(rest)}\n".encode("utf-8",
                                                                         "surrogateescape"))
    # size resident shared text lib data dt: resident is what psutil calls rss.
    (d / "statm").write_text(f"900 {rss_pages} 5 1 0 40 0\n")


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    (tmp_path / "stat").write_text("cpu  1 2 3\nbtime 1700000000\n")
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "stat").write_text("1 (x) S")
    return tmp_path


def test_fields_are_read_as_psutil_names_them(proc: Path) -> None:
    write(proc, 42, "web worker", state="R", start=3 * TCK, rss_pages=7, threads=4)
    (only,) = ProcScanner(str(proc)).scan()
    assert (only.pid, only.name, only.status, only.rss, only.num_threads) == (
        42, "web worker", "running", 7 * PAGE, 4)
    assert only.create_time == 1_700_000_000 + 3
    assert only.cpu_percent == 0.0  # first sight, as psutil


@pytest.mark.parametrize("comm", ["a) S 1 2 (b", ")(", "x\nforged", "bad\udcffbyte", " "],
                         ids=["parens-and-fields", "only-parens", "newline", "not-utf8",
                              "space"])
def test_a_name_cannot_shift_the_fields(proc: Path, comm: str) -> None:
    write(proc, 7, comm, state="Z", utime=5, rss_pages=3)
    (only,) = ProcScanner(str(proc)).scan()
    assert (only.name, only.status, only.rss) == (comm, "zombie", 3 * PAGE)


def test_cpu_percent_is_cpu_time_over_the_time_between_scans(proc: Path) -> None:
    clock = Clock()
    scanner = ProcScanner(str(proc), monotonic=clock)
    write(proc, 10, "busy", utime=0, stime=0)
    write(proc, 11, "idle")
    scanner.scan()
    clock.now += 2.0
    write(proc, 10, "busy", utime=TCK, stime=TCK // 2)  # 1.5 s of CPU in 2 s
    rows = {r.pid: r for r in scanner.scan()}
    assert rows[10].cpu_percent == 75.0 and rows[11].cpu_percent == 0.0


def test_a_reused_pid_starts_afresh(proc: Path) -> None:
    clock = Clock()
    scanner = ProcScanner(str(proc), monotonic=clock)
    write(proc, 10, "old", utime=0, start=500)
    scanner.scan()
    clock.now += 1.0
    write(proc, 10, "new", utime=5 * TCK, start=900)  # another process, same pid
    (row,) = scanner.scan()
    assert row.name == "new" and row.cpu_percent == 0.0


def test_what_cannot_be_read_or_parsed_is_left_out(proc: Path) -> None:
    write(proc, 1, "ok")
    (proc / "2").mkdir()  # exited between the listing and the read: no stat file
    (proc / "3").mkdir()
    (proc / "3" / "stat").write_bytes(b"3 no-parenthesis S")
    (proc / "3" / "statm").write_text("1 1 1 1 0 1 0")
    (proc / "4").mkdir()
    (proc / "4" / "stat").write_bytes(b"4 (short) S 1 2")
    (proc / "4" / "statm").write_text("1 1 1 1 0 1 0")
    write(proc, 5, "no statm")
    (proc / "5" / "statm").unlink()
    write(proc, 6, "garbled")
    (proc / "6" / "stat").write_bytes(b"6 (garbled) S 1 1 1 0 -1 0 0 0 0 0 x 0 0 0 20 0 1 0 5 "
                                      b"1000 2 0")
    (proc / "net").mkdir()
    assert [r.pid for r in ProcScanner(str(proc)).scan()] == [1]


def test_available_only_on_a_procfs(proc: Path, tmp_path_factory: pytest.TempPathFactory
                                    ) -> None:
    assert ProcScanner.available(str(proc))
    assert not ProcScanner.available(str(tmp_path_factory.mktemp("empty")))


def _details_files(root: Path, pid: int, *, uid: int = 1000, cmdline: bytes = b"") -> None:
    (root / str(pid) / "status").write_text(
        f"Name:\tx\nState:\tS (sleeping)\nUid:\t{uid}\t0\t0\t0\nGid:\t0\t0\t0\t0\n")
    (root / str(pid) / "cmdline").write_bytes(cmdline)


def test_details_give_the_real_uid_and_the_command_line(proc: Path) -> None:
    write(proc, 9, "web", start=4 * TCK)
    _details_files(proc, 9, uid=33, cmdline=b"/usr/bin/web\x00--port\x008080\x00")
    found = ProcScanner(str(proc)).details(9, 1_700_000_000 + 4)
    assert (found.uid, found.cmdline, found.errors) == (33, ("/usr/bin/web", "--port", "8080"),
                                                        ())


@pytest.mark.parametrize(("raw", "args"), [
    (b"a\x00b c\x00", ("a", "b c")),  # an argument with a space stays whole
    (b"nginx: worker process\x00", ("nginx:", "worker", "process")),  # setproctitle
    (b"chrome --type=renderer", ("chrome", "--type=renderer")),  # no NUL at all
    (b"", ()),  # kernel thread or zombie
    (b"\xff\x00", ("\udcff",)),  # not UTF-8: kept, as psutil keeps it
], ids=["nul-separated", "title-with-spaces", "space-separated", "empty", "not-utf8"])
def test_command_lines_split_as_psutil_splits_them(raw: bytes, args: tuple[str, ...]) -> None:
    assert parse_cmdline(raw) == args


def test_details_of_a_gone_or_reused_pid_are_refused(proc: Path) -> None:
    scanner = ProcScanner(str(proc))
    with pytest.raises(ProcessGone):
        scanner.details(404, None)  # no such directory
    write(proc, 12, "new", start=900)
    _details_files(proc, 12)
    with pytest.raises(ProcessGone):
        scanner.details(12, 1_700_000_000 + 500 / TCK)  # another process has the pid now


def test_an_unreadable_detail_is_reported_and_the_other_kept(proc: Path) -> None:
    write(proc, 14, "odd")
    _details_files(proc, 14, uid=7)
    (proc / "14" / "cmdline").unlink()
    (proc / "14" / "cmdline").mkdir()  # reading it fails, but not as a vanished process
    found = ProcScanner(str(proc)).details(14, None)
    assert found.uid == 7 and found.cmdline is None
    assert [attr for attr, _exc in found.errors] == ["cmdline"]


def test_a_kernel_thread_has_no_memory_and_its_statm_is_not_read(proc: Path) -> None:
    write(proc, 2, "kthreadd", flags=0x00208040)  # PF_KTHREAD among other flags
    (proc / "2" / "statm").unlink()  # not read: a kernel thread's statm is all zeros
    write(proc, 3, "user", flags=0x00400100, rss_pages=4)
    rows = {r.pid: r for r in ProcScanner(str(proc)).scan()}
    assert (rows[2].rss, rows[3].rss) == (0, 4 * PAGE)


def test_a_process_started_since_the_previous_scan_gets_its_cpu_over_its_age(
        proc: Path) -> None:
    # A fork that spins at once is in the top list at its first reading (CPU time over its
    # age, as ps shows it); a process that was already there at the first scan is 0.0 at
    # first sight, as psutil (its whole life's average would mislead).
    clock, up = Clock(), Clock()
    scanner = ProcScanner(str(proc), monotonic=clock, uptime=up)
    write(proc, 10, "old", utime=50 * TCK, start=10 * TCK)
    assert [r.cpu_percent for r in scanner.scan()] == [0.0]
    clock.now += 5.0
    up.now += 5.0  # 105 s since boot
    write(proc, 11, "spinner", utime=TCK * 3 // 2, stime=TCK // 2, start=101 * TCK)  # 2 s of 4
    write(proc, 12, "sleeper", start=102 * TCK)
    write(proc, 13, "pid-reused", utime=TCK, start=99 * TCK)  # before the previous scan
    write(proc, 14, "just-born", utime=1, start=105 * TCK)  # younger than a clock tick
    write(proc, 15, "clock-went-wrong", utime=40 * TCK, threads=2, start=104 * TCK)
    rows = {r.pid: r.cpu_percent for r in scanner.scan()}
    assert rows == {10: 0.0, 11: 50.0, 12: 0.0, 13: 0.0, 14: 0.0, 15: 200.0}


def test_without_a_boot_clock_a_new_process_is_0_at_first_sight(proc: Path) -> None:
    clock = Clock()
    scanner = ProcScanner(str(proc), monotonic=clock, uptime=lambda: None)
    scanner.scan()
    clock.now += 5.0
    write(proc, 11, "spinner", utime=2 * TCK, start=101 * TCK)
    assert [r.cpu_percent for r in scanner.scan()] == [0.0]
