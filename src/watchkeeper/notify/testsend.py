"""`watchkeeper notify test [ROUTE]`: a test message through each route, and its answer.

Reads only the settings (no server needed). Apprise routes are sent here; Alertmanager
routes go to ``watchkeeper.notify.alertmanager.send_test`` when that module is present.
"""

from __future__ import annotations

import importlib
import socket
from collections.abc import Callable
from dataclasses import dataclass

from watchkeeper.config import RouteConfig, Settings
from watchkeeper.notify.message import render_test
from watchkeeper.notify.router import dashboard_url
from watchkeeper.notify.sender import AppriseSender, Sender, SendResult


@dataclass(frozen=True)
class RouteAnswer:
    """What one route did with the test message."""

    route: str
    ok: bool
    answer: str


class UnknownRoute(LookupError):
    """The named route is not in notify.routes (the message lists the ones that are)."""


def _alertmanager_test() -> Callable[[RouteConfig, Settings], tuple[bool, str]] | None:
    try:
        module = importlib.import_module("watchkeeper.notify.alertmanager")
    except ImportError:
        return None
    fn = getattr(module, "send_test", None)
    return fn if callable(fn) else None


def send_test_messages(settings: Settings, name: str | None = None, *,
                sender: Sender | None = None) -> list[RouteAnswer]:
    """Send a test message through ``name`` (or every route); raises UnknownRoute."""
    routes = list(settings.notify.routes)
    if name is not None:
        routes = [r for r in routes if r.name == name]
        if not routes:
            known = ", ".join(r.name for r in settings.notify.routes) or "none configured"
            raise UnknownRoute(f"no route named {name!r} in notify.routes (routes: {known})")
    send = sender or AppriseSender()
    host = settings.host_name or socket.gethostname()
    out = []
    for route in routes:
        if route.url is not None:
            msg = render_test(route.name, level=settings.personality.level,
                              dashboard=dashboard_url(settings), host=host)
            result: SendResult = send.send(route.url.get_secret_value(), msg.title, msg.body,
                                           msg.notify_type)
            out.append(RouteAnswer(route.name, result.ok, result.answer))
            continue
        am = _alertmanager_test()
        if am is None:
            out.append(RouteAnswer(route.name, False, "Alertmanager routes are not available "
                                   "in this build: nothing was sent"))
            continue
        try:
            ok, answer = am(route, settings)
        except Exception as exc:  # report it like a channel's refusal
            ok, answer = False, f"{type(exc).__name__}: {exc}"
        out.append(RouteAnswer(route.name, ok, answer))
    return out
