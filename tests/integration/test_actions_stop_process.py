"""stop_process against real child processes this test starts (and only those)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import psutil
import pytest

from watchkeeper.config import RemediationConfig
from watchkeeper.remediation.actions import ActionContext, ActionResult, get_action

IGNORE_TERM = ("import signal, time\n"
               "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
               "print('ready', flush=True)\n"
               "time.sleep(60)\n")

READY_SLEEP = "import time\nprint('ready', flush=True)\ntime.sleep(30)\n"


def start(children: list[subprocess.Popen[bytes]], argv: list[str]) -> tuple[int, float]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
    children.append(proc)
    return proc.pid, psutil.Process(proc.pid).create_time()


def ctx(dry_run: bool = False) -> ActionContext:
    return ActionContext(settings=RemediationConfig(dry_run=dry_run), poll_interval_s=0.02)


def roundtrip(result: ActionResult) -> None:
    assert ActionResult.model_validate_json(result.model_dump_json()) == result


async def test_sigterm_stops_a_sleep(children: list[subprocess.Popen[bytes]]) -> None:
    pid, started = start(children, ["sleep", "30"])
    params = {"pid": pid, "create_time": started, "grace_s": 0.2}
    action = get_action("stop_process")

    result = await action.execute(params, ctx())

    assert result.outcome == "ok", result.message
    assert result.details["signal"] == "SIGTERM"
    assert result.message.startswith(f"stopped pid {pid} sleep")
    assert children[0].wait(timeout=5) == -signal.SIGTERM
    check = await action.verify(params, ctx(), result)
    assert check.ok and check.message == f"pid {pid} is gone"
    roundtrip(result)


async def test_sigkill_after_grace_for_a_process_ignoring_sigterm(
        children: list[subprocess.Popen[bytes]]) -> None:
    pid, started = start(children, [sys.executable, "-c", IGNORE_TERM])
    stdout = children[0].stdout
    assert stdout is not None and stdout.readline() == b"ready\n"  # the handler is in place

    result = await get_action("stop_process").execute(
        {"pid": pid, "create_time": started, "grace_s": 0.2}, ctx())

    assert result.outcome == "ok", result.message
    assert result.details["signal"] == "SIGKILL"
    waited = result.details["waited_s"]
    assert isinstance(waited, float) and 0.2 <= waited < 5
    assert children[0].wait(timeout=5) == -signal.SIGKILL


async def test_a_different_create_time_is_refused_and_the_process_lives(
        children: list[subprocess.Popen[bytes]]) -> None:
    pid, started = start(children, ["sleep", "30"])
    for c in (ctx(), ctx(dry_run=True)):
        result = await get_action("stop_process").execute(
            {"pid": pid, "create_time": started - 5.0, "grace_s": 0.2}, c)
        preview = await get_action("stop_process").preview(
            {"pid": pid, "create_time": started + 5.0}, c)
        assert result.outcome in ("refused", "dry_run")
        assert "the pid was reused" in result.message
        assert preview.outcome == "refused" and "the pid was reused" in preview.summary
    assert children[0].poll() is None and psutil.Process(pid).status() != "zombie"


async def test_without_create_time_nothing_is_signalled(
        children: list[subprocess.Popen[bytes]]) -> None:
    pid, _ = start(children, ["sleep", "30"])
    result = await get_action("stop_process").execute({"pid": pid}, ctx())
    assert result.outcome == "refused" and "needs its create_time" in result.message
    assert children[0].poll() is None


@pytest.mark.parametrize(("pid", "problem"), [
    (1, "greater than 1"),
    (0, "greater than 1"),
    (os.getpid(), "is watchkeeper itself"),
    (os.getppid(), "is an ancestor of watchkeeper"),
], ids=["pid-1", "pid-0", "itself", "its-parent"])  # the same ids in every xdist worker
async def test_protected_pids_are_refused(pid: int, problem: str) -> None:
    create_time = psutil.Process(pid).create_time() if pid > 1 else 1.0
    result = await get_action("stop_process").execute(
        {"pid": pid, "create_time": create_time, "grace_s": 0}, ctx())
    assert result.outcome == "refused" and problem in result.message, result.message
    roundtrip(result)


async def test_preview_and_dry_run_name_the_target_and_signal_nothing(
        children: list[subprocess.Popen[bytes]]) -> None:
    pid, started = start(children, [sys.executable, "-c", READY_SLEEP, "--password=hunter2"])
    stdout = children[0].stdout
    assert stdout is not None and stdout.readline() == b"ready\n"
    params = {"pid": pid, "create_time": started, "grace_s": 0.2}

    preview = await get_action("stop_process").preview(params, ctx())
    result = await get_action("stop_process").execute(params, ctx(dry_run=True))

    assert preview.outcome == "would_run"
    assert re.match(rf"would stop pid {pid} python\S*, [0-9.]+ [kMG]B RSS: SIGTERM, then "
                    r"SIGKILL after 0.2 s$", preview.summary), preview.summary
    assert "--password=***" in preview.items[0] and "hunter2" not in preview.model_dump_json()
    assert preview.details["pid"] == pid and preview.details["create_time"] == started
    assert result.outcome == "dry_run" and result.preview is not None
    assert result.preview.items == preview.items  # the RSS in the summary may have moved
    assert result.message.startswith(f"dry run, nothing done: would stop pid {pid} python")
    assert children[0].poll() is None


async def test_an_already_gone_process_is_nothing_to_do(
        children: list[subprocess.Popen[bytes]]) -> None:
    pid, started = start(children, ["sleep", "30"])
    children[0].kill()
    children[0].wait(timeout=5)
    params = {"pid": pid, "create_time": started, "grace_s": 0.2}

    preview = await get_action("stop_process").preview(params, ctx())
    result = await get_action("stop_process").execute(params, ctx())

    assert preview.outcome == "nothing_to_do"
    assert result.outcome == "ok" and result.details["already_gone"] is True
    assert (await get_action("stop_process").verify(params, ctx(), result)).ok
