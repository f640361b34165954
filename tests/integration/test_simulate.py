"""`watchkeeper simulate` as a user runs it: real processes, files and memory, seen by psutil
while they last and gone afterwards, also when simulate is stopped by a signal or killed.

Every run gets its own TMPDIR (where simulate keeps its run directory) and a --url where
nothing listens (these tests are about the run itself; the server side has its own file).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from .test_cli import wk_env

# exclusive: its runs spin a core, hold memory and start processes that the real sensor of
# a test beside it would see (scripts/test runs it alone).
pytestmark = [pytest.mark.exclusive,
              pytest.mark.skipif(not sys.platform.startswith("linux"),
                                 reason="simulate runs on Linux only")]


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


class Sim:
    """One `watchkeeper simulate` subprocess with its own TMPDIR."""

    def __init__(self, tmp_path: Path, *args: str) -> None:
        self.tmp = tmp_path / "tmp"
        self.tmp.mkdir(exist_ok=True)
        env = wk_env(tmp_path, TMPDIR=str(self.tmp))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "watchkeeper", "simulate", *args, "--json", "--settle", "0",
             "--url", _dead_url()], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        self.seen: list[tuple[int, float]] = []

    @property
    def base(self) -> Path:
        return self.tmp / f"watchkeeper-simulate-{os.getuid()}"

    def children(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children()
        except psutil.NoSuchProcess:
            return []

    def worker(self, timeout: float = 20) -> psutil.Process:
        """The wk-sim-* worker, once it has named itself."""
        p = until(lambda: next((c for c in self.children() if c.name().startswith("wk-sim-")),
                               None), "the worker", timeout)
        self.remember(p)
        return p

    def watchdog(self) -> psutil.Process:
        p = until(lambda: next((c for c in self.children()
                                if "watchkeeper.simulate.watchdog" in " ".join(c.cmdline())),
                               None), "the watchdog")
        self.remember(p)
        return p

    def remember(self, p: psutil.Process) -> None:
        self.seen.append((p.pid, p.create_time()))

    def finish(self, timeout: float = 60) -> dict[str, Any]:
        out, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, err
        report: dict[str, Any] = json.loads(out)
        return report

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=30)


@pytest.fixture
def sims() -> Iterator[list[Sim]]:
    started: list[Sim] = []
    yield started
    for s in started:
        s.kill()


def until(check: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except (psutil.NoSuchProcess, psutil.ZombieProcess, FileNotFoundError):
            found = None
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def alive(pid: int, create_time: float) -> bool:
    try:
        p = psutil.Process(pid)
        return p.create_time() == create_time and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def made_dirs(parent: Path) -> list[Path]:
    return sorted(parent.glob(".watchkeeper-simulate-*"))


def assert_nothing_left(sim: Sim, *dirs: Path, timeout: float = 10) -> None:
    """No process the run started (by pid and start time), no file or directory of it."""
    until(lambda: not any(alive(pid, ct) for pid, ct in sim.seen), "every process gone",
          timeout)
    until(lambda: not sim.base.exists(), "the run directory gone", timeout)
    for d in dirs:
        assert made_dirs(d) == []


def start(sims: list[Sim], tmp_path: Path, *args: str) -> Sim:
    sim = Sim(tmp_path, *args)
    sims.append(sim)
    return sim


def test_cpu_spins_a_core_then_nothing_is_left(tmp_path: Path, sims: list[Sim]) -> None:
    sim = start(sims, tmp_path, "cpu", "--duration", "5s")
    w = sim.worker()
    assert w.name() == "wk-sim-cpu"
    # It wants a whole core: runnable (R) whenever looked at, and its time on a CPU plus its
    # time waiting in the run queue (/proc/PID/schedstat) is the time that passed. How much
    # of the core it gets depends on the other sessions sharing this host's two cores.
    def wanted_s() -> float:
        on_cpu, waiting = Path(f"/proc/{w.pid}/schedstat").read_text().split()[:2]
        return (int(on_cpu) + int(waiting)) / 1e9

    states = []
    t0, w0 = time.monotonic(), wanted_s()
    for _ in range(20):
        states.append(w.status())
        time.sleep(0.05)
    assert states.count(psutil.STATUS_RUNNING) >= 18, states
    assert (wanted_s() - w0) / (time.monotonic() - t0) >= 0.9
    report = sim.finish()
    assert report["run"]["pids"] == [w.pid]
    assert report["run"]["ended_by"] == "time"
    assert report["run"]["cleaned"] is True
    assert report["watchkeeper"] is None and "not reachable" in report["note"]
    assert_nothing_left(sim)


def test_memory_is_resident_then_released(tmp_path: Path, sims: list[Sim]) -> None:
    sim = start(sims, tmp_path, "memory", "--size", "64M", "--duration", "4s")
    w = sim.worker()
    until(lambda: w.memory_info().rss >= 64 << 20, "64 MiB resident")
    report = sim.finish()
    assert report["run"]["peak"]["rss_bytes"] >= 64 << 20
    assert_nothing_left(sim)


def test_leak_grows(tmp_path: Path, sims: list[Sim]) -> None:
    sim = start(sims, tmp_path, "leak", "--rate", "16M/s", "--duration", "5s")
    w = sim.worker()
    first = until(lambda: w.memory_info().rss, "a first RSS")
    until(lambda: w.memory_info().rss >= first + (24 << 20), "RSS 24 MiB higher")
    sim.finish()
    assert_nothing_left(sim)


def test_disk_fills_a_file_of_its_own_then_removes_it(tmp_path: Path, sims: list[Sim]) -> None:
    fill = tmp_path / "fill"
    fill.mkdir()
    sim = start(sims, tmp_path, "disk", "--path", str(fill), "--rate", "4M/s", "--size", "8M",
                "--duration", "4s")
    sim.worker()
    made = until(lambda: made_dirs(fill), "the run's directory under --path")[0]
    until(lambda: (made / "fill.bin").stat().st_size >= 4 << 20, "4 MiB written")
    report = sim.finish()
    assert report["run"]["files"] == [str(made / "fill.bin")]
    assert 4 << 20 <= report["run"]["peak"]["file_bytes"] <= 8 << 20
    assert_nothing_left(sim, fill)
    assert list(fill.iterdir()) == []


def test_logflood_writes_lines_then_removes_them(tmp_path: Path, sims: list[Sim]) -> None:
    sim = start(sims, tmp_path, "logflood", "--lines-per-s", "500", "--duration", "3s")
    sim.worker()
    made = until(lambda: made_dirs(sim.tmp), "the run's directory")[0]
    log = made / "flood.log"
    until(lambda: log.read_text().count("\n") >= 200, "200 lines")
    assert "wk-sim-logflood" in log.read_text().splitlines()[0]
    sim.finish()
    assert_nothing_left(sim, sim.tmp)


def test_forkstorm_starts_processes_then_none_is_left(tmp_path: Path, sims: list[Sim]) -> None:
    sim = start(sims, tmp_path, "forkstorm", "--procs", "20", "--duration", "4s")
    w = sim.worker()
    kids = until(lambda: len(k := w.children()) >= 20 and k, "20 forked processes")
    for k in kids:
        sim.remember(k)
    report = sim.finish()
    assert report["run"]["peak"]["processes"] >= 21
    assert_nothing_left(sim)


def test_sigkill_of_simulate_leaves_nothing(tmp_path: Path, sims: list[Sim]) -> None:
    """The worker dies with it (PR_SET_PDEATHSIG), the watchdog removes the files."""
    fill = tmp_path / "fill"
    fill.mkdir()
    sim = start(sims, tmp_path, "disk", "--path", str(fill), "--rate", "4M/s", "--size", "40M",
                "--duration", "30s")
    sim.worker()
    sim.watchdog()
    made = until(lambda: made_dirs(fill), "the run's directory")[0]
    until(lambda: (made / "fill.bin").stat().st_size > 0, "the fill file")
    sim.proc.send_signal(signal.SIGKILL)
    sim.proc.wait(timeout=10)
    assert_nothing_left(sim, fill)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP],
                         ids=["sigterm", "ctrl-c", "sighup"])
def test_a_stop_signal_ends_the_run_and_cleans_up(tmp_path: Path, sims: list[Sim],
                                                  sig: signal.Signals) -> None:
    fill = tmp_path / "fill"
    fill.mkdir()
    sim = start(sims, tmp_path, "disk", "--path", str(fill), "--rate", "4M/s", "--size", "40M",
                "--duration", "30s")
    sim.worker()
    until(lambda: made_dirs(fill), "the run's directory")
    started = time.monotonic()
    sim.proc.send_signal(sig)
    report = sim.finish(timeout=20)
    assert time.monotonic() - started < 10
    assert report["run"]["ended_by"] == sig.name
    assert report["run"]["cleaned"] is True
    assert_nothing_left(sim, fill)


def test_orphans_are_reaped_at_the_next_start(tmp_path: Path, sims: list[Sim]) -> None:
    """Watchdog and simulate both SIGKILLed: the worker still dies (PDEATHSIG), and the next
    simulate removes the files the dead run left."""
    fill = tmp_path / "fill"
    fill.mkdir()
    sim = start(sims, tmp_path, "disk", "--path", str(fill), "--rate", "4M/s", "--size", "40M",
                "--duration", "30s")
    sim.worker()
    sim.watchdog().kill()
    until(lambda: made_dirs(fill), "the run's directory")
    sim.proc.send_signal(signal.SIGKILL)
    sim.proc.wait(timeout=10)
    until(lambda: not any(alive(pid, ct) for pid, ct in sim.seen), "the worker gone")
    assert made_dirs(fill), "nothing left to reap: the test proves nothing"
    nxt = start(sims, tmp_path, "cpu", "--duration", "1s")
    report = nxt.finish()
    assert report["run"]["reaped_orphans"] == 1
    assert made_dirs(fill) == []
    assert not nxt.base.exists()


def test_logflood_appends_to_a_configured_log_file_and_keeps_it(tmp_path: Path,
                                                                 sims: list[Sim]) -> None:
    """--path only for one of remediation.log_files (here this configuration's, as no server
    answers); the lines stay: the file is not the run's."""
    log = tmp_path / "app.log"
    log.write_text("first line of the app\n")
    (tmp_path / "watchkeeper.yaml").write_text(
        f"remediation: {{log_files: [{{path: {json.dumps(str(log))}}}]}}\n")
    sim = start(sims, tmp_path, "logflood", "--path", str(log), "--lines-per-s", "200",
                "--duration", "2s")
    w = sim.worker()
    report = sim.finish()
    lines = log.read_text().splitlines()
    assert lines[0] == "first line of the app"
    assert len(lines) > 100 and all(f"wk-sim-logflood[{w.pid}]" in line for line in lines[1:])
    assert report["run"]["append_to"] == str(log) and report["run"]["files"] == []
    assert_nothing_left(sim)


def test_disk_stops_growing_at_the_free_space_margin(tmp_path: Path) -> None:
    """Checked while it writes, not only at the start: something else may fill the disk
    too. Here the margin is set to leave it about 2 MiB of room."""
    from watchkeeper.simulate import worker

    st = os.statvfs(tmp_path)
    keep_free = st.f_bavail * st.f_frsize - (2 << 20)
    path = tmp_path / "fill.bin"
    worker.disk(time.monotonic() + 2.5, str(path), rate=16 << 20, size=64 << 20,
                keep_free=keep_free)
    # Unguarded it would have written about 40 MiB; other sessions' writes move the free
    # space by a few MiB either way.
    assert path.stat().st_size < 12 << 20
