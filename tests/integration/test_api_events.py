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
    # (never-drop events would otherwise wait for it and then fail), and when it reads
    # again it is told that it missed news, rather than handed a silent gap.
    async with serve_api(api_settings(tmp_path)) as api:
        async with api.client.stream("GET", "/api/events?topics=errors.>") as r:
            assert r.status_code == 200
            lines = r.aiter_lines()
            assert (await anext(lines)).startswith("retry:")
            # Read nothing more: the socket buffers fill up and the stream stops sending.
            topic = errors_topic(api.runtime.host, "sensor")
            for i in range(5000):
                await asyncio.wait_for(api.runtime.bus.publish(topic, AgentError(
                    host=api.runtime.host, agent="sensor", error="x" * 4000 + str(i),
                    error_type="X")), 1.0)
            (stream,) = api.app.state.streams
            assert stream.cursor < 4000  # it did stall

            async def until_reset_then_last() -> list[str]:
                seen: list[str] = []
                async for line in lines:
                    if line == "event: reset":
                        seen.append("reset")
                    elif line.startswith("data: ") and '4999","error_type"' in line:
                        seen.append("last")
                        return seen
                return seen

            assert await asyncio.wait_for(until_reset_then_last(), 20) == ["reset", "last"]
        # The client left: its stream is gone, and that is no error.
        async def gone() -> bool:
            return not api.app.state.streams

        await until(gone)
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
    # The client is closed after the server stopped, and also when the test fails half-way
    # (an open one would fail a later test with an unraisable ResourceWarning).
    async with httpx.AsyncClient(timeout=30) as client:
        async with serve_api(api_settings(tmp_path)) as api:
            stream = await client.send(client.build_request("GET", api.url + "/api/events"),
                                       stream=True)
            try:
                assert stream.status_code == 200
            except BaseException:
                await stream.aclose()
                raise
        # serve_api's exit waited for uvicorn with a 10 s limit: it got here, so it stopped.
        await stream.aclose()


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


async def test_a_client_that_reconnects_with_last_event_id_gets_what_it_missed(
        tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        topic = errors_topic(api.runtime.host, "sensor")

        async def publish(text: str) -> None:
            await api.runtime.bus.publish(topic, AgentError(
                host=api.runtime.host, agent="sensor", error=text, error_type="X"))

        async def read(want: int, ready: asyncio.Event,
                       headers: dict[str, str] | None = None) -> list[tuple[str, str, str]]:
            """(event, id, error or reason) of the first ``want`` messages; ``ready`` is set
            once the stream is subscribed."""
            got: list[tuple[str, str, str]] = []
            event, id_ = "message", ""
            async with api.client.stream("GET", "/api/events?topics=errors.>",
                                         headers=headers) as r:
                assert r.status_code == 200
                async for line in r.aiter_lines():
                    field, _, value = line.partition(": ")
                    if field in ("event", "id"):
                        event, id_ = (value, id_) if field == "event" else (event, value)
                    elif field == "data":
                        data = json.loads(value)
                        got.append((event, id_ if event != "ready" else "",
                                    data.get("error") or data.get("reason", "")))
                        if event == "ready":
                            ready.set()
                        if len(got) >= want:
                            return got
            return got

        async def publish_when(ready: asyncio.Event, *texts: str) -> None:
            # Once the stream is subscribed, not after a guessed delay (a loaded machine).
            await asyncio.wait_for(ready.wait(), 10)
            for text in texts:
                await publish(text)

        subscribed = asyncio.Event()
        first_task = asyncio.create_task(read(2, subscribed))
        await publish_when(subscribed, "seen")
        first = await asyncio.wait_for(first_task, 10)
        assert [(e, m) for e, _, m in first] == [("ready", ""), ("agent_error", "seen")]
        seen_id = first[1][1]
        assert seen_id.startswith(api.app.state.journal.run + "-")

        # Disconnected: three errors happen meanwhile.
        for text in ("missed 1", "missed 2", "missed 3"):
            await publish(text)
        subscribed = asyncio.Event()
        again_task = asyncio.create_task(read(5, subscribed, {"Last-Event-ID": seen_id}))
        await publish_when(subscribed, "live")
        again = await asyncio.wait_for(again_task, 10)
        assert [(e, m) for e, _, m in again] == [
            ("ready", ""), ("agent_error", "missed 1"), ("agent_error", "missed 2"),
            ("agent_error", "missed 3"), ("agent_error", "live")]
        ids = [int(i.rsplit("-", 1)[1]) for _, i, _ in again[1:]]
        assert ids == sorted(ids) and ids[0] > int(seen_id.rsplit("-", 1)[1])

        # An id this run never gave (an earlier run's, or garbage): told to start over.
        for stale in ("0badc0de-3", "<script>", f"{api.app.state.journal.run}-99999999"):
            told = await asyncio.wait_for(read(2, asyncio.Event(), {"Last-Event-ID": stale}), 10)
            assert [e for e, _, _ in told] == ["ready", "reset"], stale
            assert told[1][2].startswith(f"cannot resume from {stale}: ")
        r = await api.client.get("/api/events", headers={"Last-Event-ID": "1" * 101})
        assert r.status_code == 422
