"""`watchkeeper replay`: rules and policy over a recorded history, in shadow mode.

The history is recorded the way a server records it: snapshots of one hour (a disk that
fills, a process pinned at 100 % of a core, a service that crashes and is restarted) go
through the real store, with the alerts the analyzer published then, the service reports and
the remediation events that happened. Times are fixed (March 2024); every run passes --from
and --to, so nothing depends on today's date.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psutil
import pytest

from tests.integration.test_cli import wk
from watchkeeper.analysis import Analyzer
from watchkeeper.config import StorageConfig, load_settings
from watchkeeper.events import (
    CpuStats,
    DiskUsage,
    MemoryStats,
    MetricSnapshot,
    ProcessInfo,
    ProcessSummary,
    RemediationEvent,
    ServiceInfo,
    ServiceReport,
)
from watchkeeper.replay import ReplayError, parse_range
from watchkeeper.store.reader import HistoryReader
from watchkeeper.store.sqlite import DB_FILENAME, SqliteStore

HOST = "web1"
T0 = datetime(2024, 3, 4, 12, 0, tzinfo=timezone.utc)
TICKS = 720  # one hour at 5 s
GB = 1_000_000_000
RANGE = ("--from", "2024-03-04T12:00:00Z", "--to", "2024-03-04T13:00:00Z")


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def data_percent(m: float) -> float:
    """The mount: 60 % until minute 10, then +1.25 %/min to 97.5 % at minute 40; cleaned at 45."""
    if m < 10:
        return 60.0
    if m < 45:
        return min(97.5, 60.0 + (m - 10) * 1.25)
    return 55.0


@dataclass(frozen=True)
class Hog:
    """The process pinned at 100 % from minute 5 to minute 25 (a real pid); it writes every
    signal it receives (all but SIGKILL and SIGSTOP) to ``signals``."""

    pid: int
    create_time: float
    signals: Path | None = None

    def signalled(self) -> list[str]:
        """The signals it received, by name."""
        if self.signals is None or not self.signals.exists():
            return []
        return self.signals.read_text().split()


HOG = """\
import signal, sys, time
out = sys.argv[1]
def note(sig, _frame):
    with open(out, "a") as fh:
        fh.write(signal.Signals(sig).name + "\\n")
for s in signal.valid_signals():
    if s not in (signal.SIGKILL, signal.SIGSTOP):
        try:
            signal.signal(s, note)
        except (OSError, ValueError):
            pass
