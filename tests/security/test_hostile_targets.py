"""Security corpus: hostile stop_process targets (issue 11, "which process may watchkeeper
signal").

Each case is a pid a token holder, a rule fed by a hostile process, or an LLM steered by an
injection could name. The promise: refused, with a reason that names what the pid is, at
every stage - when asked (``pin``, the API, the remediator), in the dry run, and right before
the signal - and the process lives. Real processes this test starts (and only those are
killed); the kernel's answer is faked only where the real thing cannot exist here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from watchkeeper.agents.remediator import RemediatorAgent
from watchkeeper.config import ConfigError, RemediationConfig, ServiceConfig, validate
from watchkeeper.remediation.actions import ActionContext, get_action
from watchkeeper.remediation.actions.stop_process import pin
from watchkeeper.remediation.policy import ActionRequest
from watchkeeper.remediation.process_guard import (
    DEFAULT_PROTECTED,
    GuardRules,
    ProcStatus,
    StatusReader,
    read_status,
)
from watchkeeper.remediation.registry import ActionRefused, StopProcessParams
from watchkeeper.remediation.services import ProcessManager

from ..integration.test_api_harness import api_settings, serve_api

#: A child whose second thread prints its thread id, then both wait.
THREADED = ("import threading, time\n"
            "def work():\n"
            "    print(threading.get_native_id(), flush=True)\n"
            "    time.sleep(60)\n"
            "threading.Thread(target=work, daemon=True).start()\n"
            "time.sleep(60)\n")
SLEEP = "/bin/sleep" if os.path.exists("/bin/sleep") else "/usr/bin/sleep"
ME = os.geteuid()


def named_sleep(children: list[subprocess.Popen[bytes]], tmp_path: Path, name: str,
                **popen: object) -> int:
    """A real ``sleep`` whose process name is ``name`` (run through a symlink so named)."""
    link = tmp_path / name
    if not link.exists():
        link.symlink_to(SLEEP)
    proc = subprocess.Popen([str(link), "60"], **popen)  # type: ignore[call-overload]
    children.append(proc)
    for _ in range(500):  # until exec is done and the kernel shows the new name
        if psutil.Process(proc.pid).name() == name:
            return proc.pid
        threading.Event().wait(0.01)
    raise AssertionError(f"{name} never showed up as pid {proc.pid}")


def threaded_child(children: list[subprocess.Popen[bytes]]) -> tuple[int, int]:
    """(pid, tid of its second thread) of a real child process."""
    proc = subprocess.Popen([sys.executable, "-c", THREADED], stdout=subprocess.PIPE)
    children.append(proc)
    assert proc.stdout is not None
    tid = int(proc.stdout.readline())
    assert tid != proc.pid
    return proc.pid, tid


def ctx(**settings: object) -> ActionContext:
    return ActionContext(settings=RemediationConfig.model_validate(settings),
                         poll_interval_s=0.02)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def refused_everywhere(c: ActionContext, pid: int, says: str) -> None:
    """Refused when asked (pin, as the API does), in the dry run and when executed; ``says``
    is a regular expression."""
    with pytest.raises(ActionRefused, match=says):
        pin(c, StopProcessParams(pid=pid, grace_s=0.2))
    create_time = psutil.Process(pid).create_time()
    params = {"pid": pid, "create_time": create_time, "grace_s": 0.2}
    action = get_action("stop_process")
    preview = await action.preview(params, c)
    assert preview.outcome == "refused" and re.search(says, preview.summary), preview.summary
    dry = await action.execute(params, dataclasses.replace(
        c, settings=c.settings.model_copy(update={"dry_run": True})))
    assert dry.outcome == "dry_run" and "refused" in dry.message, dry.message
    assert "would stop" not in dry.message
    # If a SIGTERM went out anyway, the long grace and the bound keep the SIGKILL that would
    # follow from ever being sent (the target may be this test process).
    result = await asyncio.wait_for(action.execute({**params, "grace_s": 300}, c), 10)
    assert result.outcome == "refused" and re.search(says, result.message), result.message


# --------------------------------------------------------------------------- threads


async def test_a_thread_of_a_process_is_refused_naming_its_process(
        children: list[subprocess.Popen[bytes]]) -> None:
    pid, tid = threaded_child(children)
    await refused_everywhere(ctx(), tid, f"pid {tid} is a thread of process {pid} "
                                         r"\(python")
    assert children[0].poll() is None and alive(pid)
    # The process itself may be stopped: the refusal is about the thread id, not the process.
    assert pin(ctx(), StopProcessParams(pid=pid)).create_time is not None


@pytest.fixture
def sigterm_trap() -> Iterator[list[int]]:
    """SIGTERMs to this test process, caught instead of killing it (restored afterwards)."""
    got: list[int] = []
    old = signal.signal(signal.SIGTERM, lambda signum, frame: got.append(signum))
    yield got
    signal.signal(signal.SIGTERM, old)


async def test_a_thread_of_watchkeeper_itself_is_refused_as_watchkeeper(
        sigterm_trap: list[int]) -> None:
    """The attack that killed watchkeeper: an approved stop of one of its own thread ids."""
    stop = threading.Event()
    ready = threading.Event()
    tids: list[int] = []

    def work() -> None:
        tids.append(threading.get_native_id())
        ready.set()
        stop.wait(60)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    try:
        assert ready.wait(10)
        await refused_everywhere(ctx(), tids[0], f"pid {tids[0]} is a thread of process "
                                                 rf"{os.getpid()} \(.*\), which is watchkeeper")
    finally:
        stop.set()
        worker.join(10)
    assert sigterm_trap == []


def _threads_of(pid: int) -> list[int]:
    try:
        return sorted(int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid)
    except OSError:
        return []


def _faked(pid: int, **facts: object) -> StatusReader:
    """The kernel's answer for ``pid`` replaced (where the real process cannot exist here)."""

    def read(p: int) -> ProcStatus | None:
        if p == pid:
            base = read_status(p) or ProcStatus(pid=p, tgid=p, ppid=0, comm="", uids=(0, 0, 0),
                                                kernel_thread=False)
            return dataclasses.replace(base, **facts)  # type: ignore[arg-type]
        return read_status(p)

    return read


