"""GET /api/events: the live stream of bus events as Server-Sent Events, on a real server."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from watchkeeper.api.routes import events as events_route
from watchkeeper.bus import errors_topic
from watchkeeper.events import AgentError

from .test_api_harness import READER, Api, api_settings, serve_api, until


async def messages(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """Parse text/event-stream as a browser would: fields until a blank line."""
    event, data = "message", []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)


async def collect(api: Api, path: str, want: int, *, timeout: float = 10.0,
                  headers: dict[str, str] | None = None) -> list[tuple[str, dict[str, Any]]]:
    got: list[tuple[str, dict[str, Any]]] = []

    async def read() -> None:
        async with api.client.stream("GET", path, headers=headers) as r:
            assert r.status_code == 200, await r.aread()
            assert r.headers["content-type"].startswith("text/event-stream")
            async for item in messages(r):
                got.append(item)
                if len(got) >= want:
                    return

    await asyncio.wait_for(read(), timeout)
    return got


async def test_ready_then_live_metrics_from_the_sensor(tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        got = await collect(api, "/api/events", 6)
        assert got[0][0] == "ready"
        assert got[0][1]["host"] == api.runtime.host
        metrics = [data for kind, data in got if kind == "metrics"]
        assert len(metrics) >= 3
        seqs = [m["seq"] for m in metrics]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        names = {v["metric"] for v in metrics[-1]["values"]}
        assert {"cpu.percent", "memory.percent", "disk.percent"} <= names


async def test_topic_filter_and_snapshot_modes(tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        # Only actions: the sensor's ticks are not sent, a remediation step is.
        async def ask() -> None:
            await asyncio.sleep(0.5)
            await api.client.post("/api/command", headers=api.auth(), json={
                "command": "remediate", "action": "notify_only", "dry_run": True,
                "params": {"message": "hello"}})

        asking = asyncio.create_task(ask())
        got = await collect(api, "/api/events?topics=actions.*", 2)
        await asking
        assert [kind for kind, _ in got] == ["ready", "remediation"]
        assert got[1][1]["verdict"] == "dry_run" and got[1][1]["source"] == "operator"
        full = await collect(api, "/api/events?snapshots=full&topics=metrics.*", 2)
        assert full[1][0] == "metric_snapshot" and "processes" in full[1][1]
        # snapshots=none: the first thing after ready is not a snapshot.
        await api.runtime.bus.publish(errors_topic(api.runtime.host, "sensor"), AgentError(
            host=api.runtime.host, agent="sensor", error="late", error_type="X"))
        none_task = asyncio.create_task(collect(api, "/api/events?snapshots=none", 2))
        await asyncio.sleep(0.5)
        await api.runtime.bus.publish(errors_topic(api.runtime.host, "sensor"), AgentError(
            host=api.runtime.host, agent="sensor", error="boom", error_type="X"))
        none = await none_task
        assert [kind for kind, _ in none] == ["ready", "agent_error"]


async def test_a_reader_that_stalls_never_holds_the_bus_back(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A browser tab in the background stops reading: publishing must go on at full speed
    # (never-drop events would otherwise wait for it and then fail).
    async with serve_api(api_settings(tmp_path)) as api:
        async with api.client.stream("GET", "/api/events") as r:
            assert r.status_code == 200
            # Read nothing more: the socket buffer and the stream's queue fill up.
            topic = errors_topic(api.runtime.host, "sensor")
            for i in range(5000):
                await asyncio.wait_for(api.runtime.bus.publish(topic, AgentError(
                    host=api.runtime.host, agent="sensor", error="x" * 4000 + str(i),
                    error_type="X")), 1.0)
            streams = [s for s in api.runtime.bus.subscriptions() if s.name == "api-events"]
            assert streams and streams[0].dropped > 0
        # The client left: its subscription is gone, and that is no error.
        await asyncio.sleep(0.3)
        assert not [s for s in api.runtime.bus.subscriptions() if s.name == "api-events"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_stream_needs_a_token_off_loopback_and_checks_its_query(tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path), bind_host="0.0.0.0") as api:
        r = await api.client.get("/api/events")
        assert r.status_code == 401
        got = await collect(api, "/api/events", 1, headers=api.auth(READER))
        assert got[0][0] == "ready"
        for query in ("topics=a b", "topics=,", "snapshots=all"):
            r = await api.client.get(f"/api/events?{query}", headers=api.auth(READER))
            assert r.status_code == 422, query


async def test_open_streams_do_not_keep_the_server_from_stopping(tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        client = httpx.AsyncClient(base_url=api.url, timeout=30)
        stream = await client.send(client.build_request("GET", "/api/events"), stream=True)
        assert stream.status_code == 200
    # serve_api's exit waited for uvicorn with a 10 s limit: it got here, so it stopped.
    await stream.aclose()
    await client.aclose()


async def test_activity_is_the_recent_history_of_the_stream(tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        r = await api.client.post("/api/command", headers=api.auth(), json={
            "command": "remediate", "action": "notify_only", "dry_run": True,
            "params": {"message": "before the page opened"}})
        assert r.status_code == 200
        await api.runtime.bus.publish(errors_topic(api.runtime.host, "sensor"), AgentError(
            host=api.runtime.host, agent="sensor", error="disk read stalled", error_type="X"))

        async def stored() -> list[dict[str, Any]] | None:
            body = (await api.client.get("/api/activity")).json()
            kinds = {e["kind"] for e in body["events"]}
            return body["events"] if {"remediation", "agent_error"} <= kinds else None

        events = await until(stored)
        # Oldest first, with the event as the live stream sends it; no heartbeats or ticks.
        assert [e["kind"] for e in events] == ["remediation", "agent_error"]
        assert events[0]["event"]["verdict"] == "dry_run"
        assert events[1]["event"]["error"] == "disk read stalled"
        only = (await api.client.get("/api/activity?kind=agent_error&limit=5")).json()
        assert [e["kind"] for e in only["events"]] == ["agent_error"]
        for query in ("limit=0", "limit=1001", "kind=heartbeat", "kind=%3Cscript%3E"):
            r = await api.client.get(f"/api/activity?{query}")
            assert r.status_code == 422, query


async def test_a_quiet_stream_sends_keep_alive_comments(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # Proxies and browsers close a connection that says nothing for long; the stream speaks
    # up every KEEPALIVE_S (15 s in production, shortened here) even with no event to send.
    monkeypatch.setattr(events_route, "KEEPALIVE_S", 0.2)
    async with serve_api(api_settings(tmp_path)) as api:
        async def first_comment() -> str:
            async with api.client.stream("GET", "/api/events?topics=nothing.here") as r:
                async for line in r.aiter_lines():
                    if line.startswith(":"):
                        return line
            return ""

        assert await asyncio.wait_for(first_comment(), 5) == ": keep-alive"
