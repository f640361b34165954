"""`watchkeeper cli` (the terminal UI) on a fleet's central: the remediation view lists
every host's approvals and services, each row saying whose when they come from more than
one host (two hosts may both have an approval #1), and approving one sends it to its own
host; `h` picks the host that views 1, 3, 4, 5 and 7 show, view 1 is the fleet at a glance,
and a host that goes down is said so instead of its last data. The central (real uvicorn)
and two host agents share an in-process bus; the UI talks to the central over HTTP."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from textual.widgets import DataTable, OptionList, Sparkline

from watchkeeper.agents.remediator import RemediatorAgent
from watchkeeper.analysis.alerts import fmt_bytes
from watchkeeper.cli.tui.capture import screen_text
from watchkeeper.runtime import Runtime

from ..fake_psutil import FakeProcess, FakePsutil, VirtualMemory
from .test_api_harness import OPERATOR, Api, api_settings, serve_api, until
from .test_fleet_remote_actions import host_settings
from .test_fleet_roles import SharedBus
from .test_tui import answer, said, select, shows, tui

GIB = 1024**3


@asynccontextmanager
async def central(tmp_path: Path, psutils: dict[str, Any] | None = None,
                  **analyzer: Any) -> AsyncIterator[tuple[Api, list[Runtime], list[Runtime]]]:
    """A central and its two host agents, web-1 and web-2 (``psutils``: a host's psutil, by
    name), both reporting; yields the API, the hosts, and the list of those the test
    stopped itself (not stopped again)."""
    bus = SharedBus()
    bus.users = 3
    hosts = [Runtime(host_settings(tmp_path, name), bus=bus, role="agent",
                     psutil_module=(psutils or {}).get(name))
             for name in ("web-1", "web-2")]
    # A memory warning at 0.1 % on the central: an open alert of each host.
    settings = api_settings(tmp_path / "central", analyzer={"for_s": 0, **analyzer},
                            thresholds={"memory_warning": 0.1, "memory_critical": 100})
    stopped: list[Runtime] = []
    async with serve_api(settings, role="central", bus=bus) as api:
        for rt in hosts:
            await rt.start()
        try:
            async def both() -> bool:
                return len((await api.client.get("/api/hosts")).json()["hosts"]) == 2
            await until(both, timeout=30)
            yield api, hosts, stopped
        finally:
            for rt in hosts:
                if rt not in stopped:
                    await rt.stop()


async def test_the_remediation_view_on_a_central_acts_on_the_rows_own_host(
        tmp_path: Path) -> None:
    sleepers = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
                for _ in range(2)]
    async with central(tmp_path) as (api, hosts, _stopped):
        try:
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
            for proc in sleepers:
                proc.kill()
                proc.wait(10)


def _big_machine() -> FakePsutil:
    """web-2 as another machine would be: the test's two hosts share one machine, so its
    numbers come from a fake psutil (48 cores, 384 GiB, one database process) that no real
    collector here could confuse with web-1's."""
    fake = FakePsutil()
    fake.logical_cpus = 48
    fake.memory = VirtualMemory(total=384 * GIB, available=288 * GIB, percent=25.0,
                                used=96 * GIB, free=288 * GIB)
    fake.processes = [FakeProcess(4242, "db-primary", cpu_percent=12.5, rss=2 * GIB,
                                  username="postgres", cmdline=["postgres", "-D", "/srv"])]
    return fake


def _host_lines(screen: str, host: str) -> list[str]:
    """The overview's lines of ``host`` in view 1 (one, once it is listed)."""
    return [line for line in screen.splitlines()
            if re.match(rf"\s*▸?\s+{re.escape(host)}\s", line)
            and re.search(r"\d+ open alerts?\s+(seen|never)", line)]


def _host_line(screen: str, host: str) -> str:
    """The overview's line of ``host`` in view 1."""
    found = _host_lines(screen, host)
    assert len(found) == 1, f"{host} listed {len(found)} times:\n{screen}"
    return found[0]


async def _reads(pilot: Any, *texts: str, timeout: float = 30) -> str:
    """The screen once a read of the view shows every one of ``texts`` (read again until
    then: under load a host's answer through the central may come too late once)."""
    app = pilot.app
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        await app.reload()
        screen = screen_text(app)
        if all(t in screen for t in texts):
            return screen
        assert asyncio.get_running_loop().time() < deadline, f"never showed {texts}:\n{screen}"
        await pilot.pause(0.2)


