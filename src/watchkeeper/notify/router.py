"""The router: which route hears what, and when (Alertmanager's grouping, on our alerts).

Alerts and remediation steps go in (``observe_*``); :meth:`Router.tick` returns the messages
due at ``now`` (epoch seconds, injected) and the state to persist with them. Per route:

* a route takes an alert by :func:`~watchkeeper.notify.match.route_takes`; routes with
  ``alertmanager`` set are not this router's business;
* alerts alike in the route's ``group_by`` form a group: a group's first message waits
  ``group_wait_s`` for related alerts to join (a burst is one message); later changes (an
  alert joins, worsens or resolves) go out at most every ``group_interval_s``; while alerts
  still fire unchanged the group is repeated every ``repeat_interval_s``;
* a resolved alert the route was told about is in the group's next message when
  ``send_resolved``;
* an alert that is acknowledged, silenced or inhibited sends nothing more until it changes
  (worsens, or resolves if it was told and not silenced);
* an alert told as firing and still unacknowledged ``escalate_after_s`` later goes to
  ``escalate_to`` once; a remediation step that failed, gave up or waits for a human goes
  there at once;
* inhibition (:data:`INHIBIT_RULES`): an open source alert holds back the alerts it explains.

What each route was told is the state (:meth:`Router.state` / :meth:`Router.load`): it is
persisted with the messages in one transaction, so a restart neither repeats nor forgets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from watchkeeper.config import RouteConfig, Settings
from watchkeeper.events import Alert, RemediationEvent
from watchkeeper.notify.match import route_takes
from watchkeeper.notify.message import (
    Message,
    needs_human,
    render_escalation,
    render_group,
    render_remediation,
)

log = logging.getLogger(__name__)

#: Remediation steps kept per alert for the messages' "done:" lines.
KEEP_REMEDIATIONS = 5
RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}
STATE_VERSION = 1


# --------------------------------------------------------------------------- inhibition


@dataclass(frozen=True)
class InhibitRule:
    """An open alert matching ``source`` holds back the alerts for which ``explains`` is
    true (both on the same host; never itself)."""

    name: str
    source: Callable[[Alert], bool]
    explains: Callable[[Alert, Alert], bool]


def _names_service(source: Alert, target: Alert) -> bool:
    service = source.dimension or source.labels.get("service", "")
    return bool(service) and (target.labels.get("service") == service
                              or target.labels.get("process") == service)


#: Table-driven so the fleet's host-down alert is one more row (rule ``host_down``).
INHIBIT_RULES: tuple[InhibitRule, ...] = (
    InhibitRule("service_down", lambda a: a.rule == "service" and a.severity == "critical",
                _names_service),
    InhibitRule("host_down", lambda a: a.rule == "host_down", lambda _s, _t: True),
)


def inhibited(alert: Alert, open_alerts: Iterable[Alert],
              rules: tuple[InhibitRule, ...] = INHIBIT_RULES) -> str | None:
    """The name of the rule that holds ``alert`` back, or None."""
    for src in open_alerts:
        if src.fingerprint == alert.fingerprint or src.host != alert.host \
                or src.state == "resolved":
            continue
        for rule in rules:
            if rule.source(src) and rule.explains(src, alert):
                return rule.name
    return None


# --------------------------------------------------------------------------- state


@dataclass
class Told:
    """What one route was told about one alert."""

    group: str
    state: Literal["pending", "firing", "resolved"] = "pending"
    severity: str = "info"
    first_told: float | None = None
    escalated: bool = False


@dataclass
class Group:
    """One group of one route."""

    key: str
    dirty_since: float | None = None
    last_sent: float | None = None


@dataclass
class RouteState:
    told: dict[str, Told] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)


def group_key(route: RouteConfig, alert: Alert) -> str:
    """The values of the route's group_by fields, joined ("host=a|rule=cpu")."""
    parts = []
    for name in route.group_by:
        if name in ("host", "rule", "metric", "dimension", "severity", "fingerprint"):
            value = str(getattr(alert, name))
        else:
            value = alert.labels.get(name, "")
        parts.append(f"{name}={value}")
    return "|".join(parts)


def dashboard_url(settings: Settings) -> str:
    """Where messages link to: notify.dashboard_url, or this server's own address."""
    if settings.notify.dashboard_url:
        return settings.notify.dashboard_url
    host = settings.api.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.api.port}/"