print("ready", flush=True)
time.sleep(600)
"""


def mount_of(tmp_path: Path) -> str:
    """The filling mount: a real directory, so clean_disk has a real root to (not) touch."""
    return str(tmp_path / "data-mount")


def snapshots(hog: Hog, mount: str) -> Iterator[MetricSnapshot]:
    others = [ProcessInfo(pid=100 + k, create_time=1000.0, name=f"worker{k}", cpu_percent=1.0,
                          rss=50_000_000, cmdline=f"worker{k}") for k in range(8)]
    for i in range(TICKS):
        m = i * 5 / 60
        pinned = 5 <= m < 25
        top = ([ProcessInfo(pid=hog.pid, create_time=hog.create_time, name="spin",
                            cpu_percent=100.0, rss=20_000_000, cmdline="python3 spin.py")]
               if pinned else []) + others
        p = data_percent(m)
        web_down = 30 <= m < 30.25
        yield MetricSnapshot(
            host=HOST, at=at(m), seq=i, interval_s=5.0,
            cpu=CpuStats(percent=52.0 if pinned else 8.0, load_1=1.0 if pinned else 0.1,
                         count_logical=2, per_core=(100.0, 4.0) if pinned else (8.0, 8.0)),
            memory=MemoryStats(total=8 * GB, available=5 * GB, used=3 * GB, percent=37.5,
                               swap_total=GB, swap_used=0, swap_percent=0.0),
            disks=(DiskUsage(mountpoint="/", device="/dev/sda1", fstype="ext4",
                             total=50 * GB, used=20 * GB, free=30 * GB, percent=40.0,
                             inodes_percent=5.0),
                   DiskUsage(mountpoint=mount, device="/dev/sdb1", fstype="ext4",
                             total=100 * GB, used=int(p * GB), free=int((100 - p) * GB),
                             percent=p, inodes_percent=3.0)),
            processes=ProcessSummary(total=120, running=2, zombies=0, threads=300,
                                     top_cpu=tuple(top[:5]), top_memory=tuple(others[:5])),
            services=(ServiceInfo(name="web", manager="process",
                                  state="stopped" if web_down else "running",
                                  healthy=None if web_down else True),))


def service_reports() -> list[ServiceReport]:
    """web exits at minute 30, is restarted at once and is ok again 15 s later."""
    common = {"host": HOST, "service": "web", "manager": "process"}
    return [
        ServiceReport(**common, at=at(30), condition="down", state="stopped",
                      detail="exited with code 1", since=at(30)),
        ServiceReport(**common, at=at(30) + timedelta(seconds=1), condition="restarting",
                      state="starting", since=at(30), restarts=1,
                      last_action="restart_service"),
        ServiceReport(**common, at=at(30.25), condition="ok", state="running", healthy=True,
                      since=at(30.25), restarts=1, last_action="restart_service",
                      last_outcome="ok"),
    ]


CONFIG = """\
services:
  web:
    manager: process
    start: ["{python}", "-c", "import time; time.sleep(3600)"]
remediation:
  cleanup_roots:
    - path: {root}
"""


def write_config(tmp_path: Path, extra: str = "", name: str = "watchkeeper.yaml") -> Path:
    root = Path(mount_of(tmp_path)) / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    path = tmp_path / name
    path.write_text(CONFIG.format(python=sys.executable, root=root) + extra)
    return path


def record(tmp_path: Path, hog: Hog, config: Path) -> Path:
    """Write the hour through the real store as a server would have; returns the db."""
    settings = load_settings(config)
    # The alerts that did fire: the analyzer on the configuration of the time.
    did = Analyzer(lambda: settings, host=HOST, cleanup_roots=[
        str(r.path) for r in settings.remediation.cleanup_roots])
    reports = service_reports()
    store = SqliteStore.open(StorageConfig(data_dir=tmp_path / "data"))

    async def write() -> None:
        pending = list(reports)
        for snap in snapshots(hog, mount_of(tmp_path)):
            while pending and pending[0].at <= snap.at:
                rep = pending.pop(0)
                store.add_event(f"services.{HOST}", rep)
                for alert in did.observe_service(rep):
                    store.add_event(f"alerts.{HOST}", alert)
                if rep.condition == "down":
                    for phase in ("decided", "started", "finished"):
                        store.add_event(f"actions.{HOST}", RemediationEvent(
                            host=HOST, at=rep.at, phase=phase, action="restart_service",
                            target="web", verdict="auto", source="supervisor",
                            outcome="ok" if phase == "finished" else None,
                            message="web restarted"))
            store.add_snapshot(snap)
            for alert in did.observe(snap):
                store.add_event(f"alerts.{HOST}", alert)
                if alert.rule == "runaway" and alert.labels.get("change") == "new":
                    store.add_event(f"actions.{HOST}", RemediationEvent(
                        host=HOST, at=alert.at, phase="pending", action="stop_process",
                        target=f"pid {hog.pid}", verdict="approve",
                        fingerprint=alert.fingerprint, message="waits for a human"))
            if snap.seq % 200 == 0:
                await store.flush()
        await store.close()

    asyncio.run(write())
    return tmp_path / "data" / DB_FILENAME


@pytest.fixture
def hog(tmp_path: Path) -> Iterator[Hog]:
    """A real process standing for the recorded hog: a replay must never signal it."""
    signals = tmp_path / "hog-signals"
    proc = subprocess.Popen([sys.executable, "-c", HOG, str(signals)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        yield Hog(proc.pid, psutil.Process(proc.pid).create_time(), signals)
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture
def history(tmp_path: Path, hog: Hog) -> Path:
    return record(tmp_path, hog, write_config(tmp_path))


def fingerprint_of(data_dir: Path) -> dict[str, object]:
    """Every file of the data directory with its bytes' hash, size and mtime; row counts."""
    files = {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
             for p in sorted(data_dir.iterdir())}
    conn = sqlite3.connect(f"file:{data_dir / DB_FILENAME}?mode=ro&immutable=1", uri=True)
    try:
        rows = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("snapshots", "events", "samples", "series")}
    finally:
        conn.close()
    return {"files": files, "rows": rows}


