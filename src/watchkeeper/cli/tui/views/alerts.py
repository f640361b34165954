"""4 Analysis Results: open alerts with their assessment; acknowledge, silence."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any, ClassVar
from urllib.parse import quote

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Static

from watchkeeper.cli.tui.look import ago, rows, safe
from watchkeeper.cli.tui.views.base import View, fleet_hosts, refill, selected, table

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float | None:
    """90s, 30m, 2h, 1d as seconds (None if it is not one), as `watchkeeper silence --for`."""
    found = re.fullmatch(r"\s*(\d{1,6}(?:\.\d{1,3})?)\s*([smhd])\s*", text)
    if not found or float(found.group(1)) <= 0:
        return None
    return float(found.group(1)) * _UNITS[found.group(2)]


class AlertsView(View):
    """GET /api/alerts; POST /api/alerts/{fingerprint}/ack and /api/alerts/silences."""

    number = 4
    title = "Analysis Results"
    short = "Alerts"
    follows = "filter"
    data_lines = ("assessment",)
    central_scope = "every host's open alerts"
    keys = "a acknowledge  s silence (the selected alert)"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "ack", "acknowledge"), Binding("s", "silence", "silence")]

    def __init__(self, host: Any) -> None:
        super().__init__(host)
        self.alerts: dict[str, dict[str, Any]] = {}

    def compose(self) -> ComposeResult:
        yield from self.top()
        yield table("SEVERITY", "STATE", "RULE", "VALUE", "SINCE", "SUMMARY", id="alerts")
        yield Static("", id="assessment", markup=False)

    async def load(self) -> None:
        fleet = self.host.fleet
        data = await self.host.api.get("/api/alerts", fleet.where())
        look, now = self.host.look, self.host.now()
        found = rows(data, "alerts")
        many = bool(fleet.on) and fleet.picked() is None  # every host's: say whose
        self.alerts = {safe(a.get("fingerprint"), 200): a for a in found}
        listing: list[tuple[str, list[Any]]] = []
        for key, a in self.alerts.items():
            state = safe(a.get("state"), 20) + (", silenced" if a.get("silenced") else "")
            listing.append((key, [look.state(a.get("severity")), look.cell(state),
                                  look.cell(a.get("rule"), 40), look.cell(a.get("value")),
                                  look.cell(ago(a.get("since"), now)),
                                  look.cell(f"{a.get('host')}: {a.get('summary')}" if many
                                            else a.get("summary"), 120)]))
        refill(self.query_one("#alerts", DataTable), listing)
        self._explain()

    def on_data_table_row_highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self._explain()

    def _explain(self) -> None:
        """The selected alert's context and assessment under the list."""
        key = selected(self.query_one("#alerts", DataTable))
        alert = self.alerts.get(key or "")
        body = self.query_one("#assessment", Static)
        if alert is None:
            body.update("no open alerts" if not self.alerts else "")
            return
        text = Text()
        text.append(f"{safe(alert.get('summary'))}\n", style="bold")
        if alert.get("context"):
            text.append(f"{safe(alert.get('context'))}\n")
        text.append(f"fingerprint {safe(alert.get('fingerprint'), 200)}\n", style="dim")
        a = alert.get("assessment")
        if isinstance(a, dict):
            conf = a.get("confidence")
            conf_s = f"{conf * 100:.0f}%" if isinstance(conf, (int, float)) else "-"
            text.append(f"{self.host.look.icon('analyzer_notice')}assessment "
                        f"({safe(a.get('source'), 10)}, confidence {conf_s}): ", style="bold")
            text.append(f"{safe(a.get('summary'))}\n")
            if a.get("likely_cause"):
                text.append(f"likely cause: {safe(a.get('likely_cause'))}\n")
            suggested = [safe(s.get("action"), 64) for s in rows(a, "suggested_actions")]
            if suggested:
                text.append(f"suggested: {', '.join(suggested)}\n")
        else:
            text.append("no assessment yet\n", style="dim")
        body.update(text)

    def _chosen(self) -> dict[str, Any] | None:
        key = selected(self.query_one("#alerts", DataTable))
        alert = self.alerts.get(key or "")
        if alert is None:
            self.host.say("no alert selected: there are no open alerts", error=True)
        return alert

    def action_ack(self) -> None:
        """Acknowledge the selected alert."""
        alert = self._chosen()
        if alert is not None:
            self.host.spawn(lambda: self._ack(str(alert.get("fingerprint"))))

    async def _ack(self, fingerprint: str) -> None:
        reply = await self.host.act("acknowledge", self.host.api.post(
            f"/api/alerts/{quote(fingerprint, safe='')}/ack"))
        if reply is not None:
            self.host.say(f"{self.host.look.icon('acknowledged')}acknowledged: "
                          f"{safe(reply.get('summary'))}")

    def action_silence(self) -> None:
        """Silence alerts like the selected one for a while (asks how long)."""
        alert = self._chosen()
        if alert is not None:
            self.host.spawn(lambda: self._silence(alert))

    async def _silence(self, alert: dict[str, Any]) -> None:
        matchers = {k: str(alert[k]) for k in ("rule", "metric", "dimension")
                    if isinstance(alert.get(k), str) and alert[k]}
        shown = " ".join(f"{k}={safe(v, 100)}" for k, v in matchers.items())
        answer = await self.host.prompt(f"Silence alerts matching {shown} for how long? "
                                        "(90s, 30m, 2h, 1d)", "2h")
        if answer is None:
            return
        seconds = parse_duration(answer)
        if seconds is None:
            self.host.say(f"{safe(answer, 40)!r} is not a duration like 90s, 30m, 2h or 1d; "
                          "nothing silenced", error=True)
            return
        until = self.host.now() + timedelta(seconds=seconds)
        # On a fleet's central, like it on its own host only (the server adds the host
        # matcher), as the dashboard silences one host's alert.
        on = alert.get("host") if isinstance(alert.get("host"), str) else None
        where = {"host": on} if on and await fleet_hosts(self.host.api) is not None else {}
        reply = await self.host.act("silence", self.host.api.post(
            "/api/alerts/silences", {"matchers": matchers, "until": until.isoformat(),
                                     "comment": "from watchkeeper cli"}, where))
        if reply is not None:
            got = reply.get("matchers")
            said = " ".join(f"{safe(k, 100)}={safe(v, 100)}" for k, v in got.items()) \
                if isinstance(got, dict) else shown
            self.host.say(f"silenced {said} until {safe(reply.get('until'), 40)} "
                          f"({safe(reply.get('id'), 64)})")
