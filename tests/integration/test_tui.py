"""`watchkeeper cli`, the terminal UI, driven headless by Textual's pilot against a real
`watchkeeper serve` (the `server` fixture: tests/integration/served.py says how its
configuration differs from the defaults), and once in a real pseudo-terminal.

The app runs in the test's process and talks to the server over HTTP, as it does for a user.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, OptionList, Static

from watchkeeper.cli.client import find_token
from watchkeeper.cli.tui.app import WatchkeeperApp
from watchkeeper.cli.tui.capture import screen_text
from watchkeeper.config import Settings
from watchkeeper.instance_lock import InstanceLock

from ..conftest import make_settings
from .served import Server, free_port, ready, serve, stop, write_config
from .test_cli import wk_env

SIZE = (110, 32)


def _tokens(server: Server) -> Callable[[], tuple[str | None, str]]:
    """The token the way `watchkeeper cli` finds it on the server's host: its token file."""
    return lambda: find_token(None, lambda: make_settings(server.root))


@asynccontextmanager
async def tui(url: str, find: Callable[[], tuple[str | None, str]], *,
              size: tuple[int, int] = SIZE, settings: Settings | None = None,
              poll_s: float = 0.5) -> AsyncIterator[tuple[WatchkeeperApp, Pilot[int]]]:
    app = WatchkeeperApp(url, find, settings=(lambda: settings) if settings else None,
                         poll_s=poll_s)
    async with app.run_test(size=size) as pilot:
        try:
            yield app, pilot
        finally:
            if app.is_running:
                await pilot.press("q")
                await pilot.pause()


async def shows(pilot: Pilot[int], *texts: str, timeout: float = 20) -> str:
    """The screen, once it shows every one of ``texts``."""
    deadline = time.monotonic() + timeout
    while True:
        text = screen_text(pilot.app)
        if all(t in text for t in texts):
            return text
        assert time.monotonic() < deadline, f"never showed {texts}:\n{text}"
        await pilot.pause(0.1)


async def eventually(pilot: Pilot[int], check: Callable[[], Any], what: str,
                     timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := await asyncio.to_thread(check)):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.1)
    return found


def message(app: WatchkeeperApp) -> str:
    return str(app.query_one("#message", Static).content)


async def said(pilot: Pilot[int], *texts: str, timeout: float = 20) -> str:
    """The message line, once it says every one of ``texts``."""
    deadline = time.monotonic() + timeout
    while not all(t in (line := message(pilot.app)) for t in texts):  # type: ignore[arg-type]
        assert time.monotonic() < deadline, f"the message line never said {texts}: {line!r}"
        await pilot.pause(0.1)
    return line


async def select(pilot: Pilot[int], table_id: str, key: str) -> None:
    """Put the cursor of table ``table_id`` on the row ``key`` (once it is listed)."""
    app: Any = pilot.app
    table: DataTable[Any] = app.query_one(f"#{table_id}", DataTable)
    deadline = time.monotonic() + 20
    while True:
        await app.reload()
        try:
            table.move_cursor(row=table.get_row_index(key))
            break
        except Exception:  # not listed yet
            assert time.monotonic() < deadline, f"{key} never listed in #{table_id}"
            await pilot.pause(0.2)
    table.focus()
    await pilot.pause()


async def answer(pilot: Pilot[int], text: str | None) -> None:
    """Type ``text`` into the open prompt (replacing what is there) and press Enter."""
    app: Any = pilot.app
    field = await eventually(pilot, lambda: app.screen.query(Input).first()
                             if app.screen.query(Input) else None, "a prompt")
    if text is not None:
        field.value = text
    await pilot.press("enter")


def agent_state(server: Server, name: str) -> str:
    agents = server.api("GET", "/api/agents").json()["agents"]
    state: str = {a["name"]: a["state"] for a in agents}[name]
    return state


# --- every view --------------------------------------------------------------------------------

