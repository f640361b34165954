"""Sending one message through apprise, and keeping route URLs out of every log line.

apprise is synchronous (it does its own HTTP): :meth:`AppriseSender.send` is called from a
worker thread. What the channel answered is apprise's own log of that call (its
``log_callback``), with the route's secrets masked. Route URLs carry tokens and passwords in every
part (``tgram://BOTTOKEN/chat``, ``slack://T/B/token``, ``json://user:pass@host``):
:func:`secret_pieces` lists what of a URL must never be written anywhere, and
:func:`mask` removes it; the log handlers do the same (``logging_setup.SecretFilter``).
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote

from watchkeeper.redact import MASK, is_secret_name

_HOSTLIKE = re.compile(r"^(?:\d{1,3}(?:\.\d{1,3}){3}|[A-Za-z][A-Za-z0-9-]*(?:\.[A-Za-z0-9-]+)+"
                       r"|localhost)$")


def secret_pieces(url: str) -> list[str]:
    """The parts of an apprise URL that are secrets: the URL, its password, token-like
    path and host parts, and secret-named query values (longest first)."""
    pieces = {url}
    _scheme, sep, rest = url.partition("://")
    if not sep:
        rest = url
    main, _q, query = rest.partition("?")
    userinfo, at, _hostpart = main.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        if colon and len(password) >= 3:
            pieces.add(password)
        if len(user) >= 8 and any(c.isdigit() for c in user):
            pieces.add(user)  # some schemes put the API key there
    for part in re.split(r"[/:@,#]", main):
        if len(part) < 8 or _HOSTLIKE.match(part):
            continue
        if len(part) >= 20 or any(c.isdigit() for c in part):
            pieces.add(part)
    for key, value in parse_qsl(query, keep_blank_values=False):
        secretish = is_secret_name(key) or key.lower() in ("pass", "key", "pw")
        if len(value) >= 3 and (secretish or len(value) >= 20):
            pieces.add(value)
    out = set()
    for p in pieces:
        out.add(p)
        out.add(unquote(p))
    return sorted((p for p in out if len(p) >= 3), key=len, reverse=True)


def mask(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret piece replaced by ***."""
    for piece in secrets:
        if piece and piece in text:
            text = text.replace(piece, MASK)
    return text


@dataclass(frozen=True)
class SendResult:
    """Whether the channel took the message, and what apprise said (secrets masked)."""

    ok: bool
    answer: str


class Sender(Protocol):
    """What delivers one message to one URL (AppriseSender; tests may count calls)."""

    def send(self, url: str, title: str, body: str, notify_type: str) -> SendResult: ...


def load_apprise() -> Any:
    """apprise, imported on first use (its import costs a third of a second)."""
    with warnings.catch_warnings():
        # Its imghdr import warns on Python 3.11-3.12: not ours to fix, and not an error.
        warnings.simplefilter("ignore", DeprecationWarning)
        import apprise

        with contextlib.suppress(ImportError):
            import imghdr  # noqa: F401 - apprise imports it while sending; warned once here
    return apprise


def url_problem(url: str) -> str | None:
    """Why apprise cannot use ``url`` (words without the URL, a secret), or None."""
    scheme, sep, _rest = url.partition("://")
    if not sep or not scheme:
        return "url must be an apprise URL like json://HOST/PATH or slack://TOKENS"
    apprise = load_apprise()
    try:
        ok = apprise.Apprise().add(url)
    except Exception:
        ok = False
    if not ok:
        return (f"apprise does not understand this {scheme[:20]!r} URL (unknown scheme or a "
                "missing part; see apprise's list of services)")
    return None


class AppriseSender:
    """Sends through apprise (blocking: call it from a worker thread)."""

    def __init__(self, app_id: str = "watchkeeper") -> None:
        self.app_id = app_id

    def send(self, url: str, title: str, body: str, notify_type: str) -> SendResult:
        """One message to one apprise URL; never raises."""
        apprise = load_apprise()
        secrets = secret_pieces(url)
        lines: list[str] = []

        def heard(entry: Any, _service: Any) -> None:
            lines.append(f"{entry.level}: {entry.message}")

        try:
            asset = apprise.AppriseAsset(app_id=self.app_id, app_desc=self.app_id,
                                         app_url="")
            ap = apprise.Apprise(asset=asset)
            if not ap.add(url):
                return SendResult(False, mask("apprise does not understand this URL (check "
                                              "its scheme and parts)", secrets))
            # What apprise logs of this one call is what the channel answered.
            ok = bool(ap.notify(body=body, title=title,
                                notify_type=apprise.NotifyType(notify_type),
                                body_format=apprise.NotifyFormat.TEXT,
                                log_callback=heard, log_level=logging.INFO))
        except Exception as exc:  # a plugin bug must not take the delivery loop down
            return SendResult(False, mask(f"{type(exc).__name__}: {exc}", secrets))
        if not ok:  # what went wrong, without apprise's "Notifying 1 service(s)." before it
            lines = [line for line in lines if not line.startswith("INFO:")] or lines
        answer = "; ".join(lines) or ("sent" if ok else "not sent (apprise said nothing more)")
        return SendResult(ok, mask(answer, secrets))
