"""The /proc scan parsed from files a test writes: odd names, CPU % between scans, pid reuse."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from watchkeeper.collectors.procfs import ProcScanner

TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def write(root: Path, pid: int, comm: str, *, state: str = "S", utime: int = 0,
          stime: int = 0, start: int = 500, rss_pages: int = 10, threads: int = 1) -> None:
    # Fields 3.. of proc(5): state ppid pgrp session tty tpgid flags minflt cminflt majflt
    # cmajflt utime stime cutime cstime priority nice num_threads itrealvalue starttime
    # vsize rss ...
    rest = [state, "1", "1", "1", "0", "-1", "0", "0", "0", "0", "0", str(utime), str(stime),
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
    (proc / "net").mkdir()
    assert [r.pid for r in ProcScanner(str(proc)).scan()] == [1]


def test_available_only_on_a_procfs(proc: Path, tmp_path_factory: pytest.TempPathFactory
                                    ) -> None:
    assert ProcScanner.available(str(proc))
    assert not ProcScanner.available(str(tmp_path_factory.mktemp("empty")))
