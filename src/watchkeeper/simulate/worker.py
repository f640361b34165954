"""The child process of a simulation: ``python -m watchkeeper.simulate.worker KIND PARAMS``.

It dies with its parent (PR_SET_PDEATHSIG, SIGKILL, on Linux), names itself ``wk-sim-KIND``
(what the process list and an alert then show), does its one thing until its deadline, and
exits. Files it writes are only the one path it is given, created (O_EXCL, O_NOFOLLOW) inside
the run's own directory, unless the parent appends to a configured log file.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import signal
import sys
import time
from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
#: Seconds between two steps of a paced scenario (disk, leak, logflood).
STEP_S = 0.1
PAGE = 4096


def _prctl(option: int, arg: int | bytes) -> bool:
    """prctl(2) through libc; False where there is none (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return False
    return int(libc.prctl(option, arg, 0, 0, 0)) == 0


def die_with_parent(parent: int) -> None:
    """SIGKILL this process when its parent dies; exit now if it has died already."""
    _prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(0)


#: The longest process name (comm) the kernel keeps, in bytes.
COMM_MAX = 15


def process_name(kind: str) -> str:
    """The name a worker of ``kind`` has in the process list (cut as the kernel cuts it:
    a forkstorm's processes are ``wk-sim-forkstor``)."""
    return f"wk-sim-{kind}".encode()[:COMM_MAX].decode(errors="ignore")


def set_name(name: str) -> None:
    """The process name (comm) the process list shows, at most 15 bytes."""
    _prctl(PR_SET_NAME, name.encode()[:COMM_MAX])


def _until(deadline: float) -> None:
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 1.0))


def cpu(deadline: float) -> None:
    """Spin one core."""
    n = 0
    while True:
        n += 1
        if n % 100_000 == 0 and time.monotonic() >= deadline:
            return


def memory(deadline: float, size: int) -> None:
    """Hold ``size`` bytes, every page written (so it is resident, not only reserved)."""
    buf = bytearray(size)
    buf[::PAGE] = b"\x01" * len(range(0, size, PAGE))
    _until(deadline)
    del buf


def leak(deadline: float, rate: int, size: int) -> None:
    """Grow by ``rate`` bytes a second up to ``size``, then hold it."""
    held: list[bytearray] = []
    total = 0
    start = time.monotonic()
    while time.monotonic() < deadline:
        due = min(size, int(rate * (time.monotonic() - start)))
        if due > total:
            chunk = bytearray(due - total)
            chunk[::PAGE] = b"\x01" * len(range(0, len(chunk), PAGE))
            held.append(chunk)
            total = due
        time.sleep(STEP_S)


def _open_new(path: str) -> int:
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                   | getattr(os, "O_CLOEXEC", 0), 0o600)


def disk(deadline: float, path: str, rate: int, size: int, keep_free: int = 0) -> None:
    """Write ``rate`` bytes a second to a new file at ``path``, up to ``size``; synced each
    second so the filesystem's free space shows it. Stops growing when the filesystem's free
    space would drop below ``keep_free`` (something else may be filling it too)."""
    fd = _open_new(path)
    block = b"\0" * (1 << 20)
    total = 0
    start = last_sync = time.monotonic()
    try:
        while (now := time.monotonic()) < deadline:
            due = min(size, int(rate * (now - start)))
            st = os.statvfs(path)
            due = min(due, total + max(0, st.f_bavail * st.f_frsize - keep_free))
            while total < due:
                n = os.write(fd, block[:min(len(block), due - total)])
                total += n
            if now - last_sync >= 1.0:
                os.fsync(fd)
                last_sync = now
            time.sleep(STEP_S)
    finally:
        os.close(fd)


def logflood(deadline: float, path: str, lines_per_s: int, size: int, append: bool) -> None:
    """Write ``lines_per_s`` log lines a second to ``path`` (a new file, or appended to a
    configured log file), up to ``size`` bytes."""
    if append:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    else:
        fd = _open_new(path)
    pid = os.getpid()
    written = lines = 0
    start = time.monotonic()
    try:
        while (now := time.monotonic()) < deadline and written < size:
            due = int(lines_per_s * (now - start))
            if due > lines:
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
                batch = "".join(f"{stamp} wk-sim-logflood[{pid}]: ERROR simulated log line "
                                f"{i} (watchkeeper simulate logflood)\n"
                                for i in range(lines, due)).encode()
                batch = batch[:size - written]
                written += os.write(fd, batch)
                lines = due
            time.sleep(STEP_S)
    finally:
        os.close(fd)


def forkstorm(deadline: float, procs: int) -> None:
    """Start ``procs`` processes that sleep until the deadline (each dies with this one)."""
    me = os.getpid()
    kids = []
    for _ in range(procs):
        pid = os.fork()
        if pid == 0:
            try:
                die_with_parent(me)
                _until(deadline)
            finally:
                os._exit(0)
        kids.append(pid)
        time.sleep(0.005)  # a storm, not a burst the scheduler never sees
    _until(deadline)
    for pid in kids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def run(kind: str, params: dict[str, Any]) -> None:
    """Do scenario ``kind`` with ``params`` (as the parent planned them)."""
    deadline = time.monotonic() + float(params["duration_s"])
    if kind == "cpu":
        cpu(deadline)
    elif kind == "memory":
        memory(deadline, int(params["size"]))
    elif kind == "leak":
        leak(deadline, int(params["rate"]), int(params["size"]))
    elif kind == "disk":
        disk(deadline, str(params["path"]), int(params["rate"]), int(params["size"]),
             int(params.get("keep_free", 0)))
    elif kind == "logflood":
        logflood(deadline, str(params["path"]), int(params["lines_per_s"]),
                 int(params["size"]), bool(params.get("append", False)))
    elif kind == "forkstorm":
        forkstorm(deadline, int(params["procs"]))
    else:
        raise SystemExit(f"unknown scenario {kind!r}")


def main(argv: list[str]) -> None:
    """Entry point: KIND and a JSON object of parameters (with ``parent``, the pid to die
    with)."""
    kind, params = argv[1], json.loads(argv[2])
    die_with_parent(int(params["parent"]))
    set_name(process_name(kind))
    run(kind, params)


if __name__ == "__main__":
    main(sys.argv)
