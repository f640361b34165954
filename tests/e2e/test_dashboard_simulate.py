"""The dashboard's simulate buttons in a real headless Chromium against a real server: the
demo service appears, is crashed, restarted by the default policy, and listed."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser

from ..integration.test_api_harness import OPERATOR, api_settings, serve_api, until
from .test_dashboard_browser import browser, first_tick, open_dashboard, watched_page

__all__ = ["browser"]  # the fixture, used by name


async def test_simulate_a_crash_from_the_dashboard(tmp_path: Path, browser: Browser) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        await first_tick(api)
        # The second click is answered 409 on purpose: Chromium logs that as a console error.
        async with watched_page(browser, api, allowed_errors=("status of 409",)) as w:
            page = await open_dashboard(w, api, fragment=f"#token={OPERATOR}")
            await page.click("#simulate-service")
            await page.wait_for_function(
                "() => /demo service wk-sim-demo-\\w+ \\(pid \\d+\\) killed at/"
                ".test(document.getElementById('services-result').textContent)")
            text = await page.text_content("#services-result") or ""
            name = text.split("demo service ")[1].split(" ")[0]
            assert text.startswith("service: ")

            async def restarted() -> bool:
                body = (await api.client.get("/api/services")).json()["services"]
                return any(s["name"] == name and s["restarts"] >= 1 for s in body)
            await until(restarted, timeout=30)
            await page.wait_for_selector(f'#services li[data-service="{name}"]')
            # A second one while the first runs: the server's 409, said on the page.
            await page.click("#simulate-crashloop")
            await page.wait_for_function(
                "() => document.getElementById('services-result').classList.contains('error')")
            assert "a simulation runs already" in (
                await page.text_content("#services-result") or "")