def _init_thread() -> tuple[int, StatusReader]:
    real = _threads_of(1)
    if real:
        return real[0], read_status
    # pid 1 runs one thread here: a thread id of ours, reported as belonging to pid 1.
    return threading.get_native_id(), _faked(threading.get_native_id(), tgid=1)


async def test_a_dry_run_on_a_thread_of_init_is_refused_not_would_stop() -> None:
    tid, read = _init_thread()
    c = dataclasses.replace(ctx(), proc_status=read)
    params = {"pid": tid, "create_time": psutil.Process(tid).create_time(), "grace_s": 0}
    preview = await get_action("stop_process").preview(params, c)
    assert preview.outcome == "refused", preview.summary
    assert f"pid {tid} is a thread of process 1 " in preview.summary
    assert "which is init (pid 1)" in preview.summary
    with pytest.raises(ActionRefused, match="which is init"):
        pin(c, StopProcessParams(pid=tid))


# --------------------------------------------------------------------------- never signalled


def _kthreadd() -> tuple[int, StatusReader]:
    status = read_status(2)
    if status is not None and status.comm == "kthreadd":
        return 2, read_status  # the real one
    # A pid namespace (a container) hides kthreadd: pid 2 stands in, reported as kthreadd.
    return 2, _faked(2, comm="kthreadd", ppid=0, kernel_thread=True)


def _kernel_worker() -> tuple[int, StatusReader]:
    for pid in psutil.pids():
        status = read_status(pid)
        if status is not None and status.kernel_thread and status.ppid == 2:
            return pid, read_status  # a real kernel thread (a kworker, ksoftirqd...)
    pid = os.getpid()
    return pid, _faked(pid, comm="kworker/0:1", ppid=2, kernel_thread=True)


@pytest.mark.parametrize("target", [_kthreadd, _kernel_worker],
                         ids=["kthreadd-pid-2", "kernel-thread-child-of-kthreadd"])
