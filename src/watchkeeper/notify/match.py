"""Which alerts a route takes: severity floor, then host, service, rule and label globs."""

from __future__ import annotations

from fnmatch import fnmatchcase

from watchkeeper.config import RouteConfig, Settings
from watchkeeper.events import Alert, Severity

SEVERITY_RANK: dict[Severity, int] = {"info": 0, "warning": 1, "critical": 2}


def _any(globs: tuple[str, ...], value: str | None) -> bool:
    return not globs or (value is not None and any(fnmatchcase(value, g) for g in globs))


def route_takes(route: RouteConfig, alert: Alert) -> bool:
    """True if ``alert`` is at least the route's severity and every given matcher matches
    (an alert without a service never matches a route limited to services). A route with
    ``receive: escalations`` takes none: it hears only what is escalated to it."""
    if route.receive == "escalations":
        return False
    if SEVERITY_RANK[alert.severity] < SEVERITY_RANK[route.min_severity]:
        return False
    m = route.match
    return (_any(m.hosts, alert.host)
            and _any(m.services, alert.labels.get("service"))
            and _any(m.rules, alert.rule)
            and all(fnmatchcase(alert.labels.get(k, ""), g) if k in alert.labels else False
                    for k, g in m.labels.items()))


def alertmanager_routes(settings: Settings) -> tuple[RouteConfig, ...]:
    """The routes that go to an Alertmanager."""
    return tuple(r for r in settings.notify.routes if r.alertmanager is not None)
