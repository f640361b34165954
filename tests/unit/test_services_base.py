"""The command runner, executable resolution, exit fan-out and the Services façade."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import psutil
import pytest

from watchkeeper.config import ServiceConfig, validate
from watchkeeper.remediation.services import (
    OperationResult,
    ProcessManager,
    ServiceExit,
    Services,
    ServicesChange,
    ServiceStatus,
    SubprocessRunner,
    SupervisordManager,
    SystemdManager,
    UnknownService,
    WindowsServiceManager,
)
from watchkeeper.remediation.services.base import (
    SAFE_PATH,
    CommandResult,
    ExecutableNotFound,
    ExitHub,
    base_env,
    describe_exit,
    excerpt,
    resolve_argv,
)
from watchkeeper.remediation.services.registry import BackendContext

PY = sys.executable


# --------------------------------------------------------------------------- runner


async def test_runner_captures_output_exit_code_and_uses_a_fixed_environment(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-should-never-leak")
    runner = SubprocessRunner()
    res = await runner.run(
        [PY, "-c", "import os, sys; print(sorted(os.environ)); print(os.getcwd());"
                   "print('oops', file=sys.stderr); sys.exit(2)"],
        timeout_s=10, cwd=tmp_path)
    assert res.returncode == 2 and not res.ok and not res.timed_out
    assert "OPENAI_API_KEY" not in res.stdout and "'PATH'" in res.stdout
    assert str(tmp_path) in res.stdout
    assert res.stderr.strip() == "oops"
    assert res.describe().endswith("exited with code 2: oops")
    assert base_env()["PATH"] == SAFE_PATH


async def test_runner_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    marker = tmp_path / "grandchild.pid"
    script = ("import subprocess, sys, time;"
              f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
              f"open({str(marker)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    started = time.monotonic()
    res = await SubprocessRunner().run([PY, "-c", script], timeout_s=1.0)
    assert res.timed_out and res.returncode is None and not res.ok
    assert time.monotonic() - started < 5
    assert "timed out after" in res.describe()
    grandchild = int(marker.read_text())
    deadline = time.monotonic() + 5
    while psutil.pid_exists(grandchild) and \
            psutil.Process(grandchild).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the grandchild survived the timeout"
        await asyncio.sleep(0.02)


async def test_runner_reports_what_cannot_run(tmp_path: Path) -> None:
    res = await SubprocessRunner().run([str(tmp_path / "nope")], timeout_s=1)
    assert not res.ok and res.error is not None and "cannot run" in res.error
    assert res.describe() == res.error


def test_resolve_argv_uses_the_given_path_only(tmp_path: Path) -> None:
    tool = tmp_path / "tool"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    assert resolve_argv(["tool", "-x"], path=str(tmp_path)) == (str(tool), "-x")
    with pytest.raises(ExecutableNotFound, match="is not an executable on"):
        resolve_argv(["tool"], path="/nonexistent")
    assert resolve_argv(["./tool"], cwd=tmp_path) == (str(tmp_path / "tool"),)
    assert resolve_argv([str(tool)]) == (str(tool),)
    with pytest.raises(ExecutableNotFound):
        resolve_argv([])
    (tmp_path / "plain").write_text("")
    with pytest.raises(ExecutableNotFound, match="not an executable file"):
        resolve_argv([str(tmp_path / "plain")])


def test_excerpt_keeps_the_tail_and_redacts() -> None:
    text = "\n".join(f"line {i}" for i in range(1000)) + "\npassword=hunter2"
    out = excerpt(text, 200)
    assert out.startswith("…\nline ") and out.endswith("line 999\npassword=***")
    assert len(out) <= 201
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(3) == "exited with code 3"
    assert CommandResult(argv=("x",), returncode=0).ok


# --------------------------------------------------------------------------- exits


def _exit(name: str = "web") -> ServiceExit:
    return ServiceExit(service=name, pid=42, expected=False, message="killed by SIGKILL")


async def test_exit_hub_fans_out_to_callbacks_and_streams(caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    hub = ExitHub()
    seen: list[str] = []
    done = asyncio.Event()

    async def slow(item: ServiceExit) -> None:
        seen.append(f"async {item.service}")
        done.set()

    def broken(item: ServiceExit) -> None:
        raise RuntimeError("bug in a callback")

    hub.on_exit(broken)
    unsubscribe = hub.on_exit(lambda item: seen.append(f"sync {item.service}"))
    hub.on_exit(slow)
    stream = hub.exits()
    hub.publish(_exit("a"))  # before anyone iterates: still delivered
    assert seen == ["sync a"]
    await asyncio.wait_for(done.wait(), 1)
    assert seen == ["sync a", "async a"]
    assert "bug in a callback" in caplog.text
    assert (await asyncio.wait_for(stream.__anext__(), 1)).service == "a"
    unsubscribe()
    hub.publish(_exit("b"))
    assert "sync b" not in seen
    stream.close()
    assert [x.service async for x in stream] == ["b"]
    await hub.aclose()


async def test_a_full_exit_stream_drops_instead_of_blocking(caplog: pytest.LogCaptureFixture
                                                            ) -> None:
    hub = ExitHub()
    async with hub.exits(maxsize=1) as stream:
        hub.publish(_exit("a"))
        hub.publish(_exit("b"))
        assert "dropped the exit of b" in caplog.text
        assert (await stream.__anext__()).service == "a"
    await hub.aclose()


# --------------------------------------------------------------------------- façade


class FakeBackend:
    """A ServiceManager that records calls."""

    def __init__(self, name: str, cfg: ServiceConfig) -> None:
        self.name, self.cfg = name, cfg
        self.calls: list[str] = []
        self.closed = False

    async def status(self, name: str, *, checks: bool = True) -> ServiceStatus:
        self.calls.append(f"status {name} {checks}")
        if name == "broken":
            raise RuntimeError("backend bug")
        return ServiceStatus(name=name, manager=self.cfg.manager, state="running",
                             healthy=len(self.calls) >= 3)

    async def _op(self, name: str, op: str) -> OperationResult:
        self.calls.append(f"{op} {name}")
        if name == "broken":
            raise RuntimeError("backend bug")
        return OperationResult(service=name, operation=op, ok=True, message=op)

    async def start(self, name: str) -> OperationResult:
        return await self._op(name, "start")

    async def stop(self, name: str) -> OperationResult:
        return await self._op(name, "stop")

    async def restart(self, name: str) -> OperationResult:
        return await self._op(name, "restart")

    async def aclose(self) -> None:
        self.closed = True


def _fake_factories() -> tuple[dict[str, FakeBackend], dict[str, object]]:
    built: dict[str, FakeBackend] = {}

    def factory(name: str, cfg: ServiceConfig, ctx: BackendContext) -> FakeBackend:
        assert isinstance(ctx.hub, ExitHub)
        built[name] = FakeBackend(name, cfg)
        return built[name]

    return built, {m: factory for m in ("process", "systemd", "windows", "supervisord")}


async def test_services_route_by_name_and_refuse_unknown_names() -> None:
    built, factories = _fake_factories()
    services = Services({"web": ServiceConfig(start=("x",)),
                         "db": ServiceConfig(manager="systemd", unit="postgresql"),
                         "broken": ServiceConfig(manager="supervisord")},
                        factories=factories)  # type: ignore[arg-type]
    assert services.names == ("web", "db", "broken") and "web" in services
    assert (await services.restart("db")).message == "restart"
    assert built["db"].calls == ["restart db"] and built["web"].calls == []
    assert (await services.status("web", checks=False)).state == "running"
    assert built["web"].calls == ["status web False"]
    with pytest.raises(UnknownService, match=r"unknown service 'wbe' \(did you mean 'web'\?\); "
                                             r"configured services: broken, db, web"):
        await services.start("wbe")
    with pytest.raises(UnknownService):
        await services.status("nope")
    assert services.config("db").unit == "postgresql"

    # A backend bug is a result, not a crash of the caller.
    failed = await services.stop("broken")
    assert not failed.ok and "backend bug" in failed.message
    broken = await services.status("broken")
    assert broken.state == "unknown" and "backend bug" in broken.detail

    all_status = await services.statuses()
    assert set(all_status) == {"web", "db", "broken"}
    healthy = await services.wait_healthy("web", timeout_s=2, interval_s=0.01)
    assert healthy.healthy is True
    await services.aclose()
    await services.aclose()  # idempotent
    assert all(b.closed for b in built.values())


async def test_reconfigure_touches_only_what_changed() -> None:
    built, factories = _fake_factories()
    web, db = ServiceConfig(start=("x",)), ServiceConfig(manager="systemd", unit="postgresql")
    services = Services({"web": web, "db": db, "old": ServiceConfig(start=("y",))},
                        factories=factories)  # type: ignore[arg-type]
    first = dict(built)
    change = await services.reconfigure({
        "web": web,  # the same: its backend (and process) stays
        "db": ServiceConfig(manager="systemd", unit="postgresql@15-main"),
        "api": ServiceConfig(start=("z",))})
    assert change == ServicesChange(added=("api",), changed=("db",), removed=("old",))
    assert services.names == ("web", "db", "api")
    assert services.backend("web") is first["web"] and not first["web"].closed
    assert first["db"].closed and services.backend("db") is built["db"] is not first["db"]
    assert services.config("db").unit == "postgresql@15-main"
    assert first["old"].closed and "old" not in services
    with pytest.raises(UnknownService, match="unknown service 'old'"):
        await services.restart("old")
    assert (await services.start("api")).ok and built["api"].calls == ["start api"]

    same = await services.reconfigure({"web": web, "db": services.config("db"),
                                       "api": services.config("api")})
    assert not same and same == ServicesChange()
    await services.aclose()
    assert all(b.closed for b in built.values())
    assert not await services.reconfigure({})  # closed: nothing more happens


async def test_a_changed_service_stays_known_while_its_old_backend_closes() -> None:
    """Stopping the old process of a changed service takes up to the grace period; all that
    time its name must resolve (the API lists it, a restart is answered), never 'unknown'."""
    built, factories = _fake_factories()
    services = Services({"web": ServiceConfig(start=("x",))},
                        factories=factories)  # type: ignore[arg-type]
    old = built["web"]
    closing, release = asyncio.Event(), asyncio.Event()

    async def slow_close() -> None:
        closing.set()
        await release.wait()
        old.closed = True

    old.aclose = slow_close  # type: ignore[method-assign]
    task = asyncio.create_task(services.reconfigure({"web": ServiceConfig(start=("x2",))}))
    await closing.wait()
    assert "web" in services and services.names == ("web",)
    assert (await services.status("web", checks=False)).name == "web"
    release.set()
    assert (await task).changed == ("web",)
    assert services.backend("web") is built["web"] is not old and old.closed
    assert services.config("web").start == ("x2",)
    await services.aclose()


async def test_reconfigure_starts_what_it_set_up_before_it_ends() -> None:
    """A changed service is down between its old process and its new one; that window is
    inside the reconfigure (``reconfiguring``), so a supervisor does not take it for an
    outage and restart it a second time."""
    built, factories = _fake_factories()
    services = Services({"web": ServiceConfig(start=("x",))},
                        factories=factories)  # type: ignore[arg-type]
    seen: list[tuple[tuple[str, ...], bool]] = []

    async def start(names: Sequence[str]) -> None:
        seen.append((tuple(names), services.reconfiguring))
        for name in names:
            await services.start(name)

    assert not services.reconfiguring
    await services.reconfigure({"web": ServiceConfig(start=("x2",)),
                                "api": ServiceConfig(start=("z",))}, start=start)
    assert seen == [(("api", "web"), True)]
    assert built["web"].calls == ["start web"] and built["api"].calls == ["start api"]
    assert not services.reconfiguring
    await services.reconfigure({"web": services.config("web"), "api": services.config("api")},
                               start=start)
    assert len(seen) == 1  # nothing changed: nothing to start
    await services.aclose()


async def test_from_settings_builds_one_backend_of_the_right_kind_per_service(
        tmp_path: Path) -> None:
    settings = validate({
        "storage": {"data_dir": str(tmp_path)},
        "services": {
            "web": {"manager": "process", "start": ["python3", "-m", "http.server"],
                    "checks": [{"http": "http://127.0.0.1:18080/"}]},
            "db": {"manager": "systemd", "unit": "postgresql.service"},
            "spooler": {"manager": "windows", "unit": "Spooler"},
            "worker": {"manager": "supervisord", "supervisord_url": "http://127.0.0.1:9/RPC2"},
        }})
    async with Services.from_settings(settings) as services:
        kinds = {n: type(services.backend(n)) for n in services.names}
        assert kinds == {"web": ProcessManager, "db": SystemdManager,
                         "spooler": WindowsServiceManager, "worker": SupervisordManager}
        web = services.backend("web")
        assert isinstance(web, ProcessManager)
        assert web._log_dir == tmp_path / "services"
        assert web.hub is services.hub  # one exit stream for every managed process


async def test_wait_healthy_gives_up_at_the_deadline() -> None:
    class NeverHealthy(FakeBackend):
        async def status(self, name: str, *, checks: bool = True) -> ServiceStatus:
            return ServiceStatus(name=name, manager="process", state="running", healthy=False)

    factories = {"process": lambda n, c, ctx: NeverHealthy(n, c)}
    async with Services({"web": ServiceConfig(start=("x",))},
                        factories=factories) as services:  # type: ignore[arg-type]
        started = time.monotonic()
        final = await services.wait_healthy("web", timeout_s=0.2, interval_s=0.05)
        assert final.healthy is False and 0.2 <= time.monotonic() - started < 1.0


def test_process_manager_requires_a_start_argv() -> None:
    cfg = ServiceConfig.model_construct(manager="process", start=())
    with pytest.raises(ValueError, match="needs a start argv"):
        ProcessManager({"x": cfg})