async def test_kernel_threads_are_refused_in_the_dry_run(
        target: Callable[[], tuple[int, StatusReader]]) -> None:
    pid, read = target()
    if pid == os.getpid():  # the stand-in is this test process: keep it recognisable
        c = dataclasses.replace(ctx(), proc_status=read, own_pid=-1)
    else:
        c = dataclasses.replace(ctx(), proc_status=read)
    params = {"pid": pid, "create_time": psutil.Process(pid).create_time(), "grace_s": 0}
    preview = await get_action("stop_process").preview(params, c)
    assert preview.outcome == "refused" and "is a kernel thread" in preview.summary, preview
    dry = await get_action("stop_process").execute(params, dataclasses.replace(
        c, settings=RemediationConfig(dry_run=True)))
    assert "would stop" not in dry.message and "kernel thread" in dry.message


def test_the_default_protected_list_holds_what_keeps_a_host_reachable() -> None:
    rules = GuardRules.of(RemediationConfig(), own_pid=os.getpid(), own_uid=ME)
    for name in ("sshd", "systemd", "systemd-*", "init", "dbus-daemon", "dbus-broker",
                 "agetty", "login", "getty", "cron", "containerd", "dockerd",
                 "NetworkManager"):
        assert name in DEFAULT_PROTECTED and name in rules.protected


@pytest.mark.parametrize(("name", "settings"), [
    ("sshd", {}),                                        # the default list, default settings
    ("systemd-journald", {}),                            # systemd-* glob
    ("wk-precious", {"processes": {"protect": ["wk-prec*"]}}),
    ("WK-PRECIOUS", {"processes": {"protect": ["wk-precious"]}}),
], ids=["impostor-named-sshd-by-default", "systemd-glob-by-default",
        "user-protected-glob", "protected-name-in-another-case"])
async def test_a_protected_name_is_refused_whatever_the_approval(
        children: list[subprocess.Popen[bytes]], tmp_path: Path, name: str,
        settings: dict[str, object]) -> None:
    pid = named_sleep(children, tmp_path, name)
    await refused_everywhere(ctx(**settings), pid, f"pid {pid} \\({name}\\) is a protected "
                                                   "process")
    assert children[0].poll() is None


