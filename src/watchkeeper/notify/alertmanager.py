"""Alertmanager as a route: watchkeeper's alerts posted to its v2 API, the way Prometheus does.

Alertmanager's model is level-triggered: a sender re-posts every firing alert periodically
with ``endsAt`` a few resend intervals ahead, and Alertmanager resolves on its own an alert
that stops being re-posted. So the state a route keeps is just the current set of alerts (the
firing ones, and the recently ended ones until their end has surely been told): an
Alertmanager that was down gets the whole current set at the next resend, and nothing queues.

Numbers (Prometheus' own: ``resendDelay`` 1m, ``endsAt`` = 4 resend delays ahead, resolved
alerts re-sent for 15 minutes, batches of 64):

* every firing alert is re-posted every :data:`RESEND_EVERY_S` seconds, with
  ``endsAt`` = now + :data:`ENDS_AFTER_RESENDS` x that, so Alertmanager resolves it itself
  4 minutes after watchkeeper stops posting it (stopped, killed, or the alert silenced);
* a change (new, resolved, escalated, new words) is posted at once;
* an ended alert is re-posted with its ``endsAt`` for :data:`RESOLVED_RETENTION_S`;
* a failed post is retried after 1, 2, 4 ... s (capped at the resend interval); the first
  success after a failure posts the whole current set again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

import httpx

from watchkeeper.aio import wait_for
from watchkeeper.config import RouteConfig, Settings
from watchkeeper.events import Alert, utcnow
from watchkeeper.notify.match import route_takes
from watchkeeper.safetext import printable

log = logging.getLogger(__name__)

#: Seconds between two posts of the whole current set (Prometheus' resend delay).
RESEND_EVERY_S = 60.0
#: A firing alert's ``endsAt`` is this many resend intervals ahead of each post.
ENDS_AFTER_RESENDS = 4.0
#: Seconds an ended alert is still re-posted (with its ``endsAt``), so that an Alertmanager
#: down when it ended still learns the end; past this, its own ``endsAt`` has expired anyway.
RESOLVED_RETENTION_S = 900.0
#: Alerts per POST (Prometheus' maxBatchSize).
BATCH = 64
#: Alerts a route keeps (firing and recently ended); past it the oldest ended ones go first.
MAX_ALERTS = 10_000
#: Seconds one POST may take, connecting and reading the answer included.
TIMEOUT_S = 10.0
#: Bytes of an answer read at most (an error's text; the status for notify test).
MAX_ANSWER = 65_536
#: First retry delay after a failed post; doubles up to the resend interval.
BACKOFF_INITIAL_S = 1.0

#: Longest label value and annotation sent; the rest is cut (marked with an ellipsis).
MAX_LABEL_VALUE = 1024
MAX_ANNOTATION = 4096
#: Most of an alert's own labels sent (the first ones by name); the rest are dropped.
MAX_OWN_LABELS = 32
#: An alert's own labels that change during its life: sent as annotations, because a label
#: is part of an Alertmanager alert's identity (a changed label would be a new alert there).
#: ``change`` only says why this version was published, and is not sent at all.
VOLATILE_LABELS = frozenset({"acked_by", "flapping", "escalated", "pid", "create_time",
                             "process", "condition"})
_NOT_SENT = frozenset({"change"})
#: What watchkeeper itself sets; an alert's own label of the same name does not replace it.
CORE_LABELS = ("alertname", "severity", "host", "instance", "service", "metric", "dimension")

_LABEL_NAME_BAD = re.compile(r"[^A-Za-z0-9_]")
_LINK = re.compile(r"^https?://[^\s\x00-\x1f\x7f]{1,2000}$")

Wall = Callable[[], datetime]
Monotonic = Callable[[], float]


# --------------------------------------------------------------------------- text


def mask_url(url: str) -> str:
    """``url`` fit for a log line: user and password replaced by ``***``, no query."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return "<unparsable URL>"
    netloc = ("***@" if "@" in parts.netloc else "") + host + port
    return printable(urlunsplit((parts.scheme, netloc, parts.path, "", "")), 256)


