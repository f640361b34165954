"""The terminal UI's small pure parts: bus rates, durations, config paths, how values look."""

from __future__ import annotations

import pytest

from watchkeeper.cli.tui.look import Look
from watchkeeper.cli.tui.views.alerts import parse_duration
from watchkeeper.cli.tui.views.bus import rate
from watchkeeper.cli.tui.views.config import flatten, patch_for


@pytest.mark.parametrize(("before", "after", "seconds", "expected"), [
    (10, 30, 2.0, 10.0),
    (5, 5, 2.0, 0.0),
    (30, 10, 2.0, None),     # the counter went back: a restarted server, no rate
    (10, 30, 0.0, None),     # no time between two readings
    (None, 30, 2.0, None),   # a topic new since the last reading
    ("10", 30, 2.0, None),   # not a counter
])
def test_rate_between_two_readings(before: object, after: object, seconds: float,
                                   expected: float | None) -> None:
    assert rate(before, after, seconds) == expected


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("30m", 1800), (" 2h ", 7200), ("1d", 86400), ("1.5h", 5400),
    ("2y", None), ("0s", None), ("", None), ("h", None), ("-1h", None), ("1e9h", None)])
def test_durations_as_the_silence_command_reads_them(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


def test_flatten_and_patch_for_a_setting() -> None:
    config = {"thresholds": {"cpu_warning": 75.0}, "services": {}, "known_jobs": ["a"]}
    assert flatten(config) == [("thresholds.cpu_warning", 75.0), ("services", {}),
                               ("known_jobs", ["a"])]
    assert patch_for("thresholds.cpu_warning", "80") == {"thresholds": {"cpu_warning": 80}}
    assert patch_for("api.host", "localhost") == {"api": {"host": "localhost"}}
    assert patch_for("analyzer.known_jobs", '["backup"]') == {
        "analyzer": {"known_jobs": ["backup"]}}


def test_plain_has_no_emoji_and_every_value_is_escaped() -> None:
    assert Look().icon("critical") == "🔥 " and Look(plain=True).icon("critical") == ""
    assert str(Look(plain=True).state("critical")) == "critical"
    cell = Look().cell("\x1b[2J[bold]x[/bold]\n")
    assert cell.plain == "\\x1b[2J[bold]x[/bold]\\n" and not cell.spans
    assert Look().cell("A" * 500, 100).plain.endswith("…")
    assert Look().cell(None).plain == "-"
