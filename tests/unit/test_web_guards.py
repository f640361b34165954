"""The pieces behind the hostile-HTTP guarantees: Host matching, the connection budget and
the damping of repeated log lines (clocks injected)."""

from __future__ import annotations

import ipaddress
import logging

import pytest

from watchkeeper.api.connections import (
    AGENT_FD_RESERVE,
    BACKLOG,
    MIN_CONNECTIONS,
    connection_budget,
)
from watchkeeper.api.hosts import AllowedHosts, BadHostError, IPAddress, parse_host
from watchkeeper.config import ConfigError, validate
from watchkeeper.logging_setup import RepeatFilter

from ..conftest import FakeClock


def test_parse_host_forms() -> None:
    assert parse_host(b"LocalHost.:8000") == "localhost"
    assert parse_host(b"[::1]:1") == ipaddress.ip_address("::1")
    assert parse_host(b"127.0.0.1") == ipaddress.ip_address("127.0.0.1")
    assert parse_host(b"2130706433") == "2130706433"  # a name, never an address
    for bad in (b"", b"::1", b"[::1", b"a b", b"h:99999", b"\xff"):
        with pytest.raises(BadHostError):
            parse_host(bad)


def test_a_wildcard_bind_answers_to_this_machines_addresses_read_again_on_a_miss() -> None:
    clock = FakeClock()
    reads: list[int] = []
    current = {ipaddress.ip_address("192.0.2.5")}

    def addresses() -> set[IPAddress]:
        reads.append(1)
        return set(current)

    allowed = AllowedHosts.for_server("0.0.0.0", addresses_of_machine=addresses, clock=clock)
    assert allowed.allows(ipaddress.ip_address("192.0.2.5"))
    assert not allowed.allows(ipaddress.ip_address("192.0.2.6"))
    assert len(reads) == 1  # a miss within 30 s does not read again
    current.add(ipaddress.ip_address("192.0.2.6"))  # DHCP gave a new address
    clock.advance(31)
    assert allowed.allows(ipaddress.ip_address("192.0.2.6"))
    import socket

    assert allowed.allows(socket.gethostname().lower())  # bound elsewhere: its own name


def test_a_loopback_bind_does_not_answer_to_the_machines_name_or_addresses() -> None:
    import socket

    allowed = AllowedHosts.for_server("127.0.0.1", addresses_of_machine=lambda: {
        ipaddress.ip_address("192.0.2.5")})
    assert not allowed.allows(ipaddress.ip_address("192.0.2.5"))
    name = socket.gethostname().lower()
    assert name == "localhost" or not allowed.allows(name)


def test_a_star_turns_the_check_off_and_a_bad_pattern_is_a_config_error() -> None:
    assert AllowedHosts.for_server("127.0.0.1", ["*"]).allows("anything.example")
    for bad in ("http://x.example", "x.example:80", "*.", "a*.example", "x.example/path"):
        with pytest.raises(ConfigError, match=r"api\.allowed_hosts"):
            validate({"api": {"allowed_hosts": [bad]}})
    with pytest.raises(ConfigError, match="max_streams"):
        validate({"api": {"max_streams": 300, "max_connections": 256}})


def test_the_connection_budget_keeps_the_agents_share() -> None:
    assert connection_budget(256, 1_048_576, 30) == 256
    assert connection_budget(256, 400, 21) == 400 - 21 - AGENT_FD_RESERVE - BACKLOG
    assert connection_budget(256, 100, 21) == MIN_CONNECTIONS
    assert connection_budget(256, 0, 21) == 256  # no limit known (Windows)


def _record(msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("asyncio", logging.ERROR, __file__, 1, msg, args, None)


def test_a_repeated_line_is_logged_once_a_minute_with_a_count() -> None:
    clock = FakeClock()
    damp = RepeatFilter(clock=clock)
    line = "socket.accept() out of system resource\nsocket: %s\n"
    assert damp.filter(_record(line, "a"))
    assert not any(damp.filter(_record(line, n)) for n in range(9_999))
    assert damp.filter(_record("another line"))  # other lines pass
    clock.advance(60)
    again = _record(line, "100%")
    assert damp.filter(again)
    assert again.getMessage().endswith("(9999 more like this in the last 60 s not logged)")
    assert "100%" in again.getMessage()


@pytest.mark.parametrize(("soft", "hard", "after"), [(100, 1000, 473), (100, 300, 300),
                                                     (2000, 4000, 2000)],
                         ids=["raised-to-the-need", "raised-to-the-hard-limit",
                              "already-enough-left-alone"])
def test_the_open_file_limit_is_raised_only_as_far_as_needed(soft: int, hard: int,
                                                             after: int) -> None:
    import resource
    import subprocess
    import sys

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    code = ("import resource; from watchkeeper.api.connections import raise_fd_limit; "
            "print(raise_fd_limit(473), resource.getrlimit(resource.RLIMIT_NOFILE)[0])")
    out = subprocess.run([sys.executable, "-c", code], preexec_fn=limit, capture_output=True,
                         text=True, check=True, timeout=30).stdout.split()
    assert out == [str(after), str(after)]