def label_name(name: str) -> str | None:
    """``name`` as a valid Alertmanager label name ([A-Za-z_][A-Za-z0-9_]*), or None."""
    clean = _LABEL_NAME_BAD.sub("_", name[:128]).strip("_")
    if not clean:
        return None
    # A leading "__" is reserved for Prometheus' internal labels.
    return f"_{clean}" if clean[0].isdigit() else clean


def _value(text: str, limit: int) -> str:
    return printable(text, limit)


def dashboard_url(settings: Settings) -> str:
    """The dashboard link put on alerts: notify.dashboard_url, else the API's address."""
    if settings.notify.dashboard_url:
        return settings.notify.dashboard_url
    host = settings.api.host
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname() or "localhost"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.api.port}/"


# --------------------------------------------------------------------------- payload


def labels_of(alert: Alert) -> dict[str, str]:
    """The labels an alert is sent with: its identity in Alertmanager (stable over its life)."""
    labels = {"alertname": alert.rule, "severity": alert.severity, "host": alert.host,
              "instance": alert.host, "metric": alert.metric}
    if alert.dimension:
        labels["dimension"] = alert.dimension
    service = alert.labels.get("service")
    if service:
        labels["service"] = service
    own = 0
    for key in sorted(alert.labels):
        if key in VOLATILE_LABELS or key in _NOT_SENT:
            continue
        name = label_name(key)
        if name is None or name in CORE_LABELS or name in labels:
            continue
        if own >= MAX_OWN_LABELS:
            break
        labels[name] = alert.labels[key]
        own += 1
    return {k: _value(v, MAX_LABEL_VALUE) for k, v in labels.items() if v != ""}


def annotations_of(alert: Alert, dashboard: str) -> dict[str, str]:
    """What an alert says: summary, description (context), analysis, likely cause, link."""
    notes: dict[str, str] = {"summary": alert.summary}
    if alert.context:
        notes["description"] = alert.context
    a = alert.assessment
    if a is not None:
        notes["analysis"] = a.summary
        if a.likely_cause:
            notes["likely_cause"] = a.likely_cause
    if alert.value is not None:
        notes["value"] = f"{alert.value:g}"
    if alert.threshold is not None:
        notes["threshold"] = f"{alert.threshold:g}"
    for key in sorted(VOLATILE_LABELS & alert.labels.keys()):
        notes[key] = alert.labels[key]
    notes["watchkeeper_id"] = alert.id
    notes["dashboard"] = dashboard
    return {k: _value(v, MAX_ANNOTATION) for k, v in notes.items() if v}


def _iso(t: datetime) -> str:
    return t.isoformat()


@dataclass
class Entry:
    """One alert as Alertmanager knows it; ``ends_at`` None while firing."""

    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at: datetime
    ends_at: datetime | None = None
    #: Monotonic time it ended (for RESOLVED_RETENTION_S).
    ended_mono: float = 0.0

    def payload(self, now: datetime, ends_after_s: float, generator_url: str) -> dict[str, Any]:
        """The v2 API's postableAlert."""
        ends = self.ends_at if self.ends_at is not None else now + timedelta(seconds=ends_after_s)
        # Alertmanager refuses the whole batch (422) for a generatorURL that is not a URI.
        link = generator_url if _LINK.match(generator_url) else ""
        return {"labels": self.labels, "annotations": self.annotations,
                "startsAt": _iso(self.starts_at), "endsAt": _iso(max(ends, self.starts_at)),
                "generatorURL": link}


Key = tuple[tuple[str, str], ...]


def _key(labels: dict[str, str]) -> Key:
    return tuple(sorted(labels.items()))


