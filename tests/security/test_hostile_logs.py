"""Security corpus: hostile things in a watched log directory (sensor.log_paths) and hostile
`simulate logflood --path` values. The promise: the watcher only lstat()s and lists
directories (it never opens, follows or blocks on what it finds), stays bounded, and a
refused path creates nothing."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from watchkeeper.collectors.logs import LogWatcher
from watchkeeper.simulate.limits import Refused
from watchkeeper.simulate.scenarios import LiveHost, Request, plan


def grow(path: Path, n: int) -> None:
    with path.open("ab") as f:
        f.write(b"x" * n)


def watch_twice(root: Path, *, limit: int = 2000) -> list[str]:
    w = LogWatcher()
    w.collect([root], 0.0, top=10, limit=limit)
    for p in root.rglob("*.log"):
        if p.is_file() and not p.is_symlink():
            grow(p, 1000)
    return [g.path for g in w.collect([root], 1.0, top=10, limit=limit)]


def test_a_fifo_named_like_a_log_is_never_opened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "app.log")  # opening it for reading would block forever
    started = time.monotonic()
    assert watch_twice(tmp_path) == []
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("kind", ["to-a-file-outside", "to-a-dir-outside", "loop"])
def test_symlinks_are_not_followed(tmp_path: Path, kind: str) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.log").write_bytes(b"")
    if kind == "to-a-file-outside":
        os.symlink(outside / "secret.log", logs / "app.log")
    elif kind == "to-a-dir-outside":
        os.symlink(outside, logs / "sub")
    else:
        os.symlink(logs, logs / "again")
    w = LogWatcher()
    w.collect([logs], 0.0, top=10)
    grow(outside / "secret.log", 10_000)
    assert w.collect([logs], 1.0, top=10) == ()


def test_a_directory_of_many_files_costs_at_most_the_cap(tmp_path: Path) -> None:
    for i in range(300):
        (tmp_path / f"{i:04}.log").write_bytes(b"")
    got = watch_twice(tmp_path, limit=50)
    assert len(got) == 10  # top 10 of the 50 looked at, no error
    assert all(int(Path(p).stem) < 50 for p in got)


def test_deeper_directories_are_not_walked(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (deep / "deep.log").write_bytes(b"")
    assert watch_twice(tmp_path) == []


def test_control_characters_in_a_name_are_reported_as_data(tmp_path: Path) -> None:
    evil = tmp_path / "x\x1b[31m\nFAKE ALERT.log"
    evil.write_bytes(b"")
    assert watch_twice(tmp_path) == [str(evil)]


@pytest.mark.parametrize("raw, why", [
    ("dir-symlink", "goes through the symlink"),
    ("fifo", "is not one of the server's remediation.log_files"),
    ("missing", "is not one of the server's remediation.log_files"),
    ("nul", "must not contain a NUL character"),
], ids=["symlink-to-a-dir", "a-fifo", "a-missing-path", "nul-byte"])
def test_hostile_logflood_paths_are_refused_and_nothing_is_made(tmp_path: Path, raw: str,
                                                                why: str) -> None:
    real = tmp_path / "real"
    real.mkdir()
    paths = {"dir-symlink": tmp_path / "link", "fifo": tmp_path / "fifo",
             "missing": tmp_path / "nope", "nul": None}
    os.symlink(real, tmp_path / "link")
    os.mkfifo(tmp_path / "fifo")
    path = str(paths[raw]) if paths[raw] is not None else str(real) + "\x00x"
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(Refused, match=why):
        plan(Request("logflood", duration="2s", path=path), LiveHost())
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
