"""Managed processes for real: a python http.server started, killed, noticed, restarted.

Every process killed here was started by the test itself or by the manager under test.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest

from watchkeeper.config import HealthCheck, ServiceConfig, validate
from watchkeeper.remediation.services import ProcessManager, ServiceExit, Services
from watchkeeper.remediation.services.base import SAFE_PATH, UnknownService

PY = sys.executable
#: The agents' default check interval: an exit must be seen long before the next tick.
TICK_S = 5.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def web(port: int, **extra: object) -> ServiceConfig:
    return ServiceConfig.model_validate({
        "start": [PY, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        "checks": [{"http": f"http://127.0.0.1:{port}/", "timeout_s": 1},
                   {"process": True}],
        **extra})


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def wait_gone(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not gone(pid):
        assert time.monotonic() < deadline, f"pid {pid} still alive"
        await asyncio.sleep(0.01)


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes the test starts itself; killed and reaped at the end whatever happens."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)


@pytest.fixture
async def manager_factory() -> AsyncIterator[list[ProcessManager]]:
    made: list[ProcessManager] = []
    yield made
    for m in made:
        await m.aclose()


async def healthy(pm: ProcessManager, name: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = await pm.status(name)
        if status.healthy:
            return
        assert time.monotonic() < deadline, f"{name} not healthy: {status}"
        await asyncio.sleep(0.02)


async def test_sigkill_is_noticed_from_the_exit_and_a_restart_heals_it(
        manager_factory: list[ProcessManager]) -> None:
    port = free_port()
    pm = ProcessManager({"web": web(port)}, grace_s=2)
    manager_factory.append(pm)
    seen: list[tuple[float, ServiceExit]] = []
    noticed = asyncio.Event()

    def on_exit(item: ServiceExit) -> None:
        seen.append((time.perf_counter(), item))
        noticed.set()

    pm.on_exit(on_exit)
    started = await pm.start("web")
    assert started.ok and started.argv[0] == PY and started.message.startswith("started pid")
    await healthy(pm, "web")
    status = await pm.status("web")
    assert status.state == "running" and status.pid is not None
    assert [c.kind for c in status.checks] == ["http", "process"]
    first_pid = status.pid

    killed_at = time.perf_counter()
    os.kill(first_pid, signal.SIGKILL)
    await asyncio.wait_for(noticed.wait(), TICK_S)
    (at, item), = seen
    assert at - killed_at < 0.5, f"exit noticed after {at - killed_at:.3f} s"
    assert (item.service, item.pid, item.returncode, item.signal, item.expected) == (
        "web", first_pid, -9, "SIGKILL", False)
    assert item.message == "killed by SIGKILL"

    down = await pm.status("web")
    assert down.state == "failed" and down.healthy is False and down.pid is None
    assert down.detail == "killed by SIGKILL"

    restarted = await pm.restart("web")
    assert restarted.ok and restarted.operation == "restart"
    await healthy(pm, "web")
    second_pid = pm.pid("web")
    assert second_pid not in (None, first_pid)

    await pm.aclose()
    assert second_pid is not None
    await wait_gone(second_pid)
    (_, last) = seen[-1]
    assert last.expected and last.pid == second_pid
    assert (await pm.start("web")).message == "watchkeeper is shutting down"


async def test_on_exit_restart_loop_heals_within_a_fraction_of_a_tick(tmp_path: Path) -> None:
    port = free_port()
    async with Services({"web": web(port)}, log_dir=tmp_path / "logs", grace_s=2) as services:
        healed = asyncio.Event()

        async def heal(item: ServiceExit) -> None:
            if not item.expected:
                await services.restart(item.service)
                healed.set()

        services.on_exit(heal)
        stream = services.exits()
        assert (await services.start("web")).ok
        up = await services.wait_healthy("web", timeout_s=10, interval_s=0.02)
        assert up.healthy and up.pid is not None
        killed_at = time.monotonic()
        os.kill(up.pid, signal.SIGKILL)
        item = await asyncio.wait_for(stream.__anext__(), TICK_S)
        assert item.signal == "SIGKILL"
        await asyncio.wait_for(healed.wait(), TICK_S)
        back = await services.wait_healthy("web", timeout_s=10, interval_s=0.01)
        assert back.healthy and back.pid != up.pid
        assert time.monotonic() - killed_at < 3.0
        stream.close()
    # The service's output went to its log file (http.server logs each request there).
    assert "GET / HTTP/1.1" in (tmp_path / "logs" / "web.log").read_text()


async def test_aclose_stops_what_it_started_but_leaves_keep_running(
        manager_factory: list[ProcessManager]) -> None:
    sleeper = [PY, "-c", "import time; time.sleep(60)"]
    pm = ProcessManager({"a": ServiceConfig(start=tuple(sleeper)),
                         "b": ServiceConfig(start=tuple(sleeper), keep_running=True)},
                        grace_s=2)
    manager_factory.append(pm)
    assert (await pm.start("a")).ok and (await pm.start("b")).ok
    pid_a, pid_b = pm.pid("a"), pm.pid("b")
    assert pid_a and pid_b
    await pm.aclose()
    await wait_gone(pid_a)
    kept = psutil.Process(pid_b)
    assert kept.is_running() and kept.status() != psutil.STATUS_ZOMBIE
    # The test started it (through the manager), so the test cleans it up.
    kept.kill()
    kept.wait(5)


async def test_stop_escalates_to_sigkill_after_the_grace_period(
        tmp_path: Path, manager_factory: list[ProcessManager]) -> None:
    ready = tmp_path / "ready"
    stubborn = [PY, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
                f"open({str(ready)!r}, 'w').close(); time.sleep(60)"]
    pm = ProcessManager({"stubborn": ServiceConfig(start=tuple(stubborn))}, grace_s=0.3)
    manager_factory.append(pm)
    exits = pm.exits()
    assert (await pm.start("stubborn")).ok
    while not ready.exists():
        await asyncio.sleep(0.01)
    stopped = await pm.stop("stubborn")
    assert stopped.ok and "with SIGKILL" in stopped.message
    assert "still running after 0.3 s" in stopped.message
    assert 0.3 <= stopped.duration_s < 3
    item = await asyncio.wait_for(exits.__anext__(), 2)
    assert item.expected and item.signal == "SIGKILL"
    status = await pm.status("stubborn")
    assert status.state == "stopped" and status.detail == "killed by SIGKILL"
    again = await pm.stop("stubborn")
    assert again.ok and again.message == "not running"
    exits.close()


async def test_stop_command_is_used_when_configured(
        tmp_path: Path, manager_factory: list[ProcessManager]) -> None:
    pid_file = tmp_path / "svc.pid"
    start = [PY, "-c", f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid()));"
                       "time.sleep(60)"]
    stop = [PY, "-c", "import os, signal, sys; os.kill(int(open(sys.argv[1]).read()), "
                      "signal.SIGTERM); print('asked politely')", str(pid_file)]
    pm = ProcessManager({"svc": ServiceConfig(start=tuple(start), stop=tuple(stop),
                                              pid_file=pid_file)}, grace_s=5)
    manager_factory.append(pm)
    assert (await pm.start("svc")).ok
    while not pid_file.exists() or not pid_file.read_text():
        await asyncio.sleep(0.01)
    result = await pm.stop("svc")
    assert result.ok and "with stop command" in result.message
    assert result.argv == tuple(stop) and result.output == "asked politely"
    assert (await pm.status("svc")).state == "stopped"


async def test_adopt_a_running_instance_by_pid_file(
        tmp_path: Path, spawned: list[subprocess.Popen[bytes]],
        manager_factory: list[ProcessManager]) -> None:
    proc = subprocess.Popen([PY, "-c", "import time; time.sleep(60)"])
    spawned.append(proc)
    pid_file = tmp_path / "svc.pid"
    pid_file.write_text(f"{proc.pid}\n")
    pm = ProcessManager({"svc": ServiceConfig(start=(PY, "-c", "raise SystemExit(9)"),
                                              pid_file=pid_file,
                                              checks=(HealthCheck(process=True),))})
    manager_factory.append(pm)
    status = await pm.status("svc")
    assert status.state == "running" and status.pid == proc.pid and status.healthy
    assert f"pid file {pid_file}" in status.detail
    assert status.create_time == psutil.Process(proc.pid).create_time()
    again = await pm.start("svc")
    assert again.ok and again.message == f"already running (pid {proc.pid})"

    # The exit of an adopted process (not our child) is seen at once too.
    exits = pm.exits()
    killed_at = time.monotonic()
    proc.kill()
    item = await asyncio.wait_for(exits.__anext__(), TICK_S)
    assert time.monotonic() - killed_at < 0.5
    assert item.pid == proc.pid and item.returncode is None and not item.expected
    exits.close()
    proc.wait(5)
    # A pid file naming a process created after the file was written is stale (pid reuse).
    other = subprocess.Popen([PY, "-c", "import time; time.sleep(60)"])
    spawned.append(other)
    pid_file.write_text(str(other.pid))
    # An hour before the process started, on the kernel's clock (not the wall clock, which
    # a test run may shift): the comparison is between two kernel timestamps.
    old = psutil.Process(other.pid).create_time() - 3600
    os.utime(pid_file, (old, old))
    assert (await pm.status("svc")).state == "failed"
    # aclose leaves an adopted process alone: watchkeeper did not start it.
    pid_file.write_text(str(other.pid))
    assert (await pm.status("svc")).pid == other.pid
    await pm.aclose()
    assert other.poll() is None


async def test_adopt_by_command_line_match_and_stop_it(
        spawned: list[subprocess.Popen[bytes]], manager_factory: list[ProcessManager]) -> None:
    tag = f"wk-match-{uuid.uuid4().hex}"
    proc = subprocess.Popen([PY, "-c", "import time, sys; time.sleep(60)", tag])
    spawned.append(proc)
    pm = ProcessManager({"svc": ServiceConfig(start=(PY, "-c", "pass"), match=f"*{tag}")},
                        grace_s=2)
    manager_factory.append(pm)
    status = await pm.status("svc")
    assert status.state == "running" and status.pid == proc.pid
    assert f"match '*{tag}'" in status.detail
    stopped = await pm.stop("svc")
    assert stopped.ok and "with SIGTERM" in stopped.message
    assert proc.wait(5) == -signal.SIGTERM
    nothing = ProcessManager({"svc": ServiceConfig(start=(PY,), match="*no-such-tag-*")})
    manager_factory.append(nothing)
    assert (await nothing.status("svc")).state == "stopped"


async def test_a_daemonizing_start_command_is_followed_through_its_pid_file(
        tmp_path: Path, manager_factory: list[ProcessManager]) -> None:
    pid_file = tmp_path / "daemon.pid"
    daemonize = [PY, "-c",
                 "import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', "
                 "'import time; time.sleep(60)'], start_new_session=True); time.sleep(0.1);"
                 f"open({str(pid_file)!r}, 'w').write(str(p.pid))"]
    pm = ProcessManager({"d": ServiceConfig(start=tuple(daemonize), pid_file=pid_file)},
                        grace_s=2)
    manager_factory.append(pm)
    exits = pm.exits()
    assert (await pm.start("d")).ok
    parent = pm.pid("d")
    deadline = time.monotonic() + 10
    while pm.pid("d") in (None, parent):
        assert time.monotonic() < deadline, "the daemon was not followed"
        await asyncio.sleep(0.02)
    daemon = pm.pid("d")
    assert daemon == int(pid_file.read_text())
    status = await pm.status("d")
    assert status.state == "running" and "pid file" in status.detail
    # aclose stops it: watchkeeper started it, even if through a fork.
    await pm.aclose()
    assert daemon is not None
    await wait_gone(daemon)
    item = await asyncio.wait_for(exits.__anext__(), 2)
    assert item.pid == daemon and item.expected  # the parent's exit 0 was no crash event
    exits.close()


async def test_a_crash_with_an_exit_code_is_reported(
        manager_factory: list[ProcessManager]) -> None:
    pm = ProcessManager({"c": ServiceConfig(start=(PY, "-c", "import sys; sys.exit(3)"))})
    manager_factory.append(pm)
    exits = pm.exits()
    assert (await pm.start("c")).ok
    item = await asyncio.wait_for(exits.__anext__(), TICK_S)
    assert (item.returncode, item.signal, item.message) == (3, None, "exited with code 3")
    status = await pm.status("c")
    assert status.state == "failed" and status.healthy is False
    exits.close()


async def test_start_failures_are_results_with_clear_messages(
        tmp_path: Path, manager_factory: list[ProcessManager]) -> None:
    pm = ProcessManager({
        "missing": ServiceConfig(start=("no-such-watchkeeper-daemon", "--x")),
        "nodir": ServiceConfig(start=(PY, "-c", "pass"), cwd=tmp_path / "nope"),
    })
    manager_factory.append(pm)
    missing = await pm.start("missing")
    assert not missing.ok
    assert missing.message == ("cannot start: 'no-such-watchkeeper-daemon' is not an executable "
                               f"on {SAFE_PATH}")
    nodir = await pm.start("nodir")
    assert not nodir.ok
    assert nodir.message == f"cannot start: working directory {tmp_path / 'nope'} does not exist"
    with pytest.raises(UnknownService):
        await pm.start("other")


async def test_env_is_merged_on_a_fixed_base_and_cwd_is_used(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        manager_factory: list[ProcessManager]) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-never-in-a-child")
    out = tmp_path / "env.txt"
    script = ("import os; open('env.txt', 'w').write(repr((os.getcwd(), os.environ.get("
              "'GREETING'), 'OPENAI_API_KEY' in os.environ, os.environ['PATH'])))")
    pm = ProcessManager({"e": ServiceConfig(start=(PY, "-c", script), cwd=tmp_path,
                                            env={"GREETING": "hi"})})
    manager_factory.append(pm)
    exits = pm.exits()
    assert (await pm.start("e")).ok
    await asyncio.wait_for(exits.__anext__(), TICK_S)
    assert out.read_text() == repr((str(tmp_path), "hi", False, SAFE_PATH))
    exits.close()


async def test_the_issue_configuration_shape_works_as_written(tmp_path: Path) -> None:
    port = free_port()
    settings = validate({
        "storage": {"data_dir": str(tmp_path)},
        "services": {"web": {
            "manager": "process",
            "start": ["python3", "-m", "http.server", str(port), "--bind", "127.0.0.1"],
            "checks": [{"http": f"http://127.0.0.1:{port}/"}],
        }},
        "remediation": {"dry_run": False,
                        "actions": {"restart_service": "auto", "stop_process": "approve"}},
    })
    async with Services.from_settings(settings) as services:
        started = await services.start("web")
        assert started.ok and started.argv[0] == shutil.which("python3", path=SAFE_PATH)
        status = await services.wait_healthy("web", timeout_s=10, interval_s=0.02)
        assert status.healthy and status.state == "running"
        pid = status.pid
    assert pid is not None
    await wait_gone(pid)
