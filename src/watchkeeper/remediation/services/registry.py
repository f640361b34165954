"""The Services façade: one backend per configured service, calls routed by service name."""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from watchkeeper.aio import wait_for
from watchkeeper.config import ServiceConfig, Settings
from watchkeeper.remediation.process_guard import GuardRules

from .base import (
    CommandRunner,
    ExitCallback,
    ExitHub,
    ExitStream,
    ManagerName,
    Operation,
    OperationResult,
    ServiceExit,
    ServiceManager,
    ServiceStatus,
    SubprocessRunner,
    UnknownService,
)
from .process import ProcessManager
from .supervisord import SupervisordManager
from .systemd import SystemdManager
from .windows import WindowsServiceManager

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackendContext:
    """What a backend factory gets besides the service: the shared boundaries."""

    ps: Any
    runner: CommandRunner
    hub: ExitHub
    log_dir: Path | None
    grace_s: float
    #: The process guard's rules now (protected names): never adopt such a process.
    guard: Callable[[], GuardRules] = GuardRules


@dataclass(frozen=True)
class ServicesChange:
    """What a new services section changed, by name."""

    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed)


@dataclass(frozen=True)
class Settled:
    """How a (re)started service came out of ``Services.settle``."""

    ok: bool
    status: ServiceStatus | None
    message: str
    took_s: float


#: Builds the backend for one service: ``factory(name, config, context)``.
BackendFactory = Callable[[str, ServiceConfig, BackendContext], ServiceManager]


def _process(name: str, cfg: ServiceConfig, ctx: BackendContext) -> ServiceManager:
    return ProcessManager({name: cfg}, ps=ctx.ps, runner=ctx.runner, hub=ctx.hub,
                          log_dir=ctx.log_dir, grace_s=ctx.grace_s, guard=ctx.guard)


def _systemd(name: str, cfg: ServiceConfig, ctx: BackendContext) -> ServiceManager:
    return SystemdManager({name: cfg}, runner=ctx.runner, ps=ctx.ps)


def _windows(name: str, cfg: ServiceConfig, ctx: BackendContext) -> ServiceManager:
    return WindowsServiceManager({name: cfg}, runner=ctx.runner, ps=ctx.ps)


def _supervisord(name: str, cfg: ServiceConfig, ctx: BackendContext) -> ServiceManager:
    return SupervisordManager({name: cfg}, runner=ctx.runner, ps=ctx.ps)


DEFAULT_FACTORIES: Mapping[ManagerName, BackendFactory] = {
    "process": _process, "systemd": _systemd, "windows": _windows,
    "supervisord": _supervisord,
}


