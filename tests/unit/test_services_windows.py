"""The Windows backend with fakes at its two boundaries: psutil's service API and sc.exe."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil
import pytest

from watchkeeper.config import ServiceConfig
from watchkeeper.remediation.services.base import CommandResult
from watchkeeper.remediation.services.windows import WindowsServiceManager, default_sc_path

SC = r"C:\Windows\System32\sc.exe"


class FakeService:
    """psutil.WindowsService: each status() call takes the next scripted state."""

    def __init__(self, states: list[str], pid: int = 0, deny: bool = False) -> None:
        self.states = deque(states)
        self._pid = pid
        self.deny = deny

    def status(self) -> str:
        if self.deny:
            raise psutil.AccessDenied(msg="denied")
        if len(self.states) > 1:
            return self.states.popleft()
        return self.states[0]

    def pid(self) -> int:
        return self._pid


class FakeScm:
    def __init__(self, **services: FakeService) -> None:
        self.services = services

    def get(self, name: str) -> FakeService:
        if name not in self.services:
            raise psutil.NoSuchProcess(pid=0, msg=f"service {name!r} does not exist")
        return self.services[name]


class FakeRunner:
    def __init__(self, *codes: int | None, output: str = "") -> None:
        self.codes = deque(codes)
        self.output = output
        self.calls: list[tuple[tuple[str, ...], dict[str, str] | None]] = []

    async def run(self, argv: Sequence[str], *, timeout_s: float,
                  env: Mapping[str, str] | None = None,
                  cwd: Path | None = None) -> CommandResult:
        self.calls.append((tuple(argv), dict(env) if env is not None else None))
        code = self.codes.popleft()
        return CommandResult(argv=tuple(argv), returncode=code, stdout=self.output,
                             timed_out=code is None)

    @property
    def argvs(self) -> list[tuple[str, ...]]:
        return [argv for argv, _ in self.calls]


def manager(scm: FakeScm, runner: FakeRunner, *, unit: str | None = "Spooler",
            timeout_s: float = 5.0) -> WindowsServiceManager:
    cfg = ServiceConfig(manager="windows", unit=unit)
    return WindowsServiceManager({"print": cfg}, runner=runner, win_service_get=scm.get,
                                 sc_path=SC, timeout_s=timeout_s, poll_interval_s=0.0,
                                 env={"SYSTEMROOT": r"C:\Windows"})


async def test_status_from_psutil_service_api() -> None:
    me = os.getpid()
    m = manager(FakeScm(Spooler=FakeService(["running"], pid=me)), FakeRunner())
    status = await m.status("print")
    assert (status.state, status.pid, status.detail) == ("running", me, "running")
    assert status.create_time == psutil.Process(me).create_time()
    for raw, state in (("start_pending", "starting"), ("stop_pending", "running"),
                       ("paused", "stopped"), ("stopped", "stopped")):
        m = manager(FakeScm(Spooler=FakeService([raw])), FakeRunner())
        got = await m.status("print")
        assert (got.state, got.detail) == (state, raw)


async def test_status_of_missing_denied_and_non_windows() -> None:
    missing = await manager(FakeScm(), FakeRunner()).status("print")
    assert missing.state == "unknown" and missing.detail == "no Windows service named 'Spooler'"
    denied = await manager(FakeScm(Spooler=FakeService([], deny=True)), FakeRunner()
                           ).status("print")
    assert denied.state == "unknown" and denied.detail == "access denied reading service 'Spooler'"
    if not hasattr(psutil, "win_service_get"):
        here = WindowsServiceManager({"print": ServiceConfig(manager="windows")},
                                     runner=FakeRunner())
        status = await here.status("print")
        assert status.state == "unknown"
        assert status.detail == "Windows services exist only on Windows"


async def test_start_runs_sc_exe_and_waits_until_running() -> None:
    runner = FakeRunner(0)
    scm = FakeScm(Spooler=FakeService(["start_pending", "start_pending", "running"], pid=1))
    result = await manager(scm, runner).start("print")
    assert runner.argvs == [(SC, "start", "Spooler")]
    assert runner.calls[0][1] == {"SYSTEMROOT": r"C:\Windows"}
    assert result.ok and result.message == "started (Spooler)" and result.argv == runner.argvs[0]


async def test_restart_is_stop_then_start_and_tolerates_already_stopped() -> None:
    runner = FakeRunner(1062, 0)
    scm = FakeScm(Spooler=FakeService(["stopped", "start_pending", "running"]))
    result = await manager(scm, runner).restart("print")
    assert runner.argvs == [(SC, "stop", "Spooler"), (SC, "start", "Spooler")]
    assert result.ok and result.message == "not running (Spooler); started (Spooler)"


async def test_start_of_a_running_service_is_fine() -> None:
    runner = FakeRunner(1056)
    result = await manager(FakeScm(Spooler=FakeService(["running"])), runner).start("print")
    assert result.ok and result.message == "already running (Spooler)"


@pytest.mark.parametrize(("code", "message"), [
    (5, "cannot start Spooler: access denied: run watchkeeper as an administrator or grant it "
        "rights on the service (error 5)"),
    (1058, "cannot start Spooler: the service is disabled (error 1058)"),
    (1060, "cannot start Spooler: no such Windows service (error 1060)"),
    (1053, "cannot start Spooler: the service did not respond to the request in time "
           "(error 1053)"),
    (1234, "sc.exe start Spooler failed with code 1234: [SC] StartService FAILED 1234"),
])
async def test_sc_failures_have_clear_messages(code: int, message: str) -> None:
    runner = FakeRunner(code, output=f"[SC] StartService FAILED {code}\n")
    result = await manager(FakeScm(Spooler=FakeService(["stopped"])), runner).start("print")
    assert not result.ok and result.message == message
    assert result.output == f"[SC] StartService FAILED {code}"


async def test_a_start_that_stops_again_or_never_finishes_fails() -> None:
    bounced = FakeScm(Spooler=FakeService(["start_pending", "stopped"]))
    result = await manager(bounced, FakeRunner(0)).start("print")
    assert not result.ok and result.message == "Spooler is stopped, not running"
    stuck = FakeScm(Spooler=FakeService(["start_pending"]))
    result = await manager(stuck, FakeRunner(0), timeout_s=0.2).start("print")
    assert not result.ok
    assert result.message == "Spooler is start_pending, not running, after 0.2 s"


async def test_stop_waits_for_stopped_and_unit_defaults_to_the_name() -> None:
    runner = FakeRunner(0)
    scm = FakeScm(print=FakeService(["stop_pending", "stopped"]))
    result = await manager(scm, runner, unit=None).stop("print")
    assert runner.argvs == [(SC, "stop", "print")]
    assert result.ok and result.message == "stopped (print)"


def test_sc_exe_path_comes_from_systemroot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYSTEMROOT", r"D:\Win")
    assert default_sc_path() == r"D:\Win\System32\sc.exe"
    monkeypatch.delenv("SYSTEMROOT")
    assert default_sc_path() == SC