async def test_every_view_shows_what_the_server_has(server: Server) -> None:
    async with tui(server.url, _tokens(server)) as (_app, pilot):
        expected = {
            1: ("1 System Status", "5/5 running", "warning", f"connected to {server.url}"),
            2: ("2 Agent Details", "sensor", "analyzer", "remediator", "communicator",
                "notifier"),
            3: ("3 System Metrics", "CPU", "memory", "top processes by CPU", "cores"),
            4: ("4 Analysis Results", "Memory is", "assessment"),
            5: ("5 Remediation Status", "sleeper", "process", "audit chain ok"),
            6: ("6 Message Bus", "metrics.", "PUB/S", "DROPPED",
                "refused from the bus since the server started: none",
                "duplicate snapshots stored once: 0"),
            7: ("7 Configuration", "thresholds.swap_warning", "50.0"),
            8: ("8 Send Commands", "health_check", "remediate"),
            9: ("9 Live Monitoring", f"following {server.url}"),
        }
        for number, texts in expected.items():
            await pilot.press(str(number))
            await shows(pilot, *texts)
        # Rates come from two successive readings of the counters.
        await pilot.press("6")
        text = await shows(pilot, "metrics.")
        deadline = time.monotonic() + 20
        while not any(line.lstrip().startswith("metrics.") and line.split()[2] != "-"
                      for line in text.splitlines()):
            assert time.monotonic() < deadline, text
            await pilot.pause(0.2)
            text = screen_text(pilot.app)


async def test_metrics_sparklines_move_with_the_stream(server: Server) -> None:
    async with tui(server.url, _tokens(server)) as (app, pilot):
        await pilot.press("3")
        view: Any = app.views[2]
        await shows(pilot, "top processes by CPU")
        before = len(view.series["cpu.percent"])
        # The stream's sensor ticks (every 0.2 s here) add points without a page read.
        await eventually(pilot, lambda: len(view.series["cpu.percent"]) >= before + 3,
                         "live points")


# --- actions -----------------------------------------------------------------------------------

async def test_pause_resume_restart_the_selected_agent(server: Server) -> None:
    async with tui(server.url, _tokens(server)) as (_app, pilot):
        await pilot.press("2")
        await select(pilot, "agents", "analyzer")
        await pilot.press("p")
        await said(pilot, "pause: analyzer: ok")
        await eventually(pilot, lambda: agent_state(server, "analyzer") == "paused", "paused")
        await pilot.press("u")
        await said(pilot, "resume: analyzer: ok")
        await eventually(pilot, lambda: agent_state(server, "analyzer") == "running",
                         "running")
        restarts = {a["name"]: a["restarts"]
                    for a in server.api("GET", "/api/agents").json()["agents"]}["analyzer"]
        await pilot.press("r")
        await said(pilot, "restart: analyzer: ok")
        await eventually(pilot, lambda: {a["name"]: a["restarts"] for a in server.api(
            "GET", "/api/agents").json()["agents"]}["analyzer"] > restarts, "a restart")
        assert agent_state(server, "sensor") == "running"  # only the selected one


async def test_ack_and_silence_the_selected_alert(server: Server) -> None:
    alert = next(a for a in server.api("GET", "/api/alerts").json()["alerts"]
                 if a["metric"] == "memory.percent")
    async with tui(server.url, _tokens(server)) as (_app, pilot):
        await pilot.press("4")
        await select(pilot, "alerts", alert["fingerprint"])
        await shows(pilot, f"fingerprint {alert['fingerprint']}", "likely cause")
        await pilot.press("a")
        await said(pilot, "acknowledged: Memory is")
        states = {a["fingerprint"]: a["state"]
                  for a in server.api("GET", "/api/alerts").json()["alerts"]}
        assert states[alert["fingerprint"]] == "acknowledged"
        await pilot.press("s")
        await answer(pilot, "2y")  # not a duration: said, nothing sent
        await said(pilot, "'2y' is not a duration")
        await pilot.press("s")
        await answer(pilot, "30m")
        await said(pilot, "silenced rule=threshold metric=memory.percent until")
        silences = server.api("GET", "/api/alerts/silences").json()["silences"]
        assert {"rule": "threshold", "metric": "memory.percent"} in [
            s["matchers"] for s in silences]


