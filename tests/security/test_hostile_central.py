"""Security corpus: a compromised central. A fleet's host agent acts only on what its own
local policy allows, whatever the central's alerts suggest: every case is an alert a central
under an attacker's control could publish on ``alerts.<host>``, marked as coming from the
rules (the trusted source), every action set to ``auto`` on the host. Each is refused with
its reason and audited on the host, and nothing outside the host's own declared targets is
touched.

The central and the agent share an in-process bus here; over NATS the agent reads the same
``alerts.<host>`` subject (tests/integration/test_bus_nats.py covers the transport)."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from watchkeeper.bus import MemoryBus
from watchkeeper.events import Alert, SuggestedAction, utcnow
from watchkeeper.runtime import Runtime

from ..conftest import make_settings

ALL_AUTO = {a: "auto" for a in ("restart_service", "clean_disk", "rotate_log",
                                "stop_process", "run_script", "notify_only")}

CASES = [
    pytest.param("stop_process", {"pid": 1}, "greater than 1", id="stop-init"),
    pytest.param("stop_process", {"pid": os.getppid()}, "is an ancestor of watchkeeper",
                 id="stop-an-ancestor-of-the-agent"),
    pytest.param("clean_disk", {"root": "/", "patterns": ["*"]},
                 "is not inside a configured clean-up root", id="clean-the-root-filesystem"),
    pytest.param("clean_disk", {"root": "{outside}", "patterns": ["*"]},
                 "is not inside a configured clean-up root",
                 id="clean-a-directory-the-host-never-declared"),
    pytest.param("rotate_log", {"path": "/etc/passwd"}, "is not a configured log file",
                 id="truncate-a-system-file-as-a-log"),
    pytest.param("run_script", {"script": "/bin/sh", "args": ["-c", "touch {outside}/pwned"]},
                 "invalid parameters for run_script", id="run-a-shell"),
    pytest.param("run_script", {"name": "../../bin/sh"}, "run_script",
                 id="run-a-script-the-host-never-declared"),
    pytest.param("restart_service", {"service": "sshd"}, "is not declared in the configuration",
                 id="restart-a-service-the-host-never-declared"),
]


def _fill(value: Any, outside: Path) -> Any:
    if isinstance(value, str):
        return value.replace("{outside}", str(outside))
    if isinstance(value, list):
        return [_fill(v, outside) for v in value]
    return value


@pytest.mark.parametrize(("action", "params", "why"), CASES)
async def test_a_central_cannot_make_a_host_do_what_its_policy_forbids(
        tmp_path: Path, action: str, params: dict[str, Any], why: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep me")
    settings = make_settings(
        tmp_path / "web-1", agents={"check_interval": 0.1},
        remediation={"startup_grace_s": 0, "actions": ALL_AUTO},
    ).model_copy(update={"host_name": "web-1"})
    bus = MemoryBus()
    agent = Runtime(settings, bus=bus, role="agent")
    await agent.start()
    loop = asyncio.get_running_loop()
    try:
        deadline = loop.time() + 20
        while not any(s.name == "remediator" for s in bus.subscriptions()):
            assert loop.time() < deadline, "the remediator never subscribed"
            await asyncio.sleep(0.02)
        hostile = SuggestedAction(action=action,
                                  params={k: _fill(v, outside) for k, v in params.items()},
                                  reason="the central says so")
        await bus.publish("alerts.web-1", Alert(
            host="web-1", id="evil-1", fingerprint="evil", rule="threshold",
            metric="cpu.percent", severity="critical", since=utcnow() - timedelta(minutes=5),
            summary="CPU is at 100%", labels={"change": "new"}, suggested_actions=(hostile,)))
        deadline = loop.time() + 20
        while not (refused := [e for e in agent.audit.entries(action=action)
                               if e.kind == "decision"]):
            assert loop.time() < deadline, "no decision audited on the host"
            await asyncio.sleep(0.05)
        (decision,) = refused
        assert decision.verdict in ("refused", "denied"), decision
        assert decision.host == "web-1" and decision.message
        assert why in decision.message, decision.message
        assert not [e for e in agent.audit.entries(action=action) if e.kind == "outcome"]
        assert (outside / "keep.txt").read_text() == "keep me"
        assert not (outside / "pwned").exists()
    finally:
        await agent.stop()
