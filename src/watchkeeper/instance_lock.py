"""One watchkeeper per data directory: a second `run` or `serve` on it refuses to start.

Two would start a second copy of every managed service and resolve each other's alerts with
their own thresholds. The lock is flock(2) on ``<data_dir>/watchkeeper.lock``: the kernel
releases it when the process ends, however it ends (kill -9 included), so a crash never
leaves a stale lock behind; the pid written into the file only names the holder.
"""

from __future__ import annotations

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; one instance per data directory is not enforced
    fcntl = None  # type: ignore[assignment]

LOCK_FILENAME = "watchkeeper.lock"


class InstanceLockError(Exception):
    """The data directory is in use by another watchkeeper, or cannot be locked."""


class InstanceLock:
    """Holds the data directory's lock until :meth:`release` or the process ends."""

    def __init__(self, fd: int | None, path: Path) -> None:
        self._fd = fd
        self.path = path

    @classmethod
    def acquire(cls, data_dir: Path) -> InstanceLock:
        """Lock ``data_dir`` (created 0700 if needed) for this process, or raise
        InstanceLockError naming the pid that holds it."""
        path = data_dir / LOCK_FILENAME
        if fcntl is None:
            return cls(None, path)
        try:
            data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Not inherited (PEP 446): a managed service started by us must not keep the
            # lock alive after we are gone.
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise InstanceLockError(f"cannot lock data directory {data_dir}: "
                                    f"{exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            who = f"pid {holder}" if holder.isdigit() else "a process"
            raise InstanceLockError(
                f"another watchkeeper ({who}) is already running on data directory "
                f"{data_dir} (lock {path}): stop it first, or give this one its own "
                "storage.data_dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd, path)

    def release(self) -> None:
        """Let another watchkeeper start on this data directory."""
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor releases the flock
            self._fd = None
