"""A simulation's processes and files from start to clean-up, whatever ends it.

Everything a run creates is recorded in its own directory (``owner.json``) as it is made:
the workers (pid and start time; each leads its own process group), and directories made
for it elsewhere (a disk fill under ``--path``). Three things clean up, and each checks by
pid and start time that what it kills is what the run started:

* the run itself, when it ends, on Ctrl-C, SIGTERM or SIGHUP;
* the workers themselves: each dies with ``simulate`` (PR_SET_PDEATHSIG, Linux);
* a watchdog process, in a session of its own, that holds the read end of a pipe whose
  only write end ``simulate`` holds: when ``simulate`` dies however it dies (SIGKILL too),
  the pipe closes and the watchdog kills what is left and removes the run's files.

Should the watchdog be killed too, the next ``simulate`` reaps runs whose owner is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

OWNER_FILE = "owner.json"
RUN_PREFIX = "run-"
#: Name of the directory a run makes inside ``--path`` for its files.
DATA_PREFIX = ".watchkeeper-simulate-"


class LifecycleError(Exception):
    """The run's directory cannot be made safely (wrong owner, a symlink, ...)."""


def base_dir() -> Path:
    """Where runs keep their directories: ``$TMPDIR/watchkeeper-simulate-UID``."""
    return Path(tempfile.gettempdir()) / f"watchkeeper-simulate-{os.getuid()}"


def _own_dir(path: Path) -> Path:
    """``path`` as a directory of ours only (0700, not a symlink), made if missing."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise LifecycleError(f"{path} is not a directory of this user (a symlink, or another "
                             "user's): remove it or set TMPDIR")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def _create_time(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.Error, OSError):
        return None


def _alive(pid: int, create_time: float) -> bool:
    """Whether ``pid`` is still the process that started at ``create_time``."""
    found = _create_time(pid)
    return found is not None and abs(found - create_time) < 0.01


@dataclass
class Owner:
    """What a run's ``owner.json`` records."""

    pid: int
    create_time: float
    workers: list[tuple[int, float]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        """As stored."""
        return json.dumps({"pid": self.pid, "create_time": self.create_time,
                           "workers": self.workers, "paths": self.paths})

    @classmethod
    def read(cls, run_dir: Path) -> Owner | None:
        """The owner of ``run_dir`` (None if unreadable or not ours)."""
        try:
            data: Any = json.loads((run_dir / OWNER_FILE).read_text(encoding="utf-8"))
            return cls(int(data["pid"]), float(data["create_time"]),
                       [(int(p), float(t)) for p, t in data["workers"]],
                       [str(p) for p in data["paths"]])
        except (OSError, ValueError, KeyError, TypeError):
            return None


def _write_owner(run_dir: Path, owner: Owner) -> None:
    tmp = run_dir / f".{OWNER_FILE}.tmp"
    tmp.write_text(owner.to_json(), encoding="utf-8")
    os.replace(tmp, run_dir / OWNER_FILE)  # the watchdog never reads half a record


def kill_workers(workers: list[tuple[int, float]]) -> None:
    """SIGKILL each worker's process group, if its leader is still the one started."""
    for pid, create_time in workers:
        if _alive(pid, create_time):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)  # the worker leads its group: its forks too
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def _remove_made_dir(path: str) -> None:
    """Remove a directory the run made (named DATA_PREFIX..., a real directory of ours)."""
    p = Path(path)
    if not p.name.startswith(DATA_PREFIX):
        return
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():
        shutil.rmtree(p, ignore_errors=True)  # rmtree never follows symlinks inside


def clean_up(run_dir: Path) -> None:
    """Kill what ``run_dir`` records, remove the directories it made, then ``run_dir``."""
    owner = Owner.read(run_dir)
    if owner is not None:
        kill_workers(owner.workers)
        for path in owner.paths:
            _remove_made_dir(path)
    shutil.rmtree(run_dir, ignore_errors=True)
    with contextlib.suppress(OSError):  # the per-user base too, when no other run uses it
        run_dir.parent.rmdir()


def reap_orphans(base: Path | None = None) -> list[Path]:
    """Clean up runs whose ``simulate`` is gone (its watchdog killed as well); which."""
    base = base or base_dir()
    reaped = []
    with contextlib.suppress(FileNotFoundError):
        for entry in base.iterdir():
            if not entry.name.startswith(RUN_PREFIX) or entry.is_symlink():
                continue
            owner = Owner.read(entry)
            if owner is not None and _alive(owner.pid, owner.create_time):
                continue
            if owner is None and time.time() - entry.stat().st_mtime < 60:
                continue  # being made right now
            clean_up(entry)
            reaped.append(entry)
    return reaped


class Run:
    """One simulation's directory, workers and watchdog; a context manager that cleans up."""

    def __init__(self, base: Path | None = None) -> None:
        self.base = base or base_dir()
        self.reaped = reap_orphans(self.base)
        for attempt in range(3):  # another run may remove the base dir as it ends
            try:
                self.dir = Path(tempfile.mkdtemp(prefix=f"{RUN_PREFIX}{os.getpid()}-",
                                                 dir=_own_dir(self.base)))
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
        me = psutil.Process()
        self.owner = Owner(pid=me.pid, create_time=float(me.create_time()))
        _write_owner(self.dir, self.owner)
        self.workers: list[subprocess.Popen[bytes]] = []
        self._watchdog = self._start_watchdog()
        self.closed = False

    def _start_watchdog(self) -> subprocess.Popen[bytes]:
        read_end, write_end = os.pipe()
        os.set_inheritable(read_end, True)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "watchkeeper.simulate.watchdog", str(self.dir)],
                stdin=read_end, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True, close_fds=True)
        finally:
            os.close(read_end)
        os.set_inheritable(write_end, False)  # only this process holds it: workers must not
        self._pipe = write_end
        return proc

    def data_dir(self, parent: Path) -> Path:
        """A new directory of the run's inside ``parent`` (recorded before it is made)."""
        made = Path(tempfile.mkdtemp(prefix=DATA_PREFIX, dir=parent))
        self.owner.paths.append(str(made))
        _write_owner(self.dir, self.owner)
        return made

    def start(self, kind: str, params: dict[str, Any]) -> subprocess.Popen[bytes]:
        """Start a worker doing ``kind`` in a session and process group of its own (a Ctrl-C
        at the terminal reaches simulate, which cleans up, not the worker)."""
        body = json.dumps({**params, "parent": os.getpid()})
        proc = subprocess.Popen([sys.executable, "-m", "watchkeeper.simulate.worker", kind, body],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                start_new_session=True, close_fds=True)
        created = _create_time(proc.pid)
        self.workers.append(proc)
        if created is not None:
            self.owner.workers.append((proc.pid, created))
            _write_owner(self.dir, self.owner)
        return proc

    def running(self) -> list[subprocess.Popen[bytes]]:
        """Workers not yet exited."""
        return [p for p in self.workers if p.poll() is None]

    def close(self) -> None:
        """Kill every worker, remove every file, and let the watchdog go."""
        if self.closed:
            return
        self.closed = True
        for proc in self.workers:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        clean_up(self.dir)
        os.close(self._pipe)  # the watchdog wakes, finds nothing left, and exits
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._watchdog.wait(timeout=10)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


@contextlib.contextmanager
def stop_signals() -> Iterator[list[int]]:
    """While inside: SIGINT, SIGTERM and SIGHUP only record themselves (the run then ends
    and cleans up); the list holds the signals received."""
    got: list[int] = []
    previous = {}

    def handler(signum: int, _frame: Any) -> None:
        got.append(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield got
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
