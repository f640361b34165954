"""Healing like a process supervisor, through the real runtime with DEFAULT remediation
settings: managed processes the test's runtime started, killed with SIGKILL by the test.

Defaults in play: startup_grace_s 60, healing_cooldown 60, backoff 1 s doubling,
flap_max_attempts 3 in 300 s, stable_window_s 5. Only the data and log dirs are moved
to tmp_path (and check_interval is the default 5 s: the sensor tick plays no part).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from watchkeeper.config import validate
from watchkeeper.events import RemediationEvent, ServiceReport
from watchkeeper.runtime import Runtime

from ..conftest import BusRecorder
from .test_remediator import free_port, remediator, running, until


def default_settings(tmp_path: Path, services: dict[str, Any]) -> Any:
    return validate({"storage": {"data_dir": str(tmp_path / "data")},
                     "logging": {"dir": str(tmp_path / "logs"), "color": False},
                     "services": services})


def web_service(port: int) -> dict[str, Any]:
    return {"start": [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
            "checks": [{"http": f"http://127.0.0.1:{port}/", "timeout_s": 1}]}


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as resp:
            return bool(resp.status < 400)
    except OSError:
        return False


def phase(recorder: BusRecorder, name: str) -> list[RemediationEvent]:
    return [e for e in recorder.of(RemediationEvent)
            if isinstance(e, RemediationEvent) and e.phase == name]


def reports(recorder: BusRecorder, service: str) -> list[ServiceReport]:
    return [e for e in recorder.of(ServiceReport)
            if isinstance(e, ServiceReport) and e.service == service]


async def healed_within(url: str, old_pid: int, rt: Runtime, limit: float) -> float:
    """Seconds from now until ``url`` answers from a process other than ``old_pid``."""
    t0 = time.monotonic()
    while True:
        pid = rt.services.backend("web").pid("web")  # type: ignore[attr-defined]
        if pid not in (None, old_pid) and await asyncio.to_thread(answers, url):
            return time.monotonic() - t0
        assert time.monotonic() - t0 < limit, f"web not healthy again within {limit} s"
        await asyncio.sleep(0.02)


async def test_two_kills_eight_seconds_apart_each_heal_within_two_seconds(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Today the first kill waits out the 60 s start-up grace and the second the 60 s
    healing_cooldown; a supervisor restarts at once, every time."""
    caplog.set_level("INFO")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    async with running(default_settings(tmp_path, {"web": web_service(port)})) as (rt, rec):
        started = time.monotonic()
        status = await rt.services.wait_healthy("web", timeout_s=10)
        assert status.healthy and status.pid
        took = []
        for round_ in range(2):
            pid = rt.services.backend("web").pid("web")  # type: ignore[attr-defined]
            assert pid is not None
            kill_at = time.monotonic()
            os.kill(pid, signal.SIGKILL)  # the runtime started it for this test
            took.append(await healed_within(url, pid, rt, limit=2.0))
            if round_ == 0:
                # Still inside the default 60 s grace: it was not what held this back.
                assert time.monotonic() - started < 60
                await asyncio.sleep(max(0.0, kill_at + 8.0 - time.monotonic()))
        # Each restart is announced fixed once it stayed up for the stability window.
        await until(lambda: len(phase(rec, "finished")) >= 2, timeout=10)
        finished = phase(rec, "finished")
        assert [(e.outcome, e.verified) for e in finished] == [("ok", True)] * 2
        assert all("stable for 5 s" in e.message for e in finished)
        # Proposed by the process supervisor, and the log says so (not "a rule").
        assert all(e.source == "supervisor" for e in finished)
        assert any("(proposed by the process supervisor)" in r.getMessage()
                   for r in caplog.records)
        assert phase(rec, "decided") == []  # nothing was refused on the way
        await until(lambda: len([r for r in caplog.records
                                 if "✅ fixed" in r.getMessage()]) == 2)
        # The restarts were counted; none is in flight.
        (report,) = remediator(rt).book.reports()
        assert report.condition == "ok" and report.restarts == 2
    assert max(took) < 2.0


async def test_a_service_dying_two_seconds_after_each_start_is_never_fixed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Today it is announced "✅ fixed ... running and healthy" after every restart; a
    supervisor sees each start die inside its stability window, backs off (1 s, 2 s),
    and marks it failing after flap_max_attempts (3), saying so."""
    caplog.set_level("INFO")
    start = [sys.executable, "-c", "import time; time.sleep(2); raise SystemExit(1)"]
    settings = default_settings(tmp_path, {"dies": {"start": start,
                                                    "checks": [{"process": True}]}})
    async with running(settings) as (rt, rec):
        (escalated,) = await until(lambda: phase(rec, "escalated"), timeout=30)
        assert "marked failing after 3 attempts within 300 s" in escalated.why
        await asyncio.sleep(0.3)
        finished = phase(rec, "finished")
        assert len(phase(rec, "started")) == 3 and len(finished) == 3
        assert all(e.verified is False for e in finished)
        assert all("dies exited with code 1" in e.message for e in finished)
        assert not any("✅ fixed" in r.getMessage() for r in caplog.records)
        # Held back by backoff between tries, asked again at its time (not at a tick).
        held = [e for e in phase(rec, "decided") if "backoff" in e.why]
        assert len(held) == 2
        # The service says what happened and what a person can do.
        report = remediator(rt).book.report("dies")
        assert report is not None and report.condition == "failing"
        assert report.restarts == 3
        assert report.remediation == (
            "watchkeeper restarted it 3 times; remediation gave up (flap protection: 3 "
            "attempts within 300 s, flap_max_attempts 3); reset it with POST "
            '/api/actions/reset {"service": "dies"} or the Reset button on the dashboard')
        assert reports(rec, "dies")[-1].condition == "failing"
        assert any(r.condition == "crash_looping" for r in reports(rec, "dies"))
    # The failing mark is persisted: a new watchkeeper on the same data dir says so from
    # its first report, and does not try again.
    async with running(settings) as (rt, rec):
        first = await until(lambda: reports(rec, "dies"), timeout=10)
        assert first[0].condition == "failing"
        assert "remediation gave up (flap protection: 3 attempts" in first[0].remediation
        await asyncio.sleep(2.5)  # it died once more meanwhile: still no try
        assert phase(rec, "started") == []
        assert {r.condition for r in reports(rec, "dies")} == {"failing"}
