"""AnalyzerAgent in the runtime: alerts on the bus, LLM answers as updates, and an LLM that
hangs or loops never slows the sensor."""

from __future__ import annotations

import asyncio
import itertools
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from tests.openai_server import OpenAIServer, Recorded, Reply, completion, hang, tool_calls
from watchkeeper.agents.analyzer import AnalyzerAgent
from watchkeeper.bus import MemoryBus
from watchkeeper.config import ConfigStore
from watchkeeper.events import (
    Alert,
    AnalyzerNotice,
    CpuStats,
    MemoryStats,
    MetricSnapshot,
    ProcessInfo,
    ProcessSummary,
)
from watchkeeper.runtime import Runtime
from watchkeeper.store.sqlite import SqliteStore

from ..conftest import BusRecorder, make_settings

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


def snap(seq: int, cpu: float) -> MetricSnapshot:
    hog = ProcessInfo(pid=4242, create_time=1.0, name="python", cpu_percent=cpu,
                      cmdline="python worker.py")
    return MetricSnapshot(host="h", seq=seq, interval_s=5.0, at=T0 + timedelta(seconds=5 * seq),
                          cpu=CpuStats(percent=cpu, count_logical=2),
                          memory=MemoryStats(percent=30.0),
                          processes=ProcessSummary(total=10, top_cpu=(hog,)))


def answer_citing_the_alert(rec: Recorded) -> Reply:
    """A valid answer whose evidence is the incident's own event id (read from the prompt)."""
    text = "".join(str(m.get("content") or "") for m in rec.messages)
    start = text.index("event:")
    event_id = text[start:text.index('"', start)]
    return completion({
        "summary": "python worker.py is pinning the CPU", "likely_cause": "a busy loop",
        "confidence": 0.7, "expected": False,
        "claims": [{"text": "CPU is high", "evidence": [event_id]}],
        "evidence": [event_id],
        "suggested_actions": [{"action": "notify_only", "params": {"message": "look at it"},
                               "reason": "a human should decide", "evidence": [event_id]}],
    })


async def run_analyzer(tmp_path: Path, llm: dict[str, Any], snaps: list[MetricSnapshot],
                       settle: float = 3.0) -> tuple[BusRecorder, AnalyzerAgent]:
    settings = make_settings(tmp_path, analyzer={"for_s": 0}, llm=llm,
                             agents={"check_interval": 0.05})
    config = ConfigStore(settings)
    bus = MemoryBus()
    recorder = BusRecorder(bus)
    store = SqliteStore.open(settings.storage)
    agent = AnalyzerAgent(store=store, bus=bus, config=config, host="h")
    await agent.setup()
    for s in snaps:
        await bus.publish("metrics.h", s)
    await agent._perform_check()
    deadline = asyncio.get_running_loop().time() + settle
    while agent.investigations and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.02)
    await agent.teardown()
    await store.close()
    recorder.drain()  # closing the bus discards what is still queued
    await bus.close()
    return recorder, agent


async def test_alert_then_llm_assessment_as_an_update(tmp_path: Path) -> None:
    with OpenAIServer([answer_citing_the_alert]) as server:
        recorder, _ = await run_analyzer(
            tmp_path, {"base_url": server.base_url, "timeout": 5.0},
            [snap(1, 10.0), snap(2, 97.0)])
    alerts = [e for t, e in recorder.drain() if isinstance(e, Alert) and t == "alerts.h"]
    cpu = [a for a in alerts if a.metric == "cpu.percent"]
    assert len(cpu) == 2, alerts
    first, update = cpu
    assert first.severity == "critical" and first.assessment is not None
    assert first.assessment.source == "rule"
    assert update.fingerprint == first.fingerprint
    assert update.assessment is not None and update.assessment.source == "llm"
    assert update.assessment.summary == "python worker.py is pinning the CPU"
    assert [s.action for s in update.suggested_actions] == ["notify_only"]
    assert len(server.chat_requests) == 1  # one call per incident


async def test_without_llm_alerts_say_rule_based(tmp_path: Path) -> None:
    recorder, agent = await run_analyzer(tmp_path, {}, [snap(1, 10.0), snap(2, 97.0)])
    assert not agent.investigator.enabled()
    alerts = [e for _, e in recorder.drain() if isinstance(e, Alert)]
    assert alerts and all(a.assessment and a.assessment.source == "rule" for a in alerts)
    assert all("rule-based" in (a.assessment.note or "") for a in alerts if a.assessment)


async def test_llm_looping_on_tools_stops_at_the_bound_with_one_notice(tmp_path: Path) -> None:
    forever = tool_calls(("get_metric_history", {"metric": "cpu.percent", "minutes": 5}))
    with OpenAIServer(default=forever) as server:
        recorder, _ = await run_analyzer(
            tmp_path, {"base_url": server.base_url, "timeout": 2.0, "max_tool_calls": 10},
            [snap(1, 10.0), snap(2, 97.0)], settle=10.0)
        requests = len(server.chat_requests)
    notices = [e for _, e in recorder.drain() if isinstance(e, AnalyzerNotice)]
    assert [n.code for n in notices].count("llm_step_limit") == 1
    # 10 tool rounds, then one last request without tools (and at most one repair turn).
    assert requests <= 12


