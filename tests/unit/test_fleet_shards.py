"""Analysis shards: which shard owns a host (stable across processes, every host exactly
one), ``--shard i/N`` parsing, a shard's snapshots delivered again out of order, and the
sharded central's view built from the alerts the shards publish."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from watchkeeper.agents.analyzer import AnalyzerAgent
from watchkeeper.analysis.fleet import FleetAnalyzer
from watchkeeper.analysis.fleet_view import FleetView
from watchkeeper.analysis.shard import Shard, shard_of
from watchkeeper.bus import MemoryBus
from watchkeeper.config import ConfigStore
from watchkeeper.events import Alert, CpuStats, MemoryStats, MetricSnapshot
from watchkeeper.store.sqlite import SqliteStore

from ..conftest import BusRecorder, make_settings

T0 = datetime(2030, 3, 1, 12, 0, tzinfo=timezone.utc)


def snap(host: str, seq: int, cpu: float = 10.0) -> MetricSnapshot:
    return MetricSnapshot(host=host, seq=seq, interval_s=5.0,
                          at=T0 + timedelta(seconds=5 * seq),
                          cpu=CpuStats(percent=cpu, count_logical=2),
                          memory=MemoryStats(percent=30.0))


def test_every_host_belongs_to_exactly_one_shard_and_the_split_is_even() -> None:
    hosts = [f"host-{i:05d}" for i in range(4000)]
    for count in (1, 2, 3, 8):
        shards = [Shard(i, count) for i in range(count)]
        owners = [[s.index for s in shards if s.owns_host(h)] for h in hosts]
        assert all(len(o) == 1 for o in owners)
        sizes = [sum(1 for o in owners if o == [i]) for i in range(count)]
        assert min(sizes) > 0.85 * len(hosts) / count  # no shard carries much more


def test_the_owner_is_the_same_in_every_process() -> None:
    # Python's own hash() is salted per process: a shard must not depend on it.
    code = ("from watchkeeper.analysis.shard import shard_of; "
            "print([shard_of(f'web-{i}', 7) for i in range(50)])")
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={"PYTHONHASHSEED": seed}).stdout
            for seed in ("1", "2")}
    assert runs == {f"{[shard_of(f'web-{i}', 7) for i in range(50)]}\n"}


def test_a_topic_is_judged_by_its_host_token() -> None:
    shard = Shard(shard_of("web-1", 2), 2)
    assert shard.owns_topic("metrics.web-1") and shard.owns_topic("services.web-1")
    other = Shard(1 - shard.index, 2)
    assert not other.owns_topic("metrics.web-1")
    assert not shard.owns_topic("metrics")  # no host: nobody's


@pytest.mark.parametrize("text", ["", "2", "2/2", "-1/2", "0/0", "0/65", "a/b", "1/2/3",
                                  "0 /2x"], ids=["empty", "no-count", "index-too-big",
                                                 "negative", "zero-shards", "too-many",
                                                 "letters", "three-parts", "junk"])
def test_a_bad_shard_is_refused_with_the_expected_form(text: str) -> None:
    with pytest.raises(ValueError, match=r"i/N|shard index|shards"):
        Shard.parse(text)


def test_a_good_shard_parses_and_names_its_consumers() -> None:
    assert Shard.parse("1/4") == Shard(1, 4)
    assert Shard(1, 4).name == "analyzer-shard-1-of-4"


async def test_a_shard_analyses_only_its_hosts_and_skips_a_snapshot_delivered_again(
        tmp_path: Path) -> None:
    settings = make_settings(tmp_path, analyzer={"for_s": 0},
                             agents={"check_interval": 0.05})
    bus = MemoryBus()
    recorder = BusRecorder(bus)
    store = SqliteStore.open(settings.storage)
    mine = next(h for h in (f"h{i}" for i in range(50)) if shard_of(h, 2) == 0)
    theirs = next(h for h in (f"h{i}" for i in range(50)) if shard_of(h, 2) == 1)
    agent = AnalyzerAgent(store=store, bus=bus, config=ConfigStore(settings), host="central",
                          shard=Shard(0, 2))
    await agent.setup()
    try:
        assert agent.name == "analyzer-shard-0-of-2" and agent.fleet
        await bus.publish(f"metrics.{mine}", snap(mine, 2, cpu=99.0))
        await bus.publish(f"metrics.{theirs}", snap(theirs, 2, cpu=99.0))
        await agent._perform_check()
        first = [(e.host, e.labels["change"]) for _, e in recorder.drain()
                 if isinstance(e, Alert)]
        assert first == [(mine, "new")]
        # An older snapshot delivered again (its first shard died before acknowledging it)
        # after a newer one: not analysed (it would resolve, then fire again).
        await bus.publish(f"metrics.{mine}", snap(mine, 1, cpu=5.0))
        await agent._perform_check()
        assert agent.stale == 1
        assert [(e.host, e.labels["change"]) for _, e in recorder.drain()
                if isinstance(e, Alert)] == first  # nothing more
        assert isinstance(agent.engine, FleetAnalyzer)
        assert agent.engine.hosts == (mine,)
    finally:
        await agent.teardown()
        await store.close()
        await bus.close()


def test_the_central_view_follows_what_the_shards_publish(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    view = FleetView(lambda: settings, shards=2)
    assert view.observe(snap("a", 1), received=T0.timestamp()) == []
    fired = Alert(id="x1", host="b", fingerprint="fp-b", rule="threshold",
                  metric="cpu.percent", severity="critical", value=99.0, threshold=90.0,
                  since=T0, summary="CPU is at 99%")
    view.apply(fired)
    states = {h.host: h for h in view.host_states()}
    assert states["a"].open_alerts == 0 and states["a"].last_snapshot_at == snap("a", 1).at
    assert states["b"].open_alerts == 1 and states["b"].worst == "critical"
    assert view.owner("fp-b") == fired and view.active_alerts() == [fired]
    view.apply(fired.model_copy(update={"state": "resolved"}))
    assert view.active_alerts() == [] and view.owner("fp-b") is None
    down = fired.model_copy(update={"rule": "host_down", "fingerprint": "fp-down"})
    view.apply(down)
    assert {h.host: h.down for h in view.host_states()} == {"a": False, "b": True}
