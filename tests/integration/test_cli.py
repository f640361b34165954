"""The `watchkeeper` command as a user runs it: real processes, real files."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from watchkeeper import __version__


def wk_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("WATCHKEEPER_") and k != "OPENAI_API_KEY"}
    env.update({
        "WATCHKEEPER_STORAGE__DATA_DIR": str(tmp_path / "data"),
        "WATCHKEEPER_LOGGING__DIR": str(tmp_path / "logs"),
        "WATCHKEEPER_LOGGING__COLOR": "false",
    })
    env.update(extra)
    return env


def wk(tmp_path: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60
       ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "watchkeeper", *args], cwd=tmp_path,
                          env=env or wk_env(tmp_path), capture_output=True, text=True,
                          timeout=timeout)


def test_version(tmp_path: Path) -> None:
    out = wk(tmp_path, "--version")
    assert out.returncode == 0 and __version__ in out.stdout


def test_config_show_masks_secrets_and_merges_sources(tmp_path: Path) -> None:
    (tmp_path / "watchkeeper.yaml").write_text("thresholds:\n  cpu_warning: 66\n")
    env = wk_env(tmp_path, OPENAI_API_KEY="sk-live-SECRET123",
                 WATCHKEEPER_AGENTS__CHECK_INTERVAL="7")
    out = wk(tmp_path, "config", "show", "--format", "json", env=env)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["thresholds"]["cpu_warning"] == 66
    assert data["agents"]["check_interval"] == 7
    assert data["llm"]["api_key"] == "**********"
    assert "SECRET123" not in out.stdout + out.stderr
    yaml_out = wk(tmp_path, "config", "show", env=env)
    assert "cpu_warning: 66" in yaml_out.stdout and "SECRET123" not in yaml_out.stdout


def test_config_validate_bad_file_exit_2_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("thresholds:\n  cpu_warnign: 50\n  disk_critical: 150\n")
    out = wk(tmp_path, "config", "validate", str(bad))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = [ln.strip() for ln in out.stderr.splitlines()]
    assert "thresholds.cpu_warnign: unknown key (did you mean 'cpu_warning'?) " \
           f"[from {bad}]" in lines
    assert any(ln.startswith("thresholds.disk_critical: Input should be less than or equal "
                             "to 100") for ln in lines)
    good = tmp_path / "good.yaml"
    good.write_text("agents:\n  check_interval: 2\n")
    ok = wk(tmp_path, "config", "validate", str(good))
    assert ok.returncode == 0 and "valid" in ok.stdout


def test_config_validate_warns_of_a_configured_path_through_a_symlink(tmp_path: Path
                                                                      ) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "app.log").write_text("x")
    (tmp_path / "link").symlink_to(real)
    cfg = tmp_path / "wk.yaml"
    cfg.write_text("remediation:\n"
                   f"  log_files: [{{path: {tmp_path}/link/app.log}}, "
                   f"{{path: {real}/app.log}}]\n"
                   f"  cleanup_roots: [{{path: {tmp_path}/link, patterns: ['*.tmp']}}]\n"
                   f"llm: {{log_files: [{tmp_path}/not-yet/app.log]}}\n")
    out = wk(tmp_path, "config", "validate", str(cfg))
    assert out.returncode == 0, out.stderr
    warnings = out.stderr.strip().splitlines()
    assert warnings == [
        f"warning: remediation.cleanup_roots: {tmp_path}/link goes through the symlink "
        f"{tmp_path}/link; it will be refused when used (file actions never follow "
        "symlinks): configure the real path",
        f"warning: remediation.log_files: {tmp_path}/link/app.log goes through the symlink "
        f"{tmp_path}/link; it will be refused when used (file actions never follow "
        "symlinks): configure the real path"]
    assert out.stdout.strip().endswith("is valid (2 warnings above)")


def test_run_refuses_bad_config_before_starting(tmp_path: Path) -> None:
    out = wk(tmp_path, "run", env=wk_env(tmp_path, WATCHKEEPER_AGENTS__CHECK_INTERVAL="0"))
    assert out.returncode == 2 and "agents.check_interval" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "data").exists()  # nothing was started or created


def start_run(tmp_path: Path, interval: str = "0.2") -> subprocess.Popen[str]:
    env = wk_env(tmp_path, WATCHKEEPER_AGENTS__CHECK_INTERVAL=interval,
                 WATCHKEEPER_STORAGE__FLUSH_INTERVAL="0.2")
    return subprocess.Popen([sys.executable, "-m", "watchkeeper", "run", "--no-console-log"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def snapshot_count(db: Path) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(con.execute("select count(*) from snapshots").fetchone()[0])
    finally:
        con.close()


def wait_for_snapshots(db: Path, n: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.exists():
            try:
                count = snapshot_count(db)
            except sqlite3.OperationalError:
                count = 0
            if count >= n:
                return count
        time.sleep(0.1)
    raise AssertionError(f"fewer than {n} snapshots in {db} after {timeout}s")


@pytest.mark.slow
def test_run_sigterm_shuts_down_cleanly_and_flushes(tmp_path: Path) -> None:
    proc = start_run(tmp_path)
    db = tmp_path / "data" / "watchkeeper.db"
    try:
        wait_for_snapshots(db, 3)
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    status = json.loads((tmp_path / "logs" / "system_status.json").read_text())
    assert {a["name"] for a in status["agents"]} >= {"sensor", "communicator"}
    assert all(a["state"] == "stopped" for a in status["agents"])
    assert status["latest_metrics"]["cpu"]["count_logical"] >= 1
    log_text = (tmp_path / "logs" / "agent_system.log").read_text()
    assert "watchkeeper stopped; history flushed" in log_text
    # Every snapshot the sensor took before SIGTERM is in the database.
    sensor = next(a for a in status["agents"] if a["name"] == "sensor")
    assert snapshot_count(db) == sensor["checks"]


@pytest.mark.slow
def test_run_killed_with_sigkill_keeps_history_and_restarts(tmp_path: Path) -> None:
    db = tmp_path / "data" / "watchkeeper.db"
    proc = start_run(tmp_path)
    try:
        before = wait_for_snapshots(db, 5)
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    con = sqlite3.connect(db)
    assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
    con.close()
    after_kill = snapshot_count(db)
    assert after_kill >= before
    proc = start_run(tmp_path)
    try:
        wait_for_snapshots(db, after_kill + 3)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
    con = sqlite3.connect(db)
    assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
    seqs = [r[0] for r in con.execute("select seq from snapshots order by at")]
    con.close()
    assert len(seqs) >= after_kill + 3  # old history kept, new history appended


@pytest.mark.parametrize("command", ["run", "serve"])
def test_a_usage_error_exits_2_before_any_banner_or_file(tmp_path: Path, command: str) -> None:
    out = wk(tmp_path, command, "--agents", "sensor,bogus")
    assert out.returncode == 2, out.stderr
    # Every registered agent is known, those that run only when configured included.
    assert "Invalid value for '--agents': unknown agent(s) bogus; known: alertmanager, " \
           "analyzer, communicator, notifier, remediator, sensor" in out.stderr
    assert "watchkeeper 0" not in out.stderr + out.stdout  # no banner
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "logs").exists()


def test_config_is_accepted_after_the_subcommand_and_every_problem_is_listed(
        tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("thresholds:\n  cpu_warning: 66\nremediation:\n  actions:\n"
                    "    stop_process: off\n")
    out = wk(tmp_path, "config", "show", "--format", "json", "--config", str(good))
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["thresholds"]["cpu_warning"] == 66
    assert data["remediation"]["actions"]["stop_process"] == "off"
    assert wk(tmp_path, "config", "validate", "-c", str(good)).returncode == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("thresholds:\n  cpu_warning: 95\n  cpu_critical: 70\n  disk_warning: 150\n")
    for args in (("config", "validate", "--config", str(bad)), ("run", "--config", str(bad)),
                 ("serve", "--config", str(bad), "--port", "0")):
        out = wk(tmp_path, *args)
        assert out.returncode == 2, (args, out.stderr)
        assert "invalid configuration (2 problems)" in out.stderr, args
        assert f"thresholds.disk_warning: Input should be less than or equal to 100 (got 150) " \
               f"[from {bad}]" in out.stderr
        assert f"thresholds: cpu_warning (95) must not be above cpu_critical (70) " \
               f"[from {bad}]" in out.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.slow
def test_a_second_run_or_serve_on_the_same_data_dir_refuses_naming_the_first(
        tmp_path: Path) -> None:
    db = tmp_path / "data" / "watchkeeper.db"
    first = start_run(tmp_path)
    try:
        wait_for_snapshots(db, 2)
        for args in (("run",), ("serve", "--port", "0")):
            out = wk(tmp_path, *args, "--no-console-log", timeout=30)
            assert out.returncode == 1, (args, out.stderr)
            assert f"another watchkeeper (pid {first.pid}) is already running on data " \
                   f"directory {tmp_path / 'data'}" in out.stderr
            assert "Ctrl-C to stop" not in out.stderr  # it never started
        assert first.poll() is None
    finally:
        first.kill()  # SIGKILL: the kernel drops the lock, nothing stale is left
        first.communicate(timeout=30)
    count = snapshot_count(db)
    again = start_run(tmp_path)
    try:
        wait_for_snapshots(db, count + 2)
    finally:
        again.send_signal(signal.SIGTERM)
        _out, err = again.communicate(timeout=30)
    assert again.returncode == 0, err
