"""Security corpus: secrets in host data (issue 11, redaction class).

``secret_corpus.json`` holds real-world secret shapes, one per row: the input, the part that
must vanish and the part that must stay readable; and look-alikes that must stay as they are.
Every row goes through every path that carries host text outward: the redaction functions,
the LLM's privacy gate, log lines the LLM reads (over a real OpenAI-compatible server), and
real processes' command lines through the sensor's snapshot, the API, the stored history and
the audit log of a real server.
"""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from watchkeeper.analysis.llm.privacy import Privacy
from watchkeeper.analysis.llm.tools import Toolbox
from watchkeeper.config import LlmConfig
from watchkeeper.redact import redact_cmdline, redact_text

from ..integration.test_api_harness import api_settings, serve_api, until
from ..integration.test_cli import wk, wk_env
from ..integration.test_llm_investigator import (  # noqa: F401  (fixtures too)
    answer,
    history,
    llm_settings,
    make_alert,
    make_investigator,
    make_snapshot,
    server,
    sleeps,
)
from ..integration.test_reload import poll
from ..openai_server import OpenAIServer, completion, tool_calls

CORPUS = json.loads((Path(__file__).parent / "secret_corpus.json").read_text(encoding="utf-8"))
ROWS: list[tuple[str, str, str, str, str]] = [tuple(r) for r in CORPUS["secrets"]]
KEEP: list[tuple[str, str]] = [tuple(r) for r in CORPUS["keep"]]
CMD_ROWS = [r for r in ROWS if r[1] == "cmd"]


def _unquoted(text: str) -> str:
    # An argv joined back into one line quotes arguments with spaces; compare without quotes.
    return text.replace("'", "").replace('"', "")


def _as_data(text: str) -> str:
    # How the prompt carries host text: JSON, with < and > escaped (analysis/llm/prompts.py).
    return json.dumps(text)[1:-1].replace("<", "\\u003c").replace(">", "\\u003e")


def test_the_corpus_is_large_unique_and_well_formed() -> None:
    ids = [r[0] for r in ROWS] + [r[0] for r in KEEP]
    assert len(ROWS) >= 100 and len(KEEP) >= 40
    assert len(ids) == len(set(ids))
    for id_, kind, text, vanish, _kept in ROWS:
        assert kind in ("cmd", "text"), id_
        assert vanish and vanish in text, id_


@pytest.mark.parametrize(("kind", "text", "vanish", "kept"),
                         [pytest.param(*r[1:], id=r[0]) for r in ROWS])
def test_each_secret_shape_vanishes_and_the_rest_stays_readable(
        kind: str, text: str, vanish: str, kept: str) -> None:
    gate = Privacy(LlmConfig())
    outputs = {"redact_text": redact_text(text), "redact_cmdline": redact_cmdline(text, 4096),
               "llm gate": gate.clean(text), "llm gate, data": gate.clean_data({"line": text})}
    for path, out in outputs.items():
        out = str(out)
        assert vanish not in out, path
        assert kept in out, (path, out)
    if kind == "cmd":
        out = redact_cmdline(shlex.split(text), 4096)
        assert vanish not in out, out
        assert _unquoted(kept) in _unquoted(out), out
    assert redact_text(outputs["redact_text"]) == outputs["redact_text"]  # idempotent


@pytest.mark.parametrize("text", [pytest.param(r[1], id=r[0]) for r in KEEP])
def test_look_alikes_are_left_exactly_as_they_are(text: str) -> None:
    assert redact_text(text) == text
    assert redact_cmdline(text) == text
    assert redact_cmdline(shlex.split(text)) == shlex.join(shlex.split(text)) or \
        _unquoted(redact_cmdline(shlex.split(text))) == _unquoted(text)
    assert Privacy(LlmConfig()).clean(text) == text


# --------------------------------------------------------------------------- log lines -> LLM


