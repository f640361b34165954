"""Whether notifications get through: each route's delivery state, as data.

What ``GET /api/notify``, ``/metrics``, ``watchkeeper notify status`` and the health show.
The notifier agent builds the rows of its apprise routes from the outbox
(:meth:`~watchkeeper.notify.outbox.Outbox.stats` and ``waiting``), the Alertmanager agent
those of its routes from its senders; both answer a ``status`` command. A route is

``ok``        its last try succeeded (or nothing was tried yet);
``retrying``  its tries fail, for less than ``notify.failing_after_s`` so far;
``failing``   its tries have failed for ``notify.failing_after_s`` (default 900 s) or
              longer: the health is ``degraded``, naming the route, until its next success.

Nothing here names a secret: a route's URL is shown as ``GET /api/config`` shows it, and an
error passes the masking every log line gets, on one line, host text escaped.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

from watchkeeper.config import Settings
from watchkeeper.logging_setup import mask_logged
from watchkeeper.notify.outbox import RouteStats, Waiting
from watchkeeper.notify.sender import mask, secret_pieces
from watchkeeper.safetext import printable

if TYPE_CHECKING:
    from watchkeeper.notify.alertmanager import AlertmanagerRoute

RouteState = Literal["ok", "retrying", "failing", "unknown"]

#: Longest last error shown (one line).
MAX_ERROR_SHOWN = 300
#: Longest error quoted in a health reason.
MAX_REASON_ERROR = 120

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]{0,31}$")


def kind_of(url: str) -> str:
    """An apprise URL's scheme (``json``, ``slack``, ``mailtos`` ...): never a secret."""
    scheme = url.partition("://")[0]
    return scheme.lower() if _SCHEME.match(scheme) else "apprise"


def shown_urls(settings: Settings) -> dict[str, str]:
    """Each route's URL exactly as ``GET /api/config`` shows it (apprise: all masked)."""
    return {r["name"]: str(r.get("url") or r.get("alertmanager") or "")
            for r in settings.masked()["notify"]["routes"]}


def clean_error(text: str | None, secrets: list[str]) -> str | None:
    """An error fit to show: the route's secrets and every logged secret masked, on one
    line, control and bidi characters escaped, bounded."""
    if not text:
        return None
    return printable(mask_logged(mask(text, secrets)), MAX_ERROR_SHOWN)


def state_of(failing_since: float | None, now: float, failing_after_s: float) -> RouteState:
    """ok, retrying or failing (see the module docstring)."""
    if failing_since is None:
        return "ok"
    return "failing" if now - failing_since >= failing_after_s else "retrying"


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat()


def problem(route: str, failing_for_s: float, error: str | None) -> str:
    """The health reason of a route that is failing."""
    from watchkeeper.remediation.policy import plain_secs

    why = f": {printable(error, MAX_REASON_ERROR)}" if error else ""
    return f"notification route {route} has failed for {plain_secs(failing_for_s)}{why}"


def apprise_rows(settings: Settings, stats: dict[str, RouteStats],
                 waiting: dict[str, Waiting], now: float) -> list[dict[str, Any]]:
    """One row per configured apprise route, in configured order (JSON-ready)."""
    urls = shown_urls(settings)
    after = settings.notify.failing_after_s
    rows = []
    for route in settings.notify.routes:
        if route.url is None:
            continue
        st = stats.get(route.name, RouteStats())
        w = waiting.get(route.name)
        failing = st.failing_since
        rows.append({
            "name": route.name, "kind": kind_of(route.url.get_secret_value()),
            "url": urls.get(route.name, ""), "state": state_of(failing, now, after),
            "waiting": w.count if w else 0,
            "oldest_waiting_s": round(max(0.0, now - w.oldest_at), 3) if w else None,
            "sent_total": st.sent, "failed_total": st.failed, "dropped_total": st.dropped,
            "last_success_at": _iso(st.last_success_at),
            "last_error": clean_error(st.last_error,
                                      secret_pieces(route.url.get_secret_value())),
            "last_error_at": _iso(st.last_error_at),
            "failing_since": _iso(failing),
            "next_retry_at": _iso(w.head_next_try_at) if w and failing is not None
            and w.head_attempts else None,
        })
    return rows


def alertmanager_row(sender: AlertmanagerRoute, settings: Settings, now: datetime,
                     mono: float) -> dict[str, Any]:
    """The row of one Alertmanager route (per-process counters: they start at 0)."""
    from watchkeeper.notify.alertmanager import _secrets_of

    since = sender.failing_since(now, mono)
    retry = sender.next_retry(now, mono)
    wall = now.timestamp()
    name = sender.route.name
    return {
        "name": name, "kind": "alertmanager",
        "url": shown_urls(settings).get(name, ""),
        "state": state_of(since.timestamp() if since else None, wall,
                          settings.notify.failing_after_s),
        "waiting": None, "oldest_waiting_s": None,
        "sent_total": sender.posts, "failed_total": sender.failed_posts,
        "dropped_total": sender.state.dropped,
        "last_success_at": sender.last_ok_at.isoformat() if sender.last_ok_at else None,
        "last_error": clean_error(sender.last_error, _secrets_of(sender.base)),
        "last_error_at": sender.last_error_at.isoformat() if sender.last_error_at else None,
        "failing_since": since.isoformat() if since else None,
        "next_retry_at": retry.isoformat() if retry else None,
        "alerts": len(sender.state.entries), "firing": sender.state.firing_count(),
        "last_post_ok": None if sender.last_post_ok is None else sender.last_post_ok,
    }


def alertmanager_problems(senders: list[AlertmanagerRoute], settings: Settings,
                          now: datetime, mono: float) -> tuple[str, ...]:
    """Alertmanager routes whose posts have failed for notify.failing_after_s or longer."""
    from watchkeeper.notify.alertmanager import _secrets_of

    out = []
    for sender in senders:
        since = sender.failing_since(now, mono)
        if since is None:
            continue
        failing_for = (now - since).total_seconds()
        if failing_for >= settings.notify.failing_after_s:
            out.append(problem(sender.route.name, failing_for,
                               clean_error(sender.last_error, _secrets_of(sender.base))))
    return tuple(out)
