"""Security corpus: hostile input to `watchkeeper simulate` and to the API's simulate command.

Sizes, rates, durations and paths from the command line; owner records a local user could
plant for the reaper; requests a token holder could send. The promise: refused with a
message saying why, and nothing created, started or removed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
import pytest

from watchkeeper.simulate import limits
from watchkeeper.simulate.lifecycle import (
    DATA_PREFIX,
    OWNER_FILE,
    LifecycleError,
    Owner,
    Run,
    clean_up,
)
from watchkeeper.simulate.scenarios import LiveHost, Request, plan

from ..integration.test_api_harness import OPERATOR, READER, api_settings, serve_api
from ..integration.test_cli import wk_env

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="simulate runs on Linux only")


class SmallHost(LiveHost):
    """This host, but with the RLIMIT_NPROC headroom a crowded account would have."""

    def nproc_headroom(self) -> int | None:
        return 40


# --- sizes, rates, durations, counts (planning refuses; nothing is made) ---------------------

REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("memory", {"size": "1e400"}, "is not a size"),
    ("memory", {"size": "-5M"}, "is not a size"),
    ("memory", {"size": "0"}, "at least one byte"),
    ("memory", {"size": "nan"}, "is not a size"),
    ("memory", {"size": "inf"}, "is not a size"),
    ("memory", {"size": "5ZB"}, "is not a size"),
    ("memory", {"size": "5M; rm -rf /"}, "is not a size"),
    ("memory", {"size": ""}, "is not a size"),
    ("memory", {"size": "100T"}, "more than 50% of the memory available"),
    ("leak", {"rate": "1e400"}, "is not a size"),
    ("leak", {"rate": "10G/s"}, "faster than the cap"),
    ("leak", {"rate": "200M/s", "duration": "30m"}, "more than 50% of the memory"),
    ("disk", {"size": "100T"}, "would leave less than"),
    ("disk", {"rate": "10G/s"}, "faster than the cap"),
    ("disk", {"rate": "-1M/s"}, "is not a size"),
    ("forkstorm", {"procs": 100_000}, "more than the cap of 500"),
    ("forkstorm", {"procs": 0}, "at least 1"),
    ("forkstorm", {"procs": -3}, "at least 1"),
    ("cpu", {"cores": 0}, "must be between 1 and"),
    ("cpu", {"cores": 100_000}, "must be between 1 and"),
    ("cpu", {"size": "5M"}, "cpu does not take --size"),
    ("memory", {"path": "/"}, "memory does not take --path"),
    ("logflood", {"lines_per_s": 10**9}, "must be between 1 and 20000"),
    ("logflood", {"lines_per_s": 0}, "must be between 1 and 20000"),
    ("logflood", {"size": "1G"}, "more than the log flood cap"),
    ("cpu", {"duration": "2h"}, "longer than the cap"),
    ("cpu", {"duration": "0"}, "more than 0 s"),
    ("cpu", {"duration": "-1s"}, "is not like"),
    ("cpu", {"duration": "1e400"}, "is not like"),
    ("cpu", {"duration": "inf"}, "is not like"),
    ("cpu", {"duration": "60s; reboot"}, "is not like"),
    ("rm", {}, "unknown scenario"),
    ("service", {}, "unknown scenario"),  # the server's; never planned locally
]


@pytest.mark.parametrize(("scenario", "given", "says"), REFUSED,
                         ids=[f"{s}-{'-'.join(f'{k}={v}' for k, v in g.items())}"
                              for s, g, _ in REFUSED])
def test_unsafe_or_malformed_sizes_are_refused(scenario: str, given: dict[str, Any],
                                               says: str) -> None:
    with pytest.raises(limits.Refused) as caught:
        plan(Request(scenario=scenario, **given), LiveHost())
    assert says in str(caught.value), str(caught.value)


def test_forkstorm_stays_within_rlimit_nproc() -> None:
    with pytest.raises(limits.Refused) as caught:
        plan(Request(scenario="forkstorm", procs=50), SmallHost())
    assert "half of the 40 processes RLIMIT_NPROC" in str(caught.value)
    assert plan(Request(scenario="forkstorm", procs=20), SmallHost()).workers


# --- paths ---------------------------------------------------------------------------------


def test_disk_path_through_a_symlink_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(limits.Refused, match="goes through the symlink"):
        plan(Request(scenario="disk", path=str(tmp_path / "link" / ".")), LiveHost())
    with pytest.raises(limits.Refused, match="goes through the symlink"):
        plan(Request(scenario="disk", path=str(tmp_path / "link")), LiveHost())
    assert list(real.iterdir()) == []


@pytest.mark.parametrize(("name", "says"), [
    ("a-file", "is not a directory"), ("missing", "No such file"),
    ("nul\x00byte", "NUL character")], ids=["a-file", "missing-dir", "nul-byte"])
def test_disk_path_must_be_a_real_directory(tmp_path: Path, name: str, says: str) -> None:
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(limits.Refused) as caught:
        plan(Request(scenario="disk", path=str(tmp_path) + "/" + name), LiveHost())
    assert says in str(caught.value)


def test_logflood_path_must_be_a_configured_log_file(tmp_path: Path) -> None:
    victim = tmp_path / "important.log"
    victim.write_text("keep\n")
    with pytest.raises(limits.Refused, match=r"is not one of the server's remediation\.log_files"):
        plan(Request(scenario="logflood", path=str(victim)), LiveHost())
    # A configured one reached through a symlink, or one that is not a regular file.
    (tmp_path / "link").symlink_to(tmp_path)
    through = str(tmp_path / "link" / "important.log")
    with pytest.raises(limits.Refused, match="goes through the symlink"):
        plan(Request(scenario="logflood", path=through, log_files=[through]), LiveHost())
    with pytest.raises(limits.Refused, match="is not a regular file"):
        plan(Request(scenario="logflood", path=str(tmp_path), log_files=[str(tmp_path)]),
             LiveHost())
    # ../ tricks are normalised before the comparison.
    sneaky = str(tmp_path / "x" / ".." / "important.log")
    assert plan(Request(scenario="logflood", path=sneaky, log_files=[str(victim)]),
                LiveHost()).append_to == victim
    assert victim.read_text() == "keep\n"


# --- the command line: exit 2, one line, nothing made ----------------------------------------

CLI: list[tuple[Sequence[str], str]] = [
    (("memory", "--size", "1e400"), "is not a size"),
    (("disk", "--size", "-5M"), "is not a size"),
    (("disk", "--path", "/etc/passwd"), "is not a directory"),
    (("forkstorm", "--procs", "100000"), "more than the cap"),
    (("cpu", "--duration", "2h"), "longer than the cap"),
    (("service", "--size", "5M"), "service does not take --size"),
]


@pytest.mark.parametrize(("args", "says"), CLI, ids=[" ".join(a) for a, _ in CLI])
def test_cli_refuses_and_creates_nothing(tmp_path: Path, args: Sequence[str],
                                         says: str) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    out = subprocess.run([sys.executable, "-m", "watchkeeper", "simulate", *args, "--url",
                          "http://127.0.0.1:9"], cwd=tmp_path,
                         env=wk_env(tmp_path, TMPDIR=str(tmp)), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert "refused, nothing was done" in out.stderr and says in out.stderr, out.stderr
    assert list(tmp.iterdir()) == []
    assert {p.pid for p in psutil.Process().children(recursive=True)} == before


# --- planted owner records: the reaper kills and removes only what a run made ----------------


def test_a_planted_owner_record_removes_nothing_else(tmp_path: Path,
                                                     children: list[Any]) -> None:
    victim_dir = tmp_path / "victim"
    victim_dir.mkdir()
    (victim_dir / "data").write_text("keep")
    decoy = tmp_path / f"{DATA_PREFIX}decoy"
    decoy.symlink_to(victim_dir)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    children.append(bystander)
    run_dir = tmp_path / "base" / "run-1-x"
    run_dir.mkdir(parents=True)
    owner = Owner(pid=1, create_time=0.0,
                  # the right pid with another start time: not the process the run started
                  workers=[(bystander.pid, psutil.Process(bystander.pid).create_time() + 5)],
                  paths=[str(victim_dir), str(decoy), "/", str(tmp_path)])
    (run_dir / OWNER_FILE).write_text(owner.to_json())
    clean_up(run_dir)
    assert bystander.poll() is None
    assert (victim_dir / "data").read_text() == "keep"
    assert decoy.is_symlink()
    assert not run_dir.exists()


def test_a_base_directory_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    base = tmp_path / "base"
    base.symlink_to(elsewhere)
    with pytest.raises(LifecycleError, match="not a directory of this user"):
        Run(base=base)
    assert list(elsewhere.iterdir()) == []


def test_a_garbled_owner_record_is_not_trusted(tmp_path: Path) -> None:
    run_dir = tmp_path / "run-2-y"
    run_dir.mkdir()
    (run_dir / OWNER_FILE).write_text(json.dumps({"pid": "1; kill", "workers": [[1, "x"]]}))
    assert Owner.read(run_dir) is None
    clean_up(run_dir)
    assert not run_dir.exists()
    assert psutil.pid_exists(1)


# --- the API: the demo service's command line is never the request's -------------------------

BODIES: list[tuple[str, Any]] = [
    ("argv", {"command": "simulate", "scenario": "service",
              "argv": ["/bin/sh", "-c", "id > /tmp/pwned"]}),
    ("start", {"command": "simulate", "scenario": "service", "start": ["/bin/true"]}),
    ("service-name", {"command": "simulate", "scenario": "service", "service": "sshd"}),
    ("port", {"command": "simulate", "scenario": "service", "port": 22}),
    ("local-scenario", {"command": "simulate", "scenario": "cpu"}),
    ("unknown-scenario", {"command": "simulate", "scenario": "rm -rf /"}),
    ("negative-duration", {"command": "simulate", "scenario": "service", "duration_s": -5}),
    ("zero-duration", {"command": "simulate", "scenario": "service", "duration_s": 0}),
    ("huge-duration", {"command": "simulate", "scenario": "service", "duration_s": 1e9}),
    ("string-duration", {"command": "simulate", "scenario": "crashloop",
                         "duration_s": "60; reboot"}),
]


@pytest.mark.parametrize(("_name", "body"), BODIES, ids=[n for n, _ in BODIES])
async def test_hostile_simulate_requests_are_refused(tmp_path: Path, _name: str,
                                                     body: Any) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        before = dict(api.runtime.config.current.services)
        r = await api.client.post("/api/command", headers=api.auth(), json=body)
        assert r.status_code == 422, r.text
        assert dict(api.runtime.config.current.services) == before == {}
        assert api.runtime.services.names == ()


async def test_infinite_duration_is_refused(tmp_path: Path) -> None:
    """1e400 is not JSON's, but Python's parser reads it as infinity."""
    async with serve_api(api_settings(tmp_path)) as api:
        r = await api.client.post(
            "/api/command", headers={**api.auth(), "Content-Type": "application/json"},
            content=b'{"command": "simulate", "scenario": "service", "duration_s": 1e400}')
        assert r.status_code == 422, r.text
        assert api.runtime.services.names == ()


async def test_simulate_needs_the_operator_token(tmp_path: Path) -> None:
    async with serve_api(api_settings(tmp_path)) as api:
        body = {"command": "simulate", "scenario": "service", "duration_s": 5}
        for headers in ({}, api.auth(READER), api.auth(OPERATOR + "x")):
            r = await api.client.post("/api/command", headers=headers, json=body)
            assert r.status_code in (401, 403), r.text
        assert api.runtime.services.names == ()