def replay_json(tmp_path: Path, *args: str) -> dict[str, object]:
    out = wk(tmp_path, "replay", *RANGE, "--json", *args)
    assert out.returncode == 0, out.stderr
    data: dict[str, object] = json.loads(out.stdout)
    return data


def by_key(data: dict[str, object]) -> dict[tuple[str, str, str], dict[str, object]]:
    alerts = data["alerts"]
    assert isinstance(alerts, list)
    return {(a["rule"], a["metric"], a["dimension"]): a for a in alerts}


# --------------------------------------------------------------------------- the headline


def test_replay_with_the_current_configuration_reports_what_fired_and_was_done(
        tmp_path: Path, history: Path, hog: Hog) -> None:
    """Default settings, plus what an action needs to be suggested at all: the declared
    service (restart_service) and a clean-up root on the filling mount (clean_disk)."""
    before = fingerprint_of(history.parent)
    data = replay_json(tmp_path)
    assert data["host"] == HOST and data["snapshots"] == TICKS and data["service_reports"] == 3
    assert data["executed"] == 0
    assert data["database_opened"] == "immutable"
    alerts = by_key(data)
    disk = alerts[("threshold", "disk.percent", mount_of(tmp_path))]
    # 85 % is crossed at minute 30 (60 + 20 * 1.25), plus for_s 30 s.
    assert disk["would"]["fired_at"] == at(30.5).isoformat()
    assert disk["would"]["resolved_at"] == at(45).isoformat()
    assert disk["would"]["severity"] == "critical"
    runaway = alerts[("runaway", "process.cpu_percent", f"spin[{hog.pid}]")]
    assert runaway["would"]["fired_at"] == at(15).isoformat()
    service = alerts[("service", "service.up", "web")]
    assert service["would"]["fired_at"] == at(30).isoformat()
    assert service["would"]["resolved_at"] == at(30.25).isoformat()
    # The same configuration: every alert fires as it did, at the same time.
    assert {a["change"] for a in alerts.values()} == {"same"}, alerts
    assert set(data["rules"]) >= {"threshold", "runaway", "service"}
    # What would have been done, with the policy's verdicts: a restart of the crashed
    # service on its own, the hog and the full disk waiting for a human.
    would = {(a["action"], a["verdict"], a["check"]) for a in data["would_do"]}
    assert ("restart_service", "auto", "ok") in would
    assert ("stop_process", "approve", "ok") in would
    assert ("clean_disk", "approve", "ok") in would
    stop = next(a for a in data["would_do"] if a["action"] == "stop_process")
    assert stop["target"] == f"pid {hog.pid}" and stop["at"] == at(15).isoformat()
    restart = next(a for a in data["would_do"] if a["action"] == "restart_service")
    assert restart["source"] == "supervisor" and restart["at"] == at(30).isoformat()
    # What did happen, side by side.
    did = {(a["phase"], a["action"]) for a in data["did_do"]}
    assert did == {("pending", "stop_process"), ("decided", "restart_service"),
                   ("started", "restart_service"), ("finished", "restart_service")}
    # Nothing changed: not a byte, not a row, not a file; the hog was not signalled.
    assert fingerprint_of(history.parent) == before
    assert psutil.Process(hog.pid).status() != psutil.STATUS_ZOMBIE
    assert hog.signalled() == []


