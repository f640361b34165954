"""The supervisord backend against a real supervisord the test starts (the test extras install it).

supervisord listens on a free loopback port and on a unix socket in tmp_path; it runs one
small HTTP server program. The test kills only that program and the supervisord it started.
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
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from watchkeeper.config import ServiceConfig
from watchkeeper.remediation.services import Services, SupervisordManager

PY = sys.executable
SUPERVISORD = shutil.which("supervisord", path=str(Path(PY).parent)) or shutil.which(
    "supervisord")

assert SUPERVISORD is not None, "supervisord missing: pip install -e '.[test]' brings it"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Supervisord:
    url: str
    unix_url: str
    web_port: int
    proc: subprocess.Popen[bytes]

    def config(self, program: str = "web", **extra: object) -> ServiceConfig:
        return ServiceConfig.model_validate({
            "manager": "supervisord", "unit": program, "supervisord_url": self.url,
            "checks": [{"http": f"http://127.0.0.1:{self.web_port}/", "timeout_s": 1}],
            **extra})


@pytest.fixture
async def supervisord(tmp_path: Path) -> AsyncIterator[Supervisord]:
    rpc_port, web_port = free_port(), free_port()
    sock = tmp_path / "s.sock"
    conf = tmp_path / "supervisord.conf"
    conf.write_text(f"""
[supervisord]
nodaemon=true
logfile={tmp_path / "supervisord.log"}
pidfile={tmp_path / "supervisord.pid"}
childlogdir={tmp_path}

[inet_http_server]
port=127.0.0.1:{rpc_port}

[unix_http_server]
file={sock}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[program:web]
command={PY} -m http.server {web_port} --bind 127.0.0.1
autostart=true
autorestart=false
startsecs=0
stopwaitsecs=5

[program:crasher]
command={PY} -c "raise SystemExit(4)"
autostart=false
autorestart=false
startsecs=1
startretries=0
""")
    assert SUPERVISORD is not None
    proc = subprocess.Popen([SUPERVISORD, "-n", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    state = Supervisord(url=f"http://127.0.0.1:{rpc_port}/RPC2", unix_url=f"unix://{sock}",
                        web_port=web_port, proc=proc)
    try:
        m = SupervisordManager({"web": state.config()})
        deadline = time.monotonic() + 20
        while not (await m.status("web")).healthy:
            assert proc.poll() is None, "supervisord exited"
            assert time.monotonic() < deadline, "supervisord did not come up"
            await asyncio.sleep(0.05)
        yield state
    finally:
        # supervisord stops its programs on SIGTERM; SIGKILL the group if it dawdles.
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


async def test_status_start_stop_restart_for_real(supervisord: Supervisord) -> None:
    async with Services({"web": supervisord.config()}) as services:
        status = await services.wait_healthy("web", timeout_s=10, interval_s=0.05)
        assert status.state == "running" and status.healthy and status.manager == "supervisord"
        assert status.pid is not None and status.since is not None
        assert status.create_time == psutil.Process(status.pid).create_time()
        assert status.detail.startswith("RUNNING: pid ")

        stopped = await services.stop("web")
        assert stopped.ok and stopped.message == "stopped web"
        down = await services.status("web")
        assert down.state == "stopped" and down.healthy is False and down.pid is None
        again = await services.stop("web")
        assert again.ok and again.message == "web not running"

        started = await services.start("web")
        assert started.ok and started.message == "started web"
        twice = await services.start("web")
        assert twice.ok and twice.message == "web already running"
        first = (await services.wait_healthy("web", timeout_s=10, interval_s=0.05)).pid

        restarted = await services.restart("web")
        assert restarted.ok and restarted.message == "stopped web; started web"
        back = await services.wait_healthy("web", timeout_s=10, interval_s=0.05)
        assert back.healthy and back.pid not in (None, first)


async def test_a_killed_program_is_seen_and_started_again(supervisord: Supervisord) -> None:
    m = SupervisordManager({"web": supervisord.config()})
    status = await m.status("web")
    assert status.pid is not None
    os.kill(status.pid, signal.SIGKILL)  # a program of the supervisord this test started
    deadline = time.monotonic() + 10
    while (down := await m.status("web")).state == "running":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    assert down.state == "failed" and down.healthy is False
    assert down.detail.startswith("EXITED")
    started = await m.start("web")
    assert started.ok
    up = await m.status("web")
    deadline = time.monotonic() + 10
    while not up.healthy:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
        up = await m.status("web")
    assert up.state == "running" and up.pid != status.pid


async def test_failures_are_clear_results(supervisord: Supervisord) -> None:
    m = SupervisordManager({
        "ghost": supervisord.config("ghost"),
        "crasher": supervisord.config("crasher", checks=[]),
        "nowhere": supervisord.config(supervisord_url=f"http://127.0.0.1:{free_port()}/RPC2"),
    }, timeout_s=15)
    ghost = await m.status("ghost")
    assert ghost.state == "unknown"
    assert ghost.detail == "ghost: supervisord has no such program"
    result = await m.start("ghost")
    assert not result.ok and result.message.startswith("ghost: supervisord has no such program")

    crash = await m.start("crasher")
    assert not crash.ok
    assert crash.message == ("crasher: supervisord could not spawn it (FATAL: Exited too "
                             "quickly (process log may have details))")
    assert (await m.status("crasher")).state == "failed"

    nowhere = await m.status("nowhere", checks=False)
    assert nowhere.state == "unknown" and "is not reachable at http://127.0.0.1:" in nowhere.detail
    assert not (await m.restart("nowhere")).ok


async def test_unix_socket_url(supervisord: Supervisord) -> None:
    m = SupervisordManager({"web": supervisord.config(supervisord_url=supervisord.unix_url)})
    status = await m.status("web")
    assert status.state == "running" and status.healthy
    missing = SupervisordManager({"web": supervisord.config(
        supervisord_url=supervisord.unix_url + ".missing")})
    gone = await missing.status("web", checks=False)
    assert gone.state == "unknown" and "is not reachable" in gone.detail
