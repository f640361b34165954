"""Health checks against real loopback servers and real commands, with short timeouts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import psutil
import pytest

from watchkeeper.config import HealthCheck
from watchkeeper.remediation.services.base import ServiceStatus, SubprocessRunner
from watchkeeper.remediation.services.checks import (
    CheckContext,
    assess,
    check_command,
    check_http,
    check_process,
    check_tcp,
    healthy,
    public_url,
    run_check,
    run_checks,
)

PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class HttpServer:
    port: int
    requests: list[list[str]] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
async def http_server() -> AsyncIterator[HttpServer]:
    """A loopback HTTP server whose path picks the answer: /200, /302, /500, /hang, /junk."""
    state = HttpServer(port=0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            lines = []
            while (line := await reader.readline()) not in (b"\r\n", b""):
                lines.append(line.decode("latin-1").rstrip("\r\n"))
            state.requests.append(lines)
            path = lines[0].split()[1] if lines else "/"
            if path == "/hang":
                await reader.read()  # until the client gives up and closes
                return
            if path == "/junk":
                writer.write(b"hello there\r\n")
            else:
                code = int(path.split("?")[0].strip("/") or 200)
                writer.write(f"HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n".encode())
            await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    yield state
    server.close()
    await server.wait_closed()


async def test_http_2xx_and_3xx_are_healthy(http_server: HttpServer) -> None:
    ok = await check_http(http_server.url("/200"), 1.0)
    assert ok.ok and ok.message == "HTTP 200" and ok.kind == "http"
    redirect = await check_http(http_server.url("/302"), 1.0)
    assert redirect.ok and redirect.message == "HTTP 302"
    request = http_server.requests[0]
    assert request[0] == "GET /200 HTTP/1.1"
    assert f"Host: 127.0.0.1:{http_server.port}" in request


async def test_http_5xx_refused_junk_and_silence_are_unhealthy(http_server: HttpServer) -> None:
    error = await check_http(http_server.url("/500"), 1.0)
    assert not error.ok and error.message == "HTTP 500"
    junk = await check_http(http_server.url("/junk"), 1.0)
    assert not junk.ok and junk.message == "not an HTTP answer (got 'hello there')"
    refused = await check_http(f"http://127.0.0.1:{free_port()}/", 1.0)
    assert not refused.ok and refused.message == "connection refused"
    bad_port = await check_http("http://127.0.0.1:99999/", 1.0)
    assert not bad_port.ok and "out of range" in bad_port.message
    started = time.monotonic()
    hung = await check_http(http_server.url("/hang"), 0.2)
    assert not hung.ok and hung.message == "no answer within 0.2 s"
    assert time.monotonic() - started < 1.0


async def test_http_credentials_are_sent_but_never_shown(http_server: HttpServer) -> None:
    url = f"http://watch:s3cret@127.0.0.1:{http_server.port}/200?x=1"
    result = await check_http(url, 1.0)
    assert result.ok
    assert "s3cret" not in result.target and result.target == http_server.url("/200?x=1")
    assert "Authorization: Basic d2F0Y2g6czNjcmV0" in http_server.requests[0]
    assert http_server.requests[0][0] == "GET /200?x=1 HTTP/1.1"
    assert public_url("https://u:p@h:1/a") == "https://h:1/a"


async def test_tcp_open_and_closed_ports() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        ok = await check_tcp(f"127.0.0.1:{port}", 1.0)
    assert ok.ok and ok.message == "port open"
    closed = await check_tcp(f"127.0.0.1:{free_port()}", 1.0)
    assert not closed.ok and closed.message == "connection refused"
    bad = await check_tcp("127.0.0.1:99999", 1.0)
    assert not bad.ok and bad.message == "invalid port '99999'"


async def test_command_exit_codes_timeout_and_missing_executable() -> None:
    runner = SubprocessRunner()
    ok = await check_command([PY, "-c", "pass"], 5.0, runner=runner)
    assert ok.ok and ok.message == "exit 0" and ok.kind == "command"
    failed = await check_command([PY, "-c", "import sys; print('db down'); sys.exit(3)"], 5.0,
                                 runner=runner)
    assert not failed.ok
    assert "exited with code 3" in failed.message and "db down" in failed.message
    started = time.monotonic()
    slow = await check_command([PY, "-c", "import time; time.sleep(30)"], 0.3, runner=runner)
    assert not slow.ok and "timed out" in slow.message
    assert time.monotonic() - started < 3.0
    missing = await check_command(["no-such-watchkeeper-probe"], 1.0, runner=runner)
    assert not missing.ok and "is not an executable on" in missing.message


async def test_command_is_resolved_on_the_fixed_path_not_ours() -> None:
    calls: list[tuple[str, ...]] = []

    class Recorder(SubprocessRunner):
        async def run(self, argv, *, timeout_s, env=None, cwd=None):  # type: ignore[no-untyped-def]
            calls.append(tuple(argv))
            return await super().run(argv, timeout_s=timeout_s, env=env, cwd=cwd)

    result = await check_command(["true"], 5.0, runner=Recorder(), path="/usr/bin:/bin")
    assert result.ok
    assert calls[0][0] in ("/usr/bin/true", "/bin/true")


async def test_process_alive_gone_zombie_and_reused() -> None:
    me = psutil.Process()
    alive = await check_process(os.getpid(), me.create_time(), ps=psutil)
    assert alive.ok and alive.kind == "process"
    reused = await check_process(os.getpid(), me.create_time() - 100, ps=psutil)
    assert not reused.ok and "another process" in reused.message
    none = await check_process(None, None, ps=psutil)
    assert not none.ok and none.message == "no process known"
    child = subprocess.Popen([PY, "-c", "pass"])
    deadline = time.monotonic() + 10
    while psutil.Process(child.pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    zombie = await check_process(child.pid, None, ps=psutil)
    assert not zombie.ok and "zombie" in zombie.message
    child.wait()
    gone = await check_process(child.pid, None, ps=psutil)
    assert not gone.ok and "gone" in gone.message


async def test_run_checks_concurrently_and_assess(http_server: HttpServer) -> None:
    checks = (HealthCheck(http=http_server.url("/hang"), timeout_s=0.3),
              HealthCheck(http=http_server.url("/hang"), timeout_s=0.3),
              HealthCheck(process=True))
    ctx = CheckContext(pid=os.getpid(), ps=psutil)
    started = time.monotonic()
    results = await run_checks(checks, ctx)
    assert time.monotonic() - started < 0.9  # concurrent: the slowest bounds the total
    assert [r.ok for r in results] == [False, False, True]
    assert healthy(results) is False and healthy(()) is None
    assert healthy(results[2:]) is True

    running = ServiceStatus(name="s", manager="process", state="running")
    assessed = await assess(running, checks[2:], ctx)
    assert assessed.healthy is True and len(assessed.checks) == 1
    stopped = await assess(running.model_copy(update={"state": "stopped"}), checks, ctx)
    assert stopped.healthy is False and stopped.checks == ()
    unchecked = await assess(running, (), ctx)
    assert unchecked.healthy is None


async def test_a_command_check_without_runner_is_a_failed_check_not_a_crash() -> None:
    result = await run_check(HealthCheck(command=("true",)), CheckContext())
    assert not result.ok and "no command runner" in result.message
