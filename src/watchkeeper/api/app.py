"""create_app(runtime): the FastAPI application over one running Runtime."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import time
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from watchkeeper import __version__
from watchkeeper.api.auth import READ_SCHEME, Tokens, is_loopback, load_or_create_token
from watchkeeper.api.hosts import AllowedHosts, HostGuardMiddleware
from watchkeeper.api.schemas import ErrorBody
from watchkeeper.runtime import Runtime

log = logging.getLogger(__name__)

#: Largest request body accepted; the API takes small JSON documents only.
MAX_BODY_BYTES = 64 * 1024

#: Largest request line and headers accepted together. h11 checks its own 16 KiB only
#: while a head is incomplete, so one that arrives in a single read could be larger.
MAX_HEAD_BYTES = 16 * 1024

#: For JSON and everything else: nothing may load, run or frame anything.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)

_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]


#: Pages whose styles all come from files (the dashboard): no inline styles allowed there.
STRICT_STYLE_PAGES = frozenset({"/"})


def _html_csp(body: bytes, inline_styles: bool = True) -> bytes:
    """A CSP for an HTML page: our own files, plus exactly its inline scripts by hash."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(m).digest()).decode() + "'"
        for m in _INLINE_SCRIPT.findall(body))
    # Swagger UI sets style attributes from its script, so styles need 'unsafe-inline';
    # scripts stay pinned to our origin and the hashes of this very page.
    styles = "'self' 'unsafe-inline'" if inline_styles else "'self'"
    return (f"default-src 'none'; script-src 'self' {hashes}; style-src {styles}; "
            "img-src 'self' data:; connect-src 'self'; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'none'").encode()


def _error(status: int, error: str, detail: Any = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(ErrorBody(error=error, detail=detail).model_dump(mode="json"),
                        status_code=status, headers=headers)


def _error_message(status: int, error: str, detail: str) -> tuple[Message, Message]:
    body = ErrorBody(error=error, detail=detail).model_dump_json().encode()
    start: Message = {"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"content-security-policy", API_CSP.encode()), *_SECURITY_HEADERS]}
    return start, {"type": "http.response.body", "body": body}


class GuardMiddleware:
    """Refuses oversized heads and bodies and NUL bytes in the URL; sets security headers.

    Pure ASGI (not BaseHTTPMiddleware) so the body limit also holds for chunked uploads
    that carry no Content-Length.
    """

    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        query: bytes = scope.get("query_string", b"")
        if b"%00" in raw_path.lower() or b"%00" in query.lower() or "\x00" in scope["path"]:
            await self._reply(send, 400, "bad_request", "the URL must not contain NUL characters")
            return
        headers = scope.get("headers", [])
        if len(raw_path) + len(query) + sum(len(k) + len(v) + 4 for k, v in headers) \
                > MAX_HEAD_BYTES:
            await self._reply(send, 431, "request_header_fields_too_large",
                              f"the URL and headers are limited to {MAX_HEAD_BYTES} bytes")
            return
        for name, value in headers:
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_body
                except ValueError:
                    await self._reply(send, 400, "bad_request", "invalid Content-Length")
                    return
                if too_big:
                    await self._reply(send, 413, "payload_too_large",
                                      f"request bodies are limited to {self.max_body} bytes")
                    return
        received = 0
        started = False
        too_large = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    too_large = True
                    raise _BodyTooLargeError
            return message

        html: dict[str, Any] = {}

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if too_large:
                # The framework turned our error into its own answer (400 "error parsing
                # the body"); the client gets the real reason instead, once.
                if not started:
                    started = True
                    await self._reply(send, 413, "payload_too_large",
                                      f"request bodies are limited to {self.max_body} bytes")
                return
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() not in (b"content-security-policy",)]
                ctype = dict(headers).get(b"content-type", b"")
                present = {k.lower() for k, _ in headers}
                headers += [h for h in _SECURITY_HEADERS if h[0] not in present]
                if ctype.startswith(b"text/html"):
                    # Hold the start until the body is known: the CSP hashes its scripts.
                    html["start"] = {**message, "headers": headers}
                    html["body"] = b""
                    return
                headers.append((b"content-security-policy", API_CSP.encode()))
                await send({**message, "headers": headers})
                return
            if "start" in html and message["type"] == "http.response.body":
                html["body"] += message.get("body", b"")
                if message.get("more_body", False):
                    return
                start = html["start"]
                start["headers"] = [(k, v) for k, v in start["headers"]
                                    if k.lower() != b"content-length"] + [
                    (b"content-length", str(len(html["body"])).encode()),
                    (b"content-security-policy", _html_csp(
                        html["body"], inline_styles=scope["path"] not in STRICT_STYLE_PAGES))]
                await send(start)
                await send({"type": "http.response.body", "body": html["body"]})
                return
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _BodyTooLargeError:
            if not started:
                await self._reply(send, 413, "payload_too_large",
                                  f"request bodies are limited to {self.max_body} bytes")

    @staticmethod
    async def _reply(send: Send, status: int, error: str, detail: str) -> None:
        start, body = _error_message(status, error, detail)
        await send(start)
        await send(body)


class _BodyTooLargeError(Exception):
    """Raised inside receive() when a streamed body passes the limit."""


def _install_error_handlers(app: FastAPI) -> None:
    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        try:
            name = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
        except ValueError:
            name = "error"
        detail = exc.detail if isinstance(exc.detail, (str, list, dict)) else str(exc.detail)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = _allowed(app, request)
        return _error(exc.status_code, name, detail, headers=headers or None)

    async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        # Only where and why: echoing the input could echo a secret someone mistyped.
        problems = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))}
                    for e in exc.errors()]
        return _error(422, "validation_error", problems)

    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("API %s %s failed", request.method, request.url.path, exc_info=exc)
        return _error(500, "internal_error", "the server could not complete this request; "
                                             "the log has the details")

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, server_error)