async def test_approve_one_pending_action_and_reject_another_with_a_reason(
        server: Server) -> None:
    def decided() -> dict[int, Any]:
        return {a["id"]: a for a in
                server.api("GET", "/api/actions/approvals").json()["approvals"]}

    async with tui(server.url, _tokens(server), poll_s=60) as (_app, pilot):
        await pilot.press("5")
        # One request waits at a time per action and target: each is made once the one
        # before is decided.
        first = server.pending("tui first")
        await select(pilot, "approvals", str(first))
        await pilot.press("a")
        await said(pilot, f"approval #{first}: ")
        assert decided()[first]["state"] == "approved"
        second = server.pending("tui second")
        await select(pilot, "approvals", str(second))
        await pilot.press("x")
        await answer(pilot, "not during the backup")
        await said(pilot, f"approval #{second} rejected")
        assert (decided()[second]["state"], decided()[second]["reason"]) == (
            "rejected", "not during the backup")
        # Decided elsewhere meanwhile (the dashboard, another operator): the server's 409,
        # shown, and the UI goes on.
        third = server.pending("tui third")
        await select(pilot, "approvals", str(third))
        server.api("POST", f"/api/actions/{third}/reject", {"reason": "elsewhere"})
        await pilot.press("a")
        await said(pilot, f"409: approval #{third} was rejected already")


async def test_reset_a_target_and_an_unknown_one(server: Server) -> None:
    async with tui(server.url, _tokens(server)) as (_app, pilot):
        await pilot.press("5")
        await select(pilot, "services", "sleeper")
        await pilot.press("t")
        await answer(pilot, None)  # the selected service, offered
        await said(pilot, "sleeper")
        assert "error" not in pilot.app.query_one("#message").classes
        await pilot.press("t")
        await answer(pilot, "no-such-service")
        await said(pilot, "404: unknown service 'no-such-service'")
        await pilot.press("tab")  # Tab moves to the next table
        assert pilot.app.focused is pilot.app.query_one("#approvals")


async def test_a_config_change_accepted_and_one_refused_with_the_servers_reason(
        server: Server) -> None:
    async with tui(server.url, _tokens(server)) as (_app, pilot):
        await pilot.press("7")
        await select(pilot, "config", "thresholds.swap_warning")
        await pilot.press("e")
        await answer(pilot, "60")
        await said(pilot, "changed: thresholds.swap_warning")
        assert server.api("GET", "/api/config").json()["config"]["thresholds"][
            "swap_warning"] == 60
        await pilot.press("e")
        await answer(pilot, "99")
        refusal = "422: thresholds: swap_warning (99) must not be above swap_critical (80)"
        await said(pilot, refusal)
        await shows(pilot, "refused, nothing changed: " + refusal)
        assert server.api("GET", "/api/config").json()["config"]["thresholds"][
            "swap_warning"] == 60


async def test_remediate_previews_a_dry_run_before_the_real_request(server: Server) -> None:
    def pending() -> set[int]:
        return {p["id"] for p in server.api("GET", "/api/actions").json()["pending"]}

    async with tui(server.url, _tokens(server)) as (app, pilot):
        await pilot.press("8")
        await shows(pilot, "remediate")
        options = app.query_one("#commands", OptionList)
        options.highlighted = options.get_option_index("remediate")
        before = pending()
        await pilot.press("enter")
        await answer(pilot, "notify_only")
        await answer(pilot, '{"message": "disk check"}')
        await shows(pilot, "dry run of notify_only", "would:", "Send it for real?")
        assert pending() == before  # a preview changes nothing
        await pilot.press("y")
        line = await said(pilot, "remediate notify_only: approve", "approval #")
        approval_id = int(line.split("approval #")[1].split(":")[0])
        assert pending() == before | {approval_id}
        # An action the server does not know: its refusal, and nothing sent.
        await pilot.press("enter")
        await answer(pilot, "explode")
        await answer(pilot, "{}")
        await said(pilot, "dry run: 422: unknown action 'explode'")
        # An agent command from the same view.
        options.highlighted = 0
        await pilot.press("enter")
        await answer(pilot, "all")
        await shows(pilot, "health_check → sensor: ok")


