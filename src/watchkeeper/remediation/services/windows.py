"""Windows services: psutil's service API for status, ``sc.exe`` for control.

``sc.exe start/stop`` return as soon as the request is queued (START_PENDING), so each
operation then polls the service until it reaches the target state or the timeout. Both
boundaries are injected (``win_service_get`` and the command runner), so the backend is
tested on any OS with fakes there.
"""

from __future__ import annotations

import asyncio
import logging
import ntpath
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

import psutil

from watchkeeper.config import ServiceConfig

from .base import (
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

_STATES: dict[str, ServiceState] = {
    "running": "running", "stop_pending": "running", "pause_pending": "running",
    "start_pending": "starting", "continue_pending": "starting",
    "stopped": "stopped", "paused": "stopped",
}

#: Win32 error codes sc.exe exits with, as messages a user can act on.
SC_ERRORS: dict[int, str] = {
    5: "access denied: run watchkeeper as an administrator or grant it rights on the service",
    1051: "other running services depend on it; stop them first",
    1052: "the requested control is not valid for this service",
    1053: "the service did not respond to the request in time",
    1056: "already running",
    1058: "the service is disabled",
    1060: "no such Windows service",
    1061: "the service cannot accept control messages now (it is starting or stopping)",
    1062: "not running",
    1068: "a service it depends on failed to start",
    1069: "the service failed to log on (check its account and password)",
}


def default_sc_path() -> str:
    """``%SYSTEMROOT%\\System32\\sc.exe`` (never looked up on PATH)."""
    root = os.environ.get("SYSTEMROOT", r"C:\Windows")
    return ntpath.join(root, "System32", "sc.exe")


class WindowsServiceManager:
    """Services with ``manager: windows``; ``unit`` (the service key name) defaults to the name."""

    def __init__(self, services: Mapping[str, ServiceConfig], *,
                 runner: CommandRunner | None = None, ps: Any = psutil,
                 win_service_get: Callable[[str], Any] | None = None,
                 sc_path: str | None = None, timeout_s: float = 60.0,
                 poll_interval_s: float = 0.5, env: Mapping[str, str] | None = None) -> None:
        self._services = dict(services)
        self._runner = runner or SubprocessRunner()
        self._ps = ps
        self._get = win_service_get or getattr(ps, "win_service_get", None)
        self._sc_path = sc_path or default_sc_path()
        self._timeout_s = timeout_s
        self._poll_s = poll_interval_s
        self._env = dict(env if env is not None else base_env())

    def unit(self, name: str) -> str:
        """The Windows service key name for service ``name``."""
        try:
            cfg = self._services[name]
        except KeyError:
            raise UnknownService(f"no Windows-managed service {name!r}") from None
        return cfg.unit or name

    def _query(self, unit: str) -> tuple[str, int | None, float | None]:
        """Runs in a worker thread: (psutil status string, pid, create_time)."""
        if self._get is None:
            raise OSError("Windows services exist only on Windows")
        svc = self._get(unit)
        raw = svc.status()
        pid = svc.pid() or None
        create_time = None
        if pid:
            try:
                create_time = float(self._ps.Process(pid).create_time())
            except Exception:  # the state stands without a start time
                create_time = None
        return raw, pid, create_time

    async def _state(self, name: str, unit: str) -> ServiceStatus:
        try:
            raw, pid, create_time = await asyncio.to_thread(self._query, unit)
        except self._ps.NoSuchProcess:
            return ServiceStatus(name=name, manager="windows", state="unknown",
                                 detail=f"no Windows service named {unit!r}")
        except self._ps.AccessDenied:
            return ServiceStatus(name=name, manager="windows", state="unknown",
                                 detail=f"access denied reading service {unit!r}")
        except OSError as exc:
            return ServiceStatus(name=name, manager="windows", state="unknown",
                                 detail=str(exc.strerror or exc))
        return ServiceStatus(name=name, manager="windows", state=_STATES.get(raw, "unknown"),
                             pid=pid, create_time=create_time, detail=raw)

    async def status(self, name: str, *, checks: bool = True) -> ServiceStatus:
        """psutil's view of the service, plus the configured health checks."""
        unit = self.unit(name)
        current = await self._state(name, unit)
        cfg = self._services[name]
        ctx = CheckContext(pid=current.pid, create_time=current.create_time, ps=self._ps,
                           runner=self._runner, env={**self._env, **cfg.env}, cwd=cfg.cwd)
        return await assess(current, cfg.checks if checks else (), ctx)

    async def _sc_call(self, name: str, verb: Literal["start", "stop"],
                  deadline: float) -> tuple[bool, str, tuple[str, ...], CommandResult]:
        unit = self.unit(name)
        argv = (self._sc_path, verb, unit)
        res = await self._runner.run(argv, timeout_s=max(1.0, deadline - time.monotonic()),
                                     env=self._env)
        target: ServiceState = "running" if verb == "start" else "stopped"
        if res.ok or res.returncode in (1056, 1062):
            # Accepted (or already there): wait until the service reports the target state.
            reached = await self._wait_for(name, unit, target, deadline)
            if reached.state == target:
                done = SC_ERRORS[1056 if verb == "start" else 1062] if not res.ok else (
                    "started" if verb == "start" else "stopped")
                return True, f"{done} ({unit})", argv, res
            late = time.monotonic() >= deadline
            return False, (f"{unit} is {reached.detail or reached.state}, not {target}"
                           + (f", after {self._timeout_s:g} s" if late else "")), argv, res
        return False, explain_sc(res, verb, unit), argv, res

    async def _wait_for(self, name: str, unit: str, target: ServiceState,
                        deadline: float) -> ServiceStatus:
        moved = False
        while True:
            current = await self._state(name, unit)
            if current.state == target or current.state == "unknown":
                return current
            if current.detail.endswith("_pending"):
                moved = True
            elif moved:
                # It was pending and settled somewhere else (a start that stopped again).
                return current
            if time.monotonic() >= deadline:
                return current
            await asyncio.sleep(self._poll_s)

    async def _run(self, name: str, op: Literal["start", "stop", "restart"]) -> OperationResult:
        started = time.monotonic()
        deadline = started + self._timeout_s
        verbs: tuple[Literal["start", "stop"], ...] = (
            ("stop", "start") if op == "restart" else (op,))
        messages, outputs = [], []
        argv: tuple[str, ...] = ()
        ok = True
        for verb in verbs:
            ok, message, argv, res = await self._sc_call(name, verb, deadline)
            messages.append(message)
            if out := res.excerpt():
                outputs.append(out)
            if not ok:
                break
        message = "; ".join(messages)
        (logger.info if ok else logger.warning)("%s: %s %s", name, op, message)
        return OperationResult(service=name, operation=op, ok=ok, message=message, argv=argv,
                               output="\n".join(outputs), duration_s=time.monotonic() - started)

    async def start(self, name: str) -> OperationResult:
        """``sc.exe start``, then wait until it runs."""
        return await self._run(name, "start")

    async def stop(self, name: str) -> OperationResult:
        """``sc.exe stop``, then wait until it is stopped."""
        return await self._run(name, "stop")

    async def restart(self, name: str) -> OperationResult:
        """Stop (an already stopped service is fine), then start."""
        return await self._run(name, "restart")

    async def aclose(self) -> None:
        """Nothing to release: the Service Control Manager owns the services."""


def explain_sc(res: CommandResult, verb: str, unit: str) -> str:
    """A clear message for a failed sc.exe call."""
    if res.error:
        return res.error
    if res.timed_out:
        return f"sc.exe {verb} {unit} did not return within {res.duration_s:.0f} s"
    known = SC_ERRORS.get(res.returncode or 0)
    if known:
        return f"cannot {verb} {unit}: {known} (error {res.returncode})"
    last = next((ln.strip() for ln in reversed(f"{res.stdout}\n{res.stderr}".splitlines())
                 if ln.strip()), "")
    return f"sc.exe {verb} {unit} failed with code {res.returncode}: {last}"[:500]