@dataclass
class RouteState:
    """The current set of one route: firing alerts and recently ended ones (bounded)."""

    max_alerts: int = MAX_ALERTS
    entries: OrderedDict[Key, Entry] = field(default_factory=OrderedDict)
    #: watchkeeper fingerprint -> the key it fires under now.
    firing: dict[str, Key] = field(default_factory=dict)
    dirty: set[Key] = field(default_factory=set)
    dropped: int = 0

    def take(self, route: RouteConfig, alert: Alert, *, dashboard: str, now: datetime,
             mono: float) -> bool:
        """Apply one alert change; True if something is to be posted."""
        wanted = (alert.state != "resolved" and not alert.silenced
                  and route_takes(route, alert))
        labels = labels_of(alert)
        new = _key(labels) if wanted else None
        old = self.firing.get(alert.fingerprint)
        changed = False
        if old is not None and old != new:
            # Resolved: ends when watchkeeper saw it end; silenced, no longer taken, or its
            # labels changed (severity escalated): the old identity ends now.
            end = alert.at if alert.state == "resolved" else now
            self._end(old, end, mono)
            del self.firing[alert.fingerprint]
            changed = True
        if new is not None:
            prev = self.entries.pop(new, None)
            starts = alert.since if prev is None or prev.ends_at is not None else prev.starts_at
            self.entries[new] = Entry(labels, annotations_of(alert, dashboard), starts)
            self.firing[alert.fingerprint] = new
            self.dirty.add(new)
            changed = True
        elif (old is None and alert.state == "resolved" and not alert.silenced
              and route_takes(route, alert)):
            # Ended while this route did not know it firing (fired before a restart, say):
            # tell its end anyway; for an Alertmanager that never saw it this is a no-op.
            key = _key(labels)
            if key not in self.entries:
                self.entries[key] = Entry(labels, annotations_of(alert, dashboard),
                                          alert.since, ends_at=max(alert.at, alert.since),
                                          ended_mono=mono)
                self.dirty.add(key)
                changed = True
        self._bound()
        return changed

    def _end(self, key: Key, at: datetime, mono: float) -> None:
        entry = self.entries.pop(key, None)
        if entry is None:
            return
        entry.ends_at = max(at, entry.starts_at)
        entry.ended_mono = mono
        self.entries[key] = entry  # moved to the end: the newest ended
        self.dirty.add(key)

    def _bound(self) -> None:
        over = len(self.entries) - self.max_alerts
        if over <= 0:
            return
        # The oldest ended ones first, then the oldest firing ones.
        victims = [k for k, e in self.entries.items() if e.ends_at is not None][:over]
        if len(victims) < over:
            victims += [k for k, e in self.entries.items() if e.ends_at is None
                        ][:over - len(victims)]
        for k in victims:
            del self.entries[k]
            self.dirty.discard(k)
        gone = set(victims)
        self.firing = {fp: k for fp, k in self.firing.items() if k not in gone}
        if not self.dropped:
            log.warning("Alertmanager route: more than %d alerts at once; the oldest are no "
                        "longer posted", self.max_alerts)
        self.dropped += len(victims)

    def expire(self, mono: float, retention_s: float) -> None:
        """Forget ended alerts whose end has been re-posted long enough."""
        for key in [k for k, e in self.entries.items()
                    if e.ends_at is not None and mono - e.ended_mono >= retention_s]:
            del self.entries[key]
            self.dirty.discard(key)

    def firing_count(self) -> int:
        return sum(1 for e in self.entries.values() if e.ends_at is None)


# --------------------------------------------------------------------------- posting


class PostError(Exception):
    """A post that Alertmanager did not accept (unreachable, timeout, non-2xx); the message
    names no credentials."""


def alerts_endpoint(base: str) -> str:
    """The v2 alerts endpoint under an Alertmanager's base URL (a route prefix is kept)."""
    parts = urlsplit(base)
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + "/api/v2/alerts",
                       "", ""))


def _client_args(base: str) -> tuple[str, httpx.BasicAuth | None]:
    """The URL without its user info, and that user info as basic auth."""
    parts = urlsplit(base)
    auth = None
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, netloc = netloc.rsplit("@", 1)
        user, _, password = userinfo.partition(":")
        auth = httpx.BasicAuth(unquote(user), unquote(password))
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")), auth