async def test_simulate_from_the_commands_view(server: Server) -> None:
    """Every command POST /api/command accepts is reachable in view 8: simulate too (it has
    no dry run: a confirmation says what it will do)."""
    def demos() -> set[str]:
        return {s["name"] for s in server.api("GET", "/api/services").json()["services"]
                if s["name"].startswith("wk-sim-demo")}

    async with tui(server.url, _tokens(server)) as (app, pilot):
        await pilot.press("8")
        await shows(pilot, "simulate")
        options = app.query_one("#commands", OptionList)
        options.highlighted = options.get_option_index("simulate")
        await pilot.press("enter")
        await answer(pilot, "meteor")
        await answer(pilot, "5s")
        await shows(pilot, "Start the demo service for 5 s")
        await pilot.press("y")  # the server's refusal, shown; nothing started
        await said(pilot, "simulate: 422", "scenario")
        await pilot.press("enter")
        await answer(pilot, "service")
        await answer(pilot, "2h")  # longer than the server's cap: said, nothing sent
        await said(pilot, "'2h' is not a duration from 1s to 10m")
        assert not demos()
        await pilot.press("enter")
        await answer(pilot, "service")
        await answer(pilot, "5s")
        await pilot.press("y")
        line = await said(pilot, "simulate service: demo service wk-sim-demo", "crashed")
        service = line.split("demo service ")[1].split()[0]
        assert service in demos()


async def test_the_live_view_shows_refusals_and_config_changes_as_they_happen(
        server: Server) -> None:
    async with tui(server.url, _tokens(server)) as (app, pilot):
        await pilot.press("9")
        await shows(pilot, f"following {server.url}")
        r = server.api("PATCH", "/api/config", {"thresholds": {"swap_warning": 99}})
        assert r.status_code == 422
        await shows(pilot, "command_refused  vm refused config_patch to its runtime from api",
                    "swap_warning (99) must not be above")
        r = server.api("PATCH", "/api/config", {"thresholds": {"swap_warning": 55}})
        assert r.status_code == 200, r.text
        await shows(pilot, "config_changed", "configuration changed (version",
                    "): thresholds.swap_warning")
        # What the server only sends elsewhere (an LLM's assessment, a fleet agent's spool
        # gap) and what is not worth a line (an open alert's number moving), as it comes.
        alert = {"kind": "alert", "severity": "warning", "state": "firing",
                 "summary": "Disk is 91% full", "labels": {"change": "value"}}
        app._on_stream("alert", alert)
        app._on_stream("alert", {**alert, "labels": {"change": "assessed"},
                                 "assessment": {"summary": "the backup job fills it"}})
        app._on_stream("spool_gap", {"kind": "spool_gap", "host": "web-3", "dropped": 12,
                                     "first_at": "01:00", "last_at": "01:05"})
        text = await shows(pilot, "warning assessed: the backup job fills it – on: Disk",
                           "gap: web-3 could not reach the broker")
        assert "warning firing: Disk is 91% full" not in text


# --- plain and NO_COLOR ---------------------------------------------------------------------

def _emoji(text: str) -> set[str]:
    return {c for c in text if ord(c) >= 0x2600 and c not in "─━│┃▁▂▃▄▅▆▇█▊▎▔…→↑↓·"}


async def test_plain_mode_has_no_emoji_and_no_colour(server: Server) -> None:
    app = WatchkeeperApp(server.url, _tokens(server), plain=True)
    async with app.run_test(size=SIZE) as pilot:
        for key, text in (("1", "5/5 running"), ("4", "Memory is"), ("5", "sleeper")):
            await pilot.press(key)
            screen = await shows(pilot, text)
            assert not _emoji(screen), _emoji(screen)
        assert app.no_color
        await pilot.press("q")


