"""`simulate logflood --path DIR`: the flood goes into a run directory of its own under DIR
(a watched log directory such as /var/log), the sensor's log watcher sees it grow at the
rate the log-flood rule judges, and nothing is left afterwards."""

from __future__ import annotations

import time
from pathlib import Path

from watchkeeper.collectors.logs import LogWatcher

from .test_simulate import Sim, assert_nothing_left, made_dirs, sims, start, until

__all__ = ["sims"]  # the fixture, shared with test_simulate


def test_logflood_into_a_directory_is_seen_growing_and_removed(tmp_path: Path,
                                                                sims: list[Sim]) -> None:
    logs = tmp_path / "log"
    logs.mkdir()
    sim = start(sims, tmp_path, "logflood", "--path", str(logs), "--duration", "4s")
    sim.worker()
    made = until(lambda: made_dirs(logs), "the run's directory under --path")[0]
    flood = made / "flood.log"
    until(flood.exists, "the flood's file")
    watcher = LogWatcher()
    watcher.collect([logs], time.monotonic(), top=5)
    time.sleep(1.0)
    (seen,) = watcher.collect([logs], time.monotonic(), top=5)
    assert seen.path == str(flood)
    # 2000 lines/s by default, about 100 B each: well past the rule's 5 MB/min.
    assert seen.bytes_per_s * 60 / 1e6 > 5
    report = sim.finish()
    assert report["run"]["files"] == [str(flood)]
    assert_nothing_left(sim, logs)
    assert list(logs.iterdir()) == []
