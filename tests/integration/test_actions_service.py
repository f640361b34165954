"""restart_service / start_service through the real process manager and a real server."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.test_services_process import free_port, wait_gone, web
from watchkeeper.config import RemediationConfig
from watchkeeper.remediation.actions import get_action
from watchkeeper.remediation.actions.base import ActionContext
from watchkeeper.remediation.services import Services


@pytest.fixture
async def services(tmp_path: Path) -> AsyncIterator[Services]:
    svc = Services({"web": web(free_port())}, log_dir=tmp_path / "logs", grace_s=1.0)
    yield svc
    await svc.aclose()


def ctx(services: Services | None, **kw: object) -> ActionContext:
    return ActionContext(settings=RemediationConfig(**kw), services=services,  # type: ignore[arg-type]
                         verify_timeout_s=10.0)


async def test_start_then_restart_after_sigkill_is_verified_healthy(services: Services) -> None:
    start, restart = get_action("start_service"), get_action("restart_service")
    started = await start.execute({"service": "web"}, ctx(services))
    assert started.outcome == "ok", started.message
    assert (await start.verify({"service": "web"}, ctx(services), started)).ok
    before = await services.status("web")
    assert before.pid is not None
    os.kill(before.pid, signal.SIGKILL)  # our own child: the test started it
    await wait_gone(before.pid)
    preview = await restart.preview({"service": "web"}, ctx(services))
    assert preview.summary.startswith("would restart web (process; now ")
    result = await restart.execute({"service": "web"}, ctx(services))
    assert result.outcome == "ok", result.message
    check = await restart.verify({"service": "web"}, ctx(services), result)
    assert check.ok and "healthy" in check.message
    after = await services.status("web")
    assert after.pid != before.pid and after.healthy is True


async def test_undeclared_service_and_dry_run(services: Services) -> None:
    restart = get_action("restart_service")
    refused = await restart.execute({"service": "db"}, ctx(services))
    assert refused.outcome == "refused"
    assert "service 'db' is not declared" in refused.message and "web" in refused.message
    assert (await restart.execute({"service": "web"}, ctx(None))).outcome == "refused"
    dry = await restart.execute({"service": "web"}, ctx(services, dry_run=True))
    assert dry.outcome == "dry_run"
    assert (await services.status("web")).state != "running"  # nothing was started
