"""The systemd backend against a fake command runner (systemd cannot run as PID 1 here)."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psutil
import pytest

from watchkeeper.config import ServiceConfig
from watchkeeper.remediation.services.base import SAFE_PATH, CommandResult, UnknownService
from watchkeeper.remediation.services.systemd import PROPERTIES, SystemdManager

PROPS = ",".join(PROPERTIES)
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)


class FakeRunner:
    """Returns scripted (exit code, stdout, stderr) and records every call."""

    def __init__(self, *replies: tuple[int | None, str, str]) -> None:
        self.replies = deque(replies)
        self.calls: list[tuple[tuple[str, ...], float, dict[str, str] | None]] = []

    async def run(self, argv: Sequence[str], *, timeout_s: float,
                  env: Mapping[str, str] | None = None,
                  cwd: Path | None = None) -> CommandResult:
        self.calls.append((tuple(argv), timeout_s, dict(env) if env is not None else None))
        code, out, err = self.replies.popleft()
        return CommandResult(argv=tuple(argv), returncode=code, stdout=out, stderr=err,
                             timed_out=code is None, duration_s=timeout_s if code is None else 0)

    @property
    def argvs(self) -> list[tuple[str, ...]]:
        return [c[0] for c in self.calls]


@pytest.fixture
def systemctl(tmp_path: Path) -> str:
    """A file named systemctl on a private search path, so resolution is tested for real."""
    exe = tmp_path / "bin" / "systemctl"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\nexit 99\n")
    exe.chmod(0o755)
    return str(exe)


def manager(runner: FakeRunner, systemctl: str, **cfg: object) -> SystemdManager:
    config = ServiceConfig.model_validate({"manager": "systemd", **cfg})
    return SystemdManager({"web": config}, runner=runner,
                          search_path=str(Path(systemctl).parent),
                          monotonic=lambda: 5000.0, wall=lambda: NOW)


def show(**props: str) -> tuple[int, str, str]:
    return 0, "".join(f"{k}={v}\n" for k, v in props.items()), ""


async def test_status_maps_systemctl_show(systemctl: str) -> None:
    me = os.getpid()
    runner = FakeRunner(show(LoadState="loaded", ActiveState="active", SubState="running",
                             MainPID=str(me), Result="success", NRestarts="2",
                             ActiveEnterTimestampMonotonic="4990000000",
                             InactiveEnterTimestampMonotonic="0"))
    status = await manager(runner, systemctl, unit="nginx.service").status("web")
    (argv, timeout, env), = runner.calls
    assert argv == (systemctl, "show", "--no-pager", f"--property={PROPS}", "--",
                    "nginx.service")
    assert os.path.isabs(argv[0]) and timeout == 10.0
    assert env is not None and env["PATH"] == SAFE_PATH and "OPENAI_API_KEY" not in env
    assert status.state == "running" and status.manager == "systemd"
    assert status.pid == me and status.create_time == psutil.Process(me).create_time()
    assert status.since == NOW - timedelta(seconds=10)  # monotonic 5000 s - 4990 s
    assert status.detail == "active/running, 2 restarts by systemd"
    assert status.healthy is None  # no checks configured


@pytest.mark.parametrize(("active", "sub", "result", "state", "detail"), [
    ("inactive", "dead", "success", "stopped", "inactive/dead"),
    ("failed", "failed", "exit-code", "failed", "failed/failed, result exit-code"),
    ("activating", "start-pre", "success", "starting", "activating/start-pre"),
    ("deactivating", "stop-sigterm", "success", "running", "deactivating/stop-sigterm"),
    ("weird", "x", "success", "unknown", "weird/x"),
])
async def test_status_states(systemctl: str, active: str, sub: str, result: str, state: str,
                             detail: str) -> None:
    runner = FakeRunner(show(LoadState="loaded", ActiveState=active, SubState=sub,
                             MainPID="0", Result=result,
                             InactiveEnterTimestampMonotonic="4000000000"))
    status = await manager(runner, systemctl, checks=[{"process": True}]).status("web")
    assert (status.state, status.detail, status.pid) == (state, detail, None)
    assert runner.argvs[0][-1] == "web"  # unit defaults to the service name
    if state in ("stopped", "failed"):
        assert status.healthy is False and status.checks == ()
        assert status.since == NOW - timedelta(seconds=1000)
    else:
        assert status.healthy is False and status.checks[0].message == "no process known"


async def test_status_unit_not_found_and_systemctl_failures(systemctl: str) -> None:
    runner = FakeRunner(show(LoadState="not-found", ActiveState="inactive"),
                        (1, "", "System has not been booted with systemd as init system (PID 1)."
                                " Can't operate.\nFailed to connect to bus: Host is down\n"),
                        (None, "", ""))
    m = manager(runner, systemctl, unit="nope.service")
    missing = await m.status("web")
    assert missing.state == "unknown" and missing.detail == "unit nope.service not found"
    no_systemd = await m.status("web")
    assert no_systemd.state == "unknown"
    assert no_systemd.detail == "systemd is not running on this host (systemctl cannot reach it)"
    slow = await m.status("web", checks=False)
    assert slow.detail == "systemctl show nope.service did not finish within 10 s"


@pytest.mark.parametrize("verb", ["start", "stop", "restart"])
async def test_control_argv_and_success(systemctl: str, verb: str) -> None:
    runner = FakeRunner((0, "", ""))
    m = manager(runner, systemctl, unit="nginx.service")
    result = await getattr(m, verb)("web")
    assert runner.argvs == [(systemctl, "--no-ask-password", verb, "--", "nginx.service")]
    assert runner.calls[0][1] == 90.0
    assert result.ok and result.operation == verb
    assert result.argv == runner.argvs[0]
    assert result.message == {"start": "started nginx.service", "stop": "stopped nginx.service",
                              "restart": "restarted nginx.service"}[verb]


@pytest.mark.parametrize(("code", "stderr", "message"), [
    (5, "Failed to restart nope.service: Unit nope.service not found.\n",
     "unit nope.service not found"),
    (4, "Failed to restart nope.service: Access denied\n",
     "permission denied to restart nope.service: run watchkeeper as root or allow it through "
     "polkit"),
    (1, "Failed to restart nope.service: Interactive authentication required.\n",
     "permission denied to restart nope.service: run watchkeeper as root or allow it through "
     "polkit"),
    (1, 'Job for nope.service failed because the control process exited with error code.\n'
        'See "systemctl status nope.service" and "journalctl -xeu nope.service" for details.\n',
     "nope.service failed to restart; see `systemctl status nope.service` and "
     "`journalctl -u nope.service`"),
    (3, "something odd\n", "systemctl restart nope.service failed with code 3: something odd"),
    (None, "", "systemctl restart nope.service did not finish within 90 s"),
])
async def test_control_failures_have_clear_messages(systemctl: str, code: int | None,
                                                    stderr: str, message: str) -> None:
    runner = FakeRunner((code, "", stderr))
    result = await manager(runner, systemctl, unit="nope.service").restart("web")
    assert not result.ok and result.message == message
    assert result.output == stderr.strip()


async def test_systemctl_missing_from_the_fixed_path(tmp_path: Path) -> None:
    runner = FakeRunner()
    m = SystemdManager({"web": ServiceConfig(manager="systemd")}, runner=runner,
                       search_path=str(tmp_path))
    status = await m.status("web")
    assert status.state == "unknown" and status.detail == f"systemctl not found on {tmp_path}"
    result = await m.restart("web")
    assert not result.ok and result.message == f"systemctl not found on {tmp_path}"
    assert runner.calls == []
    with pytest.raises(UnknownService):
        await m.status("other")
    await m.aclose()


async def test_an_option_looking_unit_is_never_an_option(systemctl: str) -> None:
    runner = FakeRunner((0, "", ""))
    await manager(runner, systemctl, unit="--now").stop("web")
    assert runner.argvs[0][-2:] == ("--", "--now")
