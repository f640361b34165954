"""Security corpus: hostile ranges for the health history (GET /api/history, `watchkeeper
history --from --to`).

Each case is a from/to a reader (anyone with the read token, or anyone on loopback) could
send. The promise: a 422 with the reason, nothing written, and no range so long or so far
out that the answer costs more than one bounded read (366 days at most, 50,000 events).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from watchkeeper.health_history import RangeError, resolve_range

from ..integration.test_api_harness import api_settings, serve_api

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=timezone.utc)
#: In the future of NOW and of the real clock (the HTTP test asks a real server), whatever
#: today's date is.
FUTURE = (max(NOW, datetime.now(timezone.utc)) + timedelta(days=400)).strftime(
    "%Y-%m-%dT%H:%M:%SZ")

#: (from, to) -> words the refusal must contain.
HOSTILE: dict[str, tuple[str | None, str | None, str]] = {
    "sql-injection": ("-24h' OR '1'='1", None, "is not a time"),
    "sql-comment": ("2026-01-01T00:00:00Z; DROP TABLE events; --", None, "is not a time"),
    "nul-byte": ("-24h\x00", None, "is not a time"),
    "crlf": ("-24h\r\nX-Injected: 1", None, "is not a time"),
    "fullwidth-digits": ("-２４h", None, "is not a time"),
    "arabic-indic-digits": ("-٢٤h", None, "is not a time"),
    "double-minus": ("--24h", None, "is not a time"),
    "plus-relative": ("+24h", None, "is not a time"),
    "no-unit": ("-24", None, "is not a time"),
    "unknown-unit": ("-24y", None, "is not a time"),
    "seven-digit-count": ("-9999999s", None, "is not a time"),
    "huge-week-count": ("-999999w", None, "is before the year 1"),
    "epoch-number": ("1700000000", None, "is not a time"),
    "nan": ("nan", None, "is not a time"),
    "infinity": ("inf", None, "is not a time"),
    "month-13": ("2026-13-01T00:00:00Z", None, "is not a time"),
    "day-45": ("2026-01-45T00:00:00Z", None, "is not a time"),
    "leap-second": ("2026-01-01T23:59:60Z", None, "is not a time"),
    "offset-out-of-range": ("2026-01-01T00:00:00+99:00", None, "is not a time"),
    "year-zero": ("0000-01-01T00:00:00Z", None, "is not a time"),
    "year-one-to-now": ("0001-01-01T00:00:00Z", None, "longer than 366 days"),
    "year-9999-from": ("9999-12-31T00:00:00Z", "9999-12-31T23:59:59Z", "is in the future"),
    "future-from": (FUTURE, None, "is in the future"),
    "backwards": ("-1h", "-2h", "must be before to"),
    "empty-range": ("now", "now", "must be before to"),
    "whitespace-only": ("   ", None, "is not a time"),
    "html": ("<script>alert(1)</script>", None, "is not a time"),
}


@pytest.mark.parametrize(("start", "end", "said"), HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_range_is_refused_with_its_reason(start: str | None, end: str | None,
                                                    said: str) -> None:
    with pytest.raises(RangeError, match=said):
        resolve_range(start, end, NOW)


def test_a_quiet_range_in_the_past_is_an_empty_answer_not_an_error() -> None:
    frm, to = resolve_range(None, "2000-01-01T00:00:00Z", NOW)
    assert (to - frm).total_seconds() == 86_400
    # A to in the future is now: nothing is known about the future.
    assert resolve_range("-1h", "2026-06-01T00:00:00Z", NOW)[1] == NOW
    assert resolve_range(None, "9999-12-31T23:59:59Z", NOW)[1] == NOW


def test_the_reason_quotes_at_most_64_characters_of_the_input() -> None:
    with pytest.raises(RangeError) as err:
        resolve_range("x" * 10_000, None, NOW)
    assert len(str(err.value)) < 250


async def test_every_hostile_range_is_a_422_over_http_and_writes_nothing(
        tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        db = api.runtime.store
        before = len(db.events(limit=100_000))
        for name, (start, end, said) in HOSTILE.items():
            params = {k: v for k, v in (("from", start), ("to", end)) if v is not None}
            r = await api.client.get("/api/history", params=params)
            if name == "nul-byte":  # refused before any route, for every route
                assert r.status_code == 400 and "NUL" in r.text, r.text
                continue
            assert r.status_code == 422, (name, r.text)
            assert said in r.text, (name, r.text)
        # The first day of the year 1 is a range like any other: empty.
        r = await api.client.get("/api/history", params={"from": "0001-01-01T00:00:00Z",
                                                         "to": "0001-01-02T00:00:00Z"})
        assert r.status_code == 200 and r.json()["incidents"] == [], r.text
        r = await api.client.get("/api/history", params={"from": "x" * 65})
        assert r.status_code == 422 and "at most 64 characters" in r.text
        r = await api.client.get("/api/history", params=[("from", "-1h"), ("from", "-2h")])
        assert r.status_code == 200  # a repeated parameter: the last one, like any query
        await api.runtime.store.flush()
        assert len(db.events(limit=100_000)) - before <= 50  # only what the agents stored
