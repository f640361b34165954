"""``simulate service|crashloop`` inside a running server: a built-in demo service, managed
for the duration, crashed once (service) or made to exit at each start (crashloop).

The demo's command line is fixed here (this package's demo_service, on a free loopback port,
with an http check); a request only picks the scenario and a bounded duration. It is added to
the live configuration for the run (never saved: a restart or a reload forgets it) and
removed afterwards, which stops it. One demo at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

SERVICE_PREFIX = "wk-sim-demo-"
#: Longest demo (seconds).
MAX_DEMO_S = 600.0
#: How long the demo may take to come up healthy before it is crashed.
READY_TIMEOUT_S = 30.0
#: The demo exits on its own this long after its end, should nobody stop it.
SELF_STOP_MARGIN_S = 120.0

Scenario = Literal["service", "crashloop"]


class DemoError(Exception):
    """A demo that cannot start (one runs already, or the service never came up)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class DemoRun:
    """A started demo: its service, port and pid, and when it crashed and ends."""

    scenario: Scenario
    service: str
    port: int
    pid: int | None
    started_at: datetime
    crashed_at: datetime
    #: When the cause ends: the kill itself (service), the crash flag removed (crashloop).
    heals_at: datetime
    until: datetime


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _utc() -> datetime:
    return datetime.now(timezone.utc)


class Demos:
    """The demo service of one server (at most one at a time)."""

    def __init__(self, runtime: Any) -> None:
        self._rt = runtime
        self._lock = asyncio.Lock()
        self.current: DemoRun | None = None
        self._ender: asyncio.Task[None] | None = None

    def _dir(self) -> Path:
        path: Path = self._rt.config.current.storage.path / "simulate"
        path.mkdir(mode=0o700, exist_ok=True)
        return path

    async def start(self, scenario: Scenario, duration_s: float) -> DemoRun:
        """Add the demo service, wait until it is healthy, crash it; it is removed after
        ``duration_s``."""
        if self._lock.locked() or self.current is not None:
            busy = self.current
            raise DemoError("a simulation runs already" + (
                f" (service {busy.service} until {busy.until:%H:%M:%S} UTC)" if busy else ""),
                409)
        async with self._lock:
            name = SERVICE_PREFIX + uuid.uuid4().hex[:8]
            port = _free_port()
            flag = self._dir() / f"{name}.crash"
            started_at = _utc()
            until_epoch = time.time() + duration_s
            argv = [sys.executable, "-m", "watchkeeper.simulate.demo_service", "--port",
                    str(port), "--crash-flag", str(flag), "--until",
                    f"{until_epoch + SELF_STOP_MARGIN_S:.0f}"]
            self._rt.update_config({"services": {name: {
                "manager": "process", "start": argv,
                "checks": [{"http": f"http://127.0.0.1:{port}/", "timeout_s": 2}]}}},
                source="simulate")
            log.info("simulate %s: demo service %s on 127.0.0.1:%d for %.0f s", scenario,
                     name, port, duration_s)
            try:
                pid = await self._healthy_pid(name)
            except DemoError:
                await self._remove(name, flag)
                raise
            if scenario == "crashloop":
                flag.touch(mode=0o600)  # every start from now on exits at once
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            crashed_at = _utc()
            log.info("simulate %s: demo service %s (pid %d) killed", scenario, name, pid)
            # A crash loop lasts two thirds of the run; the last third shows whether
            # watchkeeper's next restart brings the service back.
            heal_epoch = (time.time() if scenario == "service"
                          else time.time() + (until_epoch - time.time()) * 2 / 3)
            run = DemoRun(scenario=scenario, service=name, port=port, pid=pid,
                          started_at=started_at, crashed_at=crashed_at,
                          heals_at=datetime.fromtimestamp(heal_epoch, timezone.utc),
                          until=datetime.fromtimestamp(until_epoch, timezone.utc))
            self.current = run
            self._ender = asyncio.get_running_loop().create_task(
                self._end_after(name, flag, heal_epoch, until_epoch))
            return run

    def _condition(self, name: str) -> str | None:
        """The service's condition as the remediator sees it (None: not declared to it yet;
        killed before, its exit would be taken for part of its start, not an outage)."""
        for agent in self._rt.agents:
            book = getattr(agent, "book", None)
            if book is not None:
                report = book.report(name)
                return None if report is None else str(report.condition)
        return "ok"  # no remediator in this process: nothing else to wait for

    async def _healthy_pid(self, name: str) -> int:
        # Healthy by its check, and ok to the remediator: a loaded host may have caught the
        # demo before it listened and restarted it; the crash comes once that has settled,
        # so that it is the one crash the run measures.
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if name in self._rt.services:
                status = await self._rt.services.status(name)
                if (status.pid is not None and status.healthy
                        and self._condition(name) == "ok"):
                    return int(status.pid)
            await asyncio.sleep(0.2)
        raise DemoError(f"the demo service {name} did not come up healthy within "
                        f"{READY_TIMEOUT_S:.0f} s", 503)

    async def _end_after(self, name: str, flag: Path, heal_epoch: float, until_epoch: float
                         ) -> None:
        try:
            await asyncio.sleep(max(0.0, heal_epoch - time.time()))
            with contextlib.suppress(FileNotFoundError):
                flag.unlink()
            await asyncio.sleep(max(0.0, until_epoch - time.time()))
        except asyncio.CancelledError:
            # The server stops: it stops the demo with every managed process, and the
            # configuration it was added to is never saved; only the flag file is ours.
            with contextlib.suppress(FileNotFoundError):
                flag.unlink()
            self.current = None
            raise
        await self._remove(name, flag)
        self.current = None

    async def _remove(self, name: str, flag: Path) -> None:
        """Take the demo out of the configuration (which stops it) and remove its flag."""
        with contextlib.suppress(FileNotFoundError):
            flag.unlink()
        current = self._rt.config.current
        if name in current.services:
            services = {k: v for k, v in current.services.items() if k != name}
            self._rt.config.replace(current.model_copy(update={"services": services}))
            log.info("simulate: demo service %s removed", name)

    async def aclose(self) -> None:
        """End a running demo now (the server stops)."""
        if self._ender is not None:
            self._ender.cancel()
            await asyncio.gather(self._ender, return_exceptions=True)
