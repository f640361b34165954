"""1 System Status: the overall status and why, alerts, agents, host."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Static

from watchkeeper.cli.tables import duration
from watchkeeper.cli.tui.look import rows, safe
from watchkeeper.cli.tui.views.base import View

#: Open alerts and activity lines shown under the status.
SHOWN_ALERTS = 3
SHOWN_EVENTS = 5


class StatusView(View):
    """GET /api/system, as `watchkeeper status` shows it; the worst open alerts and the
    latest activity under it."""

    number = 1
    title = "System Status"
    short = "Status"

    def compose(self) -> ComposeResult:
        yield self.heading()
        yield Static("", id="status-body")
        yield Static("", id="status-latest")

    async def load(self) -> None:
        from rich.table import Table
        from rich.text import Text

        data = await self.host.api.get("/api/system")
        look = self.host.look
        alerts = data.get("alerts") or {}
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", min_width=9)
        grid.add_column()
        grid.add_row("status", look.state(data.get("status")))
        for reason in data.get("reasons") or []:
            grid.add_row("", Text(safe(reason)))
        grid.add_row("alerts", Text(
            f"{alerts.get('critical', 0)} critical, {alerts.get('warning', 0)} warning "
            f"({alerts.get('acknowledged', 0)} acknowledged), {alerts.get('silenced', 0)} "
            "silenced"))
        running, total = data.get("agents_running"), data.get("agents_total")
        grid.add_row("agents", Text(f"{safe(running, 8)}/{safe(total, 8)} running",
                                    style="green" if running == total else "yellow"))
        grid.add_row("host", look.cell(data.get("host")))
        grid.add_row("os", look.cell(data.get("os")))
        grid.add_row("version", look.cell(data.get("version")))
        grid.add_row("uptime", Text(f"{duration(data.get('uptime_s'))} (host "
                                    f"{duration(data.get('host_uptime_s'))})"))
        grid.add_row("server", Text(self.host.api.url))
        self.query_one("#status-body", Static).update(grid)
        await self._latest()

    async def _latest(self) -> None:
        """The worst open alerts and the latest activity, a line each."""
        from rich.text import Text

        from watchkeeper.cli.tui.views.live import event_text

        look = self.host.look
        alerts = rows(await self.host.api.get("/api/alerts"), "alerts")
        text = Text()
        text.append("open alerts (4 for details)\n", style="bold")
        for a in alerts[:SHOWN_ALERTS]:
            severity = look.state(a.get("severity"))
            text.append_text(severity)
            text.append(" " * max(2, 12 - severity.cell_len) + f"{safe(a.get('summary'), 200)}\n")
        if not alerts:
            text.append("none\n", style="green")
        # Read more than are shown: an open alert's moving number is stored each time,
        # and is not worth a line here either (view 9 leaves it out too).
        stored = rows(await self.host.api.get("/api/activity",
                                              {"limit": 10 * SHOWN_EVENTS}), "events")
        activity = []
        for e in stored:
            event = e.get("event")
            line = event_text(str(e.get("kind")), event if isinstance(event, dict) else {})
            if line is not None:
                activity.append((e, line))
        text.append("\nlatest activity (9 to follow it live)\n", style="bold")
        for e, line in reversed(activity[-SHOWN_EVENTS:]):
            at = safe(e.get("at"), 40)[11:19]
            kind = safe(e.get("kind"), 20)
            text.append(f"{at}  {kind:<15}  {safe(line)}\n")
        if not activity:
            text.append("nothing yet\n", style="dim")
        self.query_one("#status-latest", Static).update(text)