async def test_no_corpus_secret_reaches_the_llm_from_logs_or_alerts(
        tmp_path: Path, server: OpenAIServer, make_investigator: Any) -> None:  # noqa: F811
    """Every row as a log line the LLM tails, and in the alert's context: the server sees
    the readable parts and none of the secrets."""
    files = []
    chunk = 30
    for n in range(0, len(ROWS), chunk):
        path = tmp_path / f"app{n // chunk}.log"
        path.write_text("\n".join(r[2] for r in ROWS[n:n + chunk]) + "\n", encoding="utf-8")
        files.append(path)
    assert len(files) <= 10  # one tail_log call each, within the default tool-call bound
    server.script(
        tool_calls(*(("tail_log", {"file": i, "lines": 100}) for i in range(len(files)))),
        completion(answer()),
    )
    settings = llm_settings(tmp_path, server, log_files=[str(p) for p in files])
    inv = make_investigator(settings, tools=Toolbox(history=history, max_log_lines=200))
    alert = make_alert(context="\n".join(r[2] for r in ROWS[:40]))
    result, _ = await inv.assess(alert, make_snapshot())
    assert result.source == "llm", result.note

    raw = server.raw_bytes().decode("utf-8")
    text = "\n".join(m.get("content") or "" for m in server.chat_requests[-1].messages)
    leaked = [r[0] for r in ROWS if r[3] in raw or json.dumps(r[3])[1:-1] in raw]
    assert leaked == []
    # The lines did arrive, readable: every single-line row's kept part is in the prompt.
    missing = [r[0] for r in ROWS if "\n" not in r[2] and r[4] and "PRIVATE KEY" not in r[2]
               and r[4] not in text and _as_data(r[4]) not in text]
    assert missing == []


# --------------------------------------------------------------------------- real processes


class OwnProcesses:
    """Real psutil, with process_iter limited to the processes this test started.

    So the sensor's top lists (at most 100 rows) hold exactly the corpus processes, whatever
    else runs on the machine; every value still comes from /proc.
    """

    def __init__(self, pids: set[int]) -> None:
        self._pids = pids

    def process_iter(self, *args: Any, **kwargs: Any) -> Iterator[psutil.Process]:
        return (p for p in psutil.process_iter(*args, **kwargs) if p.pid in self._pids)

    def __getattr__(self, name: str) -> Any:
        return getattr(psutil, name)


BATCH = 90
BATCHES = [CMD_ROWS[n:n + BATCH] for n in range(0, len(CMD_ROWS), BATCH)]


