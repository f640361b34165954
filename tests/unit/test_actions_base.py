"""The action contract: lookup, validation, never raising, dry-run, serialisation, helpers."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any, ClassVar

import psutil
import pytest

from tests.fake_psutil import MemoryInfo
from watchkeeper.config import CleanupRoot, RemediationConfig
from watchkeeper.remediation.actions import (
    FIXED_PATH,
    ActionContext,
    ActionRefused,
    ActionResult,
    BaseAction,
    Check,
    CommandNotFound,
    CommandOutput,
    Done,
    Plan,
    Preview,
    Refused,
    Verification,
    get_action,
    resolve_argv,
)
from watchkeeper.remediation.actions.base import human_bytes
from watchkeeper.remediation.actions.clean_disk import rules_for
from watchkeeper.remediation.actions.runner import OutputExcerpt
from watchkeeper.remediation.process_guard import ProcStatus
from watchkeeper.remediation.registry import REGISTRY, CleanDiskParams, NotifyParams

EXECUTABLE = ("stop_process", "clean_disk", "rotate_log", "run_script", "notify_only")


def ctx(**settings: Any) -> ActionContext:
    return ActionContext(settings=RemediationConfig(**settings))


@pytest.mark.parametrize("name", EXECUTABLE)
def test_every_executable_action_has_an_executor_with_the_registry_spec(name: str) -> None:
    action = get_action(name)
    assert action.spec is REGISTRY[name]
    assert get_action(name) is action  # executors are stateless and shared


def test_unknown_actions_are_refused_and_every_registered_one_has_an_executor() -> None:
    with pytest.raises(ActionRefused, match="unknown action 'rm_rf'; known: clean_disk"):
        get_action("rm_rf")
    for name in REGISTRY:
        assert get_action(name).spec.name == name


class Scripted(BaseAction[NotifyParams]):
    """A test action whose steps do what the test says."""

    spec = REGISTRY["notify_only"]
    behaviour: ClassVar[dict[str, BaseException | None]] = {}

    def _step(self, name: str) -> None:
        exc = self.behaviour.get(name)
        if exc is not None:
            raise exc

    async def _preview(self, params: NotifyParams, ctx: ActionContext) -> Plan:
        self._step("preview")
        return Plan("would_run", f"would say {params.message}", items=("a",) * 300)

    async def _execute(self, params: NotifyParams, ctx: ActionContext) -> Done:
        self._step("execute")
        return Done("ok", "said it", output="token=abc123secret", details={"n": 1})

    async def _verify(self, params: NotifyParams, ctx: ActionContext,
                      result: ActionResult) -> Check:
        self._step("verify")
        return Check(True, "fine")


@pytest.fixture
def scripted() -> Scripted:
    Scripted.behaviour = {}
    return Scripted()


def test_a_spec_not_from_the_registry_is_rejected() -> None:
    from dataclasses import replace

    with pytest.raises(TypeError, match="not the registry's"):
        type("Bad", (Scripted,), {"spec": replace(REGISTRY["notify_only"], risk="high")})


async def test_execute_returns_a_result_and_redacts_output(scripted: Scripted) -> None:
    result = await scripted.execute({"message": "hi"}, ctx())
    assert (result.outcome, result.message, result.details) == ("ok", "said it", {"n": 1})
    assert result.ok and result.params == {"message": "hi"}
    assert "abc123secret" not in result.output
    assert result.duration_s >= 0 and result.started_at.tzinfo is not None


@pytest.mark.parametrize(("exc", "outcome", "text"), [
    (Refused("not today"), "refused", "not today"),
    (RuntimeError("boom"), "failed", "notify_only failed: RuntimeError: boom"),
    (PermissionError(13, "Permission denied", "/x"), "failed",
     "PermissionError: Permission denied (/x)"),
])
async def test_execute_never_raises(scripted: Scripted, exc: BaseException, outcome: str,
                                    text: str, caplog: pytest.LogCaptureFixture) -> None:
    Scripted.behaviour = {"execute": exc, "preview": exc, "verify": exc}
    result = await scripted.execute({"message": "hi"}, ctx())
    assert result.outcome == outcome and text in result.message
    preview = await scripted.preview({"message": "hi"}, ctx())
    assert preview.outcome == ("refused" if outcome == "refused" else "error")
    ok_result = result.model_copy(update={"outcome": "ok"})
    check = await scripted.verify({"message": "hi"}, ctx(), ok_result)
    assert not check.ok and text.split(": ", 1)[-1] in check.message


async def test_cancellation_is_not_swallowed(scripted: Scripted) -> None:
    Scripted.behaviour = {"execute": asyncio.CancelledError()}
    with pytest.raises(asyncio.CancelledError):
        await scripted.execute({"message": "hi"}, ctx())


@pytest.mark.parametrize("params", [{"message": 5}, {"message": "x", "shell": "rm -rf /"},
                                    {"message": "x" * 3000}])
async def test_invalid_params_are_refused_and_audited_as_given(
        scripted: Scripted, params: dict[str, Any]) -> None:
    result = await scripted.execute(params, ctx())
    assert result.outcome == "refused"
    assert result.message.startswith("invalid parameters for notify_only: ")
    assert result.params == params
    assert ActionResult.model_validate_json(result.model_dump_json()) == result


async def test_a_model_of_another_action_is_revalidated(scripted: Scripted) -> None:
    result = await scripted.execute(CleanDiskParams(root="/tmp"), ctx())
    assert result.outcome == "refused" and "Extra inputs are not permitted" in result.message


async def test_dry_run_previews_instead_of_executing(scripted: Scripted) -> None:
    Scripted.behaviour = {"execute": AssertionError("executed under dry_run")}
    result = await scripted.execute({"message": "hi"}, ctx(dry_run=True))
    assert result.outcome == "dry_run" and not result.ok
    assert result.message == "dry run, nothing done: would say hi"
    assert result.preview is not None and len(result.preview.items) == 200
    assert result.preview.items_total == 300
    check = await scripted.verify({"message": "hi"}, ctx(), result)
    assert not check.ok and "outcome was dry_run" in check.message


async def test_notify_only_changes_nothing_and_round_trips() -> None:
    action = get_action("notify_only")
    result = await action.execute({"message": "disk at 91% on /srv"}, ctx())
    preview = await action.preview({"message": "disk at 91% on /srv"}, ctx())
    check = await action.verify({"message": "disk at 91% on /srv"}, ctx(), result)
    assert result.ok and result.message == "disk at 91% on /srv"
    assert preview.summary == "would only notify: disk at 91% on /srv"
    assert check.ok
    for model in (result, preview, check):
        assert type(model).model_validate_json(model.model_dump_json()) == model
    assert Preview.model_json_schema() and Verification.model_json_schema()


class FakeRunner:
    """Records argv; answers with a canned CommandOutput."""

    def __init__(self, output: CommandOutput) -> None:
        self.output = output
        self.calls: list[tuple[tuple[str, ...], float]] = []

    def resolve(self, argv: Sequence[str]) -> tuple[str, ...]:
        return resolve_argv(argv)

    async def run(self, argv: Sequence[str], *, timeout_s: float) -> CommandOutput:
        self.calls.append((tuple(argv), timeout_s))
        return self.output


async def test_run_script_goes_through_the_injected_runner() -> None:
    runner = FakeRunner(CommandOutput(argv=("/usr/bin/backup", "--token=s3cr3tvalue"),
                                      exit_code=0, output="ok\n", output_bytes=3,
                                      duration_s=0.5))
    settings = RemediationConfig.model_validate(
        {"scripts": {"backup": {"argv": ["backup", "--token=s3cr3tvalue"], "timeout_s": 7}}})
    c = ActionContext(settings=settings, runner=runner)
    result = await get_action("run_script").execute({"name": "backup"}, c)
    assert runner.calls == [(("backup", "--token=s3cr3tvalue"), 7.0)]
    assert result.ok and result.argv == ("/usr/bin/backup", "--token=***")
    assert "s3cr3tvalue" not in result.model_dump_json()


class _DeniedProcess:
    def __init__(self, pid: int) -> None:
        self.pid = pid

    def create_time(self) -> float:
        return 100.0

    def is_running(self) -> bool:
        return True

    def status(self) -> str:
        return "running"

    def oneshot(self) -> nullcontext[None]:
        return nullcontext()

    def name(self) -> str:
        return "postgres"

    def memory_info(self) -> Any:
        return MemoryInfo(rss=8_000_000_000)

    def username(self) -> str:
        raise psutil.AccessDenied(self.pid)

    def cmdline(self) -> list[str]:
        raise psutil.AccessDenied(self.pid)

    def parents(self) -> list[Any]:
        return []

    def terminate(self) -> None:
        raise psutil.AccessDenied(self.pid)


class _DeniedPsutil:
    NoSuchProcess = psutil.NoSuchProcess
    AccessDenied = psutil.AccessDenied
    STATUS_ZOMBIE = psutil.STATUS_ZOMBIE
    Process = _DeniedProcess


async def test_stop_process_reports_a_signal_it_may_not_send() -> None:
    # pid 4242 exists only in the fake: the kernel's view of it is faked at the same boundary
    # (a process of watchkeeper's own user that still refuses the signal, e.g. under an LSM).
    c = ActionContext(settings=RemediationConfig(), psutil=_DeniedPsutil(), own_pid=10,
                      own_uid=1000, proc_status=lambda pid: ProcStatus(
                          pid=pid, tgid=pid, ppid=1, comm="postgres",
                          uids=(1000, 1000, 1000), kernel_thread=False))
    params = {"pid": 4242, "create_time": 100.0, "grace_s": 0}
    preview = await get_action("stop_process").preview(params, c)
    result = await get_action("stop_process").execute(params, c)
    assert preview.summary.startswith("would stop pid 4242 postgres, 8.0 GB RSS: SIGTERM")
    assert result.outcome == "failed"
    assert result.message == "not permitted to signal pid 4242 postgres, 8.0 GB RSS (user None)"\
        "; nothing was stopped"


def test_clean_disk_params_only_narrow_the_root() -> None:
    settings = RemediationConfig(cleanup_roots=(
        CleanupRoot(path="/srv/cache", patterns=("*.tmp",), min_age_hours=24, max_bytes=10**9),
        CleanupRoot(path="/srv/cache/big", patterns=("*.bin",), min_age_hours=1),
    ))
    rules = rules_for(settings, CleanDiskParams(root="/srv/cache/a/b/", min_age_hours=1,
                                                max_bytes=10**12, patterns=("*",)))
    assert (rules.root, rules.target, rules.below_root) == ("/srv/cache", "/srv/cache/a/b",
                                                            ("a", "b"))
    assert (rules.min_age_hours, rules.max_bytes) == (24, 10**9)
    assert rules.matches("x/y.tmp", "y.tmp") and not rules.matches("y.txt", "y.txt")
    nested = rules_for(settings, CleanDiskParams(root="/srv/cache/big", min_age_hours=48))
    assert (nested.root, nested.root_patterns, nested.min_age_hours, nested.max_bytes) == (
        "/srv/cache/big", ("*.bin",), 48, None)
    for bad in ("/srv/cachex", "/srv", "srv/cache", "/srv/cache/../etc", "/srv/cache/\0"):
        with pytest.raises(Refused):
            rules_for(settings, CleanDiskParams(root=bad))


def test_output_excerpt_keeps_head_and_tail_on_line_boundaries() -> None:
    ex = OutputExcerpt(head=60, tail=60)
    for i in range(100):
        ex.feed(f"line {i:03d} password=hunter{i}\n".encode())
    text = ex.text()
    # 60 bytes hold two whole lines and part of a third, which is left out.
    assert text.startswith("line 000 password=***\nline 001 password=***\n…[")
    assert text.endswith("]…\nline 098 password=***\nline 099 password=***\n")
    assert "hunter" not in text
    one_long_line = OutputExcerpt(head=10, tail=10)
    one_long_line.feed(b"x" * 100 + b"\n")
    assert one_long_line.text() == "x" * 10 + "\n…[81 bytes omitted]…\n" + "x" * 9 + "\n"
    short = OutputExcerpt()
    short.feed(b"just this\xff")
    assert short.text() == "just this\ufffd" and short.total == 10


def test_resolve_argv_uses_the_fixed_path_only() -> None:
    assert resolve_argv(["env", "-i"])[1:] == ("-i",)
    assert resolve_argv(["env"])[0].startswith(("/usr/bin/", "/bin/"))
    assert FIXED_PATH == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    for argv, problem in (([], "empty"), (["./x"], "must be absolute"),
                          (["nope-xyz"], "is not an executable")):
        with pytest.raises(CommandNotFound, match=problem):
            resolve_argv(argv)


@pytest.mark.parametrize(("n", "text"), [(0, "0 B"), (999, "999 B"), (1000, "1.0 kB"),
                                         (3_200_000_000, "3.2 GB"), (7.9e12, "7.9 TB"),
                                         (5e15, "5000.0 TB")])
def test_human_bytes(n: float, text: str) -> None:
    assert human_bytes(n) == text
