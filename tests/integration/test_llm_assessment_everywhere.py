"""The LLM's assessment reaches the alert everywhere: engine, API, live stream, store, and
the next run, through the real runtime with a real OpenAI-compatible server answering."""

from __future__ import annotations

import asyncio
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.openai_server import OpenAIServer, Recorded, Reply, completion
from watchkeeper.agents.analyzer import AnalyzerAgent
from watchkeeper.config import Settings
from watchkeeper.events import Alert

from .test_api_events import messages
from .test_api_harness import Api, api_settings, serve_api, until
from .test_api_read import ONE_CRITICAL

MODEL_SUMMARY = "the model says: the test host's memory is held by its page cache"


def model_answer(rec: Recorded) -> Reply:
    """A valid answer citing the incident's own event id (read from the prompt)."""
    text = "".join(str(m.get("content") or "") for m in rec.messages)
    event_id = re.findall(r"event:[0-9a-f]{16}-[0-9a-f]+", text)[0]
    return completion({
        "summary": MODEL_SUMMARY, "likely_cause": "page cache", "confidence": 0.6,
        "expected": True, "claims": [{"text": "memory is high", "evidence": [event_id]}],
        "evidence": [event_id],
        "suggested_actions": [{"action": "notify_only", "params": {"message": "look"},
                               "reason": "a human should decide", "evidence": [event_id]}],
    })


def memory_alert_settings(tmp_path: Path, llm: dict[str, Any]) -> Settings:
    # Any memory use is critical: the analyzer raises a real alert at its first snapshot
    # (and only that one: CPU rules are off, so a busy test machine adds nothing).
    return api_settings(tmp_path, **ONE_CRITICAL, llm=llm)


async def memory_alert(api: Api, source: str) -> dict[str, Any] | None:
    alerts = (await api.client.get("/api/alerts")).json()["alerts"]
    return next((a for a in alerts if a["metric"] == "memory.percent"
                 and (a["assessment"] or {}).get("source") == source), None)


async def test_the_llms_assessment_is_on_the_alert_everywhere_and_after_a_restart(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    streamed: list[dict[str, Any]] = []
    subscribed = threading.Event()

    async def follow(api: Api) -> None:
        async with api.client.stream("GET", "/api/events?topics=alerts.>") as r:
            async for kind, data in messages(r):
                if kind == "ready":
                    subscribed.set()  # the model answers only once the stream listens
                elif kind == "alert":
                    streamed.append(data)

    def answer_once_followed(rec: Recorded) -> Reply:
        subscribed.wait(20)
        return model_answer(rec)

    with OpenAIServer(default=answer_once_followed) as server:
        llm = {"enabled": True, "base_url": server.base_url, "timeout": 10.0}
        async with serve_api(memory_alert_settings(tmp_path, llm)) as api:
            reader = asyncio.create_task(follow(api))
            try:
                # The API: the engine's alert carries the model's words, not the rules'.
                alert = await until(lambda: memory_alert(api, "llm"), timeout=30.0)
                assert alert["assessment"]["summary"] == MODEL_SUMMARY
                assert alert["assessment"]["note"] != "rule-based (no LLM)"
                assert alert["labels"]["change"] == "assessed"
                fp = alert["fingerprint"]
                # The live stream: the same alert again (same id), once with the assessment.
                assessed = await until(lambda: _streamed_llm(streamed, fp))
                assert [a["id"] for a in assessed] == [alert["id"]]
                assert {a["id"] for a in streamed if a["fingerprint"] == fp} == {alert["id"]}
                # A later version (acknowledged) keeps it.
                r = await api.client.post(f"/api/alerts/{fp}/ack", headers=api.auth())
                assert r.status_code == 200
                assert r.json()["assessment"]["summary"] == MODEL_SUMMARY

                # The store: the assessed version once, and the acknowledged one keeps it.
                async def stored() -> list[Alert] | None:
                    found = [e.event for e in api.runtime.store.events(kinds=["alert"])
                             if isinstance(e.event, Alert) and e.event.fingerprint == fp]
                    return found if any(a.state == "acknowledged" for a in found) else None

                history = await until(stored)
                assert [a.labels["change"] for a in history
                        if a.assessment and a.assessment.source == "llm"] == [
                    "assessed", "acknowledged"]
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
        assert len(server.chat_requests) >= 1
    # The log says the model's words once, not again with each later version.
    said = [r for r in caplog.records if MODEL_SUMMARY in r.getMessage()]
    assert len(said) == 1 and said[0].getMessage().startswith("🧠 "), said

    # The next run, without any LLM: the alert comes back with the model's assessment.
    async with serve_api(memory_alert_settings(tmp_path, {"enabled": False})) as api:
        analyzer = next(a for a in api.runtime.agents if isinstance(a, AnalyzerAgent))
        assert not analyzer.investigator.enabled()
        again = await until(lambda: memory_alert(api, "llm"))
        assert again["fingerprint"] == fp and again["state"] == "acknowledged"
        assert again["assessment"]["summary"] == MODEL_SUMMARY
        await asyncio.sleep(1.0)  # a few ticks later the followed alert still keeps it
        later = await memory_alert(api, "llm")
        assert later is not None and later["at"] > again["at"]


async def _streamed_llm(streamed: list[dict[str, Any]], fp: str) -> list[dict[str, Any]] | None:
    found = [a for a in streamed if a["fingerprint"] == fp
             and a["labels"].get("change") == "assessed"]
    if found:
        assert all(a["assessment"]["summary"] == MODEL_SUMMARY for a in found)
    return found or None
