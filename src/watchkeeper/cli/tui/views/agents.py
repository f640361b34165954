"""2 Agent Details: each agent's health; pause, resume, restart the selected one."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable

from watchkeeper.cli.tui.look import ago, rows, safe
from watchkeeper.cli.tui.views.base import View, refill, selected, table


class AgentsView(View):
    """GET /api/agents; POST /api/command pause / resume / restart."""

    number = 2
    title = "Agent Details"
    short = "Agents"
    central_scope = "this central's own agents (a host's agents take commands in view 8)"
    keys = "p pause  u resume  r restart (the selected agent)"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "command('pause')", "pause"),
                Binding("u", "command('resume')", "resume"),
                Binding("r", "command('restart')", "restart")]

    def compose(self) -> ComposeResult:
        yield from self.top()
        yield table("AGENT", "STATE", "CHECKS", "ERRORS", "RESTARTS", "LAST OK", "LAST ERROR",
                    id="agents")

    async def load(self) -> None:
        data = await self.host.api.get("/api/agents")
        look, now = self.host.look, self.host.now()
        refill(self.query_one("#agents", DataTable), [
            (safe(a.get("name"), 64), [look.cell(a.get("name")), look.state(a.get("state")),
                                       look.cell(a.get("checks")),
                                       look.cell(a.get("error_count")),
                                       look.cell(a.get("restarts")),
                                       look.cell(ago(a.get("last_success"), now)),
                                       look.cell(a.get("last_error"), 60)])
            for a in rows(data, "agents")])

    def action_command(self, name: str) -> None:
        """Send ``name`` to the selected agent."""
        agent = selected(self.query_one("#agents", DataTable))
        if agent is None:
            self.host.say("no agent selected (the list is empty: is the server there?)",
                          error=True)
            return
        self.host.spawn(lambda: self._send(name, agent))

    async def _send(self, name: str, agent: str) -> None:
        reply = await self.host.act(f"{name} {agent}", self.host.api.post(
            "/api/command", {"command": name, "target": agent}))
        if reply is None:
            return
        said = [f"{safe(r.get('agent'), 64)}: {'ok' if r.get('ok') is True else 'FAILED'}: "
                f"{safe(r.get('message', ''), 200)}" for r in rows(reply, "replies")]
        ok = bool(said) and all(r.get("ok") is True for r in rows(reply, "replies"))
        self.host.say(f"{name}: " + ("; ".join(said) or "no agent answered"), error=not ok)
