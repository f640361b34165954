"""The dashboard warns when the audit log's chain is broken (real Chromium, real server)."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser

from ..integration.test_api_harness import api_settings, serve_api
from ..security.test_tampered_audit import fill, sql
from .test_dashboard_browser import browser, first_tick, open_dashboard, watched_page

__all__ = ["browser"]  # the fixture, used by name


async def test_a_broken_audit_chain_shows_a_banner(browser: Browser, tmp_path: Path) -> None:
    db = await fill(tmp_path)
    sql(db, "UPDATE entries SET actor = 'mallory' WHERE id = 6")
    async with serve_api(api_settings(tmp_path)) as api:
        await first_tick(api)
        async with watched_page(browser, api) as w:
            page = await open_dashboard(w, api)
            warning = page.locator("#audit-banner")
            await warning.wait_for(state="visible")
            text = await warning.text_content() or ""
            assert "audit log fails its integrity check (edited at #6)" in text
            assert "audit verify" in text
            assert await page.get_attribute("#status", "data-status") in ("degraded",
                                                                          "critical")

