"""The Textual app: nine views on keys 1-9, a connection bar, a message line, q to quit."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime, timezone
from typing import Any, ClassVar

from textual import events
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.widgets import ContentSwitcher, Footer, Input, Static

from watchkeeper.cli.client import ClientError
from watchkeeper.cli.tui.api import Api, Stream, TokenFinder, unreachable
from watchkeeper.cli.tui.dialogs import DIALOG_CSS, ConfirmDialog, PickDialog, PromptDialog
from watchkeeper.cli.tui.fleet import (
    HOST_TROUBLE,
    Fleet,
    down_words,
    health_text,
    hosts_words,
    open_alerts,
    status_of,
)
from watchkeeper.cli.tui.local import LocalServer, LocalServerError
from watchkeeper.cli.tui.look import Look, ago, safe
from watchkeeper.cli.tui.views import VIEWS
from watchkeeper.cli.tui.views.live import LiveView
from watchkeeper.config import Settings

#: Seconds between two reads of the view on screen (the stream brings the rest at once).
POLL_S = 2.0
#: Below this many columns or rows the views do not fit: a message says so instead.
MIN_SIZE = (80, 20)

CSS = DIALOG_CSS + """
#conn { height: 1; background: $panel; padding: 0 1; }
#conn.lost { background: $error; color: $text; }
#switcher { height: 1fr; }
.view { height: 1fr; padding: 0 1; }
.heading { text-style: bold; color: $accent; height: 1; }
.subheading { text-style: bold; height: 1; margin-top: 1; }
DataTable { height: auto; max-height: 12; scrollbar-size-horizontal: 0; }
#status-latest, #status-fleet { margin-top: 1; }
.scope { display: none; height: auto; color: $text-muted; }
.scope.trouble { color: $error; text-style: bold; }
#agents, #alerts, #config, #top, #bus { max-height: 100%; height: 1fr; }
#config { height: 1fr; }
#assessment { height: auto; margin-top: 1; }
#bus-wire { margin-top: 1; }
#bus-wire.bad { color: $error; text-style: bold; }
#commands { height: auto; max-height: 9; }
.spark-row { height: 1; }
.spark-label { width: 17; }
.spark { width: 1fr; }
#message { height: 1; padding: 0 1; background: $panel; }
#message.error { color: $error; text-style: bold; }
#too-small { display: none; width: 100%; height: 100%; content-align: center middle;
             text-style: bold; }
