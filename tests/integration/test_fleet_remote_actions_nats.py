"""Over a real nats-server: a central approves an action a host's remediator asked
approval for, the host runs it; a spoofed message (a host publishing as another) is counted
on the central's /metrics and /api/hosts."""

from __future__ import annotations

import asyncio
import itertools
import signal
import subprocess
from pathlib import Path
from typing import Any

import nats

from tests.nats_server import NatsServer
from watchkeeper.agents.remediator import RemediatorAgent
from watchkeeper.bus import codec
from watchkeeper.events import CommandRefused
from watchkeeper.runtime import Runtime

from .test_api_harness import api_settings, serve_api, until
from .test_fleet_remote_actions import FAST, host_settings, sleeper, sleepers  # noqa: F401
from .test_fleet_roles import until as until_true

_prefixes = itertools.count()


async def test_a_central_approves_a_hosts_action_over_nats_and_counts_a_spoofed_message(
        tmp_path: Path, nats_server: NatsServer,
        sleepers: list[subprocess.Popen[bytes]]) -> None:  # noqa: F811
    victim = sleeper(sleepers)
    # Changed from the defaults: the bus (the point), fast loops, no start-up grace.
    bus: dict[str, Any] = {"backend": "nats", "url": nats_server.url,
                           "subject_prefix": f"ops{next(_prefixes)}"}
    web1 = Runtime(host_settings(tmp_path, "web-1").model_copy(update={
        "bus": api_settings(tmp_path / "x", bus=bus).bus}), role="agent")
    central = api_settings(tmp_path / "central", agents=FAST, bus=bus).model_copy(
        update={"host_name": "central"})
    async with serve_api(central, role="central") as api:
        await web1.start()
        try:
            async def reported() -> bool:
                hosts = (await api.client.get("/api/hosts")).json()["hosts"]
                return [h["host"] for h in hosts] == ["web-1"]
            await until(reported, timeout=30)
            r = await api.client.post(
                "/api/command", headers=api.auth(), params={"host": "web-1"},
                json={"command": "remediate", "action": "stop_process",
                      "params": {"pid": victim.pid, "grace_s": 5}}, timeout=20)
            assert r.status_code == 200, r.text
            approval_id = r.json()["decision"]["approval_id"]
            pending = (await api.client.get("/api/actions")).json()["pending"]
            assert [(p["host"], p["id"]) for p in pending] == [("web-1", approval_id)]
            r = await api.client.post(f"/api/actions/{approval_id}/approve",
                                      headers=api.auth(), params={"host": "web-1"}, timeout=20)
            assert r.status_code == 200 and r.json()["verdict"] == "auto", r.text
            remediator = next(a for a in web1.agents if isinstance(a, RemediatorAgent))
            await remediator.wait_idle()
            assert await asyncio.to_thread(victim.wait, 10) == -signal.SIGTERM
            (outcome,) = web1.audit.entries(kind="outcome")
            assert outcome.outcome == "ok"
            # A second approval of the same id: refused by web-1, on the central's record.
            r = await api.client.post(f"/api/actions/{approval_id}/approve",
                                      headers=api.auth(), params={"host": "web-1"}, timeout=20)
            assert r.status_code == 409
            refused = await until_true(lambda: [
                e.event for e in api.runtime.store.events(kinds=["command_refused"])
                if isinstance(e.event, CommandRefused)], timeout=20)
            assert refused[0].host == "web-1" and refused[0].code == "conflict"

            # Someone publishes web-1's snapshot on web-2's subject: refused, counted.
            raw = await nats.connect(nats_server.url)
            try:
                snap = api.runtime.store.latest_snapshot("web-1")
                assert snap is not None
                await raw.jetstream().publish(f"{bus['subject_prefix']}.metrics.web-2",
                                              codec.encode(snap))
            finally:
                await raw.close()

            async def counted() -> Any:
                body = (await api.client.get("/api/hosts")).json()
                return body["rejected"].get("wrong_host")
            assert await until(counted, timeout=20) >= 1
            exposition = (await api.client.get("/metrics")).text
            assert 'watchkeeper_bus_rejected_total{host="central",reason="wrong_host"}' \
                in exposition
        finally:
            await web1.stop()
