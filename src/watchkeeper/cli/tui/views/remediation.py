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
    follows = "host"
    central_scope = "every host's services and approvals"
    while_down = ("its services, approvals and actions show again when it answers (its "
                  "alerts: view 4)")
    keys = "a approve  x reject (the selected approval)  t reset  Tab next table"
    data_lines = ("chain", "unreachable")
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "approve", "approve"), Binding("x", "reject", "reject"),
                Binding("t", "reset", "reset")]

    def __init__(self, host: Any) -> None:
        super().__init__(host)
        #: A row's key -> the value it names and its host (None on a single host's rows).
        self._whose: dict[str, tuple[str, str | None]] = {}

    def compose(self) -> ComposeResult:
        yield from self.top()
        yield Static("services", markup=False, classes="subheading")
        yield table("SERVICE", "MANAGER", "CONDITION", "STATE", "PID", "UP", "RESTARTS",
                    "REMEDIATION", id="services")
        yield Static("waiting for approval", markup=False, classes="subheading")
        yield table("ID", "ACTION", "PARAMS", "REQUESTED", "WHY", id="approvals")
        yield Static("recent actions", markup=False, classes="subheading")
        yield table("WHEN", "KIND", "ACTION", "TARGET", "OUTCOME", "BY", "MESSAGE",
                    id="actions")  # newest first
        yield Static("", id="chain", markup=False)
        yield Static("", id="unreachable", markup=False)

    async def load(self) -> None:
        api, look, now = self.host.api, self.host.look, self.host.now()
        where = self.host.fleet.where()
        services = await api.get("/api/services", where)
        actions = await api.get("/api/actions", {"limit": 20, **where})
        # On a fleet's central the rows come from several hosts (each numbers its own
        # approvals, and names repeat): then a row's key and its label say whose, and an
        # action on it goes to that host (host=).
        self._whose.clear()
        listed = rows(services, "services")
        many = len({s.get("host") for s in listed}) > 1
        refill(self.query_one("#services", DataTable), [
            (self._key(s.get("name"), s.get("host"), many, 200),
             [look.cell(f"{s.get('name')} on {s.get('host')}" if many else s.get("name")),
              look.cell(s.get("manager")),
              look.state(s.get("condition")), look.cell(s.get("state")), look.cell(s.get("pid")),
              look.cell(duration(s.get("uptime_s"))), look.cell(s.get("restarts")),
              look.cell(s.get("refused") or s.get("remediation") or s.get("detail"), 80)])
            for s in listed])
        approvals: list[tuple[str, list[Any]]] = []
        pending = rows(actions, "pending")
        many = len({p.get("host") for p in pending}) > 1
        for p in pending:
            decision = p.get("decision") or {}
            request = decision.get("request") or {}
            params = request.get("params") or {}
            shown = " ".join(f"{k}={v}" for k, v in params.items()) \
                if isinstance(params, dict) else ""
            approvals.append((self._key(p.get("id"), p.get("host"), many, 24), [
                look.cell(f"{p.get('id')} on {p.get('host')}" if many else p.get("id")),
                look.cell(request.get("action")), look.cell(shown, 60),
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
        # A central lists every host's part: the hosts that did not answer are said, not
        # left out quietly.
        silent = {safe(p.get("host"), 64): safe(p.get("status"), 4)
                  for body in (services, actions) for p in rows(body, "unreachable")}
        self.query_one("#unreachable", Static).update(
            "no answer from " + ", ".join(f"{h} ({s})" for h, s in sorted(silent.items()))
            + ": their rows are missing" if silent else "")

    def _key(self, value: Any, host: Any, many: bool, width: int) -> str:
        """A row's key: the value, or host/value when the rows come from several hosts."""
        key = f"{safe(host, 253)}/{safe(value, width)}" if many else safe(value, width)
        self._whose[key] = (safe(value, width), None if host is None else safe(host, 253))
        return key

    def _on_host(self, key: str) -> tuple[str, dict[str, Any] | None]:
        """The value a row names, and the query that sends an action to its host."""
        value, host = self._whose.get(key, (key, None))
        # No row of a host (an empty table): the picked host's, on a central.
        return value, ({"host": host} if host else self.host.fleet.where() or None)

    def _approval(self) -> tuple[int, dict[str, Any] | None] | None:
        key = selected(self.query_one("#approvals", DataTable))
        value, params = self._on_host(key or "")
        if key is None or not value.isdigit():
            self.host.say("no approval selected: nothing is waiting for approval", error=True)
            return None
        return int(value), params

    def action_approve(self) -> None:
        """Approve the selected pending action."""
        found = self._approval()
        if found is not None:
            self.host.spawn(lambda: self._approve(*found))

    async def _approve(self, approval_id: int, params: dict[str, Any] | None) -> None:
        reply = await self.host.act(f"approve #{approval_id}", self.host.api.post(
            f"/api/actions/{approval_id}/approve", None, params))
        if reply is not None:
            self.host.say(f"approval #{approval_id}: {safe(reply.get('verdict'), 40)}: "
                          f"{safe(reply.get('why'))}")

    def action_reject(self) -> None:
        """Reject the selected pending action (asks why)."""
        found = self._approval()
        if found is not None:
            self.host.spawn(lambda: self._reject(*found))

    async def _reject(self, approval_id: int, params: dict[str, Any] | None) -> None:
        reason = await self.host.prompt(f"Reject approval #{approval_id}: why? (kept in the "
                                        "audit log)")
        if reason is None:
            self.host.say(f"approval #{approval_id} left waiting")
            return
        reply = await self.host.act(f"reject #{approval_id}", self.host.api.post(
            f"/api/actions/{approval_id}/reject", {"reason": reason}, params))
        if reply is not None:
            self.host.say(f"{self.host.look.icon('rejected')}approval #{approval_id} rejected")

    def action_reset(self) -> None:
        """Reset a failing target (asks which: the selected service by default)."""
        service, params = self._on_host(selected(self.query_one("#services", DataTable)) or "")
        self.host.spawn(lambda: self._reset(service, params))

    async def _reset(self, service: str, params: dict[str, Any] | None) -> None:
        target = await self.host.prompt("Reset which failing target, so automatic tries are "
                                        "allowed again? (a service name, or kind:name such "
                                        "as script:fix)", service)
        if target is None or not target.strip():
            return
        target = target.strip()
        body = {"target": target} if ":" in target else {"service": target}
        reply = await self.host.act(f"reset {target}", self.host.api.post(
            "/api/actions/reset", body, params))
        if reply is not None:
            self.host.say(f"{self.host.look.icon('reset')}{safe(reply.get('detail'))}")
