"""Health checks of a service: process alive, TCP port open, HTTP status, custom command.

Every check has a deadline and never blocks the event loop: TCP and HTTP use asyncio
streams (cancellable, no thread held by a server that never answers), commands go through
the injected CommandRunner, psutil calls run in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from watchkeeper.aio import wait_for
from watchkeeper.config import HealthCheck

from .base import (
    SAFE_PATH,
    CheckKind,
    CheckResult,
    CommandRunner,
    ExecutableNotFound,
    ServiceStatus,
    excerpt,
    resolve_argv,
)

logger = logging.getLogger(__name__)

#: The status line of an HTTP answer is short; anything longer is not HTTP.
_MAX_STATUS_LINE = 8192
#: Seconds granted to close a connection politely after a check (TLS close_notify).
_CLOSE_GRACE_S = 0.5


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def _why(exc: BaseException) -> str:
    """A short, stable reason for a failed connection."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host ({exc.strerror})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "connection closed before an answer"
    if isinstance(exc, ValueError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await wait_for(writer.wait_closed(), _CLOSE_GRACE_S)


async def check_tcp(target: str, timeout_s: float) -> CheckResult:
    """``host:port`` accepts a TCP connection within ``timeout_s``."""
    started = time.perf_counter()
    host, _, port_text = target.rpartition(":")
    port = int(port_text) if port_text.isdigit() else 0
    if not 0 < port < 65536:
        return CheckResult(kind="tcp", target=target, ok=False, duration_ms=_ms(started),
                           message=f"invalid port {port_text!r}")
    try:
        _, writer = await wait_for(asyncio.open_connection(host, port), timeout_s)
    except asyncio.TimeoutError:
        return CheckResult(kind="tcp", target=target, ok=False, duration_ms=_ms(started),
                           message=f"no connection within {timeout_s:g} s")
    except (OSError, ValueError) as exc:
        return CheckResult(kind="tcp", target=target, ok=False, duration_ms=_ms(started),
                           message=_why(exc))
    await _close(writer)
    return CheckResult(kind="tcp", target=target, ok=True, duration_ms=_ms(started),
                       message="port open")


def public_url(url: str) -> str:
    """The URL without user:password, safe to log and report."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


async def _http_status(url: str) -> int:
    parts = urlsplit(url)
    https = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if https else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = [f"GET {path} HTTP/1.1", f"Host: {parts.netloc.rpartition('@')[2]}",
               "User-Agent: watchkeeper-healthcheck", "Accept: */*", "Connection: close"]
    if parts.username is not None:
        token = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers.append(f"Authorization: Basic {base64.b64encode(token.encode()).decode()}")
    ctx = ssl.create_default_context() if https else None
    reader, writer = await asyncio.open_connection(host, port, ssl=ctx,
                                                   limit=_MAX_STATUS_LINE)
    try:
        writer.write(("\r\n".join(headers) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        line = await reader.readline()
    finally:
        await _close(writer)
    fields = line.decode("latin-1").split(None, 2)
    if len(fields) < 2 or not fields[0].startswith("HTTP/") or not fields[1].isdigit():
        shown = line[:80].decode("latin-1").strip() or "nothing"
        raise ValueError(f"not an HTTP answer (got {shown!r})")
    return int(fields[1])


async def check_http(url: str, timeout_s: float) -> CheckResult:
    """``url`` answers a GET with a 2xx or 3xx status within ``timeout_s`` (no redirects)."""
    started = time.perf_counter()
    shown = public_url(url)
    try:
        status = await wait_for(_http_status(url), timeout_s)
    except asyncio.TimeoutError:
        return CheckResult(kind="http", target=shown, ok=False, duration_ms=_ms(started),
                           message=f"no answer within {timeout_s:g} s")
    except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        return CheckResult(kind="http", target=shown, ok=False, duration_ms=_ms(started),
                           message=_why(exc))
    return CheckResult(kind="http", target=shown, ok=200 <= status < 400,
                       duration_ms=_ms(started), message=f"HTTP {status}")


async def check_command(argv: Sequence[str], timeout_s: float, *, runner: CommandRunner,
                        path: str = SAFE_PATH, env: Mapping[str, str] | None = None,
                        cwd: Path | None = None) -> CheckResult:
    """``argv`` (never a shell string) exits 0 within ``timeout_s``."""
    started = time.perf_counter()
    shown = " ".join(argv)
    try:
        resolved = resolve_argv(argv, path=path, cwd=cwd)
    except ExecutableNotFound as exc:
        return CheckResult(kind="command", target=shown, ok=False, duration_ms=_ms(started),
                           message=str(exc))
    result = await runner.run(resolved, timeout_s=timeout_s, env=env, cwd=cwd)
    message = "exit 0" if result.ok else result.describe()
    if not result.ok and (out := result.excerpt(300)):
        message = f"{message}\n{out}" if out not in message else message
    return CheckResult(kind="command", target=shown, ok=result.ok, duration_ms=_ms(started),
                       message=message)


def _alive(ps: Any, pid: int, create_time: float | None) -> tuple[bool, str]:
    try:
        proc = ps.Process(pid)
        if create_time is not None and abs(proc.create_time() - create_time) > 1e-3:
            return False, f"pid {pid} now belongs to another process"
        status = proc.status()
    except ps.NoSuchProcess:
        return False, f"pid {pid} is gone"
    except ps.AccessDenied:
        # It exists (we could not read it); alive is the honest answer.
        return True, f"pid {pid} alive (details access denied)"
    if status == getattr(ps, "STATUS_ZOMBIE", "zombie"):
        return False, f"pid {pid} is a zombie (exited, not yet reaped)"
    return True, f"pid {pid} alive"


async def check_process(pid: int | None, create_time: float | None, *, ps: Any) -> CheckResult:
    """The service's process exists, is the same process (pid + start time) and is no zombie."""
    started = time.perf_counter()
    if pid is None or pid <= 0:
        return CheckResult(kind="process", target="-", ok=False, duration_ms=_ms(started),
                           message="no process known")
    ok, message = await asyncio.to_thread(_alive, ps, pid, create_time)
    return CheckResult(kind="process", target=str(pid), ok=ok, duration_ms=_ms(started),
                       message=message)


@dataclass(frozen=True)
class CheckContext:
    """What checks need to know about the service: its process, how to run commands."""

    pid: int | None = None
    create_time: float | None = None
    ps: Any = None
    runner: CommandRunner | None = None
    path: str = SAFE_PATH
    env: Mapping[str, str] | None = None
    cwd: Path | None = None


async def run_check(check: HealthCheck, ctx: CheckContext = CheckContext()) -> CheckResult:
    """Run one configured check; a bug in a check is a failed check, never an exception."""
    try:
        if check.http is not None:
            return await check_http(check.http, check.timeout_s)
        if check.tcp is not None:
            return await check_tcp(check.tcp, check.timeout_s)
        if check.command is not None:
            if ctx.runner is None:
                raise RuntimeError("no command runner given")
            return await check_command(check.command, check.timeout_s, runner=ctx.runner,
                                       path=ctx.path, env=ctx.env, cwd=ctx.cwd)
        ps = ctx.ps
        if ps is None:
            import psutil as ps
        return await check_process(ctx.pid, ctx.create_time, ps=ps)
    except Exception as exc:
        logger.exception("health check %s failed unexpectedly", check)
        kind: CheckKind = ("http" if check.http else "tcp" if check.tcp
                           else "command" if check.command else "process")
        return CheckResult(kind=kind, target="?", ok=False, duration_ms=0.0,
                           message=excerpt(f"check error: {type(exc).__name__}: {exc}", 300))


async def run_checks(checks: Sequence[HealthCheck],
                     ctx: CheckContext = CheckContext()) -> tuple[CheckResult, ...]:
    """Run all checks at once (the slowest bounds the total)."""
    if not checks:
        return ()
    return tuple(await asyncio.gather(*(run_check(c, ctx) for c in checks)))


def healthy(results: Sequence[CheckResult]) -> bool | None:
    """True if every check passed, False if one failed, None if there were none."""
    return all(r.ok for r in results) if results else None


async def assess(status: ServiceStatus, checks: Sequence[HealthCheck],
                 ctx: CheckContext) -> ServiceStatus:
    """``status`` with its health checks: run unless it is stopped or failed (then unhealthy)."""
    if status.state in ("stopped", "failed"):
        return status.model_copy(update={"healthy": False})
    results = await run_checks(checks, ctx)
    return status.model_copy(update={"checks": results, "healthy": healthy(results)})