def test_the_human_output_is_a_compact_table_of_both_sides(tmp_path: Path, history: Path,
                                                           hog: Hog) -> None:
    out = wk(tmp_path, "replay", *RANGE)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "Shadow mode: nothing was executed" in text
    assert "720 snapshots and 3 service reports" in text
    for words in ("Alerts", "Would have done (decided, not executed)", "Did (stored "
                  "remediation events)", "Per rule", "disk.percent", f"spin[{hog.pid}]",
                  "approve (ok)", "auto (ok)", "12:30:30 critical"):
        assert words in text, words


# --------------------------------------------------------------------------- candidates


def test_a_lower_threshold_shows_the_extra_and_earlier_alerts_with_their_times(
        tmp_path: Path, history: Path) -> None:
    candidate = write_config(tmp_path, "thresholds:\n  cpu_warning: 40\n  cpu_critical: 95\n"
                             "  disk_warning: 75\n", name="candidate.yaml")
    data = replay_json(tmp_path, "--config", str(candidate))
    assert data["config"] == str(candidate)
    alerts = by_key(data)
    cpu = alerts[("threshold", "cpu.percent", "")]
    # 52 % from minute 5: above the new 40 % for 30 s.
    assert cpu["change"] == "new" and cpu["did"] is None
    assert cpu["would"]["fired_at"] == at(5.5).isoformat()
    assert cpu["would"]["resolved_at"] == at(25).isoformat()
    disk = alerts[("threshold", "disk.percent", mount_of(tmp_path))]
    # 75 % is crossed at minute 22, 8 minutes before 85 % was.
    assert disk["change"] == "earlier" and disk["delta_s"] == -480.0
    assert disk["would"]["fired_at"] == at(22.5).isoformat()
    assert data["rules"]["threshold"]["new"] == 1
    assert data["rules"]["threshold"]["earlier"] == 1


def test_a_disabled_rule_shows_its_alerts_as_would_not_fire(tmp_path: Path,
                                                           history: Path) -> None:
    candidate = write_config(tmp_path, "analyzer:\n  rules:\n    disk.percent: off\n",
                             name="candidate.yaml")
    data = replay_json(tmp_path, "--config", str(candidate))
    disk = by_key(data)[("threshold", "disk.percent", mount_of(tmp_path))]
    assert disk["change"] == "gone" and disk["would"] is None
    assert disk["did"]["fired_at"] == at(30.5).isoformat()
    # The forecast still fires (its own rule) and still suggests the clean-up.
    forecast = by_key(data)[("disk_full_forecast", "disk.full_eta_hours", mount_of(tmp_path))]
    assert forecast["change"] == "same"
    assert {a["answers"].split()[0] for a in data["would_do"]
            if a["action"] == "clean_disk"} == {"disk_full_forecast"}
    out = wk(tmp_path, "replay", *RANGE, "--config", str(candidate))
    assert "would not fire" in out.stdout


def test_a_stricter_policy_shows_the_verdicts_it_would_give(tmp_path: Path,
                                                           history: Path) -> None:
    candidate = write_config(tmp_path, "  actions:\n    restart_service: approve\n"
                             "    stop_process: 'off'\n", name="candidate.yaml")
    data = replay_json(tmp_path, "--config", str(candidate))
    would = {(a["action"], a["verdict"], a["check"]) for a in data["would_do"]}
    assert ("restart_service", "approve", "ok") in would
    assert ("stop_process", "refused", "mode") in would