async def test_pick_a_host_views_1_and_3_follow_it_and_a_host_going_down_is_said(
        tmp_path: Path) -> None:
    # host_down_after_s 5 instead of 60: the host stopped below is down in seconds (and
    # one that is running is not, under load).
    async with central(tmp_path, {"web-2": _big_machine()}, host_down_after_s=5) as (
            api, hosts, stopped), \
            tui(api.url, lambda: (OPERATOR, "the test"), poll_s=60) as (app, pilot):
        # View 1 on a central: every host with its health, as GET /api/hosts has it.
        async def overview() -> bool:
            await app.reload()
            listed = (await api.client.get("/api/hosts", headers=api.auth())).json()
            screen = screen_text(app)
            # Each host once, with the health and the count the central has now.
            return f"fleet: {len(listed['hosts'])} hosts" in screen and all(
                len(lines := _host_lines(screen, h["host"])) == 1
                and h["health"] in lines[0] and f"{h['open_alerts']} open alert" in lines[0]
                for h in listed["hosts"])
        await until(overview, timeout=30)
        await shows(pilot, "showing all 2 hosts (h: pick)", "a fleet's central")

        # h lists the hosts with their health; pick web-2.
        await pilot.press("h")
        await shows(pilot, "Show which host?", "all hosts: the fleet overview",
                    "web-1", "web-2")
        await pilot.press("h")  # over the open picker: not a second one
        assert len(app.screen_stack) == 2
        options = app.screen.query_one("#dialog-options", OptionList)
        options.highlighted = 2  # the overview, web-1, web-2 (by name)
        await pilot.press("enter")
        await said(pilot, "showing web-2")
        await shows(pilot, "showing web-2 (h: pick)", "host web-2 (")

        # View 3 shows web-2's own numbers, as GET /api/metrics?host=web-2 has them.
        await pilot.press("3")
        snap = (await api.client.get("/api/metrics", params={"host": "web-2"},
                                     headers=api.auth())).json()
        assert snap["host"] == "web-2" and snap["cpu"]["count_logical"] == 48
        memory = snap["memory"]
        await _reads(pilot, f"web-2 · {snap['cpu']['count_logical']} cores · memory "
                     f"{fmt_bytes(memory['used'])} of {fmt_bytes(memory['total'])}",
                     f"memory    {memory['percent']:.1f}%")
        top = app.query_one("#top", DataTable)
        assert [str(c) for c in top.get_row_at(0)[:3]] == [
            str(p) for p in (snap["processes"]["top_cpu"][0]["pid"],
                             snap["processes"]["top_cpu"][0]["name"], "postgres")]

        # View 1 with web-2 picked: its health, its alerts, its identity.
        await pilot.press("1")
        screen = await _reads(pilot, "open alerts of web-2", "(the central it reports to)",
                              "▸")
        assert "▸" in _host_line(screen, "web-2")
        # Views 4 and 7 follow it too: its alerts only, its own configuration.
        await pilot.press("4")
        alerts: Any = app.views[3]

        async def listed() -> bool:
            await app.reload()
            return bool(alerts.alerts)
        await until(listed, timeout=30)
        assert {a["host"] for a in alerts.alerts.values()} == {"web-2"}
        await pilot.press("7")
        await _reads(pilot, "host_name", '"web-2"')

        # web-2 stops: once the central says it is down, the views say so in words
        # and show none of its last numbers.
        await hosts[1].stop()
        stopped.append(hosts[1])

        async def down() -> bool:
            listed = (await api.client.get("/api/hosts", headers=api.auth())).json()
            return any(h["host"] == "web-2" and h["health"] == "down"
                       for h in listed["hosts"])
        await until(down, timeout=30)
        await pilot.press("3")
        await _reads(pilot, "web-2 is DOWN: last heard from",
                    "its metrics show again when it reports", "showing web-2 (DOWN)")
        assert app.query_one("#top", DataTable).row_count == 0
        assert app.query_one("#spark-cpu-percent", Sparkline).data == []
        assert "cores" not in screen_text(app)
        await pilot.press("5")
        await _reads(pilot, "web-2 is DOWN", "its services, approvals and actions show "
                    "again when it answers")
        await pilot.press("1")
        screen = await _reads(pilot, "web-2 is DOWN: last heard from", "1 down")
        assert "down" in _host_line(screen, "web-2")
        await pilot.press("h")
        await shows(pilot, "Show which host?", "(2 hosts, 1 down)")
        await pilot.press("escape")
        assert app.is_running