def _reason(exc: BaseException) -> str:
    """Why a request failed, without the URL (which may hold credentials)."""
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    # The operating system's word is deepest in the chain (anyio wraps it).
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError):
            return "connection refused"
        if isinstance(seen, socket.gaierror):
            return "host name not found"
        if isinstance(seen, OSError) and seen.strerror:
            return printable(seen.strerror.lower(), 120)
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, httpx.ConnectError):
        return "cannot connect"
    return type(exc).__name__


def _secrets_of(base: str) -> list[str]:
    """The parts of a route URL that may be secret: its user, password and query values."""
    parts = urlsplit(base)
    found: list[str] = []
    if "@" in parts.netloc:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        found += [p for piece in userinfo.split(":", 1) for p in (piece, unquote(piece))]
    found += [v for _k, v in parse_qsl(parts.query)]
    # Longest first, so that a secret holding another is masked whole.
    return sorted({f for f in found if len(f) >= 2}, key=len, reverse=True)


def _scrub(text: str, secrets: list[str]) -> str:
    """``text`` without the route URL's secrets (an answer may echo them)."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _answer(status: int, body: bytes, secrets: list[str]) -> str:
    text = printable(_scrub(body.decode("utf-8", "replace").strip(), secrets), 200)
    return f"HTTP {status}" + (f": {text}" if text else "")


async def _request(client: httpx.AsyncClient, method: str, url: str, *,
                   auth: httpx.BasicAuth | None, timeout: float,
                   body: list[dict[str, Any]] | None = None) -> tuple[int, bytes]:
    """One request: its status and at most MAX_ANSWER bytes of its answer, all within
    ``timeout`` seconds (httpx's own timeouts are per read: an answer dripping one byte at a
    time would never end). Raises PostError, naming no credentials."""

    async def go() -> tuple[int, bytes]:
        async with client.stream(method, url, json=body, timeout=timeout,
                                 auth=auth or httpx.USE_CLIENT_DEFAULT) as response:
            data = bytearray()
            async for chunk in response.aiter_raw():  # raw: a compressed bomb stays small
                data += chunk
                if len(data) >= MAX_ANSWER:
                    break
            return response.status_code, bytes(data[:MAX_ANSWER])

    try:
        return await wait_for(go(), timeout)
    except asyncio.TimeoutError:
        raise PostError("timed out") from None
    except httpx.HTTPError as exc:
        raise PostError(_reason(exc)) from None


async def post_alerts(client: httpx.AsyncClient, base: str, alerts: list[dict[str, Any]],
                      timeout: float = TIMEOUT_S) -> None:
    """POST ``alerts`` in batches; raises PostError on the first one not accepted."""
    url, auth = _client_args(base)
    endpoint = alerts_endpoint(url)
    for i in range(0, len(alerts), BATCH):
        status, answer = await _request(client, "POST", endpoint, auth=auth, timeout=timeout,
                                        body=alerts[i:i + BATCH])
        if not 200 <= status < 300:
            raise PostError(_answer(status, answer, _secrets_of(base)))


class AlertmanagerRoute:
    """One route's sender: posts changes at once and the whole set every resend interval."""

    def __init__(self, route: RouteConfig, *, client: httpx.AsyncClient, dashboard: str,
                 wall: Wall = utcnow, monotonic: Monotonic = time.monotonic,
                 resend_every_s: float = RESEND_EVERY_S,
                 ends_after_resends: float = ENDS_AFTER_RESENDS,
                 retention_s: float = RESOLVED_RETENTION_S,
                 backoff_initial_s: float = BACKOFF_INITIAL_S,
                 timeout_s: float = TIMEOUT_S, max_alerts: int = MAX_ALERTS) -> None:
        assert route.alertmanager is not None
        self.route = route
        self.base = route.alertmanager
        self.shown = mask_url(self.base)
        self.dashboard = dashboard
        self.state = RouteState(max_alerts=max_alerts)
        self._client = client
        self._wall = wall
        self._mono = monotonic
        self.resend_every_s = resend_every_s
        self.ends_after_s = resend_every_s * ends_after_resends
        self.retention_s = retention_s
        self.backoff_initial_s = backoff_initial_s
        self.timeout_s = timeout_s
        self._wake = asyncio.Event()
        self._full_due = True  # the first post after start is the whole set
        self._next_full = float("-inf")
        self._failures = 0
        self._retry_at = float("-inf")
        self._down_since: float | None = None
        self.posts = 0
        #: What GET /api/notify shows (per process): failed posts, the last success and error.
        self.failed_posts = 0
        self.last_post_ok: bool | None = None
        self.last_ok_at: datetime | None = None
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None

    # ------------------------------------------------------------------ state

    def take(self, alerts: Iterable[Alert]) -> None:
        """Apply alert changes (never waits); the sender posts them."""
        now, mono = self._wall(), self._mono()
        changed = False
        for alert in alerts:
            changed |= self.state.take(self.route, alert, dashboard=self.dashboard, now=now,
                                       mono=mono)
        if changed:
            self._wake.set()

    def use(self, client: httpx.AsyncClient) -> None:
        """Post through ``client`` from now on (the agent's, after a restart)."""
        self._client = client
        self._full_due = True

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def failing_since(self, now: datetime, mono: float) -> datetime | None:
        """When its posts began to fail (wall time), or None."""
        if self._down_since is None:
            return None
        return now - timedelta(seconds=max(0.0, mono - self._down_since))

    def next_retry(self, now: datetime, mono: float) -> datetime | None:
        """When a failed post is tried again (wall time), or None."""
        if self._down_since is None or self._retry_at == float("-inf"):
            return None
        return now + timedelta(seconds=max(0.0, self._retry_at - mono))

    # ------------------------------------------------------------------ sending

    def _due_in(self) -> float:
        """Seconds until the next post is due (0: now)."""
        now = self._mono()
        if now < self._retry_at:
            return self._retry_at - now
        if self.state.dirty or self._full_due:
            return 0.0
        return max(self._next_full - now, 0.0)

    async def run(self) -> None:
        """Post until cancelled."""
        while True:
            delay = self._due_in()
            if delay > 0:
                self._wake.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await wait_for(self._wake.wait(), delay)
                continue
            await self.send_once()

    async def send_once(self) -> bool:
        """One post of what is due: everything when the resend interval is up (or after a
        failure), else the changed alerts. True if Alertmanager accepted it."""
        mono = self._mono()
        self.state.expire(mono, self.retention_s)
        full = self._full_due or mono >= self._next_full
        keys = list(self.state.entries) if full else \
            [k for k in self.state.entries if k in self.state.dirty]
        sent = set(keys)
        self.state.dirty -= sent
        now = self._wall()
        payload = [self.state.entries[k].payload(now, self.ends_after_s, self.dashboard)
                   for k in keys]
        if not payload:  # nothing to say: Alertmanager was not asked, so nothing is known
            if full:
                self._full_due = False
                self._next_full = self._mono() + self.resend_every_s
            return True
        try:
            await post_alerts(self._client, self.base, payload, self.timeout_s)
        except PostError as exc:
            self.state.dirty |= {k for k in sent if k in self.state.entries}
            self._failed(str(exc))
            return False
        except Exception as exc:  # the sender must live on, whatever went wrong
            self.state.dirty |= {k for k in sent if k in self.state.entries}
            self._failed(type(exc).__name__)
            return False
        self.posts += 1
        if full:
            self._full_due = False
            self._next_full = self._mono() + self.resend_every_s
        self._recovered(len(payload))
        return True

    def _failed(self, reason: str) -> None:
        self._failures += 1
        self.failed_posts += 1
        self.last_post_ok = False
        self.last_error = reason
        self.last_error_at = self._wall()
        self._full_due = True  # it may have restarted empty: the whole set when it answers
        delay = min(self.backoff_initial_s * 2 ** (self._failures - 1), self.resend_every_s)
        self._retry_at = self._mono() + delay
        if self._down_since is None:
            self._down_since = self._mono()
            log.warning("Alertmanager %s (route %s) cannot take alerts: %s; retrying with "
                        "backoff, the %d current alert(s) are posted when it answers",
                        self.shown, self.route.name, printable(reason, 2000),
                        len(self.state.entries))

    def _recovered(self, count: int) -> None:
        self._failures = 0
        self.last_post_ok = True
        self.last_ok_at = self._wall()
        self._retry_at = float("-inf")
        if self._down_since is not None:
            log.info("Alertmanager %s (route %s) takes alerts again after %.0fs; %d alert(s) "
                     "posted", self.shown, self.route.name, self._mono() - self._down_since,
                     count)
            self._down_since = None