async def test_no_color_drops_the_colour_and_keeps_the_emoji(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    async with tui(server.url, _tokens(server)) as (app, pilot):
        screen = await shows(pilot, "5/5 running")
        assert app.no_color and "🟢" in screen


# --- bad input ---------------------------------------------------------------------------------

async def test_an_unknown_key_says_which_keys_there_are(server: Server) -> None:
    async with tui(server.url, _tokens(server)) as (app, pilot):
        await pilot.press("2")
        await pilot.press("z")
        line = await said(pilot, "unknown key 'z': 1-9 switch views, q quits")
        assert "p pause" in line and "error" in app.query_one("#message").classes
        await pilot.press("1")
        await shows(pilot, "1 System Status")
        assert app.is_running



async def test_h_on_a_single_server_says_it_follows_one_host(server: Server) -> None:
    host = server.api("GET", "/api/system").json()["host"]
    async with tui(server.url, _tokens(server)) as (app, pilot):
        await shows(pilot, "5/5 running")
        await pilot.press("h")
        await said(pilot, f"this server follows one host ({host}): there is no other host "
                   "to pick")
        assert app.screen is app.screen_stack[0]  # no picker opened
        for number in (1, 3):
            await pilot.press(str(number))
            await app.reload()
            screen = screen_text(app)
            assert "showing " not in screen and "fleet: " not in screen \
                and "h: pick" not in screen
        assert app.is_running


async def test_a_views_keys_act_in_that_view_only(server: Server) -> None:
    async with tui(server.url, _tokens(server)) as (_app, pilot):
        await shows(pilot, "5/5 running")
        # At the start the hidden agents table of view 2 once had the focus: p, u and r
        # were taken by it on view 1 (and the footer listed them there).
        await pilot.press("p")
        await said(pilot, "unknown key 'p'")
        assert "pause" not in screen_text(pilot.app).splitlines()[-1]
        await pilot.press("2")
        await select(pilot, "agents", "sensor")
        await pilot.press("1")
        await pilot.press("p")
        await said(pilot, "unknown key 'p'")
        assert agent_state(server, "sensor") == "running"


async def test_ctrl_c_quits_even_from_an_open_prompt(server: Server) -> None:
    """As in htop, k9s and Glances: Ctrl+C leaves with exit 0, whatever has the focus."""
    async with tui(server.url, _tokens(server)) as (app, pilot):
        await pilot.press("7")
        await select(pilot, "config", "thresholds.swap_warning")
        await pilot.press("enter")  # as e does, Enter asks for the selected value
        await eventually(pilot, lambda: bool(app.screen.query(Input)), "the prompt")
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert not app.is_running and app.return_code == 0


async def test_a_too_small_terminal_says_so_until_resized(server: Server) -> None:
    async with tui(server.url, _tokens(server), size=(50, 12)) as (_app, pilot):
        text = await shows(pilot, "The terminal is 50x12", "at least 80x20")
        assert "System Status" not in text
        await pilot.press("2")  # keys still work meanwhile
        await pilot.resize_terminal(100, 30)
        await shows(pilot, "2 Agent Details", "sensor")


@pytest.mark.parametrize("how", ["wrong", "missing"])
async def test_a_wrong_or_missing_token_says_which_token_and_where(server: Server,
                                                                   how: str) -> None:
    find = ((lambda: ("wrong", "--token")) if how == "wrong"
            else (lambda: (None, "no --token, no $WATCHKEEPER_TOKEN, no api.token, "
                                 "/nowhere/api_token not readable")))
    async with tui(server.url, find) as (app, pilot):
        await pilot.press("2")
        await select(pilot, "agents", "sensor")  # reads are open on loopback
        await pilot.press("p")
        if how == "wrong":
            line = await said(pilot, "the server refused the token (--token)")
        else:
            line = await said(pilot, "the server wants a token and none was found",
                              "/nowhere/api_token not readable")
        assert "pass --token or set WATCHKEEPER_TOKEN" in line
        assert agent_state(server, "sensor") == "running"
        assert app.is_running


async def test_no_server_offers_the_agents_here_and_a_no_leaves_it_waiting(
        tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        async with tui(url, lambda: (None, "none"), settings=make_settings(tmp_path)) as (
                app, pilot):
            await shows(pilot, f"No watchkeeper answers at {url}", "Start the agents here")
            await pilot.press("n")
            await said(pilot, "not started: waiting for a server")
            await shows(pilot, f"no answer from {url}: reconnecting")
            await pilot.press("3")  # every view says the same, and nothing breaks
            await pilot.press("z")
            await said(pilot, "unknown key")
            assert app.local is None and not (tmp_path / "data" / "api_token").exists()


def _slow_client_cut(port: int) -> bytes:
    """What the server answers a request head that never ends (a slowloris)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        data = b""
        while chunk := sock.recv(4096):  # until the server closes it (10 s: socket.timeout)
            data += chunk
    return data


def _foreign_host(port: int) -> int:
    """The status of a request that names another server (DNS rebinding)."""
    import httpx

    return httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=10,
                     headers={"Host": "attacker.example"}).status_code


async def test_yes_starts_the_agents_here_and_quitting_stops_them(tmp_path: Path) -> None:
    port = free_port()
    # request_timeout_s lowered to 1 s (default 10 s) to keep the slow client's test short.
    settings = make_settings(tmp_path, api={"port": port, "request_timeout_s": 1},
                             agents={"check_interval": 0.2})
    async with tui(f"http://127.0.0.1:{port}", lambda: find_token(None, lambda: settings),
                   settings=settings) as (app, pilot):
        await shows(pilot, "Start the agents here")
        await pilot.press("y")
        await said(pilot, f"agents started in this process, serving http://127.0.0.1:{port}")
        await shows(pilot, "(started here)", "5/5 running")
        await pilot.press("2")
        await select(pilot, "agents", "sensor")
        await pilot.press("p")  # the token the local server made is found and accepted
        await said(pilot, "pause: sensor: ok")
        with pytest.raises(Exception, match="running"):  # the data dir is held
            InstanceLock.acquire(settings.storage.path)
        # `serve`'s guard: a slow client is cut after request_timeout_s, and a request for
        # another server's name is refused.
        assert (await asyncio.to_thread(_slow_client_cut, port)).startswith(
            b"HTTP/1.1 408 ")
        assert await asyncio.to_thread(_foreign_host, port) == 421
        await pilot.press("q")
        await pilot.pause()
        assert not app.is_running
    InstanceLock.acquire(settings.storage.path).release()  # let go on quit
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


async def test_the_agents_are_not_started_here_when_another_watchkeeper_holds_the_data_dir(
        tmp_path: Path) -> None:
    port = free_port()
    settings = make_settings(tmp_path, api={"port": port})
    lock = InstanceLock.acquire(settings.storage.path)  # as a running `run` or `serve` does
    try:
        async with tui(f"http://127.0.0.1:{port}", lambda: (None, "none"),
                       settings=settings) as (app, pilot):
            await shows(pilot, "Start the agents here")
            await pilot.press("y")
            await said(pilot, "could not start the agents here: another watchkeeper",
                       "is already running on data directory")
            assert app.local is None and app.is_running
    finally:
        lock.release()


@pytest.mark.slow
async def test_the_server_going_away_and_coming_back(tmp_path: Path) -> None:
    """Killed (SIGKILL) and started again on the same port and data dir: the UI says it is
    reconnecting, recovers, and the live view goes on from its Last-Event-ID."""
    port = free_port()
    config = write_config(tmp_path, port)
    proc = await asyncio.to_thread(serve, tmp_path)
    try:
        srv = await asyncio.to_thread(ready, tmp_path, config, port)
        async with tui(srv.url, _tokens(srv)) as (app, pilot):
            await pilot.press("9")
            await shows(pilot, f"following {srv.url}")
            srv.api("POST", "/api/command", {"command": "restart", "target": "analyzer"})
            await shows(pilot, "agent_restarted", "analyzer")
            proc.kill()
            await asyncio.to_thread(proc.wait)
            await shows(pilot, f"no answer from {srv.url}: reconnecting",
                        "lost the server; reconnecting")
            await pilot.press("1")  # a view read meanwhile: said in the bar, no traceback
            await shows(pilot, "reconnecting")
            await pilot.press("9")
            proc = await asyncio.to_thread(serve, tmp_path)
            srv = await asyncio.to_thread(ready, tmp_path, config, port)
            # The stream came back with its Last-Event-ID; a restarted server cannot resume
            # from an id of its earlier run and says so, and the views read everything again.
            await said(pilot, "reconnected")
            await shows(pilot, "reconnected to the live stream", "cannot resume from",
                        f"connected to {srv.url}")
            srv.api("POST", "/api/command", {"command": "restart", "target": "remediator"})
            await shows(pilot, "remediator")
            assert app.is_running
    finally:
        await asyncio.to_thread(stop, proc)


# --- a real terminal ---------------------------------------------------------------------------

@pytest.mark.parametrize("quit_by", ["q", "\x03", "SIGHUP"], ids=["q", "ctrl-c", "hangup"])
def test_in_a_real_terminal_keys_switch_views_and_q_or_ctrl_c_quits_cleanly(
        server: Server, quit_by: str) -> None:
    """q and Ctrl+C quit as in htop; SIGHUP (the SSH session gone) quits the same way,
    where by default it would kill the process before agents started here flush."""
    import signal

    import pexpect

    child = pexpect.spawn(sys.executable, ["-m", "watchkeeper", "cli", "--url", server.url],
                          cwd=str(server.root), env=wk_env(server.root, TERM="xterm-256color"),
                          dimensions=(30, 100), encoding="utf-8", timeout=30)
    try:
        child.expect_exact("System Status")
        child.expect_exact("running")
        child.send("5")
        child.expect_exact("Remediation Status")
        child.expect_exact("sleeper")
        child.send("2")
        child.expect_exact("Agent Details")
        if quit_by == "SIGHUP":
            child.kill(signal.SIGHUP)
        else:
            child.send(quit_by)
        child.expect(pexpect.EOF)
        tail = child.before
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, (child.exitstatus, child.signalstatus)
    assert "Traceback" not in tail
    assert "\x1b[?1049l" in tail  # the alternate screen left: the terminal is restored




def _terminal_output(tmp_path: Path, *args: str, **env: str) -> str:
    """All `watchkeeper cli ARGS` wrote to a real terminal, with nothing at its URL: the
    offer to start the agents here, declined, then q."""
    import io

    import pexpect

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        log = io.StringIO()
        child = pexpect.spawn(sys.executable, ["-m", "watchkeeper", "cli", "--url", url, *args],
                              cwd=str(tmp_path),
                              env=wk_env(tmp_path, TERM="xterm-256color", **env),
                              dimensions=(30, 100), encoding="utf-8", timeout=30)
        child.logfile_read = log
        try:
            child.expect_exact("Start the agents here")
            child.send("n")
            child.expect_exact("not started")
            child.send("q")
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)
    assert child.exitstatus == 0
    return log.getvalue()


def _hues(output: str) -> set[int]:
    """The 256-colour codes used that are not shades of grey (232-255)."""
    import re

    codes = {int(n) for n in re.findall(r"[34]8;5;(\d+)", output)}
    assert "38;2;" not in output and "48;2;" not in output  # no true colour either
    return {c for c in codes if not 232 <= c <= 255}


@pytest.mark.parametrize(("args", "env", "emoji", "colour"), [
    ((), {}, True, True),
    (("--plain",), {}, False, False),
    ((), {"NO_COLOR": "1"}, True, False),
], ids=["default", "plain", "no-color"])
def test_colour_and_emoji_in_a_real_terminal(tmp_path: Path, args: tuple[str, ...],
                                             env: dict[str, str], emoji: bool,
                                             colour: bool) -> None:
    output = _terminal_output(tmp_path, *args, **env)
    assert ("🔴" in output) is emoji
    assert bool(_hues(output)) is colour, sorted(_hues(output))
