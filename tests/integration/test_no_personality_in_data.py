"""Witty lines and emoji belong in logs only: every JSON answer of the API, the live event
stream, Prometheus /metrics and the status file of a running app at the default personality
level (witty) hold neither, while the log does have them.

Changed from the defaults, and why: a memory warning at 0.1 % that fires without delay
(analyzer for_s 0), so that the Commentator has something to quip about and alerts are
open; fast ticks (api_settings); a notification route to a receiver that is down (so that
GET /api/notify has a failed try and its error to show).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from tests.notify_receiver import free_port
from watchkeeper.status import STATUS_FILE_NAME

from .test_api_harness import Api, api_settings, serve_api, until
from .test_personality_levels import EMOJI, has_quip

#: Query parameters a read route needs to answer 200.
NEEDS = {"/api/metrics/history": {"metric": "memory.percent"}}


def clean(where: str, text: str) -> None:
    assert not EMOJI.search(text), f"{where} holds emoji: {EMOJI.findall(text)[:5]}"
    assert not has_quip(text), f"{where} holds a quip: {text[:500]}"


async def stream(api: Api, snapshots: str, events: int = 8) -> str:
    """The first ``events`` messages of the live stream, as sent."""
    got: list[str] = []
    async with api.client.stream("GET", f"/api/events?snapshots={snapshots}") as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            got.append(line)
            if sum(1 for g in got if g.startswith("data:")) >= events:
                break
    return "\n".join(got)


async def test_no_emoji_or_quip_in_any_structured_answer(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="watchkeeper")
    settings = api_settings(tmp_path, thresholds={"memory_warning": 0.1,
                                                  "memory_critical": 100},
                            analyzer={"for_s": 0},
                            notify={"routes": [{"name": "ops", "group_wait_s": 0,
                                                "url": f"json://127.0.0.1:{free_port()}/h"}]})
    assert settings.personality.level == "witty"
    async with serve_api(settings) as api:
        async def quipped() -> bool:
            return any(has_quip(r.getMessage()) for r in caplog.records)
        await until(quipped)  # the Commentator spoke, in the log

        async def alerted() -> bool:
            r = await api.client.get("/api/alerts")
            return any(a["metric"] == "memory.percent" for a in r.json()["alerts"])
        await until(alerted)

        async def notify_failed() -> bool:
            r = await api.client.get("/api/notify")
            return bool(r.json()["routes"][0]["failed_total"])
        await until(notify_failed)
        await asyncio.sleep(0.3)  # a flush, so the store holds the ticks since the quip
        log = "\n".join(r.getMessage() for r in caplog.records)
        assert EMOJI.search(log)  # marks in the log: the witty default is on

        schema = (await api.client.get("/openapi.json")).json()
        reads = sorted(p for p, ops in schema["paths"].items()
                       if "get" in ops and "{" not in p and p != "/api/events")
        assert {"/api/metrics", "/api/alerts", "/api/history", "/api/system",
                "/api/activity", "/api/notify", "/metrics"} <= set(reads)
        for path in reads:
            r = await api.client.get(path, params=NEEDS.get(path))
            assert r.status_code == 200, (path, r.text)
            if path != "/metrics":
                json.loads(r.text)
            clean(path, r.text)
        for fingerprint in [a["fingerprint"] for a in
                            (await api.client.get("/api/alerts")).json()["alerts"]]:
            r = await api.client.get(f"/api/alerts/{fingerprint}")
            if r.status_code == 200:
                clean(f"/api/alerts/{fingerprint}", r.text)
        clean("/api/events (summary)", await stream(api, "summary"))
        clean("/api/events (full)", await stream(api, "full"))
        status = Path(settings.logging.dir) / STATUS_FILE_NAME
        await until(lambda: asyncio.sleep(0, status.exists()))
        clean(str(status), status.read_text(encoding="utf-8"))