async def test_unprotecting_a_built_in_name_needs_naming_it(
        children: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    pid = named_sleep(children, tmp_path, "cron")
    params = {"pid": pid, "create_time": psutil.Process(pid).create_time(), "grace_s": 0}
    refused = await get_action("stop_process").preview(params, ctx())
    allowed = await get_action("stop_process").preview(
        params, ctx(processes={"unprotect": ["cron"]}))
    assert refused.outcome == "refused" and allowed.outcome == "would_run"
    with pytest.raises(ConfigError, match=r"'sshdd' is not a built-in protected name "
                                          r"\(did you mean 'sshd'\?\)"):
        validate({"remediation": {"processes": {"unprotect": ["sshdd"]}}})


@pytest.mark.parametrize("pid", [lambda: os.getpid(), lambda: os.getppid()],
                         ids=["watchkeeper-itself", "watchkeeper-parent"])
async def test_watchkeeper_and_its_ancestors_are_refused(pid: Callable[[], int]) -> None:
    target = pid()
    params = {"pid": target, "create_time": psutil.Process(target).create_time(),
              "grace_s": 0}
    preview = await get_action("stop_process").preview(params, ctx())
    assert preview.outcome == "refused"
    assert "watchkeeper" in preview.summary


# --------------------------------------------------------------------------- other users


async def test_another_users_process_is_refused_by_default(
        children: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    """watchkeeper runs as uid 4242 and the process as uid 4343 (the kernel's answer faked:
    this test may run as root, whose own processes are the next test's case)."""
    pid = named_sleep(children, tmp_path, "wk-theirs")
    theirs = _faked(pid, uids=(4343, 4343, 4343))
    other = dataclasses.replace(ctx(), own_uid=4242, proc_status=theirs)
    await refused_everywhere(other, pid, r"pid \d+ \(wk-theirs\) runs as .* \(real uid 4343\), "
                                         "not as watchkeeper's user")
    params = {"pid": pid, "create_time": psutil.Process(pid).create_time(), "grace_s": 0}
    for users in (["4343"], ["*"]):
        listed = dataclasses.replace(ctx(processes={"users": users}), own_uid=4242,
                                     proc_status=theirs)
        assert (await get_action("stop_process").preview(params, listed)).outcome == \
            "would_run", users
    assert children[0].poll() is None


async def test_a_setuid_root_process_counts_as_roots_and_root_is_never_listed(
        children: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    pid = named_sleep(children, tmp_path, "wk-setuid")
    # Real uid ours, effective and saved root (a setuid-root program): faked at the boundary.
    for users in ([], ["*"], ["root"]):
        c = dataclasses.replace(ctx(processes={"users": users}), own_uid=4242,
                                proc_status=_faked(pid, uids=(4242, 0, 0)))
        await refused_everywhere(c, pid, r"runs as root \(effective uid 0\) and watchkeeper "
                                         "runs as .*: root's processes are never its to stop")
    assert children[0].poll() is None


async def test_a_process_of_nobody_is_refused_until_its_user_is_listed(
        children: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    """Run as root (as here), a real process of nobody; otherwise the kernel's uids faked."""
    if ME == 0:
        children.append(subprocess.Popen([SLEEP, "60"], user=65534))
        pid = children[-1].pid
        for _ in range(500):  # until the child has dropped to nobody and exec'd sleep
            proc = psutil.Process(pid)
            if proc.uids().real == 65534 and proc.name() == "sleep":
                break
            threading.Event().wait(0.01)
        read: StatusReader = read_status
    else:
        pid = named_sleep(children, tmp_path, "sleep")
        read = _faked(pid, uids=(65534, 65534, 65534))
    c = dataclasses.replace(ctx(), proc_status=read)
    await refused_everywhere(c, pid, r"runs as nobody \(real uid 65534\)")
    params = {"pid": pid, "create_time": psutil.Process(pid).create_time(), "grace_s": 0}
    for users in (["nobody"], ["nob*"], ["65534"], ["*"]):
        listed = dataclasses.replace(ctx(processes={"users": users}), proc_status=read)
        assert (await get_action("stop_process").preview(params, listed)).outcome == \
            "would_run", users
    assert children[0].poll() is None


# --------------------------------------------------------------------------- allow-list


async def test_allow_by_name_stops_that_name_and_refuses_another(
        children: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    victim = named_sleep(children, tmp_path, "wk-worker-1")
    bystander = named_sleep(children, tmp_path, "wk-other")
    c = ctx(allow={"stop_process": ["name:wk-worker-*"]})
    await refused_everywhere(c, bystander, r"may not touch pid \d+ \(wk-other\).*"
                                           r"remediation.allow.stop_process: name:wk-worker-\*")
    params = pin(c, StopProcessParams(pid=victim, grace_s=0.5))
    result = await get_action("stop_process").execute(params, c)
    assert result.outcome == "ok", result.message
    assert children[0].wait(timeout=10) == -signal.SIGTERM
    assert children[1].poll() is None


async def test_allow_by_user_and_name_needs_both(
        children: list[subprocess.Popen[bytes]], tmp_path: Path) -> None:
    pid = named_sleep(children, tmp_path, "wk-job")
    me = psutil.Process(pid).username()
    params = {"pid": pid, "create_time": psutil.Process(pid).create_time(), "grace_s": 0}
    for entry, outcome in ((f"user:{me} name:wk-job", "would_run"),
                           ("user:someone-else name:wk-job", "refused"),
                           (f"user:{me} name:other", "refused"),
                           (str(pid), "would_run")):  # a bare pid glob, as before
        preview = await get_action("stop_process").preview(
            params, ctx(allow={"stop_process": [entry]}))
        assert preview.outcome == outcome, (entry, preview.summary)


@pytest.mark.parametrize(("entry", "says"), [
    ("nme:worker", "unknown key 'nme' (did you mean 'name'?)"),
    ("name:", "name: needs a glob"),
    ("name:a name:b", "name: given twice"),
    ("", "an empty entry matches no process"),
    ("nginx", "'nginx' is not a pid glob (did you mean 'name:nginx'?)"),
], ids=["typo-in-key", "empty-glob", "key-twice", "empty-entry", "a-name-where-a-pid-goes"])
def test_a_bad_allow_entry_is_a_config_error(entry: str, says: str) -> None:
    with pytest.raises(ConfigError, match=r"remediation\.allow") as exc:
        validate({"remediation": {"allow": {"stop_process": [entry]}}})
    assert says in str(exc.value)


# --------------------------------------------------------------------------- request time


async def test_the_api_refuses_a_thread_at_once_and_queues_nothing(
        tmp_path: Path, children: list[subprocess.Popen[bytes]]) -> None:
    pid, tid = threaded_child(children)
    async with serve_api(api_settings(tmp_path)) as api:
        r = await api.client.post("/api/command", headers=api.auth(), json={
            "command": "remediate", "action": "stop_process", "params": {"pid": tid}})
        assert r.status_code == 422, r.text
        assert f"pid {tid} is a thread of process {pid}" in r.json()["detail"]
        assert api.runtime.audit.pending() == []
    assert children[0].poll() is None


@pytest.mark.parametrize("source", ["rule", "llm"])
async def test_a_proposal_naming_a_protected_process_is_refused_when_asked(
        tmp_path: Path, children: list[subprocess.Popen[bytes]], source: str) -> None:
    """A rule or an LLM answer naming a protected process (here a thread id): refused with
    the reason and audited, never an approval that waits for a human."""
    pid, tid = threaded_child(children)
    victim = named_sleep(children, tmp_path, "sshd")
    async with serve_api(api_settings(tmp_path)) as api:
        remediator = next(a for a in api.runtime.agents if isinstance(a, RemediatorAgent))
        for target, says in ((tid, f"is a thread of process {pid}"),
                             (victim, "is a protected process: sshd")):
            decision = await remediator.submit(ActionRequest(
                action="stop_process", host=api.runtime.host, source=source,  # type: ignore[arg-type]
                params={"pid": target, "create_time": psutil.Process(target).create_time()}))
            assert decision.verdict == "refused" and decision.check == "target"
            assert says in decision.why, decision.why
        assert api.runtime.audit.pending() == []
        approved = await remediator.submit(ActionRequest(
            action="stop_process", host=api.runtime.host, source=source,  # type: ignore[arg-type]
            params={"pid": victim, "create_time": psutil.Process(victim).create_time()}),
            approved_by="alice")
        assert approved.verdict == "refused"  # an approval does not lift it
    assert children[0].poll() is None and children[1].poll() is None


# --------------------------------------------------------------------------- siblings


def _pid_file_naming_a_thread(children: list[subprocess.Popen[bytes]], tmp_path: Path
                              ) -> tuple[int, int, str]:
    pid, tid = threaded_child(children)
    return pid, tid, f"is a thread of process {pid}"


def _pid_file_naming_sshd(children: list[subprocess.Popen[bytes]], tmp_path: Path
                          ) -> tuple[int, int, str]:
    pid = named_sleep(children, tmp_path, "sshd")
    return pid, pid, "is a protected process: sshd"


@pytest.mark.parametrize("hostile", [_pid_file_naming_a_thread, _pid_file_naming_sshd],
                         ids=["pid-file-holds-a-thread-id", "pid-file-holds-sshds-pid"])
async def test_a_service_pid_file_cannot_make_a_restart_signal_a_protected_process(
        tmp_path: Path, children: list[subprocess.Popen[bytes]],
        hostile: Callable[[list[subprocess.Popen[bytes]], Path], tuple[int, int, str]],
        caplog: pytest.LogCaptureFixture) -> None:
    """A pid file is often writable by the service's own user: whatever it names, a
    ``manager: process`` service never adopts a thread or a protected process, so neither
    a stop nor a restart (auto by default) can signal it."""
    owner, named, says = hostile(children, tmp_path)
    pid_file = tmp_path / "svc.pid"
    pid_file.write_text(f"{named}\n")
    pm = ProcessManager({"svc": ServiceConfig(start=(sys.executable, "-c", "pass"),
                                              pid_file=pid_file)}, grace_s=0.2)
    try:
        status = await pm.status("svc")
        assert status.pid != named and status.state != "running", status
        assert any(says in r.getMessage() and "not adopted" in r.getMessage()
                   for r in caplog.records)
        stopped = await asyncio.wait_for(pm.stop("svc"), 10)
        assert stopped.ok and stopped.message == "not running", stopped.message
    finally:
        await pm.aclose()
    assert all(c.poll() is None for c in children) and alive(owner)


async def test_a_service_match_skips_protected_processes(
        tmp_path: Path, children: list[subprocess.Popen[bytes]]) -> None:
    """A command-line glob that also matches a protected process adopts only the other."""
    impostor = named_sleep(children, tmp_path, "sshd")
    ours = named_sleep(children, tmp_path, "wk-app")
    pm = ProcessManager({"svc": ServiceConfig(start=(sys.executable, "-c", "pass"),
                                              match=f"{tmp_path}/* 60")}, grace_s=0.2)
    try:
        status = await pm.status("svc")
        assert status.pid == ours, status
    finally:
        await pm.aclose()
    assert alive(impostor) and alive(ours)


@pytest.mark.parametrize("patch", [
    {"remediation": {"processes": {"unprotect": ["sshd"]}}},
    {"remediation": {"processes": {"users": ["*"]}}},
    {"remediation": {"processes": None}},
    {"remediation": {"processes": {"protect": []}}},
], ids=["token-unprotects-sshd", "token-allows-every-user", "token-nulls-the-section",
        "token-empties-the-added-names"])
async def test_the_operator_token_cannot_loosen_which_processes_may_be_stopped(
        tmp_path: Path, patch: dict[str, object]) -> None:
    async with serve_api(api_settings(tmp_path, remediation={
            "processes": {"protect": ["wk-precious"]}})) as api:
        r = await api.client.patch("/api/config", headers=api.auth(), json=patch)
        assert r.status_code == 422, r.text
        assert "remediation.processes: decides what runs" in r.json()["detail"][0]
        assert api.runtime.config.current.remediation.processes.protect == ("wk-precious",)


@pytest.mark.parametrize("name", [
    "x) S 2 0 0 0 -1",      # looks like the rest of /proc/<pid>/stat: flags, ppid 2
    "w\nTgid:\t1",          # a status line of its own: "this is a thread of pid 1"
    "kworker/0:1",          # a kernel thread's name, in user space
], ids=["name-forges-stat-fields", "name-injects-a-tgid-line", "user-process-named-kworker"])
async def test_a_crafted_process_name_is_read_as_a_name(
        children: list[subprocess.Popen[bytes]], tmp_path: Path, name: str) -> None:
    """What a process calls itself never changes what the kernel says it is: these are
    ordinary processes of ours, and may be stopped (no crash, no false claim)."""
    link_dir = tmp_path / "d"
    link_dir.mkdir()
    link = link_dir / name.replace("/", "_")
    link.symlink_to(SLEEP)
    proc = subprocess.Popen([str(link), "60"])
    children.append(proc)
    for _ in range(500):  # until exec is done
        if psutil.Process(proc.pid).exe() == os.path.realpath(SLEEP):
            break
        threading.Event().wait(0.01)
    status = read_status(proc.pid)
    assert status is not None and status.tgid == proc.pid and not status.kernel_thread
    params = pin(ctx(), StopProcessParams(pid=proc.pid, grace_s=0))
    preview = await get_action("stop_process").preview(params, ctx())
    assert preview.outcome == "would_run", preview.summary


@pytest.mark.parametrize(("allow", "pid", "verdict"), [
    (["42"], 42, "approve"),
    (["42"], 43, "refused"),                      # pid globs: decided by the policy, as before
    (["4*"], 43, "approve"),
    (["name:web*"], 43, "approve"),               # name/user: the guard decides on the process
    (["pid:1* name:web*"], 43, "refused"),        # ...but a pid term still rules out at once
], ids=["pid-listed", "pid-not-listed", "pid-glob", "name-entry-defers-to-the-guard",
        "pid-and-name-entry-rules-out-by-pid"])
def test_the_policy_applies_pid_terms_of_allow_stop_process(
        tmp_path: Path, allow: list[str], pid: int, verdict: str) -> None:
    from watchkeeper.remediation.policy import Policy

    from ..conftest import make_settings

    settings = make_settings(tmp_path, remediation={"startup_grace_s": 0,
                                                    "allow": {"stop_process": allow}})
    decision = Policy(lambda: settings).decide(ActionRequest(
        action="stop_process", params={"pid": pid, "create_time": 1.0}, host="h"))
    assert decision.verdict == verdict, decision.why
    if verdict == "refused":
        assert decision.check == "target" and "remediation.allow.stop_process" in decision.why
