"""`watchkeeper cli` (the terminal UI) on a fleet's central: the remediation view lists
every host's approvals and services, each row saying whose when they come from more than
one host (two hosts may both have an approval #1), and approving one sends it to its own
host. The central (real uvicorn) and two host agents share an in-process bus; the UI talks
to the central over HTTP."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

from textual.widgets import OptionList

from watchkeeper.agents.remediator import RemediatorAgent
from watchkeeper.runtime import Runtime

from .test_api_harness import OPERATOR, api_settings, serve_api, until
from .test_fleet_remote_actions import host_settings
from .test_fleet_roles import SharedBus
from .test_tui import answer, said, select, shows, tui


async def test_the_remediation_view_on_a_central_acts_on_the_rows_own_host(
        tmp_path: Path) -> None:
    bus = SharedBus()
    bus.users = 3
    hosts = [Runtime(host_settings(tmp_path, name), bus=bus, role="agent")
             for name in ("web-1", "web-2")]
    sleepers = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
                for _ in hosts]
    # A memory warning at 0.1 % on the central: an open alert of each host to silence.
    central = api_settings(tmp_path / "central", analyzer={"for_s": 0},
                           thresholds={"memory_warning": 0.1, "memory_critical": 100})
    async with serve_api(central, role="central", bus=bus) as api:
        for rt in hosts:
            await rt.start()
        try:
            async def both() -> bool:
                return len((await api.client.get("/api/hosts")).json()["hosts"]) == 2
            await until(both, timeout=30)
            ids = []
            for rt, proc in zip(hosts, sleepers, strict=True):
                r = await api.client.post(
                    "/api/command", headers=api.auth(), params={"host": rt.host},
                    json={"command": "remediate", "action": "stop_process",
                          "params": {"pid": proc.pid, "grace_s": 5}})
                assert r.status_code == 200, r.text
                ids.append(r.json()["decision"]["approval_id"])
            assert ids[0] == ids[1]  # each host numbers its own

            async with tui(api.url, lambda: (OPERATOR, "the test"), poll_s=60) as (_a, pilot):
                await pilot.press("5")
                await shows(pilot, f"{ids[0]} on web-1", f"{ids[1]} on web-2", "app ")
                await select(pilot, "approvals", f"web-2/{ids[1]}")
                await pilot.press("a")
                await said(pilot, f"approval #{ids[1]}: auto")
                # View 8 asks which host a remediation is for (a central heals nothing
                # itself), and previews it on that host's own policy.
                await pilot.press("8")
                options = pilot.app.query_one("#commands", OptionList)
                options.highlighted = options.get_option_index("remediate")
                await pilot.press("enter")
                await shows(pilot, "remediate: on which host? (web-1, web-2)")
                await answer(pilot, "web-1")
                await answer(pilot, "notify_only")
                await answer(pilot, '{"message": "from the central"}')
                await shows(pilot, "dry run of notify_only on web-1", "Send it for real?")
                await pilot.press("n")
                await said(pilot, "remediate: not sent")
                # View 4 silences alerts like the selected one on its own host only.
                alerts = (await api.client.get("/api/alerts")).json()["alerts"]
                web2 = next(a for a in alerts if a["host"] == "web-2"
                            and a["metric"] == "memory.percent")
                await pilot.press("4")
                await select(pilot, "alerts", web2["fingerprint"])
                await pilot.press("s")
                await answer(pilot, "30m")
                await said(pilot, "silenced rule=threshold metric=memory.percent host=web-2")
                silences = (await api.client.get("/api/alerts/silences")).json()["silences"]
                assert [s["matchers"].get("host") for s in silences] == ["web-2"]
            remediator = next(a for a in hosts[1].agents if isinstance(a, RemediatorAgent))
            await remediator.wait_idle()
            assert await asyncio.to_thread(sleepers[1].wait, 10) == -signal.SIGTERM
            assert [a.id for a in hosts[0].audit.pending()] == [ids[0]]
            assert sleepers[0].poll() is None
        finally:
            for rt in hosts:
                await rt.stop()
            for proc in sleepers:
                proc.kill()
                proc.wait(10)
