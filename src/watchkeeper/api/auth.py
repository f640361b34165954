"""API tokens: the operator token (mutations) and the optional read-only token."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from watchkeeper.config import Settings

log = logging.getLogger(__name__)

TOKEN_FILE_NAME = "api_token"

#: Scheme names in the OpenAPI document; ReadToken is dropped from it where reads are open.
READ_SCHEME = "ReadToken"
OPERATOR_SCHEME = "OperatorToken"

# auto_error=False: we answer 401 with our own JSON error, not FastAPI's 403.
_read_bearer = HTTPBearer(auto_error=False, scheme_name=READ_SCHEME,
                          description="the read token or the operator token")
_operator_bearer = HTTPBearer(auto_error=False, scheme_name=OPERATOR_SCHEME,
                              description="the operator token")
ReadCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_read_bearer)]
OperatorCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_operator_bearer)]


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def token_path(settings: Settings) -> Path:
    """Where a generated operator token is kept."""
    return settings.storage.path / TOKEN_FILE_NAME


def load_or_create_token(settings: Settings) -> str:
    """The configured operator token, else the stored one, else a new one saved with 0600."""
    if settings.api.token is not None and settings.api.token.get_secret_value():
        return settings.api.token.get_secret_value()
    path = token_path(settings)
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        text = ""
    if text:
        if os.name == "posix" and path.stat().st_mode & 0o077:
            log.warning("%s was readable by others; restricting it to its owner", path)
            path.chmod(0o600)
        return text
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    # The mode is set at creation: the token is never readable by others, not even for
    # the moment between a write and a chmod.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    path.chmod(0o600)  # O_CREAT's mode is masked by the umask; an existing file keeps its own
    log.info("generated an API operator token in %s", path)
    return token


@dataclass(frozen=True)
class Tokens:
    """The tokens one app accepts, and whether reads need one at all."""

    operator: str
    read: str | None
    reads_open: bool
    named: Mapping[str, str] = field(default_factory=dict)  # operator name -> token

    def operator_name(self, given: str | None) -> str | None:
        """The named operator ``given`` belongs to, or None (every token is compared, in
        constant time each)."""
        found = None
        if given is not None:
            for name, token in self.named.items():
                if hmac.compare_digest(given.encode(), token.encode()):
                    found = name
        return found

    def is_operator(self, given: str | None) -> bool:
        if given is None:
            return False
        shared = hmac.compare_digest(given.encode(), self.operator.encode())
        return shared or self.operator_name(given) is not None

    def may_read(self, given: str | None) -> bool:
        if self.reads_open or self.is_operator(given):
            return True
        return given is not None and self.read is not None and hmac.compare_digest(
            given.encode(), self.read.encode())


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail,
                         headers={"WWW-Authenticate": 'Bearer realm="watchkeeper"'})


def _given(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    return None if credentials is None else credentials.credentials


def require_read(request: Request, credentials: ReadCredentials) -> None:
    """Reads are open on loopback; bound elsewhere they need the read or operator token."""
    tokens: Tokens = request.app.state.tokens
    if not tokens.may_read(_given(credentials)):
        raise _unauthorized("a valid bearer token is required")


def require_operator(request: Request, credentials: OperatorCredentials) -> None:
    """Every mutation needs the operator token, shared or named (then the request acts as
    that operator: ``request.state.operator``)."""
    tokens: Tokens = request.app.state.tokens
    given = _given(credentials)
    if not tokens.is_operator(given):
        raise _unauthorized("the operator bearer token is required for this action")
    request.state.operator = tokens.operator_name(given)
