"""Run a command the safe way: argv only, a resolved executable, a fixed environment, a timeout.

Every command a remediation runs goes through a CommandRunner: no shell ever parses anything,
the executable is resolved against a fixed PATH (never the caller's), the environment is
rebuilt from scratch (so no LD_PRELOAD, proxies or credentials leak in), the child gets its
own session so a timeout can kill it together with everything it started, and only a
bounded, redacted excerpt of its output is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from watchkeeper.aio import wait_for
from watchkeeper.redact import redact_text
from watchkeeper.remediation.argv import (
    FIXED_PATH,
    ExecutableNotFound,
    kill_group,
    resolve_argv,
)

logger = logging.getLogger(__name__)

#: Where executables are looked up; never inherited from the environment.
#: The whole environment of a child process.
FIXED_ENV: Mapping[str, str] = {"PATH": FIXED_PATH, "LANG": "C.UTF-8"}
#: Bytes of output kept from the start and from the end of a command's output.
HEAD_BYTES = 2048
TAIL_BYTES = 2048
#: How long output may keep flowing after the command exits (a child it left behind may hold
#: the pipe open for ever; we do not wait for it).
DRAIN_AFTER_EXIT_S = 0.5


#: The action-side name of the shared error (run_script catches it).
CommandNotFound = ExecutableNotFound


class OutputExcerpt:
    """Keeps the first and last few KB of a stream and counts the rest."""

    def __init__(self, head: int = HEAD_BYTES, tail: int = TAIL_BYTES) -> None:
        self._head_cap = head
        self._tail_cap = tail
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        """Add a chunk of output."""
        self.total += len(data)
        room = self._head_cap - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if data:
            self._tail += data
            if len(self._tail) > self._tail_cap:
                del self._tail[: len(self._tail) - self._tail_cap]

    def text(self) -> str:
        """The excerpt as redacted text, with a marker where bytes were left out."""
        head, tail = bytes(self._head), bytes(self._tail)
        omitted = self.total - len(head) - len(tail)
        if omitted > 0:
            # Cut at line boundaries so no secret is split in half and so escapes its pattern.
            if b"\n" in head:
                kept = head[: head.rindex(b"\n") + 1]
                omitted += len(head) - len(kept)
                head = kept
            if b"\n" in tail[:-1]:
                kept = tail[tail.index(b"\n") + 1:]
                omitted += len(tail) - len(kept)
                tail = kept
            middle = f"…[{omitted} bytes omitted]…\n".encode()
            if head and not head.endswith(b"\n"):
                middle = b"\n" + middle
            raw = head + middle + tail
        else:
            raw = head + tail
        return redact_text(raw.decode("utf-8", errors="replace"))


@dataclass(frozen=True)
class CommandOutput:
    """What one command did: the argv run, exit code (None if killed), output excerpt."""

    argv: tuple[str, ...]
    exit_code: int | None
    output: str
    output_bytes: int
    duration_s: float
    timed_out: bool = False


class CommandRunner(Protocol):
    """Runs an argv (never a shell string) with a timeout; the boundary tests fake."""

    def resolve(self, argv: Sequence[str]) -> tuple[str, ...]:
        """The argv as it would run (absolute executable); raise CommandNotFound."""
        ...

    async def run(self, argv: Sequence[str], *, timeout_s: float) -> CommandOutput:
        """Run ``argv`` to completion or until ``timeout_s``; raise CommandNotFound."""
        ...


class _Capture(asyncio.Protocol):
    """Feeds a read pipe into an OutputExcerpt and reports when the pipe closes."""

    def __init__(self, sink: OutputExcerpt, closed: asyncio.Future[None]) -> None:
        self._sink = sink
        self._closed = closed

    def data_received(self, data: bytes) -> None:
        self._sink.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed.done():
            self._closed.set_result(None)


class SubprocessRunner:
    """The real CommandRunner: asyncio subprocesses in their own session, fixed environment."""

    def __init__(self, *, path: str = FIXED_PATH, env: Mapping[str, str] | None = None,
                 cwd: str = "/", clock: Callable[[], float] = time.monotonic,
                 head_bytes: int = HEAD_BYTES, tail_bytes: int = TAIL_BYTES) -> None:
        self.path = path
        self.env = dict(FIXED_ENV if env is None else env)
        self.cwd = cwd
        self._clock = clock
        self._head = head_bytes
        self._tail = tail_bytes

    def resolve(self, argv: Sequence[str]) -> tuple[str, ...]:
        """The argv as it would run (absolute executable); raise CommandNotFound."""
        return resolve_argv(argv, path=self.path)

    async def run(self, argv: Sequence[str], *, timeout_s: float) -> CommandOutput:
        """Run ``argv``; on timeout kill its whole process group."""
        resolved = self.resolve(argv)
        loop = asyncio.get_running_loop()
        excerpt = OutputExcerpt(self._head, self._tail)
        started = self._clock()
        # Our own pipe instead of asyncio's: asyncio's Process.wait() also waits for its
        # pipes to close, which a grandchild holding stdout would delay until it exits.
        read_fd, write_fd = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                *resolved, stdin=asyncio.subprocess.DEVNULL, stdout=write_fd, stderr=write_fd,
                env=self.env, cwd=self.cwd, start_new_session=True, close_fds=True)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        closed: asyncio.Future[None] = loop.create_future()
        transport, _ = await loop.connect_read_pipe(
            lambda: _Capture(excerpt, closed), os.fdopen(read_fd, "rb", buffering=0))
        timed_out = False
        try:
            try:
                await wait_for(proc.wait(), timeout_s)
            except asyncio.TimeoutError:
                timed_out = True
                logger.warning("%s timed out after %.1f s; killing its process group",
                               resolved[0], timeout_s)
                _kill_group(proc.pid)
                await proc.wait()
            with contextlib.suppress(asyncio.TimeoutError):
                await wait_for(asyncio.shield(closed), DRAIN_AFTER_EXIT_S)
        finally:
            if proc.returncode is None:  # cancelled: leave nothing running
                _kill_group(proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    await asyncio.shield(proc.wait())
            transport.close()
        code = proc.returncode
        return CommandOutput(argv=resolved, exit_code=None if timed_out else code,
                             output=excerpt.text(), output_bytes=excerpt.total,
                             duration_s=self._clock() - started, timed_out=timed_out)


def _kill_group(pgid: int) -> None:
    # start_new_session made the child the leader of a group with its own pid as the id.
    kill_group(pgid, signal.SIGKILL)