Screen.too-small #too-small { display: block; }
Screen.too-small #conn, Screen.too-small #switcher, Screen.too-small #message,
Screen.too-small Footer { display: none; }
"""


class WatchkeeperApp(App[int]):
    """`watchkeeper cli`: a live terminal view of one server, over its REST API."""

    CSS = CSS
    TITLE = "watchkeeper"
    BINDINGS: ClassVar[list[BindingType]] = [
        *[Binding(str(v.number), f"show({v.number})", v.short) for v in VIEWS],
        Binding("q", "quit_app", "quit"),
        # Ctrl+C quits, as in htop, k9s and Glances (Textual's own Ctrl+C only says to
        # press Ctrl+Q); priority, so a focused table or input does not take it first.
        Binding("ctrl+c", "quit_app", "quit", show=False, priority=True),
        Binding("question_mark", "help", "help", show=False),
        # Not in the footer: a single server has no host to pick (the top bar says h on a
        # fleet's central).
        Binding("h", "hosts", "host", show=False)]
    ENABLE_COMMAND_PALETTE = False
    # Each view says what has the focus (_focus_view): Textual's own pick at start was the
    # first table, view 2's, hidden behind view 1, whose keys then acted from there.
    AUTO_FOCUS = None

    def __init__(self, url: str, find_token: TokenFinder, *, plain: bool = False,
                 settings: Callable[[], Settings] | None = None, offer_local: bool = True,
                 poll_s: float = POLL_S, monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] | None = None) -> None:
        super().__init__()
        if plain and not self.no_color:  # as Textual does for NO_COLOR
            from textual.filter import Monochrome, NoColor

            self.no_color = True
            self._filters.append(NoColor() if self.native_ansi_color else Monochrome())
        self.look = Look(plain=plain)
        self.api = Api(url, find_token)
        self.fleet = Fleet()
        self.poll_s = poll_s
        self._monotonic = monotonic
        self._wall = wall or (lambda: datetime.now(timezone.utc))
        self._settings = settings
        self.offer_local = offer_local and settings is not None
        self.local: LocalServer | None = None
        self.views = [v(self) for v in VIEWS]
        self.current = 1
        self.connected: bool | None = None  # None: not known yet
        self.last_error = ""
        # One read at a time: a tick while the previous read still waits is skipped.
        self._load_lock = asyncio.Lock()
        self._asking_local = False
        self._picking = False
        self.stream = Stream(self.api, self.call_later_safe, self._on_stream, self._on_lost,
                             self._on_refused)
        self._stream_lost = False
        self._ui_loop: Any = None

    # --- the Host protocol the views use --------------------------------------------------

    def now(self) -> datetime:
        """The wall clock (UTC)."""
        return self._wall()

    def monotonic(self) -> float:
        """A monotonic clock, for rates."""
        return self._monotonic()

    def spawn(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``work()`` as a worker; any error becomes a message, never a traceback."""
        async def guarded() -> None:
            try:
                await work()
            except ClientError as exc:
                self._failed(exc)
            except Exception as exc:  # the UI goes on, the error is shown
                self.say(f"that went wrong: {type(exc).__name__}: {safe(exc, 200)}",
                         error=True)

        # The function, not a coroutine: a worker cancelled before it starts (at exit) then
        # leaves no coroutine that was never awaited.
        factory: Any = guarded  # Textual's types want a coroutine that yields None
        self.run_worker(factory, group="actions", exit_on_error=False)

    def say(self, text: str, *, error: bool = False) -> None:
        """Show ``text`` in the message line (red when an error) and as a notification."""
        message = self.query_one("#message", Static)
        again = text == str(message.content)
        message.update(text)
        message.set_class(error, "error")
        if not again:  # a refusal repeated by each refresh is one notification, not many
            self.notify(text, severity="error" if error else "information", markup=False,
                        timeout=6)

    async def ask(self, question: str) -> bool:
        """A yes/no dialog."""
        answer: bool = await self.push_screen(ConfirmDialog(question), wait_for_dismiss=True)
        return answer

    async def prompt(self, question: str, value: str = "") -> str | None:
        """A one-line answer (None if cancelled)."""
        answer: str | None = await self.push_screen(PromptDialog(question, value),
                                                    wait_for_dismiss=True)
        return answer

    async def act(self, what: str, call: Awaitable[Any]) -> Any:
        """Send a change; its answer, or None after showing why it was refused."""
        try:
            reply = await call
        except ClientError as exc:
            self.last_error = str(exc)
            self._failed(exc, what)
            return None
        self.last_error = ""
        self.spawn(self._load)  # show what the change did
        return reply if isinstance(reply, dict) else {}

    # --- layout and keys ---------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Static(f"connecting to {self.api.url}…", id="conn", markup=False)
        with ContentSwitcher(initial="view-1", id="switcher"):
            yield from self.views
        yield Static("1-9 switch views · q quits", id="message", markup=False)
        yield Static("", id="too-small", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self._ui_loop = asyncio.get_running_loop()
        if not self.is_headless and hasattr(signal, "SIGHUP"):
            # SIGHUP is the terminal (the SSH session) going away, not `serve`'s reload: quit
            # as q does, so that agents started here flush their history; by default it would
            # kill the process on the spot.
            with contextlib.suppress(NotImplementedError, RuntimeError):
                self._ui_loop.add_signal_handler(
                    signal.SIGHUP, lambda: self.call_later(self.action_quit_app))
        self._check_size()
        self.stream.start()
        self.set_interval(self.poll_s, self._tick)
        self.spawn(self._startup)
        self._focus_view()

    def on_resize(self, event: events.Resize) -> None:
        self._check_size(event.size.width, event.size.height)

    def _check_size(self, width: int | None = None, height: int | None = None) -> None:
        if width is None or height is None:
            width, height = self.size
        small = width < MIN_SIZE[0] or height < MIN_SIZE[1]
        self.screen.set_class(small, "too-small")
        if small:
            self.query_one("#too-small", Static).update(
                f"The terminal is {width}x{height}:\ntoo small for watchkeeper cli,\n"
                f"which needs at least {MIN_SIZE[0]}x{MIN_SIZE[1]}.\n"
                "Make it larger (q quits).")

    def on_key(self, event: events.Key) -> None:
        """A key nothing took: say which keys there are, and go on."""
        if not event.is_printable or event.character is None:
            return
        if isinstance(self.focused, Input) or self.screen is not self.screen_stack[0]:
            return
        if event.key in self.active_bindings:
            return
        event.stop()
        view = self.views[self.current - 1]
        own = f"; here: {view.keys}" if view.keys else ""
        pick = ", h picks a host" if self.fleet.on else ""
        self.say(f"unknown key {safe(event.character, 4)!r}: 1-9 switch views{pick}, q quits"
                 f"{own}", error=True)

    def action_show(self, number: int) -> None:
        """Show view ``number`` and read it now."""
        self.current = number
        self.query_one(ContentSwitcher).current = f"view-{number}"
        self._focus_view()
        self.spawn(self._load)

    def _focus_view(self) -> None:
        target = self.views[self.current - 1].focus_target()
        if target is not None:
            target.focus()
        else:  # a hidden view's table keeps no focus: its keys must not act from here
            self.set_focus(None)

    def action_help(self) -> None:
        """List the views and keys."""
        self.say(" · ".join(f"{v.number} {v.title}" for v in VIEWS)
                 + (" · h pick a host" if self.fleet.on else "") + " · q quit")

    def action_hosts(self) -> None:
        """On a fleet's central: pick the host the views show (or the fleet overview)."""
        # Not over a dialog (its question waits for y or n), and one picker at a time.
        if self.screen is self.screen_stack[0] and not self._picking:
            self._picking = True
            self.spawn(self._pick_host)

    async def _pick_host(self) -> None:
        try:
            await self._pick_host_now()
        finally:
            self._picking = False

    async def _pick_host_now(self) -> None:
        from rich.text import Text

        fleet = self.fleet
        await self._read_fleet()  # their health now, not as of the last refresh
        if not fleet.on:
            only = fleet.hosts[0].shown if fleet.hosts else "its own"
            self.say(f"this server follows one host ({only}): there is no other host to "
                     "pick (h picks one on a fleet's central, `serve --fleet`)")
            return
        now, look = self.now(), self.look
        choices = [Text(f"all hosts: the fleet overview ({hosts_words(len(fleet.hosts))}, "
                        f"{sum(h.down for h in fleet.hosts)} down)")]
        for h in fleet.hosts:
            line = health_text(look, h.health, 12)
            line.append(f"{h.shown}  ·  {open_alerts(h.open_alerts)}  ·  "
                        + (f"seen {ago(h.last_seen, now)}" if h.last_seen else "never seen"))
            choices.append(line)
        names = [""] + [h.name for h in fleet.hosts]
        current = names.index(fleet.chosen) if fleet.chosen in names else 0
        picked: int | None = await self.push_screen(
            PickDialog("Show which host? (views 1, 3, 4, 5 and 7 follow it)", choices,
                       current), wait_for_dismiss=True)
        if picked is None or not 0 <= picked < len(names):
            return
        fleet.chosen = names[picked]
        row = fleet.picked()
        self.say("showing every host (the fleet overview)" if row is None
                 else f"showing {row.shown}" + (f": {down_words(row, now)}" if row.down
                                                 else ""))
        self._fleet_shown()
        await self._load()

    async def action_quit(self) -> None:
        """Ctrl+Q quits as q and Ctrl+C do (the agents started here are stopped first)."""
        await self.action_quit_app()

    def stop_local(self) -> None:
        """Stop the agents started here, if any (after the app has ended some other way)."""
        local, self.local = self.local, None
        if local is not None:
            local.stop()

    async def action_quit_app(self) -> None:
        """Stop following, stop agents started here, and leave (exit 0)."""
        self.stream.stop()
        if self.local is not None:
            self.query_one("#conn", Static).update("stopping the agents started here…")
            local, self.local = self.local, None
            await asyncio.to_thread(local.stop)
        self.api.close()
        self.exit(0)

    # --- the server ----------------------------------------------------------------------------

    def call_later_safe(self, call: Callable[[], None]) -> None:
        """Run ``call`` on the UI's loop, from the stream's thread, without waiting for it
        (RuntimeError once that loop has ended)."""
        if self._ui_loop is None:
            raise RuntimeError("the app is not running")
        self._ui_loop.call_soon_threadsafe(call)

    async def _startup(self) -> None:
        try:
            await self.api.get("/api/system")
        except ClientError as exc:
            self._failed(exc)
            if unreachable(exc) and self.offer_local:
                await self._offer_local()
            return
        await self._load()

    async def _offer_local(self) -> None:
        if self._asking_local or self.local is not None or self._settings is None:
            return
        self._asking_local = True
        try:
            if not await self.ask(f"No watchkeeper answers at {self.api.url}.\n\nStart the "
                                  "agents here, in this process (they stop when you quit)?"):
                self.say("not started: waiting for a server at "
                         f"{self.api.url} (`watchkeeper serve`)")
                return
            local = LocalServer(self._settings())
            self.query_one("#conn", Static).update("starting the agents in this process…")
            try:
                url = await asyncio.to_thread(local.start)
            except LocalServerError as exc:
                self.say(f"could not start the agents here: {safe(exc, 300)}", error=True)
                return
            self.local = local
            self.stream.stop()
            self.api.connect(url)
            self.fleet.forget()
            self.stream.start()
            self.say(f"{self.look.icon('local')}agents started in this process, serving "
                     f"{url}; they stop when you quit")
            await self._load()
        finally:
            self._asking_local = False

    def _tick(self) -> None:
        if not self._load_lock.locked():
            self.spawn(self._load)

    async def reload(self) -> None:
        """Read the view on screen from the server now (and wait for it)."""
        await self._load()

    async def _read_fleet(self) -> None:
        """Read the central's hosts (their health moves) when due; say when the picked one
        is gone."""
        if not self.fleet.due(self.monotonic()):
            return
        was_on = self.fleet.on
        gone = await self.fleet.read(self.api, self.monotonic())
        if gone:
            self.say(gone, error=True)
        if self.fleet.on or was_on:
            # The view on screen says whose data it shows once it is read (_load): until
            # then its line may say why there is none, and must not flicker.
            self._fleet_shown(but=self.views[self.current - 1])

    def _fleet_shown(self, but: object = None) -> None:
        """The top bar and every view's scope line (``but`` one) say whose data is shown."""
        if self.connected:
            self._set_conn(True)
        for view in self.views:
            if view is not but:
                with contextlib.suppress(NoMatches):  # not mounted yet
                    view.show_scope(self.fleet)

    async def _load(self) -> None:
        """Read the view on screen; the connection bar says how that went."""
        async with self._load_lock:
            view = self.views[self.current - 1]
            answered = self.api.answered
            target = None
            try:
                await self._read_fleet()
                target = view.target(self.fleet)
                if view.follows == "host" and target is not None and target.down:
                    # What the host said last is not what it says now: none of it is shown.
                    view.blank(self.fleet, f"{down_words(target, self.now())}; "
                                           f"{view.while_down}")
                else:
                    await view.load()
                    view.show_scope(self.fleet)
            except ClientError as exc:
                if target is not None and status_of(exc) in HOST_TROUBLE:
                    # The central answers, the picked host does not (or is gone): said in
                    # the view, instead of its last rows.
                    self._set_conn(True)
                    view.blank(self.fleet, f"nothing shown for {target.shown}: {exc}")
                    return
                self._failed(exc)
                return
            except (AttributeError, TypeError, ValueError, KeyError):
                self._set_conn(True)
                self.say(f"the answer for view {view.number} is not what watchkeeper sends: "
                         f"is {self.api.url} a watchkeeper server of this version?",
                         error=True)
                return
            # A view that reads nothing (9, which follows the stream) proves nothing about
            # the server: the stream's own news sets the bar then.
            if self.api.answered != answered:
                self._set_conn(True)

    def _failed(self, exc: ClientError, what: str = "") -> None:
        """A request that did not succeed: lost server in the bar, a refusal as a message."""
        if unreachable(exc):
            self._set_conn(False, str(exc))
            if what:  # the operator asked for something: say it was not done
                self.say(f"{what}: not sent: {exc}", error=True)
            return
        self._set_conn(True)
        self.say(f"{what + ': ' if what else ''}{exc}", error=True)

    def _set_conn(self, ok: bool, why: str = "") -> None:
        bar = self.query_one("#conn", Static)
        where = self.api.url + (" (started here)" if self.local is not None else "")
        if ok:
            showing = f" · showing {self.fleet.label()} (h: pick)" if self.fleet.on else ""
            bar.update(f"{self.look.icon('connected')}connected to {where}{showing} · token: "
                       f"{self.api.token_source}")
        else:
            bar.update(f"{self.look.icon('lost')}no answer from {where}: reconnecting… "
                       "(start it with `watchkeeper serve`, or pass --url)")
        bar.set_class(not ok, "lost")
        if self.connected is True and not ok:
            self._live_note("lost the server; reconnecting")
        self.connected = ok

    def _live_note(self, line: str) -> None:
        view = self.views[8]
        if isinstance(view, LiveView) and view.is_mounted:
            view.note(line)

    # --- the stream ----------------------------------------------------------------------------

    def _on_stream(self, event: str, data: Any) -> None:
        if not self.is_running:
            return
        if event == "ready":
            self._live_note("reconnected to the live stream" if self._stream_lost
                            else f"following {self.api.url}")
            if self._stream_lost:
                self.fleet.forget()  # the server may have come back as another one
                self.say("reconnected: the live stream goes on from where it stopped")
                self.spawn(self._load)
            self._stream_lost = False
            self._set_conn(True)
            return
        if event == "reset":  # news was lost: read the current state again
            self.spawn(self._load)
        for view in self.views:
            # A malformed event is not worth the UI.
            with contextlib.suppress(AttributeError, TypeError, ValueError, KeyError,
                                     NoMatches):  # NoMatches: a view not mounted yet
                view.on_stream(event, data)

    def _on_lost(self) -> None:
        if not self._stream_lost:
            self._stream_lost = True
            self._set_conn(False)

    def _on_refused(self, exc: ClientError) -> None:
        if unreachable(exc):
            self._set_conn(False, str(exc))
        else:
            self.say(f"live stream refused: {exc}", error=True)