def _allowed(app: FastAPI, request: Request) -> str:
    """Every method some route serves on this path (Starlette names only the first route's)."""
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


def _install_openapi(app: FastAPI, reads_open: bool) -> None:
    """The document as this app behaves: where reads are open, they declare no token."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            from watchkeeper.api.routes.config import config_patch_schemas

            schema.setdefault("components", {}).setdefault("schemas", {}).update(
                config_patch_schemas())
            if reads_open:
                for ops in schema.get("paths", {}).values():
                    for op in ops.values():
                        kept = [s for s in op.get("security", []) if READ_SCHEME not in s]
                        if kept:
                            op["security"] = kept
                        else:
                            op.pop("security", None)
                schema.get("components", {}).get("securitySchemes", {}).pop(READ_SCHEME, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(runtime: Runtime, *, bind_host: str | None = None) -> FastAPI:
    """Build the API for ``runtime``; ``bind_host`` (default api.host) decides read auth."""
    from watchkeeper.api.routes import (
        actions,
        alerts,
        config,
        dashboard,
        events,
        history,
        hosts,
        metrics,
        notify,
        services,
        system,
    )

    settings = runtime.config.current
    host = bind_host if bind_host is not None else settings.api.host
    read = settings.api.read_token.get_secret_value() if settings.api.read_token else None
    app = FastAPIOffline(
        title="watchkeeper", version=__version__,
        description="Host monitoring and self-healing. Mutations need the operator token "
                    "(Authorization: Bearer ...); reads need a token only when the API is "
                    "bound to a non-loopback address.",
        responses={400: {"model": ErrorBody}, 401: {"model": ErrorBody},
                   403: {"model": ErrorBody},
                   413: {"model": ErrorBody}, 421: {"model": ErrorBody},
                   422: {"model": ErrorBody}, 431: {"model": ErrorBody},
                   500: {"model": ErrorBody}})
    app.state.runtime = runtime
    app.state.tokens = Tokens(operator=load_or_create_token(settings), read=read or None,
                              reads_open=is_loopback(host),
                              named={name: token.get_secret_value()
                                     for name, token in settings.api.operators.items()})
    app.state.started = time.monotonic()
    app.state.streams = set()  # open /api/events streams (journal: started on first use)
    app.state.max_streams = settings.api.max_streams  # serve lowers it under a low ulimit
    _install_error_handlers(app)
    _install_openapi(app, app.state.tokens.reads_open)
    for module in (system, metrics, alerts, actions, services, notify, config, events,
                   history, hosts, dashboard):
        app.include_router(module.router)
    app.add_middleware(GuardMiddleware)
    # Added last, so it runs first: a request for another server's name reaches nothing.
    app.add_middleware(HostGuardMiddleware,
                       allowed=AllowedHosts.for_server(host, settings.api.allowed_hosts))
    return app