def test_a_replay_while_the_store_is_being_written_reads_it_read_only(
        tmp_path: Path, history: Path) -> None:
    """A running serve keeps its database open (and its -wal file): replay reads beside it
    and the writer goes on writing."""
    async def scenario() -> None:
        store = SqliteStore.open(StorageConfig(data_dir=history.parent))
        try:
            snap = next(snapshots(Hog(1, 1.0), mount_of(tmp_path)))
            store.add_snapshot(snap.model_copy(update={"at": at(61), "seq": 9999}))
            await store.flush()
            data = await asyncio.to_thread(replay_json, tmp_path)
            assert data["database_opened"] == "ro" and data["snapshots"] == TICKS
            store.add_snapshot(snap.model_copy(update={"at": at(62), "seq": 10000}))
            assert await store.flush() == 1  # the writer is not disturbed
        finally:
            await store.close()

    asyncio.run(scenario())


# --------------------------------------------------------------------------- edges


def test_an_empty_range_is_an_answer(tmp_path: Path, history: Path) -> None:
    out = wk(tmp_path, "replay", "--from", "2024-03-05T00:00:00Z", "--to",
             "2024-03-05T01:00:00Z")
    assert out.returncode == 0, out.stderr
    assert "nothing would have fired" in out.stdout
    data = json.loads(wk(tmp_path, "replay", "--from", "2024-03-05T00:00:00Z", "--to",
                         "2024-03-05T01:00:00Z", "--json").stdout)
    assert data["snapshots"] == 0 and data["alerts"] == [] and data["would_do"] == []


@pytest.mark.parametrize(("args", "message"), [
    (("--from", "yesterday"), "--from 'yesterday' is not a time"),
    (("--from", "2024-03-04T13:00", "--to", "2024-03-04T12:00"), "must be before --to"),
    (("--to", "2024-03-04T12:00", "--from", "2024-03-04T12:00"), "must be before --to"),
    (("--from", "-24x"), "is not a time"),
], ids=["words", "from-after-to", "empty-range", "unknown-unit"])
def test_a_bad_range_is_one_line_and_exit_2(tmp_path: Path, history: Path,
                                           args: tuple[str, ...], message: str) -> None:
    before = fingerprint_of(history.parent)
    out = wk(tmp_path, "replay", *args)
    assert out.returncode == 2
    assert message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert fingerprint_of(history.parent) == before


def test_a_bad_candidate_config_is_one_line_and_exit_2(tmp_path: Path, history: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("thresholds:\n  disk_warnign: 75\n")
    out = wk(tmp_path, "replay", *RANGE, "--config", str(bad))
    assert out.returncode == 2
    assert "disk_warnign" in out.stderr and "disk_warning" in out.stderr  # did you mean
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_no_history_is_exit_2_and_creates_nothing(tmp_path: Path) -> None:
    out = wk(tmp_path, "replay", *RANGE)
    assert out.returncode == 2
    assert "no history database" in out.stderr
    assert not (tmp_path / "data").exists()


def test_relative_times_count_back_from_now() -> None:
    now = datetime(2024, 3, 4, 12, 0, tzinfo=timezone.utc)
    assert parse_range("-30m", None, now) == (now - timedelta(minutes=30), now)
    assert parse_range(None, None, now) == (now - timedelta(hours=24), now)
    assert parse_range("-2d", "-1d", now) == (now - timedelta(days=2), now - timedelta(days=1))
    assert parse_range("2024-03-04T10:00", "now", now)[0] == datetime(
        2024, 3, 4, 10, tzinfo=timezone.utc)
    with pytest.raises(ReplayError):
        parse_range("-99999999d", None, now)


def test_relative_times_work_on_the_command_line(tmp_path: Path, history: Path) -> None:
    data = json.loads(wk(tmp_path, "replay", "--from", "-30m", "--to", "-1m", "--json").stdout)
    span = datetime.fromisoformat(data["to"]) - datetime.fromisoformat(data["from"])
    assert span == timedelta(minutes=29)


def test_snapshots_are_read_in_pages_without_loss(tmp_path: Path, history: Path) -> None:
    with HistoryReader(history) as reader:
        seqs = [s.seq for s in reader.snapshots(T0.timestamp(), at(60).timestamp(), HOST,
                                                page=7)]
    assert seqs == list(range(TICKS))
