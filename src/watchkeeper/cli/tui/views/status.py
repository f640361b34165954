"""1 System Status: the overall status and why, alerts, agents, host."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.widgets import Static

from watchkeeper.cli.tables import duration
from watchkeeper.cli.tui.look import safe
from watchkeeper.cli.tui.views.base import View


class StatusView(View):
    """GET /api/system, as `watchkeeper status` shows it."""

    number = 1
    title = "System Status"
    short = "Status"

    def compose(self) -> ComposeResult:
        yield self.heading()
        yield Static("", id="status-body")

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
