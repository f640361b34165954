"""run_script and the command runner with real processes: fixed env, no shell, timeouts."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import psutil
import pytest

from watchkeeper.config import RemediationConfig, ScriptConfig
from watchkeeper.remediation.actions import (
    FIXED_PATH,
    ActionContext,
    ActionResult,
    SubprocessRunner,
    get_action,
)

PY = sys.executable


def ctx(dry_run: bool = False, **scripts: ScriptConfig) -> ActionContext:
    return ActionContext(settings=RemediationConfig(scripts=scripts, dry_run=dry_run))


def script(*argv: str, timeout_s: float = 10.0) -> ScriptConfig:
    return ScriptConfig(argv=argv, timeout_s=timeout_s)


def roundtrip(result: ActionResult) -> None:
    assert ActionResult.model_validate_json(result.model_dump_json()) == result


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def kill_if_alive(pid: int) -> None:
    """Clean up a process this test made (only if it is still the one we started)."""
    if not gone(pid):
        psutil.Process(pid).kill()


async def test_a_declared_script_runs_with_the_fixed_environment(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "leak-me")
    monkeypatch.setenv("LD_PRELOAD", "/tmp/evil.so")
    c = ctx(show_env=script("env"))

    result = await get_action("run_script").execute({"name": "show_env"}, c)

    assert result.outcome == "ok" and result.exit_code == 0, result.message
    assert result.argv == ("/usr/bin/env",) or result.argv[0].endswith("/env")
    assert sorted(result.output.splitlines()) == ["LANG=C.UTF-8", f"PATH={FIXED_PATH}"]
    assert (await get_action("run_script").verify({"name": "show_env"}, c, result)).ok
    roundtrip(result)


async def test_no_shell_ever_interprets_the_arguments(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    c = ctx(echo=script("echo", "$HOME;", "touch", str(marker), "|", "`id`"))
    result = await get_action("run_script").execute({"name": "echo"}, c)
    assert result.output == f"$HOME; touch {marker} | `id`\n"
    assert not marker.exists()


async def test_an_undeclared_script_is_refused(tmp_path: Path) -> None:
    c = ctx(backup=script("true"))
    for name in ("rm", "backup;rm"):
        result = await get_action("run_script").execute({"name": name}, c)
        assert result.outcome == "refused"
    assert "is not declared in remediation.scripts (backup)" in (
        await get_action("run_script").execute({"name": "rm"}, c)).message
    result = await get_action("run_script").execute({"name": "x", "argv": ["rm"]}, c)
    assert result.outcome == "refused" and "Extra inputs are not permitted" in result.message


async def test_failure_exit_code_and_a_redacted_output_excerpt() -> None:
    code = "import sys; print('connecting with password=hunter2'); sys.exit(3)"
    c = ctx(fail=script(PY, "-c", code))
    result = await get_action("run_script").execute({"name": "fail"}, c)
    assert result.outcome == "failed" and result.exit_code == 3
    assert result.message == "script 'fail' exited with 3"
    assert "password=***" in result.output and "hunter2" not in result.model_dump_json()
    assert not (await get_action("run_script").verify({"name": "fail"}, c, result)).ok


async def test_a_timeout_kills_the_script_and_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    code = ("import subprocess, sys, time\n"
            "child = subprocess.Popen(['sleep', '60'])\n"
            f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
            "print('started', flush=True)\n"
            "time.sleep(60)\n")
    c = ctx(hang=script(PY, "-c", code, timeout_s=0.5))
    t0 = time.monotonic()
    result = await get_action("run_script").execute({"name": "hang"}, c)
    child = int(pid_file.read_text())
    try:
        assert time.monotonic() - t0 < 5
        assert result.outcome == "failed" and result.exit_code is None
        assert result.details["timed_out"] is True
        assert "timed out after 0.5 s; its process group was killed" in result.message
        assert result.output == "started\n"
        assert wait_gone(child)
    finally:
        kill_if_alive(child)


async def test_a_child_left_holding_the_output_does_not_hold_us(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    code = ("import subprocess\n"
            "child = subprocess.Popen(['sleep', '30'])\n"
            f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
            "print('done')\n")
    c = ctx(bg=script(PY, "-c", code, timeout_s=20))
    t0 = time.monotonic()
    result = await get_action("run_script").execute({"name": "bg"}, c)
    child = int(pid_file.read_text())
    try:
        assert result.outcome == "ok" and result.output == "done\n"
        assert time.monotonic() - t0 < 5
    finally:
        kill_if_alive(child)


async def test_long_output_is_capped_with_head_and_tail() -> None:
    code = "for i in range(200000): print(f'line {i}')"
    c = ctx(chatty=script(PY, "-c", code))
    result = await get_action("run_script").execute({"name": "chatty"}, c)
    assert result.outcome == "ok"
    assert result.output.startswith("line 0\nline 1\n")
    assert result.output.endswith("line 199999\n")
    assert "bytes omitted]" in result.output and len(result.output) < 5000
    bytes_out = result.details["output_bytes"]
    assert isinstance(bytes_out, int) and bytes_out > 2_000_000


async def test_preview_and_dry_run_run_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    c = ctx(touch=script("touch", str(marker), timeout_s=5))
    preview = await get_action("run_script").preview({"name": "touch"}, c)
    result = await get_action("run_script").execute({"name": "touch"},
                                                    ctx(True, touch=script("touch", str(marker))))
    assert preview.outcome == "would_run"
    assert preview.summary.endswith(f"touch {marker} (timeout 5 s)")
    assert preview.summary.startswith("would run script 'touch': /")
    assert result.outcome == "dry_run" and "would run script 'touch'" in result.message
    assert not marker.exists()


async def test_an_executable_not_on_the_fixed_path_is_refused(tmp_path: Path) -> None:
    c = ctx(nope=script("no-such-tool-xyz"), rel=script("bin/tool"))
    for name, problem in (("nope", "is not an executable on /usr/local/sbin"),
                          ("rel", "must be absolute")):
        result = await get_action("run_script").execute({"name": name}, c)
        preview = await get_action("run_script").preview({"name": name}, c)
        assert result.outcome == "refused" and problem in result.message
        assert preview.outcome == "refused" and problem in preview.summary


async def test_runner_resolves_against_the_fixed_path_not_ours(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "env"
    fake.write_text("#!/bin/sh\necho hijacked\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    out = await SubprocessRunner().run(["env"], timeout_s=5)
    assert out.argv[0] != str(fake) and "hijacked" not in out.output
