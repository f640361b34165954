"""The dashboard in a real headless Chromium against a real runtime and server.

Debian's /usr/bin/chromium driven by Playwright (never `playwright install`); a missing
browser fails these tests rather than skipping them.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, Page, Route, async_playwright

from watchkeeper.api.routes import dashboard
from watchkeeper.events import AgentError, Alert, Assessment, SuggestedAction, utcnow

from ..integration.test_api_harness import OPERATOR, Api, api_settings, serve_api, until
from ..integration.test_api_read import ONE_CRITICAL
from ..integration.test_llm_assessment_everywhere import MODEL_SUMMARY, model_answer
from ..openai_server import OpenAIServer, Recorded, Reply

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

PAYLOAD = "<img src=x onerror=window.__pwned=1>"

#: Records Content-Security-Policy violations from the first byte of every page.
_RECORD_CSP = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => window.__csp.push(
  [e.violatedDirective, e.blockedURI, e.sourceFile, e.lineNumber, e.sample].join(" ")));
"""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert Path(CHROMIUM).is_file(), \
        f"{CHROMIUM} is missing: install Debian's chromium (scripts/test does)"
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Watched:
    """A page and everything it did that a test asserts on afterwards."""

    page: Page
    requests: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)


@asynccontextmanager
async def watched_page(browser: Browser, api: Api, *, width: int = 1280, height: int = 900,
                       allowed_errors: tuple[str, ...] = ()) -> AsyncIterator[Watched]:
    """A fresh page; on exit: no CSP violation, no error, no request off 127.0.0.1."""
    context = await browser.new_context(viewport={"width": width, "height": height},
                                        service_workers="block")
    page = await context.new_page()
    seen = Watched(page)

    async def refuse(route: Route) -> None:
        seen.blocked.append(route.request.url)
        await route.abort()

    await context.route(lambda url: urlsplit(url).hostname != "127.0.0.1", refuse)
    page.on("request", lambda r: seen.requests.append(r.url))
    page.on("console", lambda m: seen.console_errors.append(m.text) if m.type == "error"
            else None)
    page.on("pageerror", lambda e: seen.page_errors.append(str(e)))
    await page.add_init_script(_RECORD_CSP)
    try:
        yield seen
        violations = await page.evaluate("window.__csp")
        assert violations == [], violations
        assert await page.evaluate("window.__pwned") is None
    finally:
        await context.close()
    assert seen.page_errors == []
    assert [e for e in seen.console_errors
            if not any(a in e for a in allowed_errors)] == []
    assert seen.blocked == []
    hosts = {urlsplit(u).hostname for u in seen.requests if not u.startswith("data:")}
    assert hosts == {"127.0.0.1"}, hosts


async def first_tick(api: Api) -> None:
    """Wait for the sensor's first snapshot, so the page never meets the 503 before it."""
    async def ready() -> bool:
        return (await api.client.get("/api/metrics")).status_code == 200
    await until(ready)


async def open_dashboard(w: Watched, api: Api, fragment: str = "", *,
                         wait_until: Literal["load", "domcontentloaded"] = "load") -> Page:
    page = w.page
    response = await page.goto(api.url + "/" + fragment, wait_until=wait_until)
    assert response is not None and response.ok
    await page.wait_for_function(
        "() => document.getElementById('stream').dataset.state === 'live'")
    return page


async def _live_points(page: Page) -> int:
    points: int = await page.evaluate(
        "((document.getElementById('chart-cpu').data || [])[0] || {x: []}).x.length")
    return points


