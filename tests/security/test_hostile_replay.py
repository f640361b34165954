"""Security corpus: hostile input to `watchkeeper replay` (shadow mode).

The promise: whatever the candidate configuration asks for, a replay decides and executes
nothing (no process signalled, no file touched, nothing written to the data directory); a
bad range, configuration or database is one line on stderr and exit 2, with nothing changed.
"""

from __future__ import annotations

import os
import sqlite3
import time
import zlib
from pathlib import Path

import psutil
import pytest

from ..integration import test_replay
from ..integration.test_cli import wk
from ..integration.test_replay import (
    RANGE,
    Hog,
    fingerprint_of,
    mount_of,
    replay_json,
    write_config,
)

# The recorded hour and its real hog process, as the integration tests have them.
hog = test_replay.hog
history = test_replay.history

EVERYTHING_AUTO = """\
  dry_run: false
  startup_grace_s: 0
  budget_per_hour: 1000
  budget_per_action_per_hour: 1000
  llm_mode: auto
  actions:
    stop_process: auto
    clean_disk: auto
    restart_service: auto
    start_service: auto
    rotate_log: auto
    run_script: auto
    notify_only: auto
  scripts:
    boom:
      argv: ["{touch}", "{canary}"]
"""


def test_a_config_asking_for_every_action_in_auto_still_executes_nothing(
        tmp_path: Path, history: Path, hog: Hog) -> None:
    root = Path(mount_of(tmp_path)) / "tmp"
    old = root / "old.tmp"
    old.write_bytes(b"x" * 4096)
    three_days = time.time() - 3 * 86400
    os.utime(old, (three_days, three_days))
    canary = tmp_path / "canary"
    candidate = write_config(tmp_path, EVERYTHING_AUTO.format(touch="/usr/bin/touch",
                                                              canary=canary),
                             name="hostile.yaml")
    before = fingerprint_of(history.parent)
    data = replay_json(tmp_path, "--config", str(candidate))
    would = {(a["action"], a["verdict"]) for a in data["would_do"]}
    # The policy says it would run them on its own...
    assert ("stop_process", "auto") in would and ("clean_disk", "auto") in would
    assert ("restart_service", "auto") in would
    # ...and nothing ran: the hog lives, the old file is there as it was, no script ran,
    # and not a byte of the data directory changed (no audit log, no policy state).
    assert data["executed"] == 0
    proc = psutil.Process(hog.pid)
    assert proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    assert hog.signalled() == []
    assert old.exists() and old.stat().st_mtime == pytest.approx(three_days)
    assert not canary.exists()
    assert fingerprint_of(history.parent) == before


@pytest.mark.parametrize("args", [
    ("--from", "1e400"),
    ("--from", "-1e400h"),
    ("--to", "inf"),
    ("--from", "nan"),
    ("--from", "-9999999d"),
    ("--from", "-99999999999999999999h"),
    ("--from", "2024-03-04T13:00:00Z", "--to", "2024-03-04T12:00:00Z"),
    ("--from", "2024-03-04T12:00:00Z", "--to", "2024-03-04T12:00:00Z"),
    ("--to", "0001-01-01T00:00:00"),
    ("--from", "2024-03-04T12:00+25:00"),
    ("--from", "2024-02-30T00:00"),
    ("--from", "\x1b[31mred\x1b[0m"),
    ("--from", "x" * 100_000),
    ("--from", ""),
], ids=["1e400", "relative-1e400", "inf", "nan", "ten-thousand-years-back", "huge-number",
        "from-after-to", "empty-range", "before-year-one", "bad-offset", "no-such-day",
        "terminal-escape", "100k-chars", "empty"])
def test_a_hostile_range_is_one_line_exit_2_and_changes_nothing(
        tmp_path: Path, history: Path, args: tuple[str, ...]) -> None:
    before = fingerprint_of(history.parent)
    out = wk(tmp_path, "replay", *args)
    assert out.returncode == 2, out.stdout
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "Traceback" not in out.stderr and "\x1b" not in out.stderr
    assert len(out.stderr) < 1000
    assert out.stdout == ""
    assert fingerprint_of(history.parent) == before


@pytest.mark.parametrize("content", [
    "thresholds:\n  cpu_warning: .inf\n",
    "thresholds:\n  cpu_warning: 1e400\n",
    "agents:\n  healing_cooldown: .nan\n",
    "remediation:\n  actions:\n    format_disk: auto\n",
    "[1, 2, 3]\n",
    "a: [" * 5000 + "\n",
], ids=["inf-threshold", "1e400-threshold", "nan-cooldown", "unknown-action", "not-a-mapping",
        "deep-nesting"])
def test_a_hostile_candidate_config_is_one_line_exit_2(
        tmp_path: Path, history: Path, content: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(content)
    before = fingerprint_of(history.parent)
    out = wk(tmp_path, "replay", *RANGE, "--config", str(bad))
    assert out.returncode == 2, out.stdout
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert fingerprint_of(history.parent) == before


def test_a_config_file_that_is_missing_or_a_directory_is_exit_2(tmp_path: Path) -> None:
    out = wk(tmp_path, "replay", "--config", str(tmp_path / "nope.yaml"))
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    # A directory is refused by the shared --config option (click's usage error, exit 2).
    out = wk(tmp_path, "replay", "--config", str(tmp_path))
    assert out.returncode == 2 and "is a directory" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_damaged_snapshot_row_is_one_line_exit_2(tmp_path: Path,
                                                  history: Path) -> None:
    conn = sqlite3.connect(history)
    conn.execute("UPDATE snapshots SET data = ? WHERE seq = 100", (b"not zlib at all",))
    conn.execute("UPDATE snapshots SET data = ? WHERE seq = 200",
                 (zlib.compress(b'{"kind": "metric_snapshot", "host": 1}'),))
    conn.commit()
    conn.close()
    out = wk(tmp_path, "replay", *RANGE)
    assert out.returncode == 2
    assert "a stored snapshot cannot be read" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_a_file_that_is_not_a_database_is_one_line_exit_2(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "watchkeeper.db").write_bytes(b"this is not sqlite" * 100)
    out = wk(tmp_path, "replay", *RANGE)
    assert out.returncode == 2
    assert "not a watchkeeper history database" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert (data / "watchkeeper.db").read_bytes() == b"this is not sqlite" * 100
    assert sorted(p.name for p in data.iterdir()) == ["watchkeeper.db"]


@pytest.mark.parametrize("host", ["'; DROP TABLE snapshots; --", "%", "*", "\x1b]0;owned\x07"],
                         ids=["sql", "like-wildcard", "glob", "terminal-title"])
def test_a_hostile_host_name_is_data_not_a_query(tmp_path: Path, history: Path,
                                                host: str) -> None:
    before = fingerprint_of(history.parent)
    out = wk(tmp_path, "replay", *RANGE, "--host", host)
    assert out.returncode == 0, out.stderr
    assert "nothing would have fired" in out.stdout
    assert "\x1b" not in out.stdout and "\x07" not in out.stdout
    assert fingerprint_of(history.parent) == before
