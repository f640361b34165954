"""The dashboard's History panel in real Chromium: a managed service the runtime started is
killed (SIGKILL), remediation restarts it, and the panel shows the incident, its time to
detect and recover, the service's uptime and the restart's success, with its timeline bar.

Remediation settings are the defaults; the sensor ticks every 0.2 s (api_settings) so the
test does not wait for 5 s ticks.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from playwright.async_api import Browser

from ..integration.test_api_harness import api_settings, serve_api
from ..integration.test_remediator import free_port
from ..integration.test_services_api import web
from .test_dashboard_browser import browser, first_tick, open_dashboard, watched_page

__all__ = ["browser"]  # the fixture, used by name


async def test_a_crash_and_its_restart_show_as_one_incident_in_history(
        browser: Browser, tmp_path: Path) -> None:
    port = free_port()
    settings = api_settings(tmp_path, services={"web": web(port)},
                            remediation={"startup_grace_s": 0})
    async with serve_api(settings) as api:
        await first_tick(api)
        status = await api.runtime.services.wait_healthy("web", timeout_s=10)
        assert status.pid is not None
        async with watched_page(browser, api) as w:
            page = await open_dashboard(w, api)
            await page.wait_for_function(
                "() => document.getElementById('history-section').dataset.loaded")
            assert "no incident in this range" in (await page.text_content("#incidents") or "")

            os.kill(status.pid, signal.SIGKILL)  # the runtime started it for this test
            # No reload: the live stream's alert and remediation events refresh the panel.
            item = page.locator("#incidents li[data-state='resolved']")
            await item.wait_for(timeout=30_000)
            text = await item.text_content() or ""
            # What went wrong: the exit, or (when the load delays noticing it) the failed check.
            assert "Service web is down: " in text
            assert "critical" in text and "detected in " in text and "recovered in " in text
            assert "restart_service on web: worked" in text
            assert await page.locator("#incidents li").count() == 1
            summary = await page.text_content("#history-summary") or ""
            assert summary.startswith("1 incident(s), 0 open · time to detect ")
            rate = await page.text_content("#success-rates [data-rate='action:restart_service']")
            assert rate is not None and "100 %: 1 of 1 worked" in rate
            uptime = await page.text_content("#uptime [data-service='web']") or ""
            assert "service web on" in uptime and " %" in uptime and "down" in uptime
            # The timeline: one bar, for this incident.
            bars = await page.evaluate(
                "document.getElementById('chart-incidents').data[0].x.length")
            assert bars == 1
