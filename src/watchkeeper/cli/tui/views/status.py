"""1 System Status: the overall status and why, alerts, agents, host; on a fleet's central,
every host's health (the fleet overview) or the picked host's status."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.widgets import Static

from watchkeeper.cli.client import ClientError
from watchkeeper.cli.tables import duration
from watchkeeper.cli.tui.api import unreachable
from watchkeeper.cli.tui.fleet import (
    Fleet,
    HostRow,
    down_words,
    health_text,
    hosts_words,
    open_alerts,
)
from watchkeeper.cli.tui.look import ago, rows, safe
from watchkeeper.cli.tui.views.base import View

#: Open alerts and activity lines shown under the status.
SHOWN_ALERTS = 3
SHOWN_EVENTS = 5
#: Hosts listed in the fleet overview, worst first (h lists them all).
SHOWN_HOSTS = 8


class StatusView(View):
    """GET /api/system, as `watchkeeper status` shows it; the worst open alerts and the
    latest activity under it. On a central, GET /api/hosts's health of every host; with a
    host picked, that host's health, alerts and identity instead of the central's status."""

    number = 1
    title = "System Status"
    short = "Status"
    follows = "filter"
    data_lines = ("status-body", "status-latest")
    central_scope = "the fleet overview (this central's own status, every host's health)"

    def compose(self) -> ComposeResult:
        yield from self.top()
        yield Static("", id="status-body", markup=False)
        yield Static("", id="status-fleet", markup=False)
        yield Static("", id="status-latest", markup=False)

    async def load(self) -> None:
        fleet = self.host.fleet
        picked = fleet.picked()
        if picked is None:
            await self._server()
        else:
            await self._picked(picked)
        self._fleet(fleet)
        await self._latest(picked)

    async def _server(self) -> None:
        """The server's own status (on a central: the central's, with every host's alerts)."""
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
        central = " (a fleet's central)" if self.host.fleet.on else ""
        grid.add_row("server", Text(self.host.api.url + central))
        self.query_one("#status-body", Static).update(grid)

    async def _picked(self, row: HostRow) -> None:
        """The picked host: its health as the central sees it, its open alerts, and what its
        last snapshot says of it (not while it is down: that would be stale)."""
        from rich.table import Table
        from rich.text import Text

        api, look, now = self.host.api, self.host.look, self.host.now()
        alerts = rows(await api.get("/api/alerts", {"host": row.name}), "alerts")
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", min_width=9)
        grid.add_column()
        grid.add_row("host", look.cell(row.name, 64))
        grid.add_row("health", health_text(look, row.health))
        if row.down:
            grid.add_row("", Text(f"{down_words(row, now)}: its open alerts below are the "
                                  "central's; nothing else it last said is shown",
                                  style="bold red"))
        else:
            grid.add_row("seen", Text(ago(row.last_seen, now) if row.last_seen else "never"))

        def count(**match: Any) -> int:
            return sum(all(a.get(k) == v for k, v in match.items()) for a in alerts)

        grid.add_row("alerts", Text(
            f"{count(severity='critical')} critical, {count(severity='warning')} warning "
            f"({count(state='acknowledged')} acknowledged), {count(silenced=True)} silenced"))
        if not row.down:
            snap: Any = {}
            try:
                snap = await api.get("/api/metrics", {"host": row.name})
            except ClientError as exc:
                if unreachable(exc):
                    raise
            identity = snap.get("identity") if isinstance(snap, dict) else None
            identity = identity if isinstance(identity, dict) else {}
            os_name = " ".join(safe(identity.get(k), 60) for k in ("os", "os_release")
                               if identity.get(k))
            grid.add_row("os", look.cell(os_name))
            grid.add_row("uptime", Text(f"host {duration(snap.get('uptime_s'))}"
                                        if isinstance(snap, dict) else "-"))
        grid.add_row("server", Text(f"{self.host.api.url} (the central it reports to)"))
        self.query_one("#status-body", Static).update(grid)

    def _fleet(self, fleet: Fleet) -> None:
        """Every host's health, worst first (on a central only)."""
        from rich.table import Table
        from rich.text import Text

        part = self.query_one("#status-fleet", Static)
        part.display = bool(fleet.on)
        if not fleet.on:
            return
        look, now = self.host.look, self.host.now()
        counts: dict[str, int] = {}
        for h in fleet.hosts:
            counts[h.health] = counts.get(h.health, 0) + 1
        title = Text(f"fleet: {hosts_words(len(fleet.hosts))}", style="bold")
        for health in ("down", "critical", "warning", "unknown", "ok"):
            if counts.get(health):
                title.append(f" · {counts[health]} {health}")
        title.append(" (h picks one)", style="dim")
        grid = Table.grid(padding=(0, 2))
        for _ in range(5):
            grid.add_column()
        ordered = fleet.ordered()
        for h in ordered[:SHOWN_HOSTS]:
            mark = "▸" if h.name == fleet.chosen else " "
            grid.add_row(Text(mark), look.cell(h.name, 64), health_text(look, h.health),
                         Text(open_alerts(h.open_alerts)),
                         Text("seen " + ago(h.last_seen, now) if h.last_seen else "never seen"))
        if not ordered:
            grid.add_row(Text(" "), Text("no host has reported yet", style="dim"))
        more = len(ordered) - SHOWN_HOSTS
        body = Table.grid()
        body.add_row(title)
        body.add_row(grid)
        if more > 0:
            body.add_row(Text(f"… and {more} more (h lists them all)", style="dim"))
        part.update(body)

    async def _latest(self, picked: HostRow | None) -> None:
        """The worst open alerts and the latest activity, a line each (of the picked host
        only, on a central)."""
        from rich.text import Text

        from watchkeeper.cli.tui.views.live import event_text

        look = self.host.look
        where = {"host": picked.name} if picked is not None else {}
        whose = "" if picked is None else f" of {picked.shown}"
        many = bool(self.host.fleet.on) and picked is None
        alerts = rows(await self.host.api.get("/api/alerts", where), "alerts")
        text = Text()
        text.append(f"open alerts{whose} (4 for details)\n", style="bold")
        for a in alerts[:SHOWN_ALERTS]:
            severity = look.state(a.get("severity"))
            on = f"{safe(a.get('host'), 64)}: " if many else ""
            text.append_text(severity)
            text.append(" " * max(2, 12 - severity.cell_len)
                        + f"{on}{safe(a.get('summary'), 200)}\n")
        if not alerts:
            text.append("none\n", style="green")
        # Read more than are shown: an open alert's moving number is stored each time,
        # and is not worth a line here either (view 9 leaves it out too).
        stored = rows(await self.host.api.get("/api/activity",
                                              {"limit": 10 * SHOWN_EVENTS}), "events")
        activity = []
        for e in stored:
            event = e.get("event")
            event = event if isinstance(event, dict) else {}
            if picked is not None and event.get("host") != picked.name:
                continue  # /api/activity has no host=: another host's news
            line = event_text(str(e.get("kind")), event)
            if line is not None and many and isinstance(event.get("host"), str) \
                    and e.get("kind") not in ("command_refused", "spool_gap"):
                line = f"{safe(event['host'], 64)}: {line}"  # every host's news: whose
            if line is not None:
                activity.append((e, line))
        text.append(f"\nlatest activity{whose} (9 to follow it live)\n", style="bold")
        for e, line in reversed(activity[-SHOWN_EVENTS:]):
            at = safe(e.get("at"), 40)[11:19]
            kind = safe(e.get("kind"), 20)
            text.append(f"{at}  {kind:<15}  {safe(line)}\n")
        if not activity:
            text.append("nothing yet\n", style="dim")
        self.query_one("#status-latest", Static).update(text)
