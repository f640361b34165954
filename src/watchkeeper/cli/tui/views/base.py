"""What every view has: a title, its keys, a load from the server, live events."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from typing import Any, ClassVar, Protocol

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import DataTable, Static

from watchkeeper.cli.client import ClientError
from watchkeeper.cli.tui.api import Api, unreachable
from watchkeeper.cli.tui.fleet import Fleet, HostRow, open_alerts
from watchkeeper.cli.tui.look import Look, rows, safe


class Host(Protocol):
    """What the app gives its views."""

    api: Api
    look: Look
    #: A fleet central's hosts and the one picked (``h``); off on a single server.
    fleet: Fleet
    #: The last refusal act() showed, for a view to repeat beside what was refused.
    last_error: str

    def now(self) -> datetime:
        """The wall clock (UTC)."""

    def monotonic(self) -> float:
        """A monotonic clock, for rates."""

    def spawn(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``work()`` beside the UI; any error becomes a message, never a traceback."""

    def say(self, text: str, *, error: bool = False) -> None:
        """Show one line in the message bar (and as a notification)."""

    async def ask(self, question: str) -> bool:
        """A yes/no dialog (from spawned work only)."""

    async def prompt(self, question: str, value: str = "") -> str | None:
        """A one-line answer, None if cancelled (from spawned work only)."""

    async def act(self, what: str, call: Awaitable[Any]) -> Any:
        """Send a change: its answer, or None after the server's refusal was shown."""


class View(Vertical):
    """One of the nine screens of the app, shown by its number key."""

    number: ClassVar[int]
    title: ClassVar[str]
    #: Its name in the footer.
    short: ClassVar[str]
    #: The view's own keys, shown under its title.
    keys: ClassVar[str] = ""
    #: Whose data it shows on a fleet's central once a host is picked: "host" (asked of
    #: that host, or its own snapshots: nothing while it is down), "filter" (the central's,
    #: narrowed to that host), "" (the central's own, whichever host is picked).
    follows: ClassVar[str] = ""
    #: What it shows on a central when no host is picked (or whatever is, for follows "").
    central_scope: ClassVar[str] = ""
    #: What comes back once a down host reports again (views that follow "host").
    while_down: ClassVar[str] = "its data shows again when it reports"
    #: Its lines of server data besides its tables, emptied with them (:meth:`blank`).
    data_lines: ClassVar[tuple[str, ...]] = ()

    def __init__(self, host: Host) -> None:
        super().__init__(id=f"view-{self.number}", classes="view")
        self.host = host

    def heading(self) -> Static:
        """The view's title line and its keys."""
        keys = f"   keys: {self.keys}" if self.keys else ""
        return Static(f"{self.number} {self.title}{keys}", markup=False, classes="heading")

    def top(self) -> ComposeResult:
        """The title line, and under it whose data this is (on a fleet's central)."""
        yield self.heading()
        yield self.scope()

    def scope(self) -> Static:
        """The line under the title that says whose data this is (on a central only)."""
        return Static("", markup=False, classes="scope", id=f"scope-{self.number}")

    def target(self, fleet: Fleet) -> HostRow | None:
        """The host whose data the view shows now (None: the server's own, or every
        host's)."""
        return fleet.picked() if self.follows else None

    def show_scope(self, fleet: Fleet, trouble: str = "") -> None:
        """Say whose data this is, or (``trouble``) why there is none to show."""
        line = self.query_one(f"#scope-{self.number}", Static)
        line.display = bool(fleet.on)
        if not fleet.on:
            return
        found = self.target(fleet)
        if trouble:
            text = trouble
        elif found is not None:
            text = (f"host {found.shown} ({found.health}, {open_alerts(found.open_alerts)}) · "
                    "h: pick another host or the overview")
        else:
            text = f"{self.central_scope} · h: pick a host"
        line.update(text)
        line.set_class(bool(trouble), "trouble")

    def blank(self, fleet: Fleet, why: str) -> None:
        """Show no data, and why (a down or silent host), instead of stale rows."""
        for found in self.query(DataTable):
            found.clear()
        for line in self.data_lines:
            self.query_one(f"#{line}", Static).update("")
        self.show_scope(fleet, why)

    async def load(self) -> None:
        """Read what the view shows from the server (ClientError when it cannot)."""

    def on_stream(self, event: str, data: Any) -> None:
        """A live event from /api/events (every view sees every one)."""

    def focus_target(self) -> Widget | None:
        """The widget that takes the focus when the view is shown."""
        tables = list(self.query(DataTable))
        return tables[0] if tables else None


def table(*columns: str, id: str | None = None) -> DataTable[Any]:
    """A read-only table with a row cursor."""
    found: DataTable[Any] = DataTable(cursor_type="row", zebra_stripes=False, id=id)
    found.add_columns(*columns)
    return found


def selected(found: DataTable[Any]) -> str | None:
    """The key of the row under the cursor (None in an empty table)."""
    if found.row_count == 0:
        return None
    try:
        key = found.coordinate_to_cell_key(found.cursor_coordinate).row_key
    except Exception:  # Textual's CellDoesNotExist
        return None
    return None if key.value is None else str(key.value)


def refill(found: DataTable[Any], rows: list[tuple[str, list[Any]]]) -> None:
    """Replace the rows (key, cells), keeping the cursor on the same key when it remains."""
    keep = selected(found)
    found.clear()
    for key, cells in rows:
        found.add_row(*cells, key=key)
    keys = [k for k, _ in rows]
    if keep in keys:
        found.move_cursor(row=keys.index(keep))


async def fleet_hosts(api: Api) -> list[str] | None:
    """The hosts a fleet's central follows (GET /api/hosts); None on a single server (or
    one without that route)."""
    try:
        data = await api.get("/api/hosts")
    except ClientError as exc:
        if unreachable(exc):
            raise
        return None
    if not (isinstance(data, dict) and data.get("fleet") is True):
        return None
    return [safe(h.get("host"), 64) for h in rows(data, "hosts")]
