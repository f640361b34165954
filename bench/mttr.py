"""MTTR of a crashed managed service: watchkeeper's process manager vs supervisord.

A small HTTP server (``python -m http.server`` on a free loopback port) is killed with
SIGKILL ``--crashes`` times under each healer; the time from the kill to its HTTP check
answering again is measured. watchkeeper heals through the minimal loop the RemediatorAgent
builds on: ``on_exit`` -> ``restart``. supervisord heals with ``autorestart=true`` (and
``startsecs=0``, its fastest setting). A cold start of the same server is measured as the
floor. Prints a markdown table; kills only processes it started (or that its supervisord
started).

    python bench/mttr.py [--crashes 20] [--cold 5] [--no-supervisord]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import psutil

from watchkeeper.config import HealthCheck, ServiceConfig
from watchkeeper.remediation.services import ProcessManager, ServiceExit, Services, check_http

logger = logging.getLogger("bench.mttr")
POLL_S = 0.002


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def dead(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@dataclass
class Series:
    name: str
    mttr: list[float] = field(default_factory=list)
    noticed: list[float] = field(default_factory=list)
    restarted: list[float] = field(default_factory=list)


async def until_http(url: str, deadline: float) -> None:
    while not (await check_http(url, 1.0)).ok:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer in time")
        await asyncio.sleep(POLL_S)


async def crash_and_time(pid: int, url: str, is_new: Callable[[], bool]) -> float:
    """SIGKILL ``pid``; seconds until it is dead and ``url`` answers from a new process."""
    killed = time.perf_counter()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    # The old process may answer for a moment after kill() returns: only count answers
    # once it is dead and a new process serves.
    while not dead(pid):
        await asyncio.sleep(0.0005)
    while not is_new():
        if time.monotonic() > deadline:
            raise TimeoutError("no new process")
        await asyncio.sleep(POLL_S)
    await until_http(url, deadline)
    return time.perf_counter() - killed


async def cold_start(python: str, runs: int) -> Series:
    series = Series("server cold start (the floor)")
    for _ in range(runs):
        port = free_port()
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            python, "-m", "http.server", str(port), "--bind", "127.0.0.1",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        try:
            await until_http(f"http://127.0.0.1:{port}/", time.monotonic() + 30)
            series.mttr.append(time.perf_counter() - started)
        finally:
            proc.kill()
            await proc.wait()
    return series


async def watchkeeper(python: str, crashes: int) -> Series:
    series = Series("watchkeeper process manager (on_exit → restart)")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    cfg = ServiceConfig(start=(python, "-m", "http.server", str(port), "--bind", "127.0.0.1"),
                        checks=(HealthCheck(http=url, timeout_s=1),))
    kill_at = [0.0]
    async with Services({"web": cfg}) as services:
        async def heal(item: ServiceExit) -> None:
            if item.expected:
                return
            series.noticed.append(time.perf_counter() - kill_at[0])
            result = await services.restart(item.service)
            series.restarted.append(time.perf_counter() - kill_at[0])
            if not result.ok:
                logger.error("restart failed: %s", result.message)

        services.on_exit(heal)
        await services.start("web")
        backend = services.backend("web")
        assert isinstance(backend, ProcessManager)
        for i in range(crashes):
            status = await services.wait_healthy("web", timeout_s=30, interval_s=0.01)
            assert status.healthy and status.pid, status
            await asyncio.sleep(0.2)
            old = status.pid
            kill_at[0] = time.perf_counter()
            took = await crash_and_time(
                old, url, lambda old=old: backend.pid("web") not in (None, old))  # type: ignore[misc]
            series.mttr.append(took)
            logger.info("watchkeeper crash %d: %.3f s", i + 1, took)
    return series


async def supervisord(python: str, crashes: int, workdir: Path) -> Series | None:
    exe = shutil.which("supervisord", path=str(Path(sys.executable).parent)) \
        or shutil.which("supervisord")
    if exe is None:
        logger.warning("supervisord not found (pip install supervisor); skipping it")
        return None
    from importlib.metadata import version as dist_version

    version = dist_version("supervisor")
    series = Series(f"supervisord {version} (autorestart=true, startsecs=0)")
    rpc, port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}/"
    conf = workdir / "supervisord.conf"
    conf.write_text(f"""