@pytest.fixture
def corpus_processes(request: pytest.FixtureRequest) -> Iterator[dict[int, tuple[str, ...]]]:
    """One real, idle process per command-line row: ``sh -c 'read _' <the row's argv>``."""
    started: dict[int, tuple[str, ...]] = {}
    procs = []
    try:
        for row in BATCHES[request.param]:
            proc = subprocess.Popen(["sh", "-c", "read _", *shlex.split(row[2])],
                                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
            procs.append(proc)
            started[proc.pid] = row
        yield started
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
            assert proc.stdin is not None
            proc.stdin.close()


@pytest.mark.slow
@pytest.mark.parametrize("corpus_processes", range(len(BATCHES)), indirect=True)
async def test_real_command_lines_are_redacted_in_snapshot_api_history_and_audit(
        tmp_path: Path, corpus_processes: dict[int, tuple[str, ...]]) -> None:
    pids = set(corpus_processes)
    settings = api_settings(tmp_path, sensor={"top_processes": 100})
    async with serve_api(settings, psutil_module=OwnProcesses(pids)) as api:
        async def listed() -> dict[int, str] | None:
            r = await api.client.get("/api/metrics", headers=api.auth())
            if r.status_code != 200:
                return None
            procs = r.json()["processes"]
            seen = {p["pid"]: p["cmdline"] for p in procs["top_cpu"] + procs["top_memory"]}
            return seen if pids <= set(seen) else None

        shown = await until(listed)
        for pid, (id_, _kind, _text, vanish, kept) in corpus_processes.items():
            assert vanish not in shown[pid], id_
            assert _unquoted(kept) in _unquoted(shown[pid]), (id_, shown[pid])

        # The audit log: a dry run of stop_process on each (its preview names the command
        # line) with the row's text as the operator's reason.
        for pid, (id_, _kind, text, vanish, _kept) in corpus_processes.items():
            r = await api.client.post("/api/command", headers=api.auth(), json={
                "command": "remediate", "action": "stop_process", "params": {"pid": pid},
                "dry_run": True, "reason": text})
            assert r.status_code == 200, (id_, r.text)
            assert vanish not in r.text, id_
        pages = [(await api.client.get(path, headers=api.auth())).text
                 for path in ("/api/actions", "/api/activity", "/api/metrics")]
        for id_, _kind, _text, vanish, _kept in corpus_processes.values():
            assert all(vanish not in page for page in pages), id_
        assert sum(str(pid) in pages[0] for pid in pids) == len(pids)  # the rows are there
    # Nothing the store or the audit log wrote holds a secret.
    written = b"".join(p.read_bytes() for p in settings.storage.path.rglob("*")
                       if p.is_file())
    assert written
    leaked = [row[0] for row in corpus_processes.values() if row[3].encode() in written]
    assert leaked == []


# --------------------------------------------------------------------------- llm.redact_patterns

BAD_PATTERNS = [
    pytest.param("(unclosed", "missing ), unterminated subpattern", id="invalid-regex"),
    pytest.param("[z-a]", "bad character range", id="invalid-range"),
    pytest.param("(a+)+$", "nests one repeat inside another", id="catastrophic-nested-plus"),
    pytest.param(r"(\w+\s?)*;", "nests one repeat inside another", id="catastrophic-word-star"),
    pytest.param("(.*a){12}", "nests one repeat inside another", id="polynomial-bounded-outer"),
    pytest.param("x?", "matches the empty string", id="matches-empty"),
    pytest.param("a" * 257, "longer than 256 characters", id="too-long"),
]


@pytest.mark.parametrize(("pattern", "why"), BAD_PATTERNS)
def test_a_bad_redact_pattern_is_a_config_error_naming_it(
        tmp_path: Path, pattern: str, why: str) -> None:
    (tmp_path / "wk.yaml").write_text(json.dumps({"llm": {"redact_patterns": [
        r"CORP-[A-Z0-9]{10}", pattern]}}))
    result = wk(tmp_path, "config", "validate", "wk.yaml")
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert "llm.redact_patterns" in out and why in out and pattern[:40] in out
    assert "Traceback" not in out


def test_good_redact_patterns_pass_and_too_many_do_not(tmp_path: Path) -> None:
    good = [r"CORP-[A-Z0-9]{10}", r"(?i)ticket-\d+", r"(?:x\d{2})+", r"(?>a+)+b"]
    (tmp_path / "ok.yaml").write_text(json.dumps({"llm": {"redact_patterns": good}}))
    assert wk(tmp_path, "config", "validate", "ok.yaml").returncode == 0
    (tmp_path / "many.yaml").write_text(json.dumps(
        {"llm": {"redact_patterns": [f"corp{i}-x" for i in range(33)]}}))
    result = wk(tmp_path, "config", "validate", "many.yaml")
    assert result.returncode == 2 and "at most 32 patterns" in result.stdout + result.stderr


def test_a_reload_with_a_bad_redact_pattern_changes_nothing(tmp_path: Path) -> None:
    config_file = tmp_path / "watchkeeper.yaml"
    config_file.write_text(json.dumps({"agents": {"check_interval": 0.2}}))
    proc = subprocess.Popen([sys.executable, "-m", "watchkeeper", "run", "--no-console-log"],
                            cwd=tmp_path, env=wk_env(tmp_path), stderr=subprocess.PIPE,
                            text=True)

    def log() -> str:
        return "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))

    try:
        poll(lambda: "is on watch as" in log())
        config_file.write_text(json.dumps({"agents": {"check_interval": 0.2},
                                           "thresholds": {"cpu_warning": 61},
                                           "llm": {"redact_patterns": ["(a+)+$"]}}))
        proc.send_signal(signal.SIGHUP)
        poll(lambda: "config reload refused, nothing changed" in log())
        assert "llm.redact_patterns" in log() and "(a+)+$" in log()
        assert "config reloaded" not in log()
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


# --------------------------------------------------------------------------- hostile sizes

N = 40_000
PATHOLOGICAL = {
    "nested-assignments": "pass " + "x=" * N, "nested-colons": "key " + "ab:" * N,
    "secret-assignments": "password=" * N, "env-keys": "A_KEY=" * N, "env-key-paths": "A_KEY=/" * N,
    "masked-already": "password=***" * N, "htpasswd": "htpasswd -b " * N,
    "rabbitmqctl": "rabbitmqctl add_user " * N, "curl-cookies": "curl -b a=" * N,
    "xml-open-tags": "<password>" * N, "sql-quotes": "IDENTIFIED BY '" * N,
    "chpasswd": "echo a:b | chpasswd " * N, "oracle": "jdbc:oracle:thin:" * N,
    "query-keys": "?key=" * N, "json-keys": '"password": "' * N, "curl-u": "-u a:" * N,
    "smb-u": "-U a%" * N, "url-at-signs": "https://" + "a" * 200 + "@" * N,
    "registry-login": "docker login -p " * N, "quotes": '"' * N, "backslashes": "\\" * N,
    "escapes": "\x1b" * N, "invalid-utf8": "\udcff" * N,
}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("text", [pytest.param(v, id=k) for k, v in PATHOLOGICAL.items()])
def test_hostile_lines_cost_linear_time(text: str) -> None:
    # Each ran in under half a second here; a quadratic rule takes a minute on these.
    redact_text(text)
    redact_cmdline(text)
