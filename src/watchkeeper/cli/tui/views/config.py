"""7 Configuration: the running server's settings; change one, validated by the server."""

from __future__ import annotations

import json
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Static

from watchkeeper.cli.tui.look import safe
from watchkeeper.cli.tui.views.base import View, refill, selected, table


def flatten(config: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Every leaf setting as (dotted key, value); a list is one value."""
    if not isinstance(config, dict) or not config:
        return [(prefix, config)] if prefix else []
    found: list[tuple[str, Any]] = []
    for key, value in config.items():
        found.extend(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return found


def patch_for(key: str, text: str) -> dict[str, Any]:
    """The PATCH body that sets ``key``: the value is JSON if it parses (80, true, ["a"]),
    else the text itself, as `watchkeeper config set` reads it."""
    try:
        value: Any = json.loads(text)
    except ValueError:
        value = text
    for part in reversed(key.split(".")):
        value = {part: value}
    patch: dict[str, Any] = value
    return patch


class ConfigView(View):
    """GET /api/config; PATCH /api/config with one value."""

    number = 7
    title = "Configuration"
    short = "Config"
    follows = "host"
    data_lines = ("config-version", "config-said")
    central_scope = "this central's own configuration (pick a host to see and change its own)"
    while_down = "its configuration shows again when it answers"
    keys = "e / Enter change the selected value"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("e", "edit", "change")]

    def __init__(self, host: Any) -> None:
        super().__init__(host)
        self.values: dict[str, Any] = {}

    def compose(self) -> ComposeResult:
        yield from self.top()
        yield Static("", id="config-version", markup=False)
        yield table("SETTING", "VALUE", id="config")
        yield Static("", id="config-said", markup=False)

    async def load(self) -> None:
        data = await self.host.api.get("/api/config", self.host.fleet.where())
        self.values = {safe(k, 200): v for k, v in flatten(data.get("config"))}
        look = self.host.look
        refill(self.query_one("#config", DataTable), [
            (key, [look.cell(key), look.cell(json.dumps(value), 120)])
            for key, value in self.values.items()])
        self.query_one("#config-version", Static).update(
            f"version {safe(data.get('version'), 12)} · secrets masked · changes are checked "
            "by the server and kept for its next start")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_edit()

    def action_edit(self) -> None:
        """Ask for a new value of the selected setting and send it."""
        key = selected(self.query_one("#config", DataTable))
        if key is None:
            self.host.say("no setting selected (is the server there?)", error=True)
            return
        self.host.spawn(lambda: self._edit(key))

    async def _edit(self, key: str) -> None:
        current = self.values.get(key)
        answer = await self.host.prompt(f"New value for {key} (JSON: 80, true, \"text\", "
                                        "[...]; else taken as text)", json.dumps(current))
        if answer is None:
            return
        said = self.query_one("#config-said", Static)
        said.update("")
        where = self.host.fleet.where()  # on a central: the picked host's own, else its own
        on = f" on {safe(where['host'], 64)}" if where else ""
        reply = await self.host.act(f"set {key}{on}", self.host.api.patch(
            "/api/config", patch_for(key, answer), where))
        if reply is None:
            said.update(f"refused, nothing changed: {self.host.last_error}")
            return
        changed = [safe(c, 200) for c in reply.get("changed") or []]
        line = (f"changed: {', '.join(changed)} (version {safe(reply.get('version'), 12)})"
                if changed else f"unchanged: {key} had that value already")
        said.update(line)
        self.host.say(line)