async def test_metrics_arrive_live(browser: Browser, tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        await first_tick(api)
        async with watched_page(browser, api) as w:
            page = await open_dashboard(w, api)
            assert await page.text_content("#host") == api.runtime.host
            await page.select_option("#range", "300")  # 5 min: a point a second
            await page.wait_for_function(
                "() => document.getElementById('charts-section').dataset.range === '300'")
            await page.wait_for_function("() => document.getElementById('seq').dataset.seq !== ''")
            seq = int(await page.get_attribute("#seq", "data-seq") or 0)
            points = await _live_points(page)
            # No reload: the stream moves the tick counter and the CPU chart grows.
            await page.wait_for_function(
                "([seq, n]) => Number(document.getElementById('seq').dataset.seq) > seq"
                " && document.getElementById('chart-cpu').data[0].x.length > n",
                arg=[seq, points], timeout=10_000)
            assert "%" in (await page.text_content("#now-cpu") or "")
            for name in ("agents", "charts", "alerts", "approvals", "notify", "feed"):
                assert await page.locator(f"#{name}-section").is_visible()
            # No route configured (the default): the card says how to add one.
            await page.locator("#notify li[data-hint]").wait_for()
            hint = await page.locator("#notify li[data-hint]").text_content() or ""
            assert "No notification route" in hint and "notify: {routes: [{name: ops, " \
                'url: "json://127.0.0.1:9000/hook"' in hint, hint
            assert await page.locator("#notify li").count() == 1
            assert await page.locator("#agents li[data-agent='sensor']").count() == 1
        urls = {urlsplit(u).path for u in w.requests}
        assert {"/", "/static/app.js", "/static/app.css", "/api/events"} <= urls
        assert any(p.startswith("/static/vendor/plotly-") for p in urls)


async def test_the_feed_shows_what_happened_before_the_page_opened(browser: Browser,
                                                                   tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        await first_tick(api)
        r = await api.client.post("/api/command", headers=api.auth(), json={
            "command": "remediate", "action": "notify_only", "dry_run": True,
            "params": {"message": f"overnight {PAYLOAD}"}})
        assert r.status_code == 200

        async def stored() -> bool:
            return bool((await api.client.get("/api/activity")).json()["events"])

        await until(stored)
        async with watched_page(browser, api) as w:
            page = await open_dashboard(w, api)
            entry = page.locator("#feed li[data-kind='remediation']")
            await entry.first.wait_for()
            text = await entry.first.text_content() or ""
            assert "notify_only" in text and "dry_run" in text
            assert PAYLOAD in text  # shown as text, never run (watched_page checks __pwned)


async def test_approve_a_pending_action(browser: Browser, tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        await first_tick(api)
        async with watched_page(browser, api) as w:
            page = await open_dashboard(w, api)
            await page.fill("#token", OPERATOR)
            await page.fill("#operator-name", "Alice Smith")
            await page.click("#token-save")
            await page.wait_for_function(
                "() => document.getElementById('stream').dataset.state === 'live'")
            assert "acting as Alice Smith" in (await page.text_content("#token-state") or "")
            # Asked for after the page loaded: the stream's remediation event brings it in.
            r = await api.client.post("/api/command", headers=api.auth(), json={
                "command": "remediate", "action": "notify_only",
                "params": {"message": "disk almost full"}, "reason": "e2e"})
            assert r.status_code == 200, r.text
            approval_id = r.json()["decision"]["approval_id"]
            assert isinstance(approval_id, int)
            row = page.locator(f"#approvals li[data-approval='{approval_id}']")
            await row.wait_for()
            text = await row.text_content() or ""
            assert "notify_only" in text
            assert "expires unanswered in 59m" in text  # the default hour, just begun
            await row.locator("button[data-do='approve']").click()
            await row.wait_for(state="detached")
            assert await page.evaluate("localStorage.getItem('watchkeeper.token')") == OPERATOR
        approval = api.runtime.audit.approval(approval_id)
        assert approval is not None and approval.state == "approved"
        assert approval.by == "Alice Smith"  # the name given in the page, sent with the request
        body = (await api.client.get("/api/actions")).json()
        assert body["pending"] == []
        assert any(e["kind"] == "approved" and e["approval_id"] == approval_id
                   for e in body["entries"])


@contextmanager
def refusing_alertmanager(answer: str) -> Iterator[int]:
    """A loopback HTTP server where an Alertmanager (or a proxy before it) would be, that
    answers every request 400 with ``answer``; yields its port."""

    class Handler(BaseHTTPRequestHandler):
        def _refuse(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = answer.encode()
            self.send_response(400)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _refuse

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


AM_SECRET = "Zq7-am-pass-63t"


async def test_phone_layout_and_untrusted_text(browser: Browser, tmp_path: Path) -> None:
    # An Alertmanager route whose server answers the alert's post with the payload: the
    # notifications card shows that answer as the route's last error, as text.
    with refusing_alertmanager(f"bad alerts {PAYLOAD}") as port:
        route = {"name": "am", "alertmanager": f"http://wk:{AM_SECRET}@127.0.0.1:{port}"}
        async with serve_api(api_settings(tmp_path, notify={"routes": [route]})) as api:
            await first_tick(api)
            async with watched_page(browser, api, width=390, height=844) as w:
                # The token arrives once in the fragment, is kept, and leaves the address bar.
                page = await open_dashboard(w, api, fragment=f"#token={OPERATOR}")
                assert await page.evaluate(
                    "localStorage.getItem('watchkeeper.token')") == OPERATOR
                assert "#" not in page.url and OPERATOR not in page.url
                host = api.runtime.host
                alert = Alert(
                    host=host, id="a-xss", fingerprint="fp-xss", rule="cpu_high",
                    metric="cpu.percent", dimension=PAYLOAD, severity="critical",
                    since=utcnow(),
                    summary=f"{PAYLOAD} {'W' * 300}", context=PAYLOAD,
                    assessment=Assessment(
                        source="llm", summary=PAYLOAD, likely_cause=PAYLOAD, confidence=0.7,
                        evidence=(PAYLOAD,), model=PAYLOAD,
                        suggested_actions=(SuggestedAction(
                            action="notify_only", params={"message": PAYLOAD},
                            reason=PAYLOAD, source="llm"),)))
                await api.runtime.bus.publish(f"alerts.{host}", alert)
                row = page.locator("#alerts li[data-fingerprint='fp-xss']")
                await row.wait_for()
                text = await row.text_content() or ""
                assert PAYLOAD in text and "LLM reasoning" in text
                assert PAYLOAD in (await page.text_content("#feed") or "")
                error = page.locator("#notify li[data-route='am'][data-kind='alertmanager'] "
                                     "[data-error]")
                await error.wait_for(timeout=20_000)
                assert f"HTTP 400: bad alerts {PAYLOAD}" in (await error.text_content() or "")
                assert AM_SECRET not in await page.content()
                assert await page.evaluate("document.querySelectorAll('img').length") == 0
                # One column, nothing wider than the phone.
                assert await page.evaluate("document.documentElement.scrollWidth") <= 390
                boxes: list[dict[str, Any]] = []
                for name in ("agents", "alerts", "approvals", "notify", "feed", "charts",
                             "actions", "config"):
                    section = page.locator(f"#{name}-section")
                    assert await section.is_visible(), name
                    box = await section.bounding_box()
                    assert box is not None
                    boxes.append(box)
                assert len({round(b["x"]) for b in boxes}) == 1
                assert all(b["x"] + b["width"] <= 390 for b in boxes)
                assert await page.evaluate("window.__pwned") is None


async def test_dry_run_and_config_forms(browser: Browser, tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        await first_tick(api)
        async with watched_page(browser, api, allowed_errors=("status of 422",)) as w:
            page = await open_dashboard(w, api, fragment=f"#token={OPERATOR}")
            await page.select_option("#dryrun-action", "notify_only")
            await page.fill("#dryrun-params", '{"message": "what if"}')
            await page.click("#dryrun-form button[type=submit]")
            await page.wait_for_function(
                "() => document.getElementById('dryrun-result').textContent.includes('verdict')")
            result = await page.text_content("#dryrun-result") or ""
            assert "verdict: dry_run" in result and "why:" in result
            assert api.runtime.audit.pending() == []  # a dry run asks nobody

            await page.fill("#config-patch", '{"thresholds": {"cpu_warning": 77}}')
            await page.click("#config-form button[type=submit]")
            await page.wait_for_function(
                "() => document.getElementById('config-result').textContent.includes('changed')")
            assert api.runtime.config.current.thresholds.cpu_warning == 77
            await page.wait_for_function(
                "() => document.getElementById('config').textContent.includes('77')")

            await page.fill("#config-patch", '{"thresholds": {"cpu_warning": "lots"}}')
            await page.click("#config-form button[type=submit]")
            await page.wait_for_function(
                "() => document.getElementById('config-result').classList.contains('error')")
            assert "cpu_warning" in (await page.text_content("#config-result") or "")
            assert api.runtime.config.current.thresholds.cpu_warning == 77


async def badge(page: Page, status: str) -> None:
    """Wait until the header's status badge says ``status`` (no reload)."""
    await page.wait_for_function(
        "(s) => document.getElementById('status').dataset.status === s", arg=status)


async def test_acknowledge_and_silence_a_real_alert(browser: Browser, tmp_path: Path) -> None:
    # Any memory use is critical here: the analyzer raises a real alert at once. CPU rules
    # are off, so a busy test machine cannot raise a second one.
    settings = api_settings(tmp_path, **ONE_CRITICAL)
    async with serve_api(settings) as api:
        await first_tick(api)
        async with watched_page(browser, api) as w:
            page = await open_dashboard(w, api, fragment=f"#token={OPERATOR}")
            row = page.locator("#alerts li[data-state='firing']", has_text="Memory").first
            await row.wait_for()
            fingerprint = await row.get_attribute("data-fingerprint")
            text = await row.text_content() or ""
            assert "Analysis (rules)" in text
            # Numbers for people: "memory.percent = 3.12 %", never 3.1200000000000003.
            assert re.search(r"memory\.percent = \d+(\.\d{1,2})? %", text), text
            assert not re.search(r"\d\.\d{4,}", text), text
            # The badge tells the truth next to the open critical alert.
            await badge(page, "critical")
            await row.locator("button[data-do='ack']").click()
            acked = page.locator(
                f"#alerts li[data-fingerprint='{fingerprint}'][data-state='acknowledged']")
            await acked.wait_for()
            assert "acknowledged by api" in (await acked.text_content() or "")  # no name given
            await badge(page, "critical")  # acknowledged is still a problem
            await acked.locator("button[data-do='silence']").click()
            await page.locator("#feed li", has_text="silenced").wait_for()
            await badge(page, "ok")  # silenced: muted, live, without a reload
            assert "silenced" in (await page.get_attribute("#status", "title") or "")
        alerts = (await api.client.get("/api/alerts")).json()["alerts"]
        assert any(a["fingerprint"] == fingerprint and a["state"] == "acknowledged"
                   for a in alerts)
        silences = (await api.client.get("/api/alerts/silences")).json()["silences"]
        assert [s["matchers"] for s in silences] == [{"fingerprint": fingerprint}]


async def test_without_plotly_the_page_shows_numbers(browser: Browser, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dashboard, "plotly_path", lambda: None)
    dashboard.plotly.cache_clear()
    dashboard.index_html.cache_clear()
    try:
        async with serve_api(api_settings(tmp_path)) as api:
            await first_tick(api)
            async with watched_page(browser, api) as w:
                page = await open_dashboard(w, api)
                assert await page.locator("#charts-note").is_visible()
                assert "plotly" in (await page.text_content("#charts-note") or "")
                assert not await page.locator("#chart-cpu").is_visible()
                await page.wait_for_function(
                    "() => document.getElementById('now-cpu').textContent.includes('%')")
            assert not any("/static/vendor/" in u for u in w.requests)
    finally:
        dashboard.plotly.cache_clear()
        dashboard.index_html.cache_clear()


async def test_the_page_works_while_the_chart_library_is_loading(browser: Browser,
                                                                 tmp_path: Path) -> None:
    # On a slow link plotly.js (1.4 MB gzipped) takes seconds; nothing else may wait for it.
    release = asyncio.Event()

    async def slow(route: Route) -> None:
        await release.wait()
        await route.continue_()

    async with serve_api(api_settings(tmp_path)) as api:
        await first_tick(api)
        async with watched_page(browser, api) as w:
            await w.page.route("**/static/vendor/plotly-*", slow)
            # The browser's load event waits for async scripts too: only the DOM is awaited.
            page = await open_dashboard(w, api, wait_until="domcontentloaded")
            await page.locator("#agents li[data-agent='sensor']").wait_for()
            await page.wait_for_function(
                "() => document.getElementById('now-cpu').textContent.includes('%')")
            assert await page.evaluate("typeof window.Plotly") == "undefined"
            assert not await page.locator("#charts-note").is_visible()
            release.set()
            await page.wait_for_function(
                "() => ((document.getElementById('chart-cpu').data || [])[0] || {x: []})"
                ".x.length > 0", timeout=15_000)


async def test_an_action_without_a_token_says_what_is_needed(browser: Browser,
                                                             tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        await first_tick(api)
        # The browser logs the refused request itself; that console line is expected here.
        async with watched_page(browser, api, allowed_errors=("401",)) as w:
            page = await open_dashboard(w, api)
            assert not await page.locator("#banner").is_visible()
            await page.click("#health-check")
            await page.locator("#banner").wait_for()
            assert "operator token" in (await page.text_content("#banner") or "")
            await page.fill("#token", "not-the-token")
            await page.click("#token-save")
            await page.click("#health-check")
            await page.wait_for_function(
                "() => document.getElementById('banner').textContent.includes('refused')")


async def test_news_missed_while_disconnected_arrives_on_reconnect(browser: Browser,
                                                                     tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        await first_tick(api)
        async with watched_page(browser, api) as w:
            page = await open_dashboard(w, api)
            await page.wait_for_function("() => document.getElementById('seq').dataset.seq")
            resumes: list[str] = []
            page.on("request", lambda r: resumes.append(r.headers.get("last-event-id", ""))
                    if r.url.endswith("/api/events?snapshots=summary") else None)
            # The server ends the stream (as a proxy or a network blip would), and news
            # happens before the page is back; only the stream's replay can bring it.
            (stream,) = api.app.state.streams
            await api.runtime.bus.publish(f"errors.{api.runtime.host}.sensor", AgentError(
                host=api.runtime.host, agent="sensor", error="seen live", error_type="X"))
            await page.locator("#feed li", has_text="seen live").wait_for()
            stream.end()
            await page.wait_for_function(
                "() => document.getElementById('stream').dataset.state !== 'live'")
            await api.runtime.bus.publish(f"errors.{api.runtime.host}.sensor", AgentError(
                host=api.runtime.host, agent="sensor", error="missed while away",
                error_type="X"))
            await page.wait_for_function(
                "() => document.getElementById('stream').dataset.state === 'live'")
            await page.locator("#feed li", has_text="missed while away").wait_for()
            assert resumes and resumes[-1].startswith(api.app.state.journal.run + "-")


async def test_a_failing_service_is_shown_and_a_person_resets_it_from_the_panel(
        browser: Browser, tmp_path: Path) -> None:
    """A managed process that dies 2 s after every start: the services panel says it is
    failing and why, its alert offers Reset too, and Reset (as the named person) lets
    watchkeeper try again. Default remediation settings (the harness's 0 s grace and
    approve mode for notify_only are put back to the defaults)."""
    import sys

    dies = {"start": [sys.executable, "-c", "import time; time.sleep(2); raise SystemExit(1)"],
            "checks": [{"process": True}]}
    settings = api_settings(tmp_path, services={"dies": dies},
                            remediation={"actions": {"notify_only": "auto"},
                                         "startup_grace_s": 60})
    async with serve_api(settings) as api:
        await first_tick(api)
        async with watched_page(browser, api) as w:
            page = await open_dashboard(w, api, "#token=" + OPERATOR)
            await page.fill("#operator-name", "Bob")
            await page.click("#token-save")
            row = page.locator("#services li[data-service='dies']")
            await row.wait_for()
            failing = page.locator("#services li[data-service='dies'][data-condition='failing']")
            await failing.wait_for(timeout=40_000)
            text = await failing.text_content() or ""
            assert "remediation gave up (flap protection: 3 attempts within 300 s" in text
            assert "restarts 3" in text and "last action restart_service" in text
            alert = page.locator("#alerts li", has_text="Service dies is failing")
            await alert.wait_for()
            assert await alert.locator("button[data-do='reset']").count() == 1
            await failing.locator("button[data-do='reset']").click()
            await page.wait_for_function(
                "() => document.getElementById('services-result').textContent"
                ".includes('service:dies reset: automatic tries allowed again')")
            # Tried again at once: the panel follows the live reports.
            await page.locator(
                "#services li[data-service='dies']:not([data-condition='failing'])").wait_for()
        (entry,) = api.runtime.audit.entries(action="reset")
        assert entry.actor == "Bob"


async def test_the_llms_assessment_shows_on_the_alert_live_and_after_a_reload(
        browser: Browser, tmp_path: Path) -> None:
    page_live = threading.Event()

    def answer_once_the_page_is_live(rec: Recorded) -> Reply:
        page_live.wait(20)  # so the answer reaches the open page over the live stream
        return model_answer(rec)

    with OpenAIServer(default=answer_once_the_page_is_live) as server:
        settings = api_settings(tmp_path, **ONE_CRITICAL, llm={
            "enabled": True, "base_url": server.base_url, "timeout": 30.0})
        async with serve_api(settings) as api:
            await first_tick(api)
            async with watched_page(browser, api) as w:
                page = await open_dashboard(w, api)
                row = page.locator("#alerts li", has_text="Memory").first
                await row.wait_for()
                assert "Analysis (rules)" in (await row.text_content() or "")
                fingerprint = await row.get_attribute("data-fingerprint")
                page_live.set()
                llm = page.locator(f"#alerts li[data-fingerprint='{fingerprint}'] "
                                   ".analysis[data-source='llm']")
                await llm.wait_for(timeout=30_000)
                assert MODEL_SUMMARY in (await llm.text_content() or "")
                # An update of the same alert: one row, and the feed says what it is.
                assert await page.locator(
                    f"#alerts li[data-fingerprint='{fingerprint}']").count() == 1
                await page.locator("#feed li", has_text="LLM assessment").wait_for()
                # After a reload the alert still carries the model's words.
                await page.reload()
                await page.wait_for_function(
                    "() => document.getElementById('stream').dataset.state === 'live'")
                await llm.wait_for()
                assert MODEL_SUMMARY in (await llm.text_content() or "")
                assert "rule-based" not in (await llm.text_content() or "")


async def test_an_alert_line_in_the_feed_is_coloured_by_what_happened_to_it(
        browser: Browser, tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        await first_tick(api)
        async with watched_page(browser, api) as w:
            page = await open_dashboard(w, api)
            host = api.runtime.host
            base = {"host": host, "id": "c1", "fingerprint": "colour-test", "rule": "threshold",
                    "metric": "disk.percent", "since": utcnow()}
            for state, severity, summary in (("firing", "critical", "disk full (colour)"),
                                             ("firing", "warning", "disk filling (colour)"),
                                             ("resolved", "critical", "disk ok (colour)")):
                await api.runtime.bus.publish(f"alerts.{host}", Alert(
                    **base, severity=severity, state=state, summary=summary))
                await page.locator("#feed li", has_text=summary).wait_for()

            async def colour(text: str) -> str:
                line = page.locator("#feed li .what", has_text=text)
                found: str = await line.evaluate("n => getComputedStyle(n).color")
                return found

            def var(name: str) -> str:
                return ("() => { const p = document.createElement('p'); p.style.color = "
                        f"'var({name})'; document.body.append(p); const c = "
                        "getComputedStyle(p).color; p.remove(); return c; }")

            bad, warn, ok = [await page.evaluate(var(n)) for n in ("--bad", "--warn", "--ok")]
            assert len({bad, warn, ok}) == 3
            assert await colour("disk full (colour)") == bad
            assert await colour("disk filling (colour)") == warn
            assert await colour("disk ok (colour)") == ok  # good news is not shown in red
