"""The Host header check: the API answers only to names of this server (DNS rebinding)."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import re
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Receive, Scope, Send

from watchkeeper.api.auth import is_loopback

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: A name as a Host header may carry it (RFC 3986 reg-name, as browsers send them).
_NAME = re.compile(r"[a-z0-9]([a-z0-9_-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9_-]*[a-z0-9])?)*")
_PORT = re.compile(r"[0-9]{0,5}")

#: Seconds between two readings of this machine's addresses (a wildcard bind only).
ADDRESSES_REFRESH_S = 30.0


class BadHostError(ValueError):
    """The Host header is not ``host[:port]``."""


def parse_host(value: bytes) -> str | IPAddress:
    """The name (lower case, no trailing dot) or the address in a Host header value."""
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        raise BadHostError("it is not ASCII") from None
    if text.startswith("["):
        inside, bracket, port = text[1:].partition("]")
        if not bracket or (port and not port.startswith(":")):
            raise BadHostError("an IPv6 address must be written [address] or [address]:port")
        port = port[1:]
        try:
            address: str | IPAddress = ipaddress.IPv6Address(inside)
        except ValueError:
            raise BadHostError("not an IPv6 address between the brackets") from None
    else:
        if text.count(":") > 1:
            raise BadHostError("an IPv6 address must be written in brackets")
        address, _, port = text.partition(":")
        address = address.lower()
        if address.endswith("."):
            address = address[:-1]
        if not address or len(address) > 253 or not _NAME.fullmatch(address):
            raise BadHostError("not a host name")
        with contextlib.suppress(ValueError):  # else a name
            address = ipaddress.IPv4Address(address)
    if not _PORT.fullmatch(port) or (port and int(port) > 65535):
        raise BadHostError("the port is not a number from 0 to 65535")
    return address


def machine_addresses() -> set[IPAddress]:
    """Every address of this machine's interfaces (for a server bound to 0.0.0.0 or ::)."""
    import psutil

    found: set[IPAddress] = set()
    for addrs in psutil.net_if_addrs().values():
        for addr in addrs:
            if addr.family in (socket.AF_INET, socket.AF_INET6):
                try:
                    found.add(ipaddress.ip_address(addr.address.split("%", 1)[0]))
                except ValueError:
                    continue
    return found


@dataclass
class AllowedHosts:
    """The names and addresses this server answers to."""

    names: frozenset[str]
    patterns: tuple[str, ...] = ()  # "*.example.com" -> ".example.com"
    addresses: frozenset[IPAddress] = frozenset()
    any_address: bool = False  # bound to 0.0.0.0 or ::, so every address of this machine
    anything: bool = False  # '*' in api.allowed_hosts
    addresses_of_machine: Callable[[], set[IPAddress]] = machine_addresses
    clock: Callable[[], float] = time.monotonic
    _machine: set[IPAddress] = field(default_factory=set)
    _read_at: float | None = None

    @classmethod
    def for_server(cls, bind_host: str, extra: Iterable[str] = (), *,
                   addresses_of_machine: Callable[[], set[IPAddress]] = machine_addresses,
                   clock: Callable[[], float] = time.monotonic) -> AllowedHosts:
        """Loopback names, the bound address and, bound elsewhere, this machine's names."""
        names = {"localhost"}
        addresses: set[IPAddress] = set()
        any_address = False
        bound = bind_host.strip("[]").lower()
        try:
            ip = ipaddress.ip_address(bound)
        except ValueError:
            names.add(bound.rstrip("."))
        else:
            addresses.add(ip)
            any_address = ip.is_unspecified
        if not is_loopback(bind_host):
            # Reached from elsewhere, it is reached by this machine's own names.
            names |= {n.lower().rstrip(".") for n in (socket.gethostname(), socket.getfqdn())
                      if n}
        patterns: list[str] = []
        anything = False
        for entry in extra:
            entry = entry.lower().rstrip(".")
            if entry == "*":
                anything = True
            elif entry.startswith("*."):
                patterns.append(entry[1:])
            elif entry.startswith("["):
                addresses.add(ipaddress.IPv6Address(entry.strip("[]")))
            else:
                try:
                    addresses.add(ipaddress.IPv4Address(entry))
                except ValueError:
                    names.add(entry)
        return cls(names=frozenset(names), patterns=tuple(patterns),
                   addresses=frozenset(addresses), any_address=any_address,
                   anything=anything, addresses_of_machine=addresses_of_machine,
                   clock=clock)

    def allows(self, host: str | IPAddress) -> bool:
        """Whether ``host`` (from parse_host) names this server."""
        if self.anything:
            return True
        if isinstance(host, str):
            return host in self.names or any(host.endswith(p) for p in self.patterns)
        mapped = getattr(host, "ipv4_mapped", None)
        for ip in (host, mapped) if mapped is not None else (host,):
            if ip.is_loopback or ip in self.addresses:
                return True
        return self.any_address and self._of_machine(host)

    def _of_machine(self, ip: IPAddress) -> bool:
        # Addresses come and go (DHCP, VPNs): a miss reads them again, at most so often.
        now = self.clock()
        if ip not in self._machine and (
                self._read_at is None or now - self._read_at >= ADDRESSES_REFRESH_S):
            self._machine = self.addresses_of_machine()
            self._read_at = now
        return ip in self._machine


class HostGuardMiddleware:
    """Refuses a request whose Host header names another server, before anything else runs.

    A web page that rebinds its own name to 127.0.0.1 makes the browser send
    ``Host: its-name``; every route would otherwise answer it as if it came from a page of
    ours. Pure ASGI (not BaseHTTPMiddleware), so streams pass through untouched. A request
    without a Host header (HTTP/1.0) is let through: browsers always send one, and a page
    cannot remove it, so its absence never comes from a web page.
    """

    def __init__(self, app: ASGIApp, allowed: AllowedHosts) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        values = [v for k, v in scope.get("headers", []) if k == b"host"]
        problem = None
        if len(values) > 1:
            problem = (400, "bad_request", "a request must carry one Host header, not "
                                           f"{len(values)}")
        elif values:
            try:
                host = parse_host(values[0])
            except BadHostError as exc:
                problem = (400, "bad_request", f"the Host header is malformed: {exc}")
            else:
                if not self.allowed.allows(host):
                    shown = f"[{host}]" if isinstance(host, ipaddress.IPv6Address) else str(host)
                    log.warning("refused a request for Host %r, which does not name this "
                                "server (a DNS rebinding attempt looks like this); "
                                "api.allowed_hosts lists more names", shown)
                    problem = (421, "misdirected_request",
                               f"this server does not answer to the name {shown!r} in the "
                               "Host header. If you reach it under that name (a reverse "
                               "proxy, a DNS name), add it to api.allowed_hosts in the "
                               f"config file, e.g. allowed_hosts: [\"{shown}\"] or "
                               "[\"*.example.com\"]")
        if problem is None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        from watchkeeper.api.app import _error_message  # app.py imports this module

        for message in _error_message(*problem):
            await send(message)
