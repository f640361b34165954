"""systemd units through ``systemctl`` (argv only, absolute path, fixed environment, timeouts).

``systemctl show`` gives machine-readable properties; ``start``/``stop``/``restart`` wait for
their job to finish, bounded by our timeout. The command runner is injected, so tests drive
this backend with a fake that returns scripted output and records every argv.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

import psutil

from watchkeeper.config import ServiceConfig
from watchkeeper.events import utcnow

from .base import (
    SAFE_PATH,
    CommandResult,
    CommandRunner,
    OperationResult,
    ServiceState,
    ServiceStatus,
    SubprocessRunner,
    UnknownService,
    base_env,
)
from .checks import CheckContext, assess

logger = logging.getLogger(__name__)

#: The properties ``status`` asks for, in the order of the ``--property=`` argument.
PROPERTIES = ("LoadState", "ActiveState", "SubState", "MainPID", "Result",
              "ExecMainStartTimestampMonotonic", "ActiveEnterTimestampMonotonic",
              "InactiveEnterTimestampMonotonic", "ExecMainStatus", "NRestarts")

_STATES: dict[str, ServiceState] = {
    "active": "running", "reloading": "running", "deactivating": "running",
    "activating": "starting", "inactive": "stopped", "failed": "failed",
}


def _create_time(ps: Any, pid: int) -> float | None:
    try:
        return float(ps.Process(pid).create_time())
    except Exception:  # gone or not readable: the state still stands without it
        return None


class SystemdManager:
    """Services with ``manager: systemd``; ``unit`` defaults to the service name."""

    def __init__(self, services: Mapping[str, ServiceConfig], *,
                 runner: CommandRunner | None = None, ps: Any = psutil,
                 systemctl: str | None = None, search_path: str = SAFE_PATH,
                 timeout_s: float = 90.0, status_timeout_s: float = 10.0,
                 env: Mapping[str, str] | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = utcnow) -> None:
        self._services = dict(services)
        self._runner = runner or SubprocessRunner()
        self._ps = ps
        self._systemctl = systemctl
        self._search_path = search_path
        self._timeout_s = timeout_s
        self._status_timeout_s = status_timeout_s
        self._env = dict(env if env is not None else {**base_env(), "SYSTEMD_COLORS": "0",
                                                      "SYSTEMD_PAGER": ""})
        self._monotonic = monotonic
        self._wall = wall

    def unit(self, name: str) -> str:
        """The unit that service ``name`` maps to."""
        cfg = self._config(name)
        return cfg.unit or name

    def _config(self, name: str) -> ServiceConfig:
        try:
            return self._services[name]
        except KeyError:
            raise UnknownService(f"no systemd-managed service {name!r}") from None

    def _executable(self) -> str | None:
        if self._systemctl is None:
            found = shutil.which("systemctl", path=self._search_path)
            self._systemctl = found
        return self._systemctl

    def _missing(self) -> str:
        return f"systemctl not found on {self._search_path}"

    async def status(self, name: str, *, checks: bool = True) -> ServiceStatus:
        """``systemctl show`` mapped to a ServiceStatus (unknown, with why, if it fails)."""
        cfg = self._config(name)
        unit = self.unit(name)
        current = await self._show(name, unit)
        ctx = CheckContext(pid=current.pid, create_time=current.create_time, ps=self._ps,
                           runner=self._runner, env={**base_env(), **cfg.env}, cwd=cfg.cwd)
        return await assess(current, cfg.checks if checks else (), ctx)

    async def _show(self, name: str, unit: str) -> ServiceStatus:
        exe = self._executable()
        if exe is None:
            return ServiceStatus(name=name, manager="systemd", state="unknown",
                                 detail=self._missing())
        argv = (exe, "show", "--no-pager", f"--property={','.join(PROPERTIES)}", "--", unit)
        res = await self._runner.run(argv, timeout_s=self._status_timeout_s, env=self._env)
        if not res.ok:
            return ServiceStatus(name=name, manager="systemd", state="unknown",
                                 detail=explain(res, "show", unit))
        props = dict(line.split("=", 1) for line in res.stdout.splitlines() if "=" in line)
        load, active = props.get("LoadState", ""), props.get("ActiveState", "")
        if load == "not-found":
            return ServiceStatus(name=name, manager="systemd", state="unknown",
                                 detail=f"unit {unit} not found")
        state: ServiceState = _STATES.get(active, "unknown")
        pid = int(props["MainPID"]) if props.get("MainPID", "").isdigit() else 0
        stamp = ("ActiveEnterTimestampMonotonic" if state in ("running", "starting")
                 else "InactiveEnterTimestampMonotonic")
        detail = f"{active}/{props.get('SubState', '?')}"
        if load and load != "loaded":
            detail += f", {load}"
        if props.get("Result", "success") not in ("success", ""):
            detail += f", result {props['Result']}"
        if props.get("NRestarts", "0") not in ("0", ""):
            detail += f", {props['NRestarts']} restarts by systemd"
        return ServiceStatus(
            name=name, manager="systemd", state=state, pid=pid or None,
            create_time=await asyncio.to_thread(_create_time, self._ps, pid) if pid else None,
            since=self._since(props.get(stamp, "")), detail=detail)

    def _since(self, usec: str) -> datetime | None:
        # systemd stamps use CLOCK_MONOTONIC, like time.monotonic() on Linux; going through
        # the monotonic clock keeps the answer right when the wall clock was changed since.
        if not usec.isdigit() or int(usec) == 0:
            return None
        ago = self._monotonic() - int(usec) / 1e6
        return self._wall() - timedelta(seconds=max(0.0, ago))

    async def _control(self, name: str, verb: Literal["start", "stop", "restart"]
                       ) -> OperationResult:
        unit = self.unit(name)
        started = time.monotonic()
        exe = self._executable()
        if exe is None:
            return OperationResult(service=name, operation=verb, ok=False,
                                   message=self._missing())
        argv = (exe, "--no-ask-password", verb, "--", unit)
        res = await self._runner.run(argv, timeout_s=self._timeout_s, env=self._env)
        took = time.monotonic() - started
        if res.ok:
            logger.info("%s: systemctl %s %s done in %.2f s", name, verb, unit, took)
            message = f"{verb}ed {unit}" if verb != "stop" else f"stopped {unit}"
        else:
            message = explain(res, verb, unit, self._timeout_s)
            logger.warning("%s: %s", name, message)
        return OperationResult(service=name, operation=verb, ok=res.ok, message=message,
                               argv=argv, output=res.excerpt(), duration_s=took)

    async def start(self, name: str) -> OperationResult:
        """``systemctl start`` (waits for the job; starting an active unit is a no-op)."""
        return await self._control(name, "start")

    async def stop(self, name: str) -> OperationResult:
        """``systemctl stop``."""
        return await self._control(name, "stop")

    async def restart(self, name: str) -> OperationResult:
        """``systemctl restart``."""
        return await self._control(name, "restart")

    async def aclose(self) -> None:
        """Nothing to release: systemd owns its units."""


def explain(res: CommandResult, verb: str, unit: str, timeout_s: float | None = None) -> str:
    """A clear message for a failed systemctl call."""
    if res.error:
        return res.error
    if res.timed_out:
        limit = f"{timeout_s:g} s" if timeout_s else f"{res.duration_s:.0f} s"
        return f"systemctl {verb} {unit} did not finish within {limit}"
    text = f"{res.stderr}\n{res.stdout}".lower()
    last = next((ln.strip() for ln in reversed(f"{res.stdout}\n{res.stderr}".splitlines())
                 if ln.strip()), "")
    if "not been booted with systemd" in text or "failed to connect to bus" in text:
        return "systemd is not running on this host (systemctl cannot reach it)"
    if "access denied" in text or "authentication required" in text or res.returncode == 4:
        return (f"permission denied to {verb} {unit}: run watchkeeper as root or allow it "
                "through polkit")
    if "not found" in text or "not loaded" in text or res.returncode == 5:
        return f"unit {unit} not found"
    if "job for" in text and "failed" in text:
        return (f"{unit} failed to {verb}; see `systemctl status {unit}` and "
                f"`journalctl -u {unit}`")
    return f"systemctl {verb} {unit} failed with code {res.returncode}: {last}"[:500]
