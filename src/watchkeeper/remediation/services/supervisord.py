"""Programs run by supervisord, over its XML-RPC interface.

xmlrpc.client is synchronous, so every call runs in a worker thread, on a fresh connection
(ServerProxy is not thread-safe) with a socket timeout, so a hung supervisord costs one
thread for at most that long. ``supervisord_url`` is ``http://[user:pass@]host:port/RPC2``
or ``unix:///path/to/supervisor.sock``.
"""

from __future__ import annotations

import asyncio
import http.client
import logging
import socket
import ssl
import time
import xmlrpc.client
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any, Literal
from urllib.parse import urlsplit

import psutil

from watchkeeper.aio import wait_for
from watchkeeper.config import ServiceConfig

from .base import (
    CommandRunner,
    OperationResult,
    ServiceState,
    ServiceStatus,
    SubprocessRunner,
    UnknownService,
    base_env,
)
from .checks import CheckContext, assess, public_url

logger = logging.getLogger(__name__)

#: supervisor.xmlrpc.Faults codes, as messages a user can act on.
FAULTS: dict[int, str] = {
    2: "supervisord refused the call (incorrect parameters)",
    6: "supervisord is shutting down",
    10: "supervisord has no such program",
    20: "its command's executable does not exist",
    21: "its command's file is not executable",
    30: "supervisord reported a failure",
    40: "it exited right after starting (abnormal termination)",
    50: "supervisord could not spawn it",
    60: "already running",
    70: "not running",
}
_ALREADY_STARTED, _NOT_RUNNING = 60, 70
_START_FAILURES = (20, 21, 40, 50)

