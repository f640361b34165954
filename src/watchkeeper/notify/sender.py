"""Sending one message through apprise, and keeping route URLs out of every log line.

apprise is synchronous (it does its own HTTP): :meth:`AppriseSender.send` is called from a
worker thread. What the channel answered is apprise's own log of that call, captured per
thread, with the route's secrets masked. Route URLs carry tokens and passwords in every
part (``tgram://BOTTOKEN/chat``, ``slack://T/B/token``, ``json://user:pass@host``):
:func:`secret_pieces` lists what of a URL must never be written anywhere, and
:func:`mask` removes it; the log handlers do the same (``logging_setup.SecretFilter``).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
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


class _ThreadCapture(logging.Handler):
    """Collects apprise's log records of the calling thread while it sends."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self._lines: dict[int, list[str]] = {}
        self._lock = threading.Lock()

    def begin(self) -> None:
        with self._lock:
            self._lines[threading.get_ident()] = []

    def end(self) -> list[str]:
        with self._lock:
            return self._lines.pop(threading.get_ident(), [])

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock:
            lines = self._lines.get(threading.get_ident())
            if lines is not None and record.levelno >= logging.INFO:
                lines.append(f"{record.levelname}: {record.getMessage()}")


_CAPTURE = _ThreadCapture()
_INSTALLED = False
_INSTALL_LOCK = threading.Lock()


def _install() -> None:
    global _INSTALLED
    with _INSTALL_LOCK:
        if not _INSTALLED:
            logger = logging.getLogger("apprise")
            logger.addHandler(_CAPTURE)
            if logger.level == logging.NOTSET or logger.level > logging.INFO:
                logger.setLevel(logging.INFO)
            _INSTALLED = True


class AppriseSender:
    """Sends through apprise (blocking: call it from a worker thread)."""

    def __init__(self, app_id: str = "watchkeeper") -> None:
        self.app_id = app_id
        _install()

    def send(self, url: str, title: str, body: str, notify_type: str) -> SendResult:
        """One message to one apprise URL; never raises."""
        import apprise

        secrets = secret_pieces(url)
        _CAPTURE.begin()
        ok = False
        try:
            asset = apprise.AppriseAsset(app_id=self.app_id, app_desc=self.app_id,
                                         app_url="")
            ap = apprise.Apprise(asset=asset)
            if not ap.add(url):
                lines = _CAPTURE.end()
                return SendResult(False, mask("apprise does not understand this URL (check "
                                              "its scheme and parts)" +
                                              (": " + "; ".join(lines) if lines else ""),
                                              secrets))
            ok = bool(ap.notify(body=body, title=title,
                                notify_type=apprise.NotifyType(notify_type),
                                body_format=apprise.NotifyFormat.TEXT))
        except Exception as exc:  # a plugin bug must not take the delivery loop down
            _CAPTURE.end()
            return SendResult(False, mask(f"{type(exc).__name__}: {exc}", secrets))
        lines = _CAPTURE.end()
        answer = "; ".join(lines) or ("sent" if ok else "not sent (apprise said nothing more)")
        return SendResult(ok, mask(answer, secrets))
