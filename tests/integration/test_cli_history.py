"""`watchkeeper history` as a user runs it: a real subprocess against a real `watchkeeper
serve` (the `server` fixture of tests/integration/conftest.py, whose configuration makes a
memory warning fire at once: an incident to show)."""

from __future__ import annotations

import json
import re

from .served import Server
from .served import until as _until
from .test_cli_remote import _one_line


def _incident(srv: Server) -> dict[str, object] | None:
    body = srv.api("GET", "/api/history").json()
    found = [i for i in body["incidents"]
             if any(a["metric"] == "memory.percent" for a in i["alerts"])]
    return found[0] if found else None


def test_history_lists_the_open_incident_and_its_time_to_detect(server: Server) -> None:
    incident = _until(lambda: _incident(server), "the memory incident in the history")
    out = server.wk("history")
    assert out.returncode == 0, out.stderr
    assert re.search(r"^health history \d{4}-\d\d-\d\d \d\d:\d\d:\d\d - ", out.stdout), out.stdout
    row = next(line for line in out.stdout.splitlines() if "Memory is" in line)
    assert " open " in row and " warning " in row, row
    assert "time to detect: mean " in out.stdout
    assert re.search(r"/sleeper +\d+\.\d\d% ", out.stdout), out.stdout  # its uptime
    as_json = server.wk("history", "--json", "--from", "-1h", "--to", "now")
    assert as_json.returncode == 0, as_json.stderr
    body = json.loads(as_json.stdout)
    assert incident["id"] in [i["id"] for i in body["incidents"]]


def test_a_row_stays_one_line_piped_and_its_short_columns_never_wrap(server: Server) -> None:
    """Piped into grep (no terminal, no $COLUMNS), an incident is one whole line; in an
    80-column terminal the long title folds, never the time, state or severity."""
    _until(lambda: _incident(server), "the memory incident in the history")
    piped = server.wk("history", COLUMNS="")
    assert piped.returncode == 0, piped.stderr
    row = [line for line in piped.stdout.splitlines() if "Memory is" in line]
    assert len(row) == 1 and re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d +open +warning ",
                                        row[0]), piped.stdout
    narrow = server.wk("history", COLUMNS="80")
    assert narrow.returncode == 0, narrow.stderr
    assert all(len(line) <= 80 for line in narrow.stdout.splitlines()), narrow.stdout
    row = next(line for line in narrow.stdout.splitlines() if "Memory is" in line)
    assert re.search(r"^ \d\d-\d\d \d\d:\d\d +open +warning ", row), narrow.stdout


def test_history_of_a_quiet_range_says_so(server: Server) -> None:
    out = server.wk("history", "--from", "2026-01-01T00:00:00Z", "--to",
                    "2026-01-01T01:00:00Z")
    assert out.returncode == 0, out.stderr
    assert "no incidents in this range" in out.stdout
    assert "no remediation attempt finished in this range" in out.stdout


def test_a_bad_range_exits_1_with_the_servers_reason(server: Server) -> None:
    out = server.wk("history", "--from", "yesterday")
    assert out.returncode == 1 and out.stdout == ""
    assert _one_line(out.stderr).startswith("watchkeeper: 422: from='yesterday' is not a time")
