"""8 Send Commands: the POST /api/command set; remediate previews a dry run first; on a
fleet's central each asks which host."""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.widget import Widget
from textual.widgets import OptionList, RichLog
from textual.widgets.option_list import Option

from watchkeeper.cli.tui.look import rows, safe
from watchkeeper.cli.tui.views.alerts import parse_duration
from watchkeeper.cli.tui.views.base import View, fleet_hosts

COMMANDS = (("health_check", "ask agents to check in"),
            ("pause", "pause an agent, or all"),
            ("resume", "resume an agent, or all"),
            ("restart", "restart an agent, or all"),
            ("remediate", "ask for a remediation action: a dry-run preview first, then the "
                          "real request through the same policy as the agents' own"),
            ("simulate", "run the server's demo service and crash it once (service) or "
                         "make it crash-loop (crashloop): watch watchkeeper heal it"))

#: The longest demo run the server accepts (schemas.SimulateRequest).
SIMULATE_MAX_S = 600


class CommandsView(View):
    """POST /api/command: agent commands, and remediate (dry run, then for real)."""

    number = 8
    title = "Send Commands"
    short = "Commands"
    central_scope = "each command asks which host (the picked one first)"
    keys = "↑↓ choose  Enter send"

    def compose(self) -> ComposeResult:
        yield from self.top()
        yield OptionList(*[Option(f"{name:<13} {what}", id=name) for name, what in COMMANDS],
                         id="commands")
        yield RichLog(id="command-output", max_lines=200, wrap=True, markup=False)

    def focus_target(self) -> Widget | None:
        return self.query_one("#commands", OptionList)

    def _out(self, line: str, style: str = "") -> None:
        self.query_one("#command-output", RichLog).write(Text(line, style=style))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        name = event.option.id or ""
        if name == "remediate":
            self.host.spawn(self._remediate)
        elif name == "simulate":
            self.host.spawn(self._simulate)
        else:
            self.host.spawn(lambda: self._agents(name))

    async def _where(self, name: str, *, here: bool) -> dict[str, str] | None:
        """The ``host=`` query for ``name``: none on a single server; on a fleet's central,
        the host it asks for (``here``: empty means the central itself). None: cancelled."""
        names = await fleet_hosts(self.host.api)
        if names is None:
            return {}
        listed = ", ".join(names[:12]) + (", …" if len(names) > 12 else "")
        picked = self.host.fleet.picked()  # the host picked with h comes first
        first = picked.name if picked is not None else names[0] if len(names) == 1 else ""
        answer = await self.host.prompt(
            f"{name}: on which host? ({listed or 'none reports yet'})"
            + ("; empty: this server" if here else ""), first)
        if answer is None or (not answer.strip() and not here):
            return None
        return {"host": answer.strip()} if answer.strip() else {}

    async def _agents(self, name: str) -> None:
        where = await self._where(name, here=True)
        if where is None:
            return
        target = await self.host.prompt(f"{name}: which agent? (a name, or all)", "all")
        if target is None or not target.strip():
            return
        reply = await self.host.act(f"{name} {target.strip()}", self.host.api.post(
            "/api/command", {"command": name, "target": target.strip()}, where))
        if reply is None:
            self._out(f"{name}: {self.host.last_error}", "red")
            return
        replies = rows(reply, "replies")
        for r in replies:
            ok = r.get("ok") is True
            self._out(f"{name} → {safe(r.get('agent'), 64)}: {'ok' if ok else 'FAILED'}: "
                      f"{safe(r.get('message', ''), 200)}", "" if ok else "red")
        self.host.say(f"{name}: {len(replies)} agent(s) answered")

    async def _remediate(self) -> None:
        from watchkeeper.remediation.registry import REGISTRY

        where = await self._where("remediate", here=False)
        if where is None:
            return
        action = await self.host.prompt(f"remediate: which action? ({', '.join(sorted(REGISTRY))})",
                                        "notify_only")
        if action is None or not action.strip():
            return
        params_text = await self.host.prompt(f"{action.strip()}: its parameters, as a JSON "
                                             "object", '{"message": "from watchkeeper cli"}'
                                             if action.strip() == "notify_only" else "{}")
        if params_text is None:
            return
        try:
            params = json.loads(params_text or "{}")
        except ValueError as exc:
            self.host.say(f"the parameters are not JSON ({exc}); nothing sent", error=True)
            return
        if not isinstance(params, dict):
            self.host.say("the parameters must be a JSON object such as {\"service\": "
                          "\"web\"}; nothing sent", error=True)
            return
        body: dict[str, Any] = {"command": "remediate", "action": action.strip(),
                                "params": params, "reason": "from watchkeeper cli"}
        preview = await self.host.act("dry run", self.host.api.post(
            "/api/command", {**body, "dry_run": True}, where))
        if preview is None:
            self._out(f"dry run: {self.host.last_error}", "red")
            return
        decision = preview.get("decision") or {}
        shown = (f"{self.host.look.icon('dry_run')}dry run of {safe(decision.get('action'), 64)}"
                 f" on {safe(decision.get('target'), 200)}: {safe(decision.get('verdict'), 20)}"
                 f" ({safe(decision.get('why'))}); would: {safe(decision.get('preview'))}")
        self._out(shown)
        if decision.get("verdict") == "refused":
            self.host.say("the policy refuses it: nothing sent for real", error=True)
            return
        if not await self.host.ask(f"{shown}\n\nSend it for real?"):
            self._out("not sent")
            self.host.say("remediate: not sent")
            return
        reply = await self.host.act("remediate", self.host.api.post("/api/command", body,
                                                                    where))
        if reply is None:
            self._out(f"remediate: {self.host.last_error}", "red")
            return
        decision = reply.get("decision") or {}
        approval = decision.get("approval_id")
        line = (f"remediate {safe(decision.get('action'), 64)}: "
                f"{safe(decision.get('verdict'), 20)}: {safe(decision.get('why'))}"
                + (f" (approval #{safe(approval, 24)}: approve it in view 5)"
                   if approval is not None else ""))
        self._out(line)
        self.host.say(line)

    async def _simulate(self) -> None:
        # No dry run exists for simulate: it changes nothing outside its own demo service,
        # and a confirmation says what it will do before anything starts.
        where = await self._where("simulate", here=True)
        if where is None:
            return
        scenario = await self.host.prompt("simulate: which scenario? (service: its demo "
                                          "service killed once; crashloop: it exits at every "
                                          "start for two thirds of the run)", "service")
        if scenario is None or not scenario.strip():
            return
        length = await self.host.prompt("simulate: for how long? (90s, 5m; at most 10m)",
                                        "60s")
        if length is None:
            return
        seconds = parse_duration(length)
        if seconds is None or not 0 < seconds <= SIMULATE_MAX_S:
            self.host.say(f"{safe(length, 40)!r} is not a duration from 1s to 10m, like "
                          "90s or 5m; nothing started", error=True)
            return
        on = f" on {safe(where['host'], 64)}" if where else ""
        what = "crash it once" if scenario.strip() == "service" else "make it crash-loop"
        if not await self.host.ask(f"Start the demo service{on} for {seconds:g} s and "
                                   f"{what}?\n\nwatchkeeper should notice and heal it; "
                                   "it is removed when the time is up."):
            self._out("simulate: not started")
            self.host.say("simulate: not started")
            return
        reply = await self.host.act("simulate", self.host.api.post("/api/command", {
            "command": "simulate", "scenario": scenario.strip(), "duration_s": seconds},
            where))
        if reply is None:
            self._out(f"simulate: {self.host.last_error}", "red")
            return
        sim = reply.get("simulation") or {}
        line = (f"simulate {safe(sim.get('scenario'), 20)}{on}: demo service "
                f"{safe(sim.get('service'), 64)} on port {safe(sim.get('port'), 8)}, pid "
                f"{safe(sim.get('pid'), 12)} crashed; removed at "
                f"{safe(str(sim.get('until'))[11:19], 8)} UTC (follow it in views 5 and 9)")
        self._out(line)
        self.host.say(line)