class Services:
    """Every configured service behind one object: status, start, stop, restart by name.

    Unknown names raise UnknownService (with a "did you mean"); everything a backend can
    expect to go wrong comes back as a result instead. Exits of ``manager: process``
    services reach ``on_exit`` callbacks and ``exits()`` streams the moment they happen.
    """

    def __init__(self, services: Mapping[str, ServiceConfig], *, ps: Any = psutil,
                 runner: CommandRunner | None = None, log_dir: Path | None = None,
                 grace_s: float = 10.0,
                 factories: Mapping[ManagerName, BackendFactory] | None = None,
                 guard: Callable[[], GuardRules] = GuardRules) -> None:
        self.hub = ExitHub()
        self._ctx = BackendContext(ps=ps, runner=runner or SubprocessRunner(), hub=self.hub,
                                   log_dir=log_dir, grace_s=grace_s, guard=guard)
        self._factories = {**DEFAULT_FACTORIES, **(factories or {})}
        self._configs = dict(services)
        self._backends: dict[str, ServiceManager] = {
            name: self._build(name, cfg) for name, cfg in services.items()}
        self._closed = False
        self._reconfiguring = asyncio.Lock()

    def _build(self, name: str, cfg: ServiceConfig) -> ServiceManager:
        return self._factories[cfg.manager](name, cfg, self._ctx)

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> Services:
        """Backends for ``settings.services``; managed processes log to data_dir/services."""
        kwargs.setdefault("log_dir", settings.storage.path / "services")
        return cls(settings.services, **kwargs)

    @property
    def names(self) -> tuple[str, ...]:
        """The configured service names."""
        return tuple(self._backends)

    def __contains__(self, name: object) -> bool:
        return name in self._backends

    def config(self, name: str) -> ServiceConfig:
        """The configuration of service ``name``."""
        self.backend(name)
        return self._configs[name]

    def backend(self, name: str) -> ServiceManager:
        """The backend that manages ``name``; UnknownService if it is not configured."""
        try:
            return self._backends[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._backends), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            known = ", ".join(sorted(self._backends)) or "none"
            raise UnknownService(
                f"unknown service {name!r}{hint}; configured services: {known}") from None

    async def status(self, name: str, *, checks: bool = True) -> ServiceStatus:
        """The state and health of ``name``; a backend bug becomes state ``unknown``."""
        backend = self.backend(name)
        try:
            return await backend.status(name, checks=checks)
        except Exception as exc:
            logger.exception("%s: status failed", name)
            return ServiceStatus(name=name, manager=self._configs[name].manager,
                                 state="unknown", detail=f"status failed: {exc!r}"[:500])

    async def statuses(self, *, checks: bool = True) -> dict[str, ServiceStatus]:
        """Every service's status, gathered concurrently (what the sensor reports per tick)."""
        names = self.names
        found = await asyncio.gather(*(self.status(n, checks=checks) for n in names))
        return dict(zip(names, found, strict=True))

    async def _operate(self, name: str, op: Operation) -> OperationResult:
        backend = self.backend(name)
        started = time.monotonic()
        try:
            result: OperationResult = await getattr(backend, op)(name)
        except Exception as exc:
            logger.exception("%s: %s failed", name, op)
            return OperationResult(service=name, operation=op, ok=False,
                                   message=f"{op} failed: {exc!r}"[:500],
                                   duration_s=time.monotonic() - started)
        return result

    async def start(self, name: str) -> OperationResult:
        """Start ``name`` (a running service is left alone and reported as such)."""
        return await self._operate(name, "start")

    async def stop(self, name: str) -> OperationResult:
        """Stop ``name``."""
        return await self._operate(name, "stop")

    async def restart(self, name: str) -> OperationResult:
        """Restart ``name``."""
        return await self._operate(name, "restart")

    async def wait_healthy(self, name: str, timeout_s: float = 30.0,
                           interval_s: float = 0.1) -> ServiceStatus:
        """Poll until ``name`` is healthy (or running, if it has no checks) or time is up;
        returns the last status either way."""
        deadline = time.monotonic() + timeout_s
        while True:
            current = await self.status(name)
            good = current.healthy if current.healthy is not None \
                else current.state == "running"
            if good or time.monotonic() >= deadline:
                return current
            await asyncio.sleep(min(interval_s, max(0.0, deadline - time.monotonic())))

    async def settle(self, name: str, *, timeout_s: float, stable_s: float,
                     interval_s: float = 0.1, hold_interval_s: float = 0.5) -> Settled:
        """After a (re)start: wait until ``name`` is healthy (at most ``timeout_s``), then
        until it has stayed up and healthy for ``stable_s`` (supervisord's ``startsecs``).

        A managed process that exits meanwhile ends the wait at once (its exit is seen the
        moment it happens); other managers are polled every ``hold_interval_s``.
        """
        died: list[ServiceExit] = []
        gone = asyncio.Event()

        def on_exit(item: ServiceExit) -> None:
            if item.service == name and not item.expected:
                died.append(item)
                gone.set()

        unsubscribe = self.on_exit(on_exit)
        started = time.monotonic()

        def exited(up_since: float | None) -> Settled:
            item = died[-1]
            after = "" if up_since is None else \
                f" {time.monotonic() - up_since:.1f} s after it was healthy"
            return Settled(False, None, f"{name} {item.message}{after}",
                           time.monotonic() - started)

        try:
            deadline = started + timeout_s
            while True:
                current = await self.status(name)
                if died:
                    return exited(None)
                good = current.healthy if current.healthy is not None \
                    else current.state == "running"
                if good:
                    break
                if current.state in ("failed", "stopped") and current.pid is None \
                        and time.monotonic() - started > interval_s:
                    return Settled(False, current, f"{name} is {current.state}: "
                                   f"{current.detail}", time.monotonic() - started)
                if time.monotonic() >= deadline:
                    failing = [c.message for c in current.checks if not c.ok]
                    return Settled(False, current, f"{name} is {current.state}; "
                                   f"{'; '.join(failing) or 'not healthy'} after "
                                   f"{timeout_s:g} s", time.monotonic() - started)
                with contextlib.suppress(asyncio.TimeoutError):
                    await wait_for(gone.wait(), interval_s)
            up_since = time.monotonic()
            pid = current.pid
            hold_until = up_since + stable_s
            while (left := hold_until - time.monotonic()) > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await wait_for(gone.wait(), min(hold_interval_s, left))
                if died:
                    return exited(up_since)
                if time.monotonic() < hold_until:
                    now = await self.status(name, checks=False)
                    if now.state != "running" or (pid is not None and now.pid != pid):
                        return Settled(False, now, f"{name} went {now.state} "
                                       f"{time.monotonic() - up_since:.1f} s after it was "
                                       f"healthy: {now.detail}", time.monotonic() - started)
            final = await self.status(name)
            if died:
                return exited(up_since)
            good = final.healthy if final.healthy is not None else final.state == "running"
            if not good or (pid is not None and final.pid != pid):
                failing = [c.message for c in final.checks if not c.ok]
                return Settled(False, final, f"{name} did not stay healthy for {stable_s:g} s: "
                               f"{'; '.join(failing) or final.detail or final.state}",
                               time.monotonic() - started)
            stable = f", stable for {stable_s:g} s" if stable_s > 0 else ""
            return Settled(True, final, f"{name} is running and healthy{stable}",
                           time.monotonic() - started)
        finally:
            unsubscribe()

    def on_exit(self, callback: ExitCallback) -> Callable[[], None]:
        """Call ``callback(ServiceExit)`` the moment a managed process ends (a coroutine
        function's result is run as a task); returns a function that unsubscribes."""
        return self.hub.on_exit(callback)

    def exits(self, maxsize: int = 1000) -> ExitStream:
        """An async iterator over every managed-process exit from now on."""
        return self.hub.exits(maxsize)

    @property
    def reconfiguring(self) -> bool:
        """Whether a reconfigure (and the start of what it added or changed) is under way:
        a service that is down right now may be down on purpose."""
        return self._reconfiguring.locked()

    async def reconfigure(self, services: Mapping[str, ServiceConfig], *,
                          start: Callable[[Sequence[str]], Awaitable[None]] | None = None
                          ) -> ServicesChange:
        """Apply a new services section live, as ``supervisorctl update`` does.

        A service no longer configured has its backend closed; a new one gets a backend; a
        changed one has its backend closed and built anew. Closing stops a process
        watchkeeper started (unless ``keep_running``) and leaves an adopted one alone, so a
        changed managed process is stopped here and started again by the caller, like a new
        one; unchanged services are not touched. Returns what changed.

        ``start`` is called with the added and changed names before the reconfigure ends, so
        that no one (the remediator's supervised restarts) sees a changed service stopped,
        between its old process and its new one, as an outage of its own.
        """
        async with self._reconfiguring:
            if self._closed:
                return ServicesChange()
            new = dict(services)
            removed = tuple(n for n in self._configs if n not in new)
            added = tuple(n for n in new if n not in self._configs)
            changed = tuple(n for n in new if n in self._configs and new[n] != self._configs[n])
            # A changed service keeps its old backend, and so its name, while that closes:
            # status and the API show it stopping rather than unknown for a moment.
            for name in removed + changed:
                try:
                    await self._backends[name].aclose()
                except Exception:
                    logger.exception("%s: closing its backend failed", name)
            fresh = {n: self._build(n, new[n]) for n in added + changed}
            # One swap, in the configured order, as a freshly started watchkeeper would have.
            self._backends = {n: fresh[n] if n in fresh else self._backends[n] for n in new}
            self._configs = new
            change = ServicesChange(added=added, changed=changed, removed=removed)
            if change:
                logger.info("services reconfigured: added %s, changed %s, removed %s",
                            list(added), list(changed), list(removed))
            if start is not None and (added or changed):
                await start(added + changed)
            return change

    async def aclose(self) -> None:
        """Close every backend (stopping processes we started, unless keep_running)."""
        if self._closed:
            return
        self._closed = True
        async with self._reconfiguring:  # not while backends are being swapped
            pass
        results = await asyncio.gather(*(b.aclose() for b in self._backends.values()),
                                       return_exceptions=True)
        for name, res in zip(self._backends, results, strict=True):
            if isinstance(res, BaseException):
                logger.error("%s: closing its backend failed: %r", name, res)
        await self.hub.aclose()

    async def __aenter__(self) -> Services:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
