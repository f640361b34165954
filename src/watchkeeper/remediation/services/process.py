"""Monit-style services that watchkeeper starts and watches itself (``manager: process``).

A service is a start argv, an optional stop argv, an optional pid file or command-line glob
to find an instance that is already running, and health checks. What sets this backend
apart from a polling monitor: the exit of a managed process is seen the moment it happens
(a pidfd in the event loop on Linux, a short poll elsewhere) and published to ``on_exit``
callbacks and ``exits()`` streams, so a restart can begin within milliseconds instead of at
the next tick.

Process identity is always pid + create_time, so a reused pid is never signalled. On Linux an
adopted process is signalled through its pidfd, which cannot name another process.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fnmatch
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import psutil

from watchkeeper.aio import wait_for
from watchkeeper.config import ServiceConfig
from watchkeeper.remediation.process_guard import (
    GuardRules,
    StatusReader,
    TargetRefused,
    protection,
    read_status,
)

from .base import (
    CommandRunner,
    ExecutableNotFound,
    ExitCallback,
    ExitHub,
    ExitStream,
    OperationResult,
    ServiceExit,
    ServiceStatus,
    SubprocessRunner,
    UnknownService,
    base_env,
    describe_exit,
    kill_group,
    resolve_argv,
    signal_name,
)
from .checks import CheckContext, assess

logger = logging.getLogger(__name__)

#: Children left running on purpose (keep_running) at shutdown. Holding a reference keeps
#: Popen.__del__ from warning "subprocess N is still running" about a process we chose to
#: leave behind.
_DISOWNED: list[subprocess.Popen[bytes]] = []



@atexit.register
def _reap_disowned() -> None:
    # A disowned child that has exited since (stopped by hand, or by a test) is reaped here,
    # before module teardown drops the list: otherwise Popen.__del__ still warns about it.
    for popen in _DISOWNED:
        popen.poll()

_POSIX = sys.platform != "win32"


class _Gone(Exception):
    """The process found a moment ago is no longer the one we identified."""


@dataclass(frozen=True)
class _Found:
    pid: int
    create_time: float
    how: str


@dataclass(eq=False)
class _Proc:
    """One live process of a service, and the task waiting for its exit."""

    pid: int
    create_time: float | None
    popen: subprocess.Popen[bytes] | None  # None: adopted, not our child (no exit code)
    owned: bool  # watchkeeper started it (also a daemon it started and then adopted)
    how: str
    started_mono: float
    pidfd: int | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    watcher: asyncio.Task[None] | None = None


@dataclass(eq=False)
class _Service:
    name: str
    cfg: ServiceConfig
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    proc: _Proc | None = None
    phase: Literal["starting", "stopping"] | None = None
    # Bumped by every start/stop, so a slow search that began before one never overrides it.
    generation: int = 0
    last_exit: ServiceExit | None = None


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "service"


def _since(create_time: float | None) -> datetime | None:
    return None if create_time is None else datetime.fromtimestamp(create_time, timezone.utc)


class ProcessManager:
    """Starts, stops and watches processes for ``manager: process`` services.

    ``ps`` is psutil (or a fake), ``runner`` runs stop commands and command checks, ``hub``
    receives exits (share one between backends to get one stream), ``log_dir`` keeps each
    service's stdout/stderr in ``<name>.log`` (None: discarded). ``grace_s`` is how long a
    stop waits before SIGKILL.
    """

    def __init__(self, services: Mapping[str, ServiceConfig], *, ps: Any = psutil,
                 runner: CommandRunner | None = None, hub: ExitHub | None = None,
                 log_dir: Path | None = None, grace_s: float = 10.0, kill_wait_s: float = 5.0,
                 daemon_window_s: float = 5.0, daemon_wait_s: float = 2.0,
                 poll_interval_s: float = 0.1, env: Mapping[str, str] | None = None,
                 guard: Callable[[], GuardRules] | None = None,
                 proc_status: StatusReader = read_status) -> None:
        for name, cfg in services.items():
            if not cfg.start:
                raise ValueError(f"service {name!r}: manager: process needs a start argv")
        self._services = {name: _Service(name, cfg) for name, cfg in services.items()}
        self._ps = ps
        self._runner = runner or SubprocessRunner()
        self._own_hub = hub is None
        self.hub = hub or ExitHub()
        self._log_dir = log_dir
        self._grace_s = grace_s
        self._kill_wait_s = kill_wait_s
        self._daemon_window_s = daemon_window_s
        self._daemon_wait_s = daemon_wait_s
        self._poll_s = poll_interval_s
        self._env = dict(base_env() if env is None else env)
        self._closing = False
        self._closed = False
        # A pid file or a match may name a thread, init, watchkeeper or a protected process;
        # adopting it would let a restart signal it. The guard's rules are read per search.
        self._guard = guard or GuardRules
        self._proc_status = proc_status
        self._refused: set[tuple[str, int]] = set()

    # ------------------------------------------------------------------ public

    @property
    def names(self) -> tuple[str, ...]:
        """The services this backend manages."""
        return tuple(self._services)

    def on_exit(self, callback: ExitCallback) -> Callable[[], None]:
        """Call ``callback(ServiceExit)`` the moment a managed process ends; returns unsubscribe."""
        return self.hub.on_exit(callback)

    def exits(self, maxsize: int = 1000) -> ExitStream:
        """An async iterator of every exit from now on."""
        return self.hub.exits(maxsize)

    async def status(self, name: str, *, checks: bool = True) -> ServiceStatus:
        """State from our own bookkeeping (adopting a running instance if one is found)."""
        svc = self._service(name)
        if svc.proc is None and svc.phase is None and not self._closing:
            with contextlib.suppress(Exception):  # a status read never fails on a search
                await self._adopt_existing(svc, owned=False)
        proc = svc.proc
        state: Literal["running", "stopped", "failed", "starting"]
        if proc is not None:
            state = "starting" if svc.phase == "starting" else "running"
            uptime = time.monotonic() - proc.started_mono
            detail = f"pid {proc.pid} ({proc.how}), up {uptime:.1f} s"
            since = _since(proc.create_time)
        elif svc.phase == "starting":
            state, detail, since = "starting", "starting", None
        elif svc.last_exit is not None and not svc.last_exit.expected:
            state, detail, since = "failed", svc.last_exit.message, svc.last_exit.at
        else:
            state = "stopped"
            detail = svc.last_exit.message if svc.last_exit else "not running"
            since = svc.last_exit.at if svc.last_exit else None
        current = ServiceStatus(
            name=name, manager="process", state=state, since=since, detail=detail,
            pid=proc.pid if proc else None, create_time=proc.create_time if proc else None)
        return await assess(current, svc.cfg.checks if checks else (),
                            self._check_context(svc, proc))

    async def start(self, name: str) -> OperationResult:
        """Start the service unless an instance already runs (then that one is adopted)."""
        svc = self._service(name)
        started = time.monotonic()
        async with svc.lock:
            result = await self._start_locked(svc)
        return result.model_copy(update={"duration_s": time.monotonic() - started})

    async def stop(self, name: str) -> OperationResult:
        """Stop argv (or SIGTERM to its group), SIGKILL after the grace period."""
        svc = self._service(name)
        started = time.monotonic()
        async with svc.lock:
            result = await self._stop_locked(svc)
        return result.model_copy(update={"duration_s": time.monotonic() - started})

    async def restart(self, name: str) -> OperationResult:
        """Stop it if it runs, then start it; never starts a second copy next to a survivor."""
        svc = self._service(name)
        started = time.monotonic()
        async with svc.lock:
            stopped: OperationResult | None = None
            if svc.proc is not None or await self._adopt_existing(svc, owned=False):
                stopped = await self._stop_locked(svc)
                if not stopped.ok:
                    return stopped.model_copy(update={
                        "operation": "restart", "duration_s": time.monotonic() - started,
                        "message": f"not restarted: {stopped.message}"})
            begun = await self._start_locked(svc)
        message = f"{stopped.message}; {begun.message}" if stopped else begun.message
        return begun.model_copy(update={
            "operation": "restart", "message": message,
            "output": "\n".join(x for x in ((stopped.output if stopped else ""), begun.output)
                                if x),
            "duration_s": time.monotonic() - started})

    def pid(self, name: str) -> int | None:
        """The pid we currently track for ``name`` (no search)."""
        proc = self._service(name).proc
        return proc.pid if proc else None

    async def aclose(self) -> None:
        """Stop what we started (unless keep_running); leave adopted processes alone."""
        if self._closed:
            return
        self._closing = True
        stops = []
        for svc in self._services.values():
            proc = svc.proc
            if proc is None:
                continue
            if proc.owned and not svc.cfg.keep_running:
                stops.append(self.stop(svc.name))
            else:
                why = "keep_running" if proc.owned else "adopted, not started by us"
                logger.info("leaving %s running (pid %d, %s)", svc.name, proc.pid, why)
                self._release(svc, proc)
        results = await asyncio.gather(*stops, return_exceptions=True)
        for res in results:
            if isinstance(res, BaseException):
                logger.error("stopping a service at shutdown failed: %s", res)
            elif not res.ok:
                logger.warning("%s: %s", res.service, res.message)
        for svc in self._services.values():
            if svc.proc is not None:
                self._release(svc, svc.proc)
        if self._own_hub:
            await self.hub.aclose()
        self._closed = True

    async def __aenter__(self) -> ProcessManager:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ operations

    def _service(self, name: str) -> _Service:
        try:
            return self._services[name]
        except KeyError:
            raise UnknownService(f"no process-managed service {name!r}") from None

    def _result(self, svc: _Service, op: Literal["start", "stop", "restart"], ok: bool,
                message: str, argv: tuple[str, ...] = (), output: str = "") -> OperationResult:
        return OperationResult(service=svc.name, operation=op, ok=ok, message=message,
                               argv=argv, output=output)

    def _child_env(self, cfg: ServiceConfig) -> dict[str, str]:
        return {**self._env, **cfg.env}

    async def _start_locked(self, svc: _Service) -> OperationResult:
        svc.generation += 1
        if self._closing:
            return self._result(svc, "start", False, "watchkeeper is shutting down")
        if svc.proc is not None:
            return self._result(svc, "start", True, f"already running (pid {svc.proc.pid})")
        if await self._adopt_existing(svc, owned=False):
            assert svc.proc is not None
            return self._result(svc, "start", True,
                                f"already running: adopted pid {svc.proc.pid} ({svc.proc.how})")
        cfg = svc.cfg
        env = self._child_env(cfg)
        try:
            argv = resolve_argv(cfg.start, path=env.get("PATH", ""), cwd=cfg.cwd)
        except ExecutableNotFound as exc:
            return self._result(svc, "start", False, f"cannot start: {exc}", tuple(cfg.start))
        if cfg.cwd is not None and not cfg.cwd.is_dir():
            return self._result(svc, "start", False,
                                f"cannot start: working directory {cfg.cwd} does not exist", argv)
        svc.phase = "starting"
        try:
            popen, create_time, pidfd = await asyncio.to_thread(self._spawn, svc, argv, env)
        except OSError as exc:
            return self._result(svc, "start", False,
                                f"cannot start {argv[0]}: {exc.strerror or exc}", argv)
        finally:
            svc.phase = None
        proc = _Proc(pid=popen.pid, create_time=create_time, popen=popen, owned=True,
                     how="started by watchkeeper", started_mono=time.monotonic(), pidfd=pidfd)
        self._track(svc, proc)
        logger.debug("%s: started pid %d: %s", svc.name, popen.pid, " ".join(argv))
        return self._result(svc, "start", True, f"started pid {popen.pid}", argv)

    def _spawn(self, svc: _Service, argv: tuple[str, ...], env: dict[str, str]
               ) -> tuple[subprocess.Popen[bytes], float | None, int | None]:
        """Runs in a worker thread: fork/exec, then read its start time and open a pidfd."""
        log = None
        if self._log_dir is not None:
            self._log_dir.mkdir(parents=True, exist_ok=True)
            log = open(self._log_dir / f"{_safe_name(svc.name)}.log", "ab")  # noqa: SIM115
        try:
            popen = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log or subprocess.DEVNULL,
                stderr=subprocess.STDOUT, cwd=svc.cfg.cwd, env=env, close_fds=True,
                # Its own session: a stop signals the whole group, and a Ctrl-C in our
                # terminal does not reach it.
                start_new_session=_POSIX,
                creationflags=getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0))
        finally:
            if log is not None:
                log.close()
        # Our child cannot be reaped (so its pid cannot be reused) before we poll it: both
        # the start time and the pidfd are certain to name this very process.
        try:
            create_time: float | None = self._ps.Process(popen.pid).create_time()
        except Exception:
            create_time = None
        pidfd = None
        if hasattr(os, "pidfd_open"):
            with contextlib.suppress(OSError):
                pidfd = os.pidfd_open(popen.pid)
        return popen, create_time, pidfd

    async def _stop_locked(self, svc: _Service) -> OperationResult:
        svc.generation += 1
        proc = svc.proc
        if proc is None and await self._adopt_existing(svc, owned=False):
            proc = svc.proc
        if proc is None:
            return self._result(svc, "stop", True, "not running")
        cfg = svc.cfg
        env = self._child_env(cfg)
        svc.phase = "stopping"
        began = time.monotonic()
        argv: tuple[str, ...] = ()
        output = ""
        notes: list[str] = []
        try:
            how = "SIGTERM"
            sent = False
            if cfg.stop:
                try:
                    argv = resolve_argv(cfg.stop, path=env.get("PATH", ""), cwd=cfg.cwd)
                except ExecutableNotFound as exc:
                    notes.append(f"stop command not found ({exc})")
                else:
                    res = await self._runner.run(argv, timeout_s=self._grace_s, env=env,
                                                 cwd=cfg.cwd)
                    output = res.excerpt()
                    if res.ok:
                        how, sent = "stop command", True
                    else:
                        notes.append(f"stop command failed ({res.describe()})")
            if not sent:
                self._signal(proc, signal.SIGTERM)
            remaining = max(0.0, self._grace_s - (time.monotonic() - began))
            if not await self._wait_exit(proc, remaining):
                notes.append(f"still running after {self._grace_s:g} s")
                how = "SIGKILL"
                self._signal(proc, signal.SIGKILL)
                if not await self._wait_exit(proc, self._kill_wait_s):
                    return self._result(
                        svc, "stop", False, f"pid {proc.pid} survived SIGKILL for "
                        f"{self._kill_wait_s:g} s (stuck in the kernel?)", argv, output)
        finally:
            svc.phase = None
        took = time.monotonic() - began
        note = f" ({'; '.join(notes)})" if notes else ""
        logger.debug("%s: stopped pid %d with %s in %.2f s%s", svc.name, proc.pid, how, took, note)
        return self._result(svc, "stop", True,
                            f"stopped pid {proc.pid} with {how} in {took:.2f} s{note}",
                            argv, output)

    async def _wait_exit(self, proc: _Proc, timeout: float) -> bool:
        with contextlib.suppress(asyncio.TimeoutError):
            await wait_for(proc.exited.wait(), timeout)
        return proc.exited.is_set()

    def _signal(self, proc: _Proc, sig: int) -> bool:
        """Signal the process (its whole group if it leads one); False if it is gone."""
        if proc.exited.is_set():
            return False
        if proc.popen is not None:
            # Not yet reaped (poll() is None), so the pid is still certainly our child.
            if proc.popen.poll() is not None:
                return False
            if _POSIX and kill_group(proc.pid, sig):
                return True
            # Not a group leader any more (it moved itself to another group), or Windows.
            try:
                proc.popen.send_signal(sig)
            except ProcessLookupError:
                return False
            return True
        try:
            leader = _POSIX and os.getpgid(proc.pid) == proc.pid != os.getpgrp()
            if proc.pidfd is not None:
                signal.pidfd_send_signal(proc.pidfd, sig)
            else:
                # No pidfd: re-check the identity right before signalling.
                if proc.create_time is not None and abs(
                        self._ps.Process(proc.pid).create_time() - proc.create_time) > 1e-3:
                    return False
                os.kill(proc.pid, sig)
        except (ProcessLookupError, PermissionError, self._ps.NoSuchProcess) as exc:
            logger.debug("signal %s to pid %d: %s", sig, proc.pid, exc)
            return False
        if leader:
            # The leader was alive a moment ago (the signal reached it), so the group id is
            # still its own: signal the helpers it started too.
            kill_group(proc.pid, sig)
        return True

    # ------------------------------------------------------------------ exits

    def _track(self, svc: _Service, proc: _Proc) -> None:
        svc.proc = proc
        proc.watcher = asyncio.get_running_loop().create_task(
            self._watch(svc, proc), name=f"watch-{svc.name}-{proc.pid}")

    def _release(self, svc: _Service, proc: _Proc) -> None:
        """Stop watching ``proc`` and leave it running."""
        if proc.watcher is not None:
            proc.watcher.cancel()
        if proc.popen is not None and proc.popen.poll() is None:
            _DISOWNED[:] = [p for p in _DISOWNED if p.poll() is None]
            _DISOWNED.append(proc.popen)
        self._close_pidfd(proc)
        if svc.proc is proc:
            svc.proc = None

    @staticmethod
    def _close_pidfd(proc: _Proc) -> None:
        if proc.pidfd is not None:
            # Unregister before closing: a reused fd number must never wake a stale reader.
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(proc.pidfd)
            with contextlib.suppress(OSError):
                os.close(proc.pidfd)
            proc.pidfd = None

    async def _watch(self, svc: _Service, proc: _Proc) -> None:
        try:
            returncode = await self._until_exit(proc)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("%s: watching pid %d failed; falling back to polling",
                             svc.name, proc.pid)
            returncode = await self._poll_until_exit(proc)
        await self._exited(svc, proc, returncode)

    async def _until_exit(self, proc: _Proc) -> int | None:
        """Wait for the exit: a pidfd in the event loop wakes us the moment it happens."""
        if proc.pidfd is None:
            return await self._poll_until_exit(proc)
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        fd = proc.pidfd

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        try:
            loop.add_reader(fd, wake)
        except (NotImplementedError, ValueError, OSError):
            return await self._poll_until_exit(proc)
        try:
            await ready
        finally:
            # If _release closed the pidfd already, it also unregistered it, and the number
            # may now belong to someone else's reader: leave that alone.
            if proc.pidfd == fd:
                loop.remove_reader(fd)
        if proc.popen is not None:
            # Readable means exited, so waitpid has a status for us (if another child
            # watcher reaped it first, Popen reports 0). Poll on if the kernel disagrees.
            code = proc.popen.poll()
            return code if code is not None else await self._poll_until_exit(proc)
        return None

    async def _poll_until_exit(self, proc: _Proc) -> int | None:
        while True:
            if proc.popen is not None:
                if (code := proc.popen.poll()) is not None:
                    return code
            elif not await asyncio.to_thread(self._still_alive, proc):
                return None
            await asyncio.sleep(self._poll_s)

    def _still_alive(self, proc: _Proc) -> bool:
        try:
            p = self._ps.Process(proc.pid)
            if proc.create_time is not None and abs(p.create_time() - proc.create_time) > 1e-3:
                return False
            return bool(p.status() != getattr(self._ps, "STATUS_ZOMBIE", "zombie"))
        except self._ps.NoSuchProcess:
            return False
        except self._ps.AccessDenied:
            return True

    async def _exited(self, svc: _Service, proc: _Proc, returncode: int | None) -> None:
        proc.exited.set()
        self._close_pidfd(proc)
        if svc.proc is not proc:
            return
        svc.proc = None
        expected = svc.phase == "stopping" or self._closing
        uptime = time.monotonic() - proc.started_mono
        gen = svc.generation
        # A start command that forks a daemon and exits 0 (nginx, most init scripts): follow
        # the daemon through the pid file / match instead of calling it a crash.
        daemonized = (proc.owned and proc.popen is not None and returncode == 0
                      and not expected and bool(svc.cfg.pid_file or svc.cfg.match)
                      and uptime <= self._daemon_window_s)
        if daemonized and await self._follow_daemon(svc, gen):
            return
        event = ServiceExit(
            service=svc.name, pid=proc.pid, create_time=proc.create_time,
            returncode=returncode if proc.popen is not None else None,
            signal=signal_name(returncode), expected=expected, uptime_s=round(uptime, 3),
            message=describe_exit(returncode if proc.popen is not None else None))
        svc.last_exit = event
        if expected:
            logger.debug("%s: pid %d %s (stopped by watchkeeper)", svc.name, proc.pid,
                        event.message)
        else:
            logger.warning("%s: pid %d %s after %.1f s", svc.name, proc.pid, event.message,
                           uptime)
        self.hub.publish(event)

    async def _follow_daemon(self, svc: _Service, gen: int) -> bool:
        svc.phase = "starting"
        try:
            deadline = time.monotonic() + self._daemon_wait_s
            while True:
                if svc.generation != gen or svc.proc is not None:
                    return True  # someone started, stopped or adopted meanwhile
                if await self._adopt_existing(svc, owned=True, generation=gen):
                    assert svc.proc is not None
                    logger.info("%s: start command exited 0; following daemon pid %d (%s)",
                                svc.name, svc.proc.pid, svc.proc.how)
                    return True
                if time.monotonic() >= deadline:
                    return False
                await asyncio.sleep(0.05)
        finally:
            if svc.phase == "starting":
                svc.phase = None

    # ------------------------------------------------------------------ adoption

    async def _adopt_existing(self, svc: _Service, *, owned: bool,
                              generation: int | None = None) -> bool:
        """Find a running instance via pid file / match and watch it; True if one was."""
        cfg = svc.cfg
        if cfg.pid_file is None and not cfg.match:
            return False
        gen = svc.generation if generation is None else generation
        found = await asyncio.to_thread(self._find, cfg)
        if found is None:
            return False
        if svc.proc is not None or svc.generation != gen:
            # Something changed while we searched; what we found is someone else's business.
            return svc.proc is not None
        try:
            # Here, not in the search thread: a search cancelled midway then leaks no fd.
            # pidfd_open and one /proc read take microseconds.
            pidfd = self._open_pidfd(found.pid, found.create_time)
        except _Gone:
            return False
        self._track(svc, _Proc(pid=found.pid, create_time=found.create_time, popen=None,
                               owned=owned, how=found.how, started_mono=time.monotonic()
                               - max(0.0, time.time() - found.create_time),
                               pidfd=pidfd))
        logger.info("%s: watching running pid %d (%s)", svc.name, found.pid, found.how)
        return True

    def _find(self, cfg: ServiceConfig) -> _Found | None:
        """Runs in a worker thread: the pid file first, then the command-line glob."""
        for how, candidate in (("pid file", self._from_pid_file), ("match", self._from_match)):
            try:
                hit = candidate(cfg)
            except Exception as exc:
                logger.debug("looking up by %s failed: %s", how, exc)
                continue
            if hit is None:
                continue
            pid, create_time, text = hit
            return _Found(pid, create_time, text)
        return None

    def _from_pid_file(self, cfg: ServiceConfig) -> tuple[int, float, str] | None:
        if cfg.pid_file is None:
            return None
        try:
            text = cfg.pid_file.read_text()
            written = cfg.pid_file.stat().st_mtime
        except FileNotFoundError:
            return None
        fields = text.split()
        if not fields or not fields[0].isdigit():
            logger.warning("pid file %s does not hold a pid", cfg.pid_file)
            return None
        pid = int(fields[0])
        if pid <= 1 or pid == os.getpid():
            return None
        try:
            proc = self._ps.Process(pid)
            create_time = proc.create_time()
            cmdline = proc.cmdline() if cfg.match else []
            zombie = proc.status() == getattr(self._ps, "STATUS_ZOMBIE", "zombie")
        except self._ps.NoSuchProcess:
            return None
        # A process that started after the pid file was written cannot be the one that
        # wrote it: the pid was reused (1 s of slack for clock granularity).
        if create_time > written + 1.0 or zombie:
            return None
        if cfg.match and not fnmatch.fnmatchcase(" ".join(cmdline), cfg.match):
            return None
        if self._refusal(f"pid file {cfg.pid_file}", pid):
            return None
        return pid, create_time, f"pid file {cfg.pid_file}"

    def _from_match(self, cfg: ServiceConfig) -> tuple[int, float, str] | None:
        if not cfg.match:
            return None
        me = os.getpid()
        zombie = getattr(self._ps, "STATUS_ZOMBIE", "zombie")
        hits = []
        for p in self._ps.process_iter(["pid", "cmdline", "create_time", "status"]):
            info = p.info
            cmdline = info.get("cmdline")
            if info["pid"] in (me, 0, 1) or not cmdline or info.get("status") == zombie:
                continue
            if fnmatch.fnmatchcase(" ".join(cmdline), cfg.match) \
                    and not self._refusal(f"match {cfg.match!r}", info["pid"]):
                hits.append((info["create_time"], info["pid"]))
        if not hits:
            return None
        # The oldest match: the parent of a pre-forking server started before its workers.
        create_time, pid = min(hits)
        if len(hits) > 1:
            logger.debug("match %r: %d processes, taking the oldest (pid %d)", cfg.match,
                         len(hits), pid)
        return pid, create_time, f"match {cfg.match!r}"

    def _refusal(self, how: str, pid: int) -> str | None:
        """Why a process found by ``how`` must not be adopted (logged once per pid), or None:
        the same rules stop_process holds a target to (a thread, init, watchkeeper and its
        ancestors, kernel threads, protected names)."""
        try:
            why = protection(self._ps, self._proc_status, pid, self._guard())
        except TargetRefused as exc:
            why = str(exc)
        if why is not None and (how, pid) not in self._refused:
            self._refused.add((how, pid))
            logger.warning("%s names pid %d, which is not adopted: %s", how, pid, why)
        return why

    def _open_pidfd(self, pid: int, create_time: float) -> int | None:
        if not hasattr(os, "pidfd_open"):
            return None
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            raise _Gone from None
        except OSError:
            return None
        # The pid could have been reused between the lookup and pidfd_open: check again now
        # that the pidfd pins whatever process it names.
        try:
            same = abs(self._ps.Process(pid).create_time() - create_time) < 1e-3
        except self._ps.NoSuchProcess:
            same = False
        if not same:
            os.close(fd)
            raise _Gone
        return fd

    def _check_context(self, svc: _Service, proc: _Proc | None) -> CheckContext:
        env = self._child_env(svc.cfg)
        return CheckContext(pid=proc.pid if proc else None,
                            create_time=proc.create_time if proc else None, ps=self._ps,
                            runner=self._runner, path=env.get("PATH", ""), env=env,
                            cwd=svc.cfg.cwd)