[supervisord]
nodaemon=true
logfile={workdir / "supervisord.log"}
pidfile={workdir / "supervisord.pid"}
childlogdir={workdir}
[inet_http_server]
port=127.0.0.1:{rpc}
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[program:web]
command={python} -m http.server {port} --bind 127.0.0.1
autostart=true
autorestart=true
startsecs=0
""")
    proc = subprocess.Popen([exe, "-n", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    rpc_url = f"http://127.0.0.1:{rpc}/RPC2"

    def program_pid() -> int:
        with xmlrpc.client.ServerProxy(rpc_url) as proxy:
            info: dict[str, object] = proxy.supervisor.getProcessInfo("web")  # type: ignore[assignment]
        return int(str(info["pid"])) if info["statename"] == "RUNNING" else 0

    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError, xmlrpc.client.Error):
                if program_pid():
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("supervisord did not start its program")
            await asyncio.sleep(0.05)
        for i in range(crashes):
            await until_http(url, time.monotonic() + 30)
            await asyncio.sleep(0.2)
            old = await asyncio.to_thread(program_pid)
            # A pid check per poll would cost an RPC; supervisord restarts on a 1 s loop,
            # so checking the new pid once the old one is dead is enough.
            took = await crash_and_time(old, url, lambda: True)
            now = await asyncio.to_thread(program_pid)
            assert now not in (0, old), "the answer came from the old process"
            series.mttr.append(took)
            logger.info("supervisord crash %d: %.3f s", i + 1, took)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    return series


def table(rows: list[Series], crashes: int) -> str:
    lines = [f"MTTR from SIGKILL to the HTTP check answering again ({date.today()}, "
             f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, "
             f"Python {platform.python_version()})", "",
             "| healer | runs | p50 | p95 | max |", "| --- | --- | --- | --- | --- |"]
    for s in rows:
        lines.append(f"| {s.name} | {len(s.mttr)} | {statistics.median(s.mttr):.3f} s | "
                     f"{pct(s.mttr, 0.95):.3f} s | {max(s.mttr):.3f} s |")
    wk = rows[0]
    if wk.noticed:
        lines += ["", f"watchkeeper phases (median over {crashes}): exit noticed "
                  f"{statistics.median(wk.noticed) * 1000:.1f} ms after the kill, restart "
                  f"returned at {statistics.median(wk.restarted) * 1000:.1f} ms, HTTP "
                  f"answering at {statistics.median(wk.mttr) * 1000:.1f} ms."]
    sup = next((s for s in rows if s.name.startswith("supervisord")), None)
    if sup is not None:
        ratio = statistics.median(sup.mttr) / statistics.median(wk.mttr)
        lines.append(f"supervisord p50 / watchkeeper p50 = {ratio:.1f}x")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> str:
    rows = [await watchkeeper(args.python, args.crashes)]
    if not args.no_supervisord:
        with tempfile.TemporaryDirectory(prefix="wk-mttr-") as tmp:
            sup = await supervisord(args.python, args.crashes, Path(tmp))
        if sup is not None:
            rows.append(sup)
    rows.append(await cold_start(args.python, args.cold))
    return table(rows, args.crashes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crashes", type=int, default=20)
    parser.add_argument("--cold", type=int, default=5, help="cold starts for the floor")
    parser.add_argument("--python", default=sys.executable, help="interpreter of the server")
    parser.add_argument("--no-supervisord", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    if not args.verbose:
        # Each crash is logged as a warning by design; twenty of them are not news here.
        logging.getLogger("watchkeeper").setLevel(logging.ERROR)
    print(asyncio.run(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
