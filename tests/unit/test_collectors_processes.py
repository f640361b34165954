"""Process summary: counts, top-N ordering, vanishing and forbidden processes, cost."""

from __future__ import annotations

import pytest

from tests.fake_psutil import FakeProcess, FakePsutil
from watchkeeper.collectors.common import MissingLog
from watchkeeper.collectors.processes import CHEAP_ATTRS, read_processes
from watchkeeper.events import ProcessSummary

MIB = 1024**2
NOW = 1_700_001_000.0


def _read(fake: FakePsutil, top_n: int = 3) -> tuple[ProcessSummary, dict[str, str]]:
    log = MissingLog(fake)
    summary = read_processes(fake, log, top_n, NOW)
    return summary, {m.key: m.reason for m in log.entries}


@pytest.fixture
def fake() -> FakePsutil:
    f = FakePsutil()
    f.processes = [
        FakeProcess(1, "init", cpu_percent=0.1, rss=10 * MIB, num_threads=1),
        FakeProcess(200, "postgres", cpu_percent=50.0, rss=900 * MIB, num_threads=12,
                    status="running", create_time=NOW - 3600, username="postgres",
                    cmdline=["postgres", "-D", "/var/lib/pg", "--password=hunter2"]),
        FakeProcess(300, "burner", cpu_percent=50.0, rss=20 * MIB, num_threads=1,
                    status="running", cmdline=["burner"]),
        FakeProcess(400, "java", cpu_percent=20.0, rss=2000 * MIB, num_threads=80),
        FakeProcess(500, "defunct", status="zombie", num_threads=1),
        FakeProcess(600, "idle", cpu_percent=0.0, rss=1 * MIB, num_threads=2),
    ]
    return f


def test_counts_and_top_lists_in_order(fake: FakePsutil) -> None:
    summary, gaps = _read(fake)
    assert gaps == {}
    assert (summary.total, summary.running, summary.zombies, summary.threads) == (6, 2, 1, 97)
    # CPU ties (50 %) are broken by memory, then by lower pid.
    assert [p.pid for p in summary.top_cpu] == [200, 300, 400]
    assert [p.pid for p in summary.top_memory] == [400, 200, 300]
    pg = summary.top_cpu[0]
    assert pg.name == "postgres" and pg.user == "postgres" and pg.status == "running"
    assert pg.cmdline == "postgres -D /var/lib/pg --password=***"
    assert pg.rss == 900 * MIB
    assert pg.memory_percent == pytest.approx(900 / (8 * 1024) * 100)
    assert pg.age_s == 3600.0


def test_expensive_attributes_read_only_for_top_processes(fake: FakePsutil) -> None:
    _read(fake, top_n=1)
    by_pid = {p.pid: p for p in fake.processes}
    # top_cpu = 200, top_memory = 400; each read once even if it were in both lists.
    assert {pid for pid, p in by_pid.items() if p.calls["cmdline"]} == {200, 400}
    assert all(p.calls["cmdline"] <= 1 and p.calls["username"] <= 1 for p in fake.processes)
    assert fake.calls["process_iter"] == 1
    assert "cmdline" not in CHEAP_ATTRS and "username" not in CHEAP_ATTRS


def test_top_n_zero_reads_no_details(fake: FakePsutil) -> None:
    summary, _ = _read(fake, top_n=0)
    assert summary.top_cpu == () and summary.top_memory == ()
    assert all(p.calls["cmdline"] == 0 for p in fake.processes)


def test_process_vanishing_mid_scan_is_just_not_counted(fake: FakePsutil) -> None:
    fake.processes[3].errors["memory_info"] = fake.NoSuchProcess(400)
    summary, gaps = _read(fake)
    assert gaps == {}
    assert summary.total == 5
    assert 400 not in [p.pid for p in summary.top_memory]


def test_access_denied_mid_scan_costs_only_that_field(fake: FakePsutil) -> None:
    fake.processes[3].errors["memory_info"] = fake.AccessDenied(400)
    fake.processes[3].errors["num_threads"] = fake.AccessDenied(400)
    summary, gaps = _read(fake)
    assert summary.total == 6
    assert gaps == {"processes.threads": "partial: unreadable for 1 processes"}
    assert summary.threads == 17
    java = next(p for p in summary.top_cpu if p.pid == 400)
    assert java.rss is None and java.memory_percent is None


def test_top_process_vanishing_before_its_details_keeps_what_was_seen(
    fake: FakePsutil,
) -> None:
    fake.processes[1].errors["username"] = fake.NoSuchProcess(200)
    fake.processes[1].errors["cmdline"] = fake.NoSuchProcess(200)
    fake.processes[2].errors["cmdline"] = fake.AccessDenied(300)
    fake.processes[4].errors["cmdline"] = fake.ZombieProcess(500)
    summary, gaps = _read(fake, top_n=6)
    assert gaps == {"process:200": "process vanished", "process:300.cmdline": "access denied"}
    by_pid = {p.pid: p for p in summary.top_cpu}
    assert by_pid[200].cpu_percent == 50.0 and by_pid[200].user is None
    assert by_pid[200].cmdline == ""
    assert by_pid[300].user == "root" and by_pid[300].cmdline == ""
    assert by_pid[500].cmdline == ""        # a zombie has no command line: nothing missing


def test_iteration_that_breaks_gives_no_misleading_totals(fake: FakePsutil) -> None:
    fake.iter_error = (3, fake.AccessDenied())
    summary, gaps = _read(fake)
    assert gaps == {"processes.list": "incomplete: access denied"}
    assert summary.total is None and summary.zombies is None
    assert [p.pid for p in summary.top_cpu] == [200, 300, 1]


def test_windows_idle_process_never_tops_cpu(fake: FakePsutil) -> None:
    fake.processes.append(FakeProcess(0, "System Idle Process", cpu_percent=180.0))
    summary, _ = _read(fake, top_n=1)
    assert summary.top_cpu[0].pid == 200


def test_a_command_line_is_redacted_on_every_tick_and_by_the_current_rules(
        fake: FakePsutil) -> None:
    """Redacted lines are reused from tick to tick; a secret never shows on a later tick,
    and a redaction rule added at run time applies from the next tick on."""
    import re

    from watchkeeper.redact import REDACTION_RULES, RedactionRule

    first, _ = _read(fake)
    again, _ = _read(fake)
    line = {p.pid: p.cmdline for p in first.top_cpu}[200]
    assert "hunter2" not in line and {p.pid: p.cmdline for p in again.top_cpu}[200] == line
    assert "/var/lib/pg" in line
    rule = RedactionRule("test-data-dir", re.compile(r"/var/lib/pg"), "***")
    REDACTION_RULES.append(rule)
    try:
        later, _ = _read(fake)
    finally:
        REDACTION_RULES.remove(rule)
    assert "/var/lib/pg" not in {p.pid: p.cmdline for p in later.top_cpu}[200]
    back, _ = _read(fake)
    assert {p.pid: p.cmdline for p in back.top_cpu}[200] == line
