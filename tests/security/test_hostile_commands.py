"""Security corpus: hostile commands published straight on the bus (issue 15, item 1).

Whoever can publish on ``command.<host>.<agent>`` (a bug in the API, a compromised central
server, a process on a shared broker) may send anything. The promise: every agent checks
every command - host, target, verb, argument types and sizes, role, its own state and its
local policy - and answers a clear refusal with a code, changing nothing; each refusal is
audited (logged, and published as a CommandRefused event that the history keeps, with who
asked, as what role, and the request id).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from watchkeeper.bus import MemoryBus, command_topic
from watchkeeper.events import Command, CommandRefused, CommandReply, Heartbeat, decode
from watchkeeper.runtime import Runtime

from ..integration.test_api_harness import api_settings

HOST = "wk-hostile"

#: Always in the future, whatever today is.
FAR = "9999-01-01T00:00:00+00:00"


def _nested(levels: int) -> dict[str, Any]:
    node: dict[str, Any] = {"cpu_warning": 70}
    for _ in range(levels):
        node = {"thresholds": node}
    return node

#: (id, agent, verb, args, role, expected code): each must be refused, changing nothing.
CASES: list[tuple[str, str, str, dict[str, Any], str, str]] = [
    # Verbs an agent does not take, including other agents' verbs and near misses.
    ("unknown-verb", "analyzer", "format_disk", {}, "operator", "unknown_command"),
    ("other-agents-verb", "analyzer", "approve", {"approval_id": 1}, "operator",
     "unknown_command"),
    ("verb-case-trick", "analyzer", "ACK", {"fingerprint": "x"}, "operator", "unknown_command"),
    ("verb-with-shell", "remediator", "reset; rm -rf /", {}, "operator", "unknown_command"),
    ("private-method-name", "remediator", "_run", {}, "operator", "unknown_command"),
    ("newline-in-verb-forges-no-log-line", "analyzer", "ack\nWARNING root: all is well", {},
     "operator", "unknown_command"),
    # Wrong argument types: strict, no coercion ("1" is not 1, true is not 1).
    ("id-as-string", "remediator", "approve", {"approval_id": "1"}, "operator", "invalid"),
    ("id-as-bool", "remediator", "approve", {"approval_id": True}, "operator", "invalid"),
    ("id-as-float", "remediator", "approve", {"approval_id": 1.5}, "operator", "invalid"),
    ("id-negative", "remediator", "reject", {"approval_id": -1}, "operator", "invalid"),
    ("id-over-int64", "remediator", "approve", {"approval_id": 2**64}, "operator", "invalid"),
    ("fingerprint-as-list", "analyzer", "ack", {"fingerprint": ["a"]}, "operator", "invalid"),
    ("missing-argument", "analyzer", "ack", {}, "operator", "invalid"),
    ("unknown-argument", "analyzer", "ack", {"fingerprint": "x", "force": True}, "operator",
     "invalid"),
    ("args-to-a-no-args-verb", "analyzer", "pause", {"now": True}, "operator", "invalid"),
    ("dry-run-as-string", "remediator", "remediate",
     {"action": "notify_only", "params": {"message": "x"}, "dry_run": "false"}, "operator",
     "invalid"),
    ("until-not-a-date", "analyzer", "silence",
     {"matchers": {"metric": "*"}, "until": "tomorrow"}, "operator", "invalid"),
    ("until-without-zone", "analyzer", "silence",
     {"matchers": {"metric": "*"}, "until": "2100-01-01T00:00:00"}, "operator", "invalid"),
    ("until-in-the-past", "analyzer", "silence",
     {"matchers": {"metric": "*"}, "until": "2000-01-01T00:00:00+00:00"}, "operator",
     "invalid"),
    ("silence-matching-nothing", "analyzer", "silence",
     {"matchers": {}, "until": FAR}, "operator", "invalid"),
    ("simulate-unknown-scenario", "runtime", "simulate", {"scenario": "fork_bomb"}, "operator",
     "invalid"),
    ("simulate-forever", "runtime", "simulate", {"scenario": "service", "duration_s": 1e9},
     "operator", "invalid"),
    # Oversize and control characters.
    ("oversize-fingerprint", "analyzer", "ack", {"fingerprint": "f" * 10_000}, "operator",
     "invalid"),
    ("oversize-comment", "analyzer", "silence",
     {"matchers": {"metric": "*"}, "until": FAR,
      "comment": "c" * 5000}, "operator", "invalid"),
    ("too-many-matchers", "analyzer", "silence",
     {"matchers": {f"label{i}": "*" for i in range(100)},
      "until": FAR}, "operator", "invalid"),
    ("args-over-64k", "runtime", "config_patch",
     {"patch": {"thresholds": {"cpu_warning": 70}, "pad": "x" * 70_000}}, "operator",
     "invalid"),
    ("nul-in-fingerprint", "analyzer", "ack", {"fingerprint": "a\x00b"}, "operator", "invalid"),
    ("escape-in-reason", "remediator", "reject", {"approval_id": 1, "reason": "\x1b[2J"},
     "operator", "invalid"),
    ("nul-in-reset-target", "remediator", "reset", {"target": "service:web\x00"}, "operator",
     "invalid"),
    ("reset-unknown-kind", "remediator", "reset", {"target": "file:/etc/passwd"}, "operator",
     "invalid"),
    # The viewer role may ask questions, never change anything.
    ("viewer-acks", "analyzer", "ack", {"fingerprint": "x"}, "viewer", "forbidden"),
    ("viewer-pauses", "remediator", "pause", {}, "viewer", "forbidden"),
    ("viewer-restarts", "analyzer", "restart", {}, "viewer", "forbidden"),
    ("viewer-remediates", "remediator", "remediate",
     {"action": "notify_only", "params": {"message": "x"}}, "viewer", "forbidden"),
    ("viewer-patches-config", "runtime", "config_patch",
     {"patch": {"thresholds": {"cpu_warning": 70}}}, "viewer", "forbidden"),
    # What this host's local policy does not allow, whoever asks.
    ("config-services-runs-anything", "runtime", "config_patch",
     {"patch": {"services": {"x": {"manager": "process", "start": ["/bin/sh", "-c", "id"]}}}},
     "operator", "invalid"),
    ("config-scripts", "runtime", "config_patch",
     {"patch": {"remediation": {"scripts": {"x": {"argv": ["/bin/rm", "-rf", "/"]}}}}},
     "operator", "invalid"),
    ("config-llm-elsewhere", "runtime", "config_patch",
     {"patch": {"llm": {"base_url": "https://attacker.example/v1"}}}, "operator", "invalid"),
    ("config-allow-everything", "runtime", "config_patch",
     {"patch": {"remediation": "everything"}}, "operator", "invalid"),
    ("config-storage-restart-only", "runtime", "config_patch",
     {"patch": {"storage": {"data_dir": "/tmp/elsewhere"}}}, "operator", "invalid"),
    ("config-threshold-as-string", "runtime", "config_patch",
     {"patch": {"thresholds": {"cpu_warning": "70"}}}, "operator", "invalid"),
    ("config-nested-deep", "runtime", "config_patch", {"patch": _nested(40)}, "operator",
     "invalid"),
    ("remediate-unregistered-action", "remediator", "remediate",
     {"action": "run_shell", "params": {"cmd": "id"}}, "operator", "invalid"),
    ("remediate-stop-pid-1", "remediator", "remediate",
     {"action": "stop_process", "params": {"pid": 1}}, "operator", "invalid"),
    ("remediate-bad-params", "remediator", "remediate",
     {"action": "restart_service", "params": {"service": ["web"]}}, "operator", "invalid"),
    ("reset-undeclared-service", "remediator", "reset", {"target": "service:sshd"}, "operator",
     "not_found"),
    ("approve-nothing", "remediator", "approve", {"approval_id": 424242}, "operator",
     "not_found"),
    ("unsilence-nothing", "analyzer", "unsilence", {"silence_id": "../../etc"}, "operator",
     "not_found"),
]


@dataclass
class Host:
    runtime: Runtime
    bus: MemoryBus

    async def send(self, command: Command, agent: str) -> CommandReply:
        reply = await self.bus.request(command_topic(self.runtime.host, agent), command,
                                       timeout=10)
        assert isinstance(reply, CommandReply)
        return reply

    def state(self) -> tuple[Any, ...]:
        """What a refused command must leave as it was."""
        analyzer = self.runtime.supervisor.agents["analyzer"]
        return (self.runtime.config.version, len(self.runtime.audit.entries(limit=1000)),
                [s.id for s in analyzer.engine.silences],  # type: ignore[attr-defined]
                [h.state == "paused" for h in self.runtime.supervisor.health()],
                sorted(self.runtime.services.names))


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[Host]:
    settings = api_settings(tmp_path).model_copy(update={"host_name": HOST})
    bus = MemoryBus()
    # No sensor: nothing but the commands sent here may change anything.
    runtime = Runtime(settings, bus=bus, agents=["communicator", "analyzer", "remediator"])
    await runtime.start()
    try:
        yield Host(runtime, bus)
    finally:
        await runtime.stop()


@pytest.mark.parametrize(("agent", "verb", "args", "role", "code"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_a_hostile_command_is_refused_changes_nothing_and_is_audited(
        host: Host, agent: str, verb: str, args: dict[str, Any], role: str, code: str,
        caplog: pytest.LogCaptureFixture) -> None:
    audit = host.bus.subscribe(f"system.{HOST}", name="audit-watch")
    before = host.state()
    command = Command(host=HOST, target=agent, command=verb, args=args, actor="mallory",
                      role=role)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO):
        reply = await host.send(command, agent)
    assert not reply.ok and reply.code == code, reply
    assert reply.request_id == command.request_id and reply.message
    assert "Traceback" not in reply.message
    assert host.state() == before
    refusals = [e for _, e in iter(audit.get_nowait, None) if isinstance(e, CommandRefused)]
    assert [(r.command, r.actor, r.role, r.code, r.request_id) for r in refusals] == \
        [(verb, "mallory", role, code, command.request_id)]
    (line,) = [r.getMessage() for r in caplog.records if command.request_id in r.getMessage()]
    assert "'mallory'" in line and "\n" not in line


#: Commands that reach the wrong place: another host's, another agent's, or not a command.
MISROUTED = [
    ("for-another-host", "analyzer", Command(host="other-host", target="analyzer",
                                             command="pause", actor="mallory")),
    ("for-another-agent", "analyzer", Command(host=HOST, target="remediator", command="pause",
                                              actor="mallory")),
    ("runtime-as-all", "runtime", Command(host=HOST, target="sensor", command="config_patch",
                                          args={"patch": {}}, actor="mallory")),
]


@pytest.mark.parametrize(("agent", "command"), [m[1:] for m in MISROUTED],
                         ids=[m[0] for m in MISROUTED])
async def test_a_misrouted_command_is_refused(host: Host, agent: str, command: Command
                                              ) -> None:
    before = host.state()
    reply = await host.send(command, agent)
    assert not reply.ok and reply.code == "invalid"
    assert host.state() == before


async def test_an_event_that_is_not_a_command_is_refused(host: Host) -> None:
    beat = Heartbeat(host=HOST, agent="sensor",
                     health=host.runtime.supervisor.health()[0])
    reply = await host.bus.request(command_topic(HOST, "analyzer"), beat, timeout=10)
    assert isinstance(reply, CommandReply) and not reply.ok and reply.code == "invalid"
    assert "expected a command" in reply.message


@pytest.mark.parametrize("field,value", [
    ("command", "x" * 65), ("command", ""), ("target", "a" * 65), ("actor", "m" * 201),
    ("role", "admin"), ("role", "root"), ("request_id", "r" * 65),
    ("request_id", "r1\nWARNING forged"), ("request_id", ""),
    ("actor", "alice\nWARNING forged"), ("actor", "bob\x00"), ("actor", ""),
], ids=["verb-over-64", "verb-empty", "target-over-64", "actor-over-200", "role-admin",
        "role-root", "request-id-over-64", "request-id-with-newline", "request-id-empty",
        "actor-with-newline", "actor-with-nul", "actor-empty"])
def test_a_malformed_command_never_decodes(field: str, value: str) -> None:
    """What a network bus carries is decoded into the typed event first: a command whose
    envelope is out of bounds is no command at all (the bus refuses it before any agent)."""
    raw = Command(host=HOST, command="pause").model_dump(mode="json")
    raw[field] = value
    with pytest.raises(ValidationError):
        decode(json.dumps(raw))


async def test_python_objects_in_arguments_are_refused(host: Host) -> None:
    """Arguments are JSON: an in-process sender that slips an object past the event's own
    check (model_construct) is refused by the agent, not handed the object."""
    before = host.state()
    command = Command.model_construct(
        host=HOST, target="analyzer", command="ack", args={"fingerprint": object()},
        actor="mallory", role="operator", request_id="r1", kind="command", schema_version=1)
    reply = await host.send(command, "analyzer")
    assert not reply.ok and reply.code == "invalid" and "JSON" in reply.message
    assert host.state() == before


async def test_the_same_commands_as_an_operator_do_work(host: Host) -> None:
    """The corpus refuses for the reasons named, not everything: well-formed commands from
    an operator are carried out (and a viewer may read)."""
    reply = await host.send(Command(host=HOST, target="analyzer", command="silence", args={
        "matchers": {"metric": "cpu.*"}, "until": FAR},
        actor="alice"), "analyzer")
    assert reply.ok and reply.result is not None, reply
    silence = reply.result["silence"]
    assert isinstance(silence, dict) and silence["by"] == "alice"
    reply = await host.send(Command(host=HOST, target="analyzer", command="silences",
                                    role="viewer", actor="bob"), "analyzer")
    assert reply.ok and reply.result is not None and len(reply.result["silences"]) == 1  # type: ignore[arg-type]
    reply = await host.send(Command(host=HOST, target="runtime", command="config_patch",
                                    args={"patch": {"thresholds": {"cpu_warning": 70}}},
                                    actor="alice"), "runtime")
    assert reply.ok and host.runtime.config.current.thresholds.cpu_warning == 70
