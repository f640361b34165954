"""Connection limits for `serve`: the web side can never take the agents' file descriptors.

Slow clients (slowloris) and connection floods used to hold one file descriptor each for as
long as they liked, until the process had none left: the status file could not be written
and `/api/health` stopped answering. Here, as nginx (worker_connections,
client_header_timeout) and Apache (mod_reqtimeout) do it:

- the soft RLIMIT_NOFILE is raised at start if it is below what the connections and the
  agents need (up to the hard limit);
- at most ``limit`` connections are open at once, ``limit`` kept below what the descriptor
  limit leaves after a reserve for the agents (stores, status file, subprocesses);
- a client has ``timeout`` seconds to send a whole request (head and body, counted from
  the connection or the previous answer, not reset by each byte that trickles in);
- at the limit, a new connection takes the place of the connection that has waited
  longest for its request, if that one has waited at least ``EVICT_AFTER_S``; otherwise
  it is answered 503 and closed at once.

uvicorn has no timeout for a request head, so its h11 protocol is extended rather than
replaced; h11 (pure Python) is used whatever else is installed, for its bounded head size
(16 KiB) and for the parser state that says whether a request is still arriving.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

#: File descriptors kept for the agents, beyond what they hold when the server starts:
#: subprocesses (pipes), the status file's temporary file, SQLite's temporary files,
#: psutil's reads of /proc, the LLM client's connections, log rotation.
AGENT_FD_RESERVE = 128

#: Connections accepted in one go (and the kernel's queue of pending ones): each accepted
#: connection holds a descriptor until the loop gets to close it, so this counts too.
BACKLOG = 64

#: Fewest connections served whatever the descriptor limit says (the dashboard needs a few).
MIN_CONNECTIONS = 8

#: A connection waiting for its request may be displaced at the limit only after this long,
#: so a client that has just connected gets to send its request.
EVICT_AFTER_S = 1.0

_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
         b"retry-after: 1\r\nconnection: close\r\nx-content-type-options: nosniff\r\n"
         b"cache-control: no-store\r\n")
_SLOW = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
         b"connection: close\r\nx-content-type-options: nosniff\r\ncache-control: no-store\r\n")


def _raw_answer(head: bytes, error: str, detail: str) -> bytes:
    from watchkeeper.api.schemas import ErrorBody

    body = ErrorBody(error=error, detail=detail).model_dump_json().encode()
    return head + b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body


def fds_needed(max_connections: int) -> int:
    """Open files `serve` wants: its connections, a burst of accepts, the agents' share
    and what the process holds at rest (a generous 64)."""
    return max_connections + BACKLOG + AGENT_FD_RESERVE + 64


def raise_fd_limit(needed: int) -> int:
    """Raise the soft limit on open files to ``needed`` (at most the hard limit) if it is
    lower; returns the soft limit now.

    Only as far as needed, not to the hard limit: the services and scripts watchkeeper
    starts inherit it, and some programs size tables by it or close every descriptor up
    to it one by one.
    """
    try:
        import resource
    except ImportError:  # Windows: no such limit to raise
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 0


def fds_in_use() -> int:
    """File descriptors this process holds now (0 where that cannot be seen)."""
    for where in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(where))
        except OSError:
            continue
    return 0


def connection_budget(wanted: int, soft_limit: int, in_use: int) -> int:
    """The most connections to serve: ``wanted``, within what the descriptor limit leaves
    after the agents' reserve and a burst of accepts (0 limit: no limit known)."""
    if soft_limit <= 0:
        return wanted
    return max(MIN_CONNECTIONS,
               min(wanted, soft_limit - in_use - AGENT_FD_RESERVE - BACKLOG))


class ConnectionGuard:
    """The open connections of one server, their limit and their request deadline."""

    def __init__(self, limit: int, timeout: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.timeout = timeout
        self.clock = clock
        self.open: dict[GuardedProtocol, None] = {}  # in the order they came
        self.refused = 0
        self.evicted = 0
        self.timed_out = 0

    def admit(self, conn: GuardedProtocol) -> bool:
        """Whether ``conn`` may stay (displacing a connection still waiting, if needed)."""
        if len(self.open) >= self.limit:
            now = self.clock()
            oldest = min((c for c in self.open if c.waiting_since is not None),
                         key=lambda c: c.waiting_since or now, default=None)
            if oldest is None or now - (oldest.waiting_since or now) < EVICT_AFTER_S:
                self.refused += 1
                log.warning("%d connections are open (api.max_connections, within the file "
                            "descriptor limit): new ones are refused with 503 until one "
                            "closes", len(self.open))
                return False
            self.evicted += 1
            log.warning("%d connections are open: closing those that have waited longest "
                        "for their request to serve new ones", len(self.open))
            oldest.drop()
        self.open[conn] = None
        return True

    def forget(self, conn: GuardedProtocol) -> None:
        self.open.pop(conn, None)

    def protocol(self) -> type[GuardedProtocol]:
        """The protocol class for uvicorn.Config(http=...), bound to this guard."""
        return type("BoundGuardedProtocol", (GuardedProtocol,), {"guard": self})


class GuardedProtocol(H11Protocol):
    """uvicorn's h11 protocol, with admission at the limit and a whole-request deadline."""

    guard: ConnectionGuard

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refused = False
        self.waiting_since: float | None = None  # when it started waiting for a request
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if not self.guard.admit(self):
            self.refused = True
            transport.write(_raw_answer(_BUSY, "service_unavailable",
                                        "too many connections are open; try again"))
            transport.close()
            return
        super().connection_made(transport)
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.refused:
            return
        self.guard.forget(self)
        self._stop_watch()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def drop(self) -> None:
        """Close this connection (displaced at the limit)."""
        self._stop_watch()
        self.guard.forget(self)
        self.transport.close()

    def _watch(self) -> None:
        """Arm the deadline while a request is still to come or arriving; disarm after."""
        waiting = (self.conn.their_state in (h11.IDLE, h11.SEND_BODY)
                   and not self.transport.is_closing())
        if waiting and self._deadline is None:
            self.waiting_since = self.guard.clock()
            self._deadline = self.loop.call_later(self.guard.timeout, self._expire)
        elif not waiting:
            self._stop_watch()

    def _stop_watch(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self.waiting_since = None

    def _expire(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        self.guard.timed_out += 1
        log.info("closed a connection that sent no whole request within %s s "
                 "(api.request_timeout_s)", f"{self.guard.timeout:g}")
        if self.conn.our_state is h11.IDLE and self.conn.their_state is h11.IDLE \
                and self.conn.trailing_data[0]:
            # A request head that never ended: say why, as nginx does (408).
            self.transport.write(_raw_answer(
                _SLOW, "request_timeout", f"the request did not arrive within "
                                          f"{self.guard.timeout:g} s"))
        self.transport.close()
