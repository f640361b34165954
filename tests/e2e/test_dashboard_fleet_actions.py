"""A fleet's central in real Chromium acts on its hosts: the services and approvals cards
list every host's (each row says whose), the Hosts card narrows them, an approval is
approved on its own host (two hosts may both have an approval #1), a host that does not
answer is named, and a host's refusal shows in the activity feed.

Settings changed from the defaults, and why: fast ticks (api_settings) so the test takes
seconds; on the hosts startup_grace_s 0 (the default holds every action back a minute).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

from playwright.async_api import Browser

from watchkeeper.agents.remediator import RemediatorAgent
from watchkeeper.runtime import Runtime

from ..integration.test_api_harness import OPERATOR, Api, api_settings, serve_api, until
from ..integration.test_fleet_remote_actions import host_settings
from ..integration.test_fleet_roles import SharedBus
from .test_dashboard_browser import browser, open_dashboard, watched_page

__all__ = ["browser"]  # the fixture, used by name

PY = sys.executable


async def _ask_to_stop(api: Api, host: str, pid: int) -> int:
    r = await api.client.post("/api/command", headers=api.auth(), params={"host": host},
                              json={"command": "remediate", "action": "stop_process",
                                    "params": {"pid": pid, "grace_s": 5}})
    assert r.status_code == 200, r.text
    decision = r.json()["decision"]
    assert decision["verdict"] == "approve", decision
    approval_id: int = decision["approval_id"]
    return approval_id


async def test_the_central_dashboard_lists_and_acts_on_each_hosts_services_and_approvals(
        browser: Browser, tmp_path: Path) -> None:
    bus = SharedBus()
    bus.users = 3
    hosts = [Runtime(host_settings(tmp_path, name), bus=bus, role="agent")
             for name in ("web-1", "web-2")]
    sleepers = [subprocess.Popen([PY, "-c", "import time; time.sleep(120)"]) for _ in hosts]
    stopped: list[Runtime] = []
    async with serve_api(api_settings(tmp_path / "central"), role="central", bus=bus) as api:
        for rt in hosts:
            await rt.start()
        try:
            async def both() -> bool:
                return len((await api.client.get("/api/hosts")).json()["hosts"]) == 2
            await until(both, timeout=30)
            first = await _ask_to_stop(api, "web-1", sleepers[0].pid)
            second = await _ask_to_stop(api, "web-2", sleepers[1].pid)
            assert first == second  # each host numbers its own approvals

            async with watched_page(browser, api) as w:
                page = await open_dashboard(w, api, fragment=f"#token={OPERATOR}")
                rows = page.locator("#approvals li[data-approval]")
                await rows.nth(1).wait_for()
                assert await rows.evaluate_all("r => r.map(x => x.dataset.host)") == [
                    "web-1", "web-2"]
                assert await page.is_visible("#services-section")
                app = page.locator("#services li[data-service='app']")
                await app.wait_for()
                assert await app.get_attribute("data-host") == "web-1"
                assert await app.locator("[data-host='web-1']").text_content() == "web-1"
                assert not await page.is_visible("#simulate-service")

                # Pick web-2: its approval only, and it has no services.
                await page.click("#hosts li[data-host='web-2']")
                await page.wait_for_function(
                    "() => [...document.querySelectorAll('#approvals li[data-approval]')]"
                    ".map(x => x.dataset.host).join() === 'web-2'")
                assert await page.locator("#services li[data-service]").count() == 0
                # Approve it: the request names web-2, web-2 runs it, web-1's #1 still waits.
                async with page.expect_request(
                        lambda r: r.method == "POST" and r.url.endswith(
                            f"/api/actions/{second}/approve?host=web-2")):
                    await page.click("#approvals li[data-host='web-2'] [data-do='approve']")
                remediator = next(a for a in hosts[1].agents
                                  if isinstance(a, RemediatorAgent))
                await remediator.wait_idle()
                assert await asyncio.to_thread(sleepers[1].wait, 10) == -signal.SIGTERM
                assert [a.id for a in hosts[0].audit.pending()] == [first]
                assert sleepers[0].poll() is None
                await page.locator("#feed li[data-kind='approval']",
                                   has_text=f"approved #{second} on web-2").wait_for()

                # web-2 refuses what it was asked again: the feed says so, live.
                again = await api.client.post(f"/api/actions/{second}/approve",
                                              headers=api.auth(), params={"host": "web-2"})
                assert again.status_code == 409
                await page.locator("#feed li[data-kind='command_refused']",
                                   has_text="web-2 refused approve").wait_for()

                # web-2 goes away: its services and approvals are named as not answering.
                await hosts[1].stop()
                stopped.append(hosts[1])
                await page.click("#hosts-all")
                await page.reload()
                await page.locator("#services li[data-unreachable='web-2']").wait_for()
                await page.locator("#approvals li[data-unreachable='web-2']").wait_for()
                assert await page.locator("#approvals li[data-approval]").evaluate_all(
                    "r => r.map(x => x.dataset.host)") == ["web-1"]
        finally:
            for rt in hosts:
                if rt not in stopped:
                    await rt.stop()
            for proc in sleepers:
                proc.kill()
                proc.wait(10)