class Router:
    """Decides the messages due; see the module docstring for the rules."""

    def __init__(self, settings: Callable[[], Settings]) -> None:
        self._settings = settings
        self.alerts: dict[str, Alert] = {}
        self.remediations: dict[str, list[RemediationEvent]] = {}
        self.routes: dict[str, RouteState] = {}
        self._immediate: list[Message] = []
        self.changed = False

    # ----------------------------------------------------------------- inputs

    def _routes(self) -> list[RouteConfig]:
        return [r for r in self._settings().notify.routes if r.url is not None]

    def observe_alert(self, alert: Alert) -> None:
        """The latest version of an alert (any change kind)."""
        prev = self.alerts.get(alert.fingerprint)
        if prev is not None and prev.at > alert.at:
            return  # an older version (replayed from the store): the newer one stands
        self.alerts[alert.fingerprint] = alert

    def observe_remediation(self, ev: RemediationEvent, now: float) -> None:
        """A remediation step: remembered for the alert's message; a worked/failed/needs-a-
        human step is a message now on routes that told its alert, and on escalate_to."""
        alert = self._alert_of(ev)
        if alert is not None:
            kept = self.remediations.setdefault(alert.fingerprint, [])
            kept.append(ev)
            del kept[:-KEEP_REMEDIATIONS]
        if ev.phase not in ("finished", "pending", "escalated", "expired"):
            return
        settings = self._settings()
        level = settings.personality.level
        link = dashboard_url(settings)
        by_name = {r.name: r for r in self._routes()}
        probe = alert or Alert(
            host=ev.host, id="", fingerprint="", rule="remediation", metric="remediation",
            severity="critical", since=ev.at, summary=ev.message or ev.why,
            labels={"service": ev.target} if ev.target else {})
        human = needs_human(ev)
        escalations: dict[str, str] = {}  # escalate_to route -> the route it comes from
        for route in by_name.values():
            told = self.routes.get(route.name, RouteState()).told.get(probe.fingerprint)
            if alert is not None:
                # Said on a route that was told about the alert (else its next message says
                # it); a step that needs a human is said even if the alert is still pending.
                relevant = told is not None and (told.state == "firing" or human)
            else:
                relevant = human and route_takes(route, probe)
            if not relevant:
                continue
            self._immediate.append(render_remediation(route.name, ev, alert, level=level,
                                                      dashboard=link, escalated_from=None))
            if human and route.escalate_to and route.escalate_to in by_name:
                escalations.setdefault(route.escalate_to, route.name)
        for target, source in sorted(escalations.items()):
            self._immediate.append(render_remediation(
                target, ev, alert, level=level, dashboard=link, escalated_from=source))
        if self._immediate:
            self.changed = True

    def _alert_of(self, ev: RemediationEvent) -> Alert | None:
        if ev.fingerprint and ev.fingerprint in self.alerts:
            return self.alerts[ev.fingerprint]
        name = ev.target
        for a in self.alerts.values():
            if a.host == ev.host and a.rule == "service" and a.dimension == name \
                    and a.state != "resolved":
                return a
        return None

    # ----------------------------------------------------------------- the tick

    def tick(self, now: float) -> list[Message]:
        """The messages due at ``now``, in order; updates what each route was told."""
        out, self._immediate = self._immediate, []
        settings = self._settings()
        routes = self._routes()
        by_name = {r.name: r for r in routes}
        open_alerts = [a for a in self.alerts.values() if a.state != "resolved"]
        for route in routes:
            rs = self.routes.setdefault(route.name, RouteState())
            out += self._route_tick(route, rs, now, settings, open_alerts, by_name)
        for name in [n for n in self.routes if n not in by_name]:
            del self.routes[name]  # a route removed from the config: forget what it was told
        # Resolved alerts no route still has to tell about are done.
        for fp in [fp for fp, a in self.alerts.items() if a.state == "resolved"]:
            if not any(fp in rs.told for rs in self.routes.values()):
                del self.alerts[fp]
                self.remediations.pop(fp, None)
        if out:
            self.changed = True
        return out

    def _route_tick(self, route: RouteConfig, rs: RouteState, now: float, settings: Settings,
                    open_alerts: list[Alert], by_name: dict[str, RouteConfig]
                    ) -> list[Message]:
        level = settings.personality.level
        link = dashboard_url(settings)
        # Register new alerts of this route as pending members of their group.
        for alert in self.alerts.values():
            if alert.fingerprint in rs.told or alert.state == "resolved" \
                    or not route_takes(route, alert):
                continue
            rs.told[alert.fingerprint] = Told(group=group_key(route, alert))
            self.changed = True
        members: dict[str, list[str]] = {}
        for fp, told in rs.told.items():
            members.setdefault(told.group, []).append(fp)
        out: list[Message] = []
        for key, fps in members.items():
            group = rs.groups.get(key)
            if group is None:
                group = rs.groups[key] = Group(key=key)
            firing: list[Alert] = []
            resolved: list[Alert] = []
            new: set[str] = set()
            quiet_resolved: list[str] = []
            for fp in fps:
                told = rs.told[fp]
                seen = self.alerts.get(fp)
                if seen is None:
                    continue  # told before a restart, not seen again yet: wait for it
                want = self._wanted(route, seen, open_alerts)
                if want == "firing":
                    firing.append(seen)
                    if told.state != "firing" or \
                            RANK[seen.severity] > RANK.get(told.severity, 0):
                        new.add(fp)
                elif want == "resolved" and told.state == "firing":
                    resolved.append(seen)
                elif seen.state == "resolved":
                    quiet_resolved.append(fp)
            for fp in quiet_resolved:
                del rs.told[fp]
                self.changed = True
            news = bool(new) or bool(resolved)
            if news and group.dirty_since is None:
                # Counted from the first change itself (its event time), not from when a
                # tick saw it; never later than now.
                first = min(a.at.timestamp() for a in (*[a for a in firing
                                                          if a.fingerprint in new],
                                                       *resolved))
                group.dirty_since = min(now, first)
                self.changed = True
            due = False
            repeat = False
            if news:
                assert group.dirty_since is not None
                if group.last_sent is None:
                    due = now >= group.dirty_since + route.group_wait_s
                else:
                    due = now >= max(group.last_sent + route.group_interval_s,
                                     group.dirty_since)
            elif firing and group.last_sent is not None \
                    and now >= group.last_sent + route.repeat_interval_s:
                due = repeat = True
            if due:
                told_resolved = resolved if route.send_resolved else []
                if firing or told_resolved:
                    out.append(render_group(route.name, level=level, dashboard=link, now=now,
                                            firing=firing, resolved=told_resolved, new=new,
                                            remediations=self.remediations, repeat=repeat))
                for alert in firing:
                    told = rs.told[alert.fingerprint]
                    told.state = "firing"
                    told.severity = alert.severity
                    if told.first_told is None or alert.fingerprint in new:
                        # Escalation counts from when it was (re)told: an ack, then a
                        # worsening, starts the clock again.
                        told.first_told = now
                escalated_resolved = [a for a in resolved
                                      if rs.told.pop(a.fingerprint).escalated]
                if escalated_resolved and route.escalate_to in by_name:
                    out += self._resolve_escalated(by_name[route.escalate_to],
                                                   escalated_resolved, now, level, link)
                group.last_sent = now
                group.dirty_since = None
                self.changed = True
            out += self._escalate(route, rs, now, key, by_name, level, link, open_alerts)
            if not any(t.group == key for t in rs.told.values()):
                del rs.groups[key]
                self.changed = True
        return out

    def _wanted(self, route: RouteConfig, alert: Alert, open_alerts: list[Alert]
                ) -> Literal["firing", "resolved", "quiet"]:
        """What the route should be told about ``alert`` now."""
        if alert.state == "resolved":
            return "quiet" if alert.silenced else "resolved"
        if alert.state == "acknowledged" or alert.silenced:
            return "quiet"
        if inhibited(alert, open_alerts) is not None:
            return "quiet"
        if not route_takes(route, alert):
            return "quiet"  # fell below the route's floor or out of its match
        return "firing"

    def _escalate(self, route: RouteConfig, rs: RouteState, now: float, key: str,
                  by_name: dict[str, RouteConfig], level: Any, link: str,
                  open_alerts: list[Alert]) -> list[Message]:
        target = by_name.get(route.escalate_to or "")
        if target is None:
            return []
        due: list[Alert] = []
        for fp, told in rs.told.items():
            if told.group != key or told.escalated or told.state != "firing" \
                    or told.first_told is None:
                continue
            alert = self.alerts.get(fp)
            if alert is None or self._wanted(route, alert, open_alerts) != "firing":
                continue
            if now >= told.first_told + route.escalate_after_s:
                due.append(alert)
                told.escalated = True
        if not due:
            return []
        self.changed = True
        return [render_escalation(target.name, route.name, level=level, dashboard=link,
                                  now=now, alerts=due, after_s=route.escalate_after_s,
                                  remediations=self.remediations)]

    def _resolve_escalated(self, target: RouteConfig, alerts: list[Alert], now: float,
                           level: Any, link: str) -> list[Message]:
        """The route escalated to hears that what it was told about resolved."""
        if not target.send_resolved:
            return []
        return [render_group(target.name, level=level, dashboard=link, now=now, firing=[],
                             resolved=alerts, new=set(), remediations=self.remediations)]

    # ----------------------------------------------------------------- persistence

    def state(self) -> dict[str, Any]:
        """What each route was told (JSON-able), to persist with the messages."""
        return {"version": STATE_VERSION, "routes": {
            name: {"told": {fp: asdict(t) for fp, t in rs.told.items()},
                   "groups": {k: asdict(g) for k, g in rs.groups.items()}}
            for name, rs in self.routes.items()}}

    def load(self, data: dict[str, Any]) -> None:
        """Restore :meth:`state` (an unreadable state is logged and ignored)."""
        try:
            if data.get("version") != STATE_VERSION:
                return
            routes: dict[str, RouteState] = {}
            for name, raw in data["routes"].items():
                rs = RouteState()
                for fp, t in raw["told"].items():
                    rs.told[fp] = Told(**t)
                for k, g in raw["groups"].items():
                    rs.groups[k] = Group(**g)
                routes[name] = rs
            self.routes = routes
        except (KeyError, TypeError, AttributeError) as exc:
            log.warning("notifier: ignoring an unreadable notification state: %s", exc)
