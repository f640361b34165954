"""The service-manager contract: status models, operation results, exits, the command boundary.

Every backend (process, systemd, windows, supervisord) speaks the same async
:class:`ServiceManager` protocol and reports in the same frozen models, so the RemediatorAgent
and the SensorAgent never care which manager sits underneath. Side effects go through
injected boundaries: a :class:`CommandRunner` for every command run (tests pass a fake that
records argv), psutil for process facts.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Literal, Protocol

from pydantic import Field

from watchkeeper.aio import wait_for
from watchkeeper.events import Frozen, utcnow
from watchkeeper.redact import redact_text
from watchkeeper.remediation.argv import FIXED_PATH as FIXED_PATH
from watchkeeper.remediation.argv import ExecutableNotFound as ExecutableNotFound
from watchkeeper.remediation.argv import kill_group as kill_group
from watchkeeper.remediation.argv import resolve_argv as resolve_argv

logger = logging.getLogger(__name__)

ManagerName = Literal["process", "systemd", "windows", "supervisord"]
ServiceState = Literal["running", "stopped", "failed", "unknown", "starting"]
Operation = Literal["start", "stop", "restart"]
CheckKind = Literal["http", "tcp", "command", "process"]

#: Where executables are looked up; never inherited from our own environment.
SAFE_PATH = FIXED_PATH
#: Characters of command output kept in results (the tail: errors come last).
OUTPUT_EXCERPT = 2000


def base_env() -> dict[str, str]:
    """The fixed environment every command and managed process starts from.

    Rebuilt from scratch rather than copied from ours, so no LD_PRELOAD, proxy setting or
    credential (OPENAI_API_KEY, tokens) leaks into a child.
    """
    env = {"PATH": SAFE_PATH, "LANG": "C.UTF-8"}
    if sys.platform == "win32":
        root = os.environ.get("SYSTEMROOT", r"C:\Windows")
        env = {"SYSTEMROOT": root, "PATH": rf"{root}\System32;{root}"}
    else:
        import pwd

        with contextlib.suppress(KeyError):
            env["HOME"] = pwd.getpwuid(os.getuid()).pw_dir
    return env


# --------------------------------------------------------------------------- models


class CheckResult(Frozen):
    """The outcome of one health check."""

    kind: CheckKind
    target: str
    ok: bool
    message: str
    duration_ms: float


class ServiceStatus(Frozen):
    """What one service is doing now, as its manager sees it, plus its health checks."""

    name: str
    manager: ManagerName
    state: ServiceState
    pid: int | None = None
    create_time: float | None = Field(None, description="psutil create_time of pid")
    since: datetime | None = Field(None, description="when it entered this state, if known")
    healthy: bool | None = Field(None, description="all checks passed; None = no checks ran")
    checks: tuple[CheckResult, ...] = ()
    detail: str = ""


class OperationResult(Frozen):
    """The outcome of start/stop/restart; expected failures are results, never exceptions."""

    service: str
    operation: Operation
    ok: bool
    message: str
    argv: tuple[str, ...] = ()
    output: str = ""
    duration_s: float = 0.0


class ServiceExit(Frozen):
    """A managed process ended; ``expected`` is True when watchkeeper was stopping it."""

    service: str
    pid: int
    create_time: float | None = None
    returncode: int | None = Field(None, description="None when it was not our child")
    signal: str | None = Field(None, description='e.g. "SIGKILL" when a signal ended it')
    expected: bool
    at: datetime = Field(default_factory=utcnow)
    uptime_s: float | None = None
    message: str


class UnknownService(LookupError):
    """A service name that is not in the configuration."""


# --------------------------------------------------------------------------- protocol


class ServiceManager(Protocol):
    """One backend (process, systemd, windows, supervisord) for the services it was given."""

    async def status(self, name: str, *, checks: bool = True) -> ServiceStatus:
        """Current state (and health checks unless ``checks`` is False); never raises."""
        ...

    async def start(self, name: str) -> OperationResult:
        """Start it; starting a running service succeeds and says so."""
        ...

    async def stop(self, name: str) -> OperationResult:
        """Stop it; stopping a stopped service succeeds and says so."""
        ...

    async def restart(self, name: str) -> OperationResult:
        """Stop (if running) and start again."""
        ...

    async def aclose(self) -> None:
        """Release resources (the process backend also stops what it started)."""
        ...


# --------------------------------------------------------------------------- commands


class CommandResult(Frozen):
    """What one command did: the argv run, its exit code, output excerpts, how long."""

    argv: tuple[str, ...]
    returncode: int | None = Field(None, description="None if it never ran or was killed")
    stdout: str = ""
    stderr: str = ""
    duration_s: float = 0.0
    timed_out: bool = False
    error: str | None = Field(None, description="why it could not run at all")

    @property
    def ok(self) -> bool:
        """Ran to completion with exit code 0."""
        return self.returncode == 0 and not self.timed_out and self.error is None

    def excerpt(self, limit: int = OUTPUT_EXCERPT) -> str:
        """The tail of stdout and stderr together, redacted."""
        text = "\n".join(part for part in (self.stdout.strip(), self.stderr.strip()) if part)
        return excerpt(text, limit)

    def describe(self) -> str:
        """One line on why it failed (or that it did not)."""
        if self.error:
            return self.error
        if self.timed_out:
            return f"{Path(self.argv[0]).name} timed out after {self.duration_s:.1f} s"
        if self.returncode == 0:
            return "ok"
        last = next((ln.strip() for ln in reversed(
            (self.stderr.strip() or self.stdout.strip()).splitlines()) if ln.strip()), "")
        tail = f": {excerpt(last, 300)}" if last else ""
        return f"{Path(self.argv[0]).name} exited with code {self.returncode}{tail}"


class CommandRunner(Protocol):
    """Runs an argv (never a shell string) with a timeout: the boundary tests fake."""

    async def run(self, argv: Sequence[str], *, timeout_s: float,
                  env: Mapping[str, str] | None = None,
                  cwd: Path | None = None) -> CommandResult:
        """Run ``argv`` to completion or until ``timeout_s``; never raises for a failure."""
        ...


def excerpt(text: str, limit: int = OUTPUT_EXCERPT) -> str:
    """The last ``limit`` characters of ``text``, cut at a line start, redacted."""
    text = text.strip()
    if len(text) > limit:
        cut = text[-limit:]
        nl = cut.find("\n")
        # Cut at a line boundary so a secret is never split and so escapes its pattern.
        text = "…" + (cut[nl:] if 0 <= nl < limit // 2 else cut)
    return redact_text(text)


def _read_tail(fh: IO[bytes], limit: int) -> str:
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    fh.seek(max(0, size - limit))
    return fh.read().decode("utf-8", errors="replace")


class SubprocessRunner:
    """The real CommandRunner: a child in its own session, a fixed environment, a timeout.

    Output goes to temporary files rather than pipes: a grandchild that keeps a pipe open
    would otherwise hold us (and asyncio's transport) until it exits.
    """

    def __init__(self, *, env: Mapping[str, str] | None = None, cwd: Path = Path("/"),
                 max_output: int = 64_000) -> None:
        self._env = dict(base_env() if env is None else env)
        self._cwd = cwd
        self._max_output = max_output

    async def run(self, argv: Sequence[str], *, timeout_s: float,
                  env: Mapping[str, str] | None = None,
                  cwd: Path | None = None) -> CommandResult:
        """Run ``argv``; on timeout kill its whole process group."""
        argv = tuple(argv)
        started = time.monotonic()
        # Creating two unlinked temporary files is a few microseconds: no thread needed.
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=err,
                    env=dict(self._env if env is None else env), cwd=cwd or self._cwd,
                    start_new_session=True, close_fds=True)
            except OSError as exc:
                return CommandResult(argv=argv, error=f"cannot run {argv[0]}: "
                                     f"{exc.strerror or exc}",
                                     duration_s=time.monotonic() - started)
            timed_out = False
            try:
                await wait_for(proc.wait(), timeout_s)
            except asyncio.TimeoutError:
                timed_out = True
                logger.warning("%s timed out after %.1f s; killing its process group",
                               argv[0], timeout_s)
                kill_group(proc.pid, signal.SIGKILL)
                await proc.wait()
            finally:
                if proc.returncode is None:  # cancelled: leave nothing running behind us
                    kill_group(proc.pid, signal.SIGKILL)
                    with contextlib.suppress(ProcessLookupError):
                        await asyncio.shield(proc.wait())
            stdout, stderr = await asyncio.to_thread(
                lambda: (_read_tail(out, self._max_output), _read_tail(err, self._max_output)))
        return CommandResult(argv=argv, returncode=None if timed_out else proc.returncode,
                             stdout=stdout, stderr=stderr, timed_out=timed_out,
                             duration_s=time.monotonic() - started)


# --------------------------------------------------------------------------- exits


ExitCallback = Callable[[ServiceExit], Awaitable[None] | None]


class ExitStream:
    """An async iterator over service exits; subscribed from creation, so none is missed."""

    def __init__(self, hub: ExitHub, maxsize: int) -> None:
        self._hub = hub
        self._queue: asyncio.Queue[ServiceExit | None] = asyncio.Queue(maxsize)
        self._closed = False

    def _put(self, item: ServiceExit) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            # A consumer this far behind has stopped reading; say so instead of growing.
            logger.warning("exit stream full; dropped the exit of %s (pid %s)",
                           item.service, item.pid)

    def __aiter__(self) -> AsyncIterator[ServiceExit]:
        return self

    async def __anext__(self) -> ServiceExit:
        if self._closed and self._queue.empty():
            raise StopAsyncIteration
        item = await self._queue.get()
        if item is None:
            raise StopAsyncIteration
        return item

    def close(self) -> None:
        """Stop receiving; a pending ``__anext__`` ends the iteration."""
        if not self._closed:
            self._closed = True
            self._hub._streams.discard(self)
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(None)

    async def __aenter__(self) -> ExitStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class ExitHub:
    """Fans service exits out to callbacks and streams, the moment the exit is seen."""

    def __init__(self) -> None:
        self._callbacks: list[ExitCallback] = []
        self._streams: set[ExitStream] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def on_exit(self, callback: ExitCallback) -> Callable[[], None]:
        """Call ``callback(exit)`` on every exit (a coroutine is run as a task); returns
        a function that unsubscribes."""
        self._callbacks.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._callbacks.remove(callback)

        return unsubscribe

    def exits(self, maxsize: int = 1000) -> ExitStream:
        """A stream of every exit from now on (close it when done)."""
        stream = ExitStream(self, maxsize)
        self._streams.add(stream)
        return stream

    def publish(self, item: ServiceExit) -> None:
        """Deliver ``item``; a failing callback is logged, never propagated."""
        for stream in list(self._streams):
            stream._put(item)
        for callback in list(self._callbacks):
            try:
                result = callback(item)
            except Exception:
                logger.exception("exit callback %r failed for %s", callback, item.service)
                continue
            if inspect.isawaitable(result):
                task = asyncio.ensure_future(result)
                self._tasks.add(task)
                task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("exit callback failed: %s", exc, exc_info=exc)

    async def aclose(self) -> None:
        """End every stream and cancel callbacks still running."""
        for stream in list(self._streams):
            stream.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def signal_name(returncode: int | None) -> str | None:
    """``-9`` -> ``"SIGKILL"`` (asyncio/subprocess report a signal as a negative code)."""
    if returncode is None or returncode >= 0:
        return None
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def describe_exit(returncode: int | None) -> str:
    """A short human phrase for an exit status."""
    if returncode is None:
        return "exited (status unknown: not our child)"
    if (name := signal_name(returncode)) is not None:
        return f"killed by {name}"
    return f"exited with code {returncode}"
