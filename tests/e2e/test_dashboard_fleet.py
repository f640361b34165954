"""A fleet's central in real Chromium: two host agents report to it (the in-process bus stands
in for NATS), the Hosts card lists both with their health, and picking a host narrows the
alerts and charts to it; a host that stops reporting shows as down.

Settings changed from the defaults, and why: fast ticks (api_settings) so the test takes
seconds; a memory warning at 0.1 % so each host has an alert to filter;
host_down_after_s 2 instead of 60. The central has one notification route (to a real
loopback receiver): the Notifications card shows it whichever host is picked.
"""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser

from tests.notify_receiver import Receiver
from watchkeeper.agents.sensor import SensorAgent
from watchkeeper.runtime import Runtime

from ..conftest import make_settings
from ..integration.test_api_harness import Api, api_settings, serve_api, until
from ..integration.test_fleet_roles import SharedBus
from ..integration.test_notify_delivery import receiver
from .test_dashboard_browser import browser, open_dashboard, watched_page

__all__ = ["browser", "receiver"]  # the fixtures, used by name


async def _hosts_report(api: Api) -> bool:
    body = (await api.client.get("/api/hosts")).json()
    return len(body["hosts"]) == 2 and all(h["open_alerts"] for h in body["hosts"])


async def test_the_central_dashboard_lists_hosts_and_narrows_to_one(
        browser: Browser, tmp_path: Path, receiver: Receiver) -> None:
    bus = SharedBus()
    bus.users = 3
    settings = api_settings(tmp_path / "central",
                            thresholds={"memory_warning": 0.1},
                            analyzer={"for_s": 0, "host_down_after_s": 2},
                            notify={"routes": [{"name": "central-ops",
                                                "url": receiver.url("ops")}]})
    hosts = [Runtime(make_settings(tmp_path / name, agents={"check_interval": 0.2}
                                   ).model_copy(update={"host_name": name}),
                     bus=bus, role="agent") for name in ("web-1", "web-2")]
    async with serve_api(settings, role="central", bus=bus) as api:
        for rt in hosts:
            await rt.start()
        try:
            await until(lambda: _hosts_report(api), timeout=30)
            async with watched_page(browser, api) as w:
                page = await open_dashboard(w, api)
                rows = page.locator("#hosts li[data-host]")
                await rows.nth(1).wait_for()
                assert await page.is_visible("#hosts-section")
                assert await rows.evaluate_all("r => r.map(x => x.dataset.host)") == [
                    "web-1", "web-2"]
                alerts = page.locator("#alerts li[data-fingerprint]")
                await alerts.nth(1).wait_for()
                assert set(await page.locator("#alerts [data-host]").evaluate_all(
                    "r => r.map(x => x.dataset.host)")) == {"web-1", "web-2"}
                # Notifications go out from the central: its route, said to be its.
                route = page.locator("#notify li[data-route='central-ops'][data-state='ok']")
                await route.wait_for()
                assert "sent by this central" in (await page.text_content("#notify-count")
                                                  or "")

                # Pick web-2: its alerts only, its charts, its name in the header.
                async with page.expect_request(lambda r: "/api/metrics/history" in r.url
                                               and "host=web-2" in r.url):
                    await page.click("#hosts li[data-host='web-2']")
                await page.wait_for_function(
                    "() => { const h = [...document.querySelectorAll('#alerts [data-host]')]"
                    ".map(x => x.dataset.host); return h.length && h.every(x => x === 'web-2') }")
                assert await page.text_content("#host") == "web-2"
                # The host picker leaves the central's routes alone.
                assert await page.locator("#notify li[data-route]").count() == 1
                assert await route.count() == 1
                await page.click("#hosts-all")
                await alerts.nth(1).wait_for()

                # web-1 stops reporting: down, in the list and in the alerts.
                next(a for a in hosts[0].agents if isinstance(a, SensorAgent)).pause()
                await page.locator("#hosts li[data-host='web-1'][data-health='down']"
                                   ).wait_for(timeout=30_000)
                assert "1 down" in (await page.text_content("#hosts-count") or "")
                await page.get_by_text("Host web-1 stopped reporting").first.wait_for()
        finally:
            for rt in hosts:
                await rt.stop()