# --------------------------------------------------------------------------- test


TEST_ALERTNAME = "WatchkeeperTest"
#: How long the test alert fires: long enough to pass a default group_wait (30s).
TEST_ALERT_S = 120.0


def send_test(route: RouteConfig, settings: Settings) -> tuple[bool, str]:
    """Post one short-lived test alert to the route's Alertmanager; ok and what it answered.

    Blocks for at most about twice TIMEOUT_S; runs its own event loop in a worker thread, so
    it may be called from anywhere (from async code, through ``asyncio.to_thread``).
    """
    with ThreadPoolExecutor(1, thread_name_prefix="alertmanager-test") as pool:
        return pool.submit(asyncio.run, _send_test(route, settings)).result()


async def _send_test(route: RouteConfig, settings: Settings) -> tuple[bool, str]:
    if route.alertmanager is None:
        return False, f"route {route.name} is not an Alertmanager route"
    from watchkeeper.runtime import host_name

    base = route.alertmanager
    shown = mask_url(base)
    host = host_name(settings)
    now = utcnow()
    link = dashboard_url(settings)
    alert = {"labels": {"alertname": TEST_ALERTNAME, "severity": "info", "host": host,
                        "instance": host, "route": route.name},
             "annotations": {"summary": f"Test alert from watchkeeper on {host} (route "
                                        f"{route.name}); it ends by itself",
                             "dashboard": link},
             "startsAt": _iso(now), "endsAt": _iso(now + timedelta(seconds=TEST_ALERT_S)),
             "generatorURL": link if _LINK.match(link) else ""}
    url, auth = _client_args(base)
    async with httpx.AsyncClient() as client:
        try:
            status, answer = await _request(client, "POST", alerts_endpoint(url), auth=auth,
                                            timeout=TIMEOUT_S, body=[alert])
        except PostError as exc:
            return False, f"Alertmanager at {shown} is unreachable: {exc}"
        if not 200 <= status < 300:
            return False, (f"Alertmanager at {shown} refused the test alert: "
                           f"{_answer(status, answer, _secrets_of(base))}")
        version = await _version(client, url, auth)
    who = f"Alertmanager {version}" if version else "Alertmanager"
    return True, (f"{who} at {shown} accepted the test alert {TEST_ALERTNAME} (HTTP "
                  f"{status}); its receivers get it after the route's group_wait, and it "
                  f"ends in {TEST_ALERT_S:.0f}s")


async def _version(client: httpx.AsyncClient, url: str, auth: httpx.BasicAuth | None) -> str:
    """Alertmanager's version from /api/v2/status ("" when it does not say)."""
    parts = urlsplit(url)
    status_url = urlunsplit((parts.scheme, parts.netloc,
                             parts.path.rstrip("/") + "/api/v2/status", "", ""))
    try:
        _status, answer = await _request(client, "GET", status_url, auth=auth,
                                         timeout=TIMEOUT_S)
        version = json.loads(answer).get("versionInfo", {}).get("version", "")
    except (PostError, ValueError, AttributeError):
        return ""
    return printable(str(version), 40)