async def test_hung_llm_leaves_the_sensor_cadence_unchanged(tmp_path: Path) -> None:
    """The LLM server hangs (for 120 s and beyond: until it is stopped) while the runtime
    runs; the sensor misses no tick, and shutdown does not wait for the LLM."""
    interval = 0.2
    with OpenAIServer(default=hang(120.0)) as server:
        settings = make_settings(
            tmp_path, agents={"check_interval": interval},
            thresholds={"cpu_warning": 0.0, "cpu_critical": 0.0, "memory_warning": 0.0,
                        "memory_critical": 0.0},
            analyzer={"for_s": 0}, llm={"base_url": server.base_url, "timeout": 120.0},
            storage={"flush_interval": 0.2})
        rt = Runtime(settings)
        recorder = BusRecorder(rt.bus)  # type: ignore[arg-type]
        await rt.start()
        try:
            await recorder.wait_for(Alert, 1)
            deadline = asyncio.get_running_loop().time() + 5.0
            while not server.chat_requests:
                assert asyncio.get_running_loop().time() < deadline, "LLM was never asked"
                await asyncio.sleep(0.05)
            start = len(recorder.of(MetricSnapshot))
            await asyncio.sleep(3.0)  # the LLM is hung all along
            analyzer = next(a for a in rt.agents if isinstance(a, AnalyzerAgent))
            assert analyzer.investigations >= 1
        finally:
            recorder.drain()
            loop = asyncio.get_running_loop()
            t = loop.time()
            await rt.stop()
            shutdown_s = loop.time() - t
    snaps = [e for e in recorder.of(MetricSnapshot) if isinstance(e, MetricSnapshot)][start:]
    seqs = [s.seq for s in snaps]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # no tick skipped
    # A sensor held up by the hung call would show one tick, or a gap of the whole 3 s;
    # the bounds leave room for a loaded CI machine's jitter (0.48 s was seen at 0.2 s).
    assert len(seqs) >= int(3.0 / interval) // 2
    gaps = [(b.at - a.at).total_seconds() for a, b in itertools.pairwise(snaps)]
    assert max(gaps) < 5 * interval  # no missed tick
    assert shutdown_s < 10.0


async def test_llm_calls_zero_when_healthy_and_one_per_incident(tmp_path: Path) -> None:
    """Ten minutes of 5 s snapshots: a healthy host costs no LLM call, a steady incident one."""
    with OpenAIServer(default=answer_citing_the_alert) as server:
        healthy = [snap(i, 20.0 + (i % 7)) for i in range(1, 121)]
        await run_analyzer(tmp_path / "healthy", {"base_url": server.base_url}, healthy)
        assert server.chat_requests == []
        incident = [snap(i, 10.0 if i == 1 else 97.0) for i in range(1, 121)]
        recorder, _ = await run_analyzer(tmp_path / "incident", {"base_url": server.base_url},
                                         incident)
        assert len(server.chat_requests) == 1
    cpu = [e for _, e in recorder.drain() if isinstance(e, Alert) and e.metric == "cpu.percent"]
    assert [a.assessment.source for a in cpu if a.assessment] == ["rule", "llm"]


async def test_ack_and_silence_are_published_and_silences_survive_a_restart(
        tmp_path: Path) -> None:
    settings = make_settings(tmp_path, analyzer={"for_s": 0})
    config = ConfigStore(settings)
    store = SqliteStore.open(settings.storage)
    bus = MemoryBus()
    recorder = BusRecorder(bus)
    agent = AnalyzerAgent(store=store, bus=bus, config=config, host="h")
    await agent.setup()
    for s in (snap(1, 10.0), snap(2, 97.0)):
        await agent._analyse(s)
    (cpu,) = [a for a in agent.engine.active_alerts() if a.metric == "cpu.percent"]
    acked = await agent.ack(cpu.fingerprint, by="alice")
    assert acked is not None and acked.state == "acknowledged"
    sid = await agent.silence({"metric": "memory.*"}, T0 + timedelta(days=1), by="alice",
                              comment="known leak, fix on Monday")
    await agent.teardown()
    published = [e for _, e in recorder.drain() if isinstance(e, Alert)]
    assert any(a.state == "acknowledged" for a in published)

    # A new agent on the same data dir (a restart) keeps the silence.
    # The restart happens "now" in the snapshots' time, not on today's wall clock.
    again = AnalyzerAgent(store=store, bus=bus, config=config, host="h",
                          wall=lambda: T0 + timedelta(minutes=5))
    await again.setup()
    assert [s.id for s in again.engine.silences] == [sid]
    high_memory = snap(3, 97.0).model_copy(update={"memory": MemoryStats(percent=99.0)})
    await again._analyse(high_memory)
    mem = [a for a in again.engine.active_alerts() if a.metric == "memory.percent"]
    assert mem and all(a.silenced for a in mem)
    await again.teardown()
    await store.close()
    await bus.close()
