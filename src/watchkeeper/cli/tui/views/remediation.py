"""5 Remediation Status: services, approvals (approve, reject), recent actions, reset."""

from __future__ import annotations

from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Static

from watchkeeper.cli.tables import duration
from watchkeeper.cli.tui.look import ago, rows, safe
from watchkeeper.cli.tui.views.base import View, refill, selected, table


class RemediationView(View):
    """GET /api/services and /api/actions; POST approve, reject, reset."""

    number = 5
    title = "Remediation Status"
    short = "Remediation"
    keys = "a approve  x reject (the selected approval)  t reset  Tab next table"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "approve", "approve"), Binding("x", "reject", "reject"),
                Binding("t", "reset", "reset")]

    def compose(self) -> ComposeResult:
        yield self.heading()
        yield Static("services", markup=False, classes="subheading")
        yield table("SERVICE", "MANAGER", "CONDITION", "STATE", "PID", "UP", "RESTARTS",
                    "REMEDIATION", id="services")
        yield Static("waiting for approval", markup=False, classes="subheading")
        yield table("ID", "ACTION", "PARAMS", "REQUESTED", "WHY", id="approvals")
        yield Static("recent actions", markup=False, classes="subheading")
        yield table("WHEN", "KIND", "ACTION", "TARGET", "OUTCOME", "BY", "MESSAGE",
                    id="actions")  # newest first
        yield Static("", id="chain")

    async def load(self) -> None:
        api, look, now = self.host.api, self.host.look, self.host.now()
        services = await api.get("/api/services")
        actions = await api.get("/api/actions", {"limit": 20})
        refill(self.query_one("#services", DataTable), [
            (safe(s.get("name"), 200),
             [look.cell(s.get("name")), look.cell(s.get("manager")),
              look.state(s.get("condition")), look.cell(s.get("state")), look.cell(s.get("pid")),
              look.cell(duration(s.get("uptime_s"))), look.cell(s.get("restarts")),
              look.cell(s.get("refused") or s.get("remediation") or s.get("detail"), 80)])
            for s in rows(services, "services")])
        approvals: list[tuple[str, list[Any]]] = []
        for p in rows(actions, "pending"):
            decision = p.get("decision") or {}
            request = decision.get("request") or {}
            params = request.get("params") or {}
            shown = " ".join(f"{k}={v}" for k, v in params.items()) \
                if isinstance(params, dict) else ""
            approvals.append((safe(p.get("id"), 24), [
                look.cell(p.get("id")), look.cell(request.get("action")), look.cell(shown, 60),
                look.cell(ago(p.get("requested_at"), now)), look.cell(decision.get("why"), 80)]))
        refill(self.query_one("#approvals", DataTable), approvals)
        refill(self.query_one("#actions", DataTable), [
            (safe(e.get("id"), 24),
             [look.cell(ago(e.get("at"), now)), look.cell(e.get("kind")),
              look.cell(e.get("action")), look.cell(e.get("target")),
              look.state(e.get("outcome") or e.get("verdict") or "-"), look.cell(e.get("actor")),
              look.cell(e.get("message"), 80)])
            for e in reversed(rows(actions, "entries"))])  # newest first
        chain = actions.get("audit_chain") or {}
        self.query_one("#chain", Static).update(
            f"audit chain ok ({safe(chain.get('checked'), 12)} records checked)"
            if chain.get("ok") else "audit chain BROKEN: run `watchkeeper audit verify`")

    def _approval(self) -> int | None:
        key = selected(self.query_one("#approvals", DataTable))
        if key is None or not key.isdigit():
            self.host.say("no approval selected: nothing is waiting for approval", error=True)
            return None
        return int(key)

    def action_approve(self) -> None:
        """Approve the selected pending action."""
        found = self._approval()
        if found is not None:
            self.host.spawn(lambda: self._approve(found))

    async def _approve(self, approval_id: int) -> None:
        reply = await self.host.act(f"approve #{approval_id}", self.host.api.post(
            f"/api/actions/{approval_id}/approve"))
        if reply is not None:
            self.host.say(f"approval #{approval_id}: {safe(reply.get('verdict'), 40)}: "
                          f"{safe(reply.get('why'))}")

    def action_reject(self) -> None:
        """Reject the selected pending action (asks why)."""
        found = self._approval()
        if found is not None:
            self.host.spawn(lambda: self._reject(found))

    async def _reject(self, approval_id: int) -> None:
        reason = await self.host.prompt(f"Reject approval #{approval_id}: why? (kept in the "
                                        "audit log)")
        if reason is None:
            self.host.say(f"approval #{approval_id} left waiting")
            return
        reply = await self.host.act(f"reject #{approval_id}", self.host.api.post(
            f"/api/actions/{approval_id}/reject", {"reason": reason}))
        if reply is not None:
            self.host.say(f"{self.host.look.icon('rejected')}approval #{approval_id} rejected")

    def action_reset(self) -> None:
        """Reset a failing target (asks which: the selected service by default)."""
        service = selected(self.query_one("#services", DataTable)) or ""
        self.host.spawn(lambda: self._reset(service))

    async def _reset(self, service: str) -> None:
        target = await self.host.prompt("Reset which failing target, so automatic tries are "
                                        "allowed again? (a service name, or kind:name such "
                                        "as script:fix)", service)
        if target is None or not target.strip():
            return
        target = target.strip()
        body = {"target": target} if ":" in target else {"service": target}
        reply = await self.host.act(f"reset {target}", self.host.api.post(
            "/api/actions/reset", body))
        if reply is not None:
            self.host.say(f"{self.host.look.icon('reset')}{safe(reply.get('detail'))}")
