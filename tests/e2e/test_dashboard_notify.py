"""The dashboard's Notifications card in real Chromium, against a real runtime and server
whose route posts to a real loopback webhook (tests/notify_receiver.py) that is down: the
card shows the route retrying with its waiting messages and the channel's error, failing
once notify.failing_after_s has passed, then, the receiver up, ok with nothing waiting. The
route URL's password never reaches the page.

Changed from the defaults, and why: the route's ``group_wait_s: 0`` (default 30: the message
waits in the outbox at once instead of 30 s later); a memory warning at 0.1 % with
``analyzer.for_s: 0`` (an alert to tell, at once); fast ticks (api_settings);
``notify.failing_after_s`` is the default 900 while the route is "retrying", then set to 1
through ``PATCH /api/config`` (the test cannot wait 15 minutes for "failing").
"""

from __future__ import annotations

import re
from pathlib import Path

from playwright.async_api import Browser, Locator, Page

from tests.notify_receiver import Receiver, free_port

from ..integration.test_api_harness import api_settings, serve_api
from .test_dashboard_browser import browser, first_tick, open_dashboard, watched_page

__all__ = ["browser"]  # the fixture, used by name

SECRET = "Zq7-dash-notify-31k"


async def css_var(page: Page, name: str) -> str:
    """The computed colour of a CSS variable (as getComputedStyle gives a colour)."""
    found: str = await page.evaluate(
        "(v) => { const p = document.createElement('p'); p.style.color = `var(${v})`; "
        "document.body.append(p); const c = getComputedStyle(p).color; p.remove(); "
        "return c; }", name)
    return found


async def dot(row: Locator) -> str:
    colour: str = await row.locator(".dot").evaluate("n => getComputedStyle(n).backgroundColor")
    return colour


async def no_secret(page: Page) -> None:
    """Neither the rendered text nor the DOM (attributes, the config card) has it."""
    assert SECRET not in await page.content()
    assert SECRET not in await page.evaluate("document.body.innerText")


async def test_a_down_route_shows_retrying_then_failing_then_ok(browser: Browser,
                                                                tmp_path: Path) -> None:
    receiver = Receiver(free_port())  # not started: the channel is down
    hook = receiver.url("ops").replace("json://", f"json://wk:{SECRET}@")
    settings = api_settings(tmp_path, thresholds={"memory_warning": 0.1,
                                                  "memory_critical": 100},
                            analyzer={"for_s": 0},
                            notify={"routes": [{"name": "ops", "url": hook,
                                                "group_wait_s": 0}]})
    try:
        async with serve_api(settings) as api:
            await first_tick(api)
            async with watched_page(browser, api) as w:
                page = await open_dashboard(w, api)
                row = page.locator("#notify li[data-route='ops']")

                # Down: retrying (amber), what waits, what the channel said, when it is
                # tried again.
                await page.locator("#notify li[data-route='ops'][data-state='retrying']"
                                   ).wait_for(timeout=30_000)
                counts = await row.locator("[data-counts]").text_content() or ""
                waiting = re.search(r"waiting (\d+) \(oldest \d", counts)
                assert waiting and int(waiting.group(1)) >= 1, counts
                assert re.search(r"failed [1-9]", counts) and "sent 0" in counts, counts
                assert "no success yet" in counts
                assert await row.locator("[data-kind]").text_content() == "json"
                error = await row.locator("[data-error]").text_content() or ""
                assert "A Connection error occurred" in error, error
                retry = await row.locator("[data-retry]").text_content() or ""
                assert re.search(r"failing since .* · next retry (in \d|due now)", retry), retry
                assert await dot(row) == await css_var(page, "--warn")
                assert await page.text_content("#notify-count") == "(1)"
                await no_secret(page)

                # Past notify.failing_after_s: failing (red), shown without a reload.
                r = await api.client.patch("/api/config", headers=api.auth(),
                                           json={"notify": {"failing_after_s": 1}})
                assert r.status_code == 200, r.text
                await page.locator("#notify li[data-route='ops'][data-state='failing']"
                                   ).wait_for(timeout=15_000)
                assert await dot(row) == await css_var(page, "--bad")
                assert await page.text_content("#notify-count") == "(1, 1 failing)"
                assert "A Connection error occurred" in (
                    await row.locator("[data-error]").text_content() or "")

                # The channel is back: at its next try everything waiting goes out.
                receiver.start()
                await page.wait_for_function(
                    "() => { const r = document.querySelector(\"#notify li[data-route='ops']\");"
                    " return r && r.dataset.state === 'ok' && r.querySelector('[data-counts]')"
                    ".textContent.startsWith('waiting 0 ·') }", timeout=90_000)
                counts = await row.locator("[data-counts]").text_content() or ""
                assert re.search(r"sent [1-9]", counts), counts
                assert re.search(r"last success \d+s ago", counts), counts
                assert await row.locator("[data-error], [data-retry]").count() == 0
                assert await dot(row) == await css_var(page, "--ok")
                await no_secret(page)
        assert receiver.messages("ops")
    finally:
        receiver.stop()
