"""Paths for the actions that touch files: normalised lexically, opened without following links.

A path is only a name, and any directory on it may be swapped for a symlink between the
moment an action is asked for and the moment it runs. So a file action never hands a whole
path to the kernel: it opens ``/`` and then every component with
``O_DIRECTORY | O_NOFOLLOW`` relative to the descriptor of the one before (openat), and
acts on the last one through its parent's descriptor. A component that is a symlink, or
that becomes one mid-walk, fails to open (ELOOP/ENOTDIR) and the action is refused with
nothing done: a race fails safe. The configured path must therefore be the real one (no
symlink anywhere on it); the refusal names the link so the operator can fix the
configuration.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator

from .base import Refused

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def lexical(raw: str, *, what: str) -> str:
    """``raw`` as an absolute, normalised path (no ``.``, ``//``, trailing ``/``); Refused
    for a NUL byte, a relative path or a ``..`` (which only the filesystem could resolve,
    and a symlink before it would send it elsewhere)."""
    if "\x00" in raw:
        raise Refused(f"{what} contains a NUL byte")
    if not os.path.isabs(raw):
        raise Refused(f"{what} {raw!r} is not an absolute path")
    if ".." in raw.split("/"):
        raise Refused(f"{what} {raw!r} contains '..'")
    path = os.path.normpath(raw)
    # POSIX keeps a leading '//' (implementation-defined); here it is just '/'.
    return "/" + path.lstrip("/")


def components(path: str) -> list[str]:
    """The names of a normalised absolute path, from the top ('/a/b' -> ['a', 'b'])."""
    return [p for p in path.split("/") if p]


def open_dir_at(name: str, dir_fd: int | None, what: str) -> int:
    """Directory ``name`` relative to ``dir_fd`` without following a symlink; Refused."""
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        # O_DIRECTORY|O_NOFOLLOW on a symlink fails with ELOOP or ENOTDIR (Linux): look.
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and is_link(name, dir_fd):
            raise Refused(f"{what} is a symlink; file actions never follow symlinks "
                          "(refusing; configure the real path if it is yours)") from None
        if exc.errno == errno.ENOTDIR:
            raise Refused(f"{what} is not a directory") from None
        if exc.errno == errno.ENOENT:
            raise Refused(f"{what} does not exist") from None
        raise


def is_link(name: str, dir_fd: int | None) -> bool:
    """Whether ``name`` (relative to ``dir_fd``) is a symlink now."""
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _directory(path: str) -> str:
    return f"directory {path}"


@contextlib.contextmanager
def open_dir(path: str, what: Callable[[str], str] = _directory) -> Iterator[int]:
    """A descriptor of the directory ``path`` (normalised, absolute), reached from ``/``
    one component at a time, none of them followed if it is a symlink.

    ``what(prefix)`` names a component in a refusal ("configured root /srv/cache").
    """
    fd = os.open("/", DIR_FLAGS)
    try:
        shown = ""
        for part in components(path):
            shown = f"{shown}/{part}"
            sub = open_dir_at(part, fd, what(shown))
            os.close(fd)
            fd = sub
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def open_in_dir(path: str, flags: int = os.O_RDONLY, what: Callable[[str], str] = _directory,
                refusing: str = "refusing") -> Iterator[tuple[int, int, os.stat_result]]:
    """(directory fd, file fd, stat) of the regular file ``path`` (absolute): its directory
    walked as in ``open_dir``, the file opened O_NOFOLLOW (and O_NONBLOCK: a FIFO planted
    under its name must not hang us); Refused if it is a symlink, missing or not a regular
    file (``refusing`` ends the refusal: "refusing to rotate it")."""
    path = "/" + os.path.normpath(os.path.abspath(path)).lstrip("/")
    with open_dir(os.path.dirname(path), what) as dfd:
        try:
            fd = os.open(os.path.basename(path),
                         flags | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0),
                         dir_fd=dfd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise Refused(f"{path} is a symlink; {refusing}") from None
            if exc.errno == errno.ENOENT:
                raise Refused(f"{path} does not exist") from None
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise Refused(f"{path} is not a regular file; refusing")
            yield dfd, fd, st
        finally:
            os.close(fd)


@contextlib.contextmanager
def open_file(path: str, flags: int = os.O_RDONLY) -> Iterator[int]:
    """A descriptor of the regular file ``path``, reached as ``open_in_dir`` does."""
    with open_in_dir(path, flags) as (_dfd, fd, _st):
        yield fd


def symlink_on(path: str) -> str | None:
    """The first part of ``path`` (normalised, absolute) that is a symlink now, or None;
    what a walk above would refuse, for a configuration check to say before any action."""
    shown = ""
    for part in components("/" + os.path.normpath(os.path.abspath(path)).lstrip("/")):
        shown = f"{shown}/{part}"
        try:
            if stat.S_ISLNK(os.lstat(shown).st_mode):
                return shown
        except OSError:  # missing (created later) or unreadable: nothing to say yet
            return None
    return None