_STATES: dict[str, ServiceState] = {
    "RUNNING": "running", "STOPPING": "running", "STARTING": "starting",
    "BACKOFF": "starting", "STOPPED": "stopped", "FATAL": "failed", "UNKNOWN": "unknown",
}


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (supervisord's default ``unix_http_server``)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class _Transport(xmlrpc.client.Transport):
    """An XML-RPC transport with a socket timeout, over TCP, TLS or a unix socket."""

    def __init__(self, timeout: float, *, secure: bool, unix_path: str | None) -> None:
        super().__init__()
        self._timeout = timeout
        self._tls = ssl.create_default_context() if secure else None
        self._unix_path = unix_path

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        cached_host, cached = self._connection
        if cached is not None and host == cached_host:
            return cached
        chost, self._extra_headers, _ = self.get_host_info(host)
        conn: http.client.HTTPConnection
        if self._unix_path is not None:
            conn = _UnixConnection(self._unix_path, self._timeout)
        elif self._tls is not None:
            conn = http.client.HTTPSConnection(chost, timeout=self._timeout, context=self._tls)
        else:
            conn = http.client.HTTPConnection(chost, timeout=self._timeout)
        self._connection = host, conn
        return conn


class SupervisordManager:
    """Services with ``manager: supervisord``; ``unit`` is the program (``group:name``)."""

    def __init__(self, services: Mapping[str, ServiceConfig], *, ps: Any = psutil,
                 runner: CommandRunner | None = None, timeout_s: float = 60.0,
                 status_timeout_s: float = 10.0) -> None:
        self._services = dict(services)
        self._ps = ps
        self._runner = runner or SubprocessRunner()  # only for command health checks
        self._timeout_s = timeout_s
        self._status_timeout_s = status_timeout_s

    def unit(self, name: str) -> str:
        """The supervisord program name for service ``name``."""
        return self._config(name).unit or name

    def _config(self, name: str) -> ServiceConfig:
        try:
            return self._services[name]
        except KeyError:
            raise UnknownService(f"no supervisord-managed service {name!r}") from None

    def _call_sync(self, url: str, timeout: float, method: str, *args: Any) -> Any:
        """Runs in a worker thread: one XML-RPC call on a fresh connection."""
        parts = urlsplit(url)
        if parts.scheme == "unix":
            uri = "http://localhost/RPC2"
            transport = _Transport(timeout, secure=False, unix_path=parts.path)
        else:
            uri = url
            transport = _Transport(timeout, secure=parts.scheme == "https", unix_path=None)
        with xmlrpc.client.ServerProxy(uri, transport=transport, allow_none=True) as proxy:
            return getattr(proxy, method)(*args)

    async def _call(self, name: str, timeout: float, method: str, *args: Any) -> Any:
        url = self._config(name).supervisord_url
        # The socket timeout bounds each read; the outer one bounds a trickling answer.
        return await wait_for(
            asyncio.to_thread(self._call_sync, url, timeout, method, *args), timeout * 2 + 1)

    def _explain(self, name: str, exc: BaseException) -> str:
        url = public_url(self._config(name).supervisord_url)
        program = self.unit(name)
        if isinstance(exc, xmlrpc.client.Fault):
            known = FAULTS.get(exc.faultCode)
            return f"{program}: {known}" if known else f"{program}: {exc.faultString}"
        if isinstance(exc, xmlrpc.client.ProtocolError):
            if exc.errcode == 401:
                return f"supervisord at {url} refused the credentials (HTTP 401)"
            return f"supervisord at {url} answered HTTP {exc.errcode} {exc.errmsg}"
        if isinstance(exc, (asyncio.TimeoutError, socket.timeout, TimeoutError)):
            return f"supervisord at {url} did not answer in time"
        if isinstance(exc, ConnectionRefusedError | FileNotFoundError):
            return f"supervisord is not reachable at {url} (is it running?)"
        if isinstance(exc, OSError):
            return f"supervisord at {url}: {exc.strerror or exc}"
        return f"supervisord at {url}: {type(exc).__name__}: {exc}"

    async def status(self, name: str, *, checks: bool = True) -> ServiceStatus:
        """``supervisor.getProcessInfo`` mapped to a ServiceStatus, plus health checks."""
        cfg = self._config(name)
        current = await self._info(name)
        ctx = CheckContext(pid=current.pid, create_time=current.create_time, ps=self._ps,
                           runner=self._runner, env={**base_env(), **cfg.env}, cwd=cfg.cwd)
        return await assess(current, cfg.checks if checks else (), ctx)

    async def _info(self, name: str) -> ServiceStatus:
        try:
            info = await self._call(name, self._status_timeout_s, "supervisor.getProcessInfo",
                                    self.unit(name))
        except (xmlrpc.client.Error, OSError, asyncio.TimeoutError) as exc:
            return ServiceStatus(name=name, manager="supervisord", state="unknown",
                                 detail=self._explain(name, exc))
        statename = str(info.get("statename", "UNKNOWN"))
        state = _STATES.get(statename, "unknown")
        if statename == "EXITED":
            state = "stopped" if info.get("exitstatus") == 0 else "failed"
        pid = int(info.get("pid") or 0) or None
        stamp = info.get("start") if state in ("running", "starting") else info.get("stop")
        since = datetime.fromtimestamp(stamp, timezone.utc) if stamp else None
        detail = statename
        if description := info.get("description"):
            detail += f": {description}"
        if (spawnerr := info.get("spawnerr")) and spawnerr not in detail:
            detail += f" ({spawnerr})"
        create_time = None
        if pid:
            try:
                create_time = float(await asyncio.to_thread(
                    lambda: self._ps.Process(pid).create_time()))
            except Exception:  # gone or unreadable: the state stands without it
                create_time = None
        return ServiceStatus(name=name, manager="supervisord", state=state, pid=pid,
                             create_time=create_time, since=since, detail=detail)

    async def _op(self, name: str, verb: Literal["start", "stop"]) -> tuple[bool, str]:
        program = self.unit(name)
        method = "supervisor.startProcess" if verb == "start" else "supervisor.stopProcess"
        try:
            # wait=True: supervisord answers once the program is RUNNING (after startsecs)
            # or STOPPED, so success means the job is done.
            await self._call(name, self._timeout_s, method, program, True)
        except xmlrpc.client.Fault as exc:
            if exc.faultCode == (_ALREADY_STARTED if verb == "start" else _NOT_RUNNING):
                return True, f"{program} {FAULTS[exc.faultCode]}"
            message = self._explain(name, exc)
            if exc.faultCode in _START_FAILURES:
                # The fault only says that it failed; the program's state says why.
                now = await self._info(name)
                message += f" ({now.detail})"
            return False, message
        except (xmlrpc.client.Error, OSError, asyncio.TimeoutError) as exc:
            return False, self._explain(name, exc)
        return True, f"{'started' if verb == 'start' else 'stopped'} {program}"

    async def _run(self, name: str, op: Literal["start", "stop", "restart"]) -> OperationResult:
        started = time.monotonic()
        verbs: tuple[Literal["start", "stop"], ...] = (
            ("stop", "start") if op == "restart" else (op,))
        ok, messages = True, []
        for verb in verbs:
            ok, message = await self._op(name, verb)
            messages.append(message)
            if not ok:
                break
        message = "; ".join(messages)
        (logger.info if ok else logger.warning)("%s: %s: %s", name, op, message)
        return OperationResult(service=name, operation=op, ok=ok, message=message,
                               duration_s=time.monotonic() - started)

    async def start(self, name: str) -> OperationResult:
        """``supervisor.startProcess(name, wait=True)``."""
        return await self._run(name, "start")

    async def stop(self, name: str) -> OperationResult:
        """``supervisor.stopProcess(name, wait=True)``."""
        return await self._run(name, "stop")

    async def restart(self, name: str) -> OperationResult:
        """Stop (not running is fine), then start."""
        return await self._run(name, "restart")

    async def aclose(self) -> None:
        """Nothing to release: connections are opened per call."""
