"""The model's answer: parsing, and checking every suggestion against what was shown."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from typing import Any

import pytest

from watchkeeper.analysis.llm.schema import (
    AnswerError,
    EvidenceIndex,
    LlmAnswer,
    build_assessment,
    metric_id,
    parse_answer,
    stamp,
)
from watchkeeper.events import ProcessInfo

PROC = ProcessInfo(pid=4242, create_time=1000.0, name="python")
SHOWN = EvidenceIndex(ids={"proc:4242", "event:a1", "metric:cpu.percent@2024-01-01T00:00:00Z"},
                      processes={4242: PROC})


def answer(**kw: Any) -> LlmAnswer:
    data: dict[str, Any] = {"summary": "busy", "confidence": 0.9, "evidence": ["event:a1"]}
    data.update(kw)
    return LlmAnswer.model_validate(data)


def test_ids_and_stamps() -> None:
    at = datetime(2024, 1, 1, 12, 0, 0, 999_000, tzinfo=timezone.utc)
    assert stamp(at) == "2024-01-01T12:00:00Z"
    assert stamp(at.replace(tzinfo=None)) == "2024-01-01T12:00:00Z"
    assert metric_id("disk.percent", "/var", at) == "metric:disk.percent:/var@2024-01-01T12:00:00Z"


@pytest.mark.parametrize(("content", "kind"), [
    (None, "invalid_json"), ("", "invalid_json"), ("sure! {", "invalid_json"),
    ("[1, 2]", "invalid_schema"), ('{"summary": "x"}', "invalid_schema"),
    ('{"summary": "x", "confidence": 1.5}', "invalid_schema"),
    ('{"summary": "x", "confidence": 0.5, "suggested_actions": "none"}', "invalid_schema"),
])
def test_bad_replies(content: str | None, kind: str) -> None:
    with pytest.raises(AnswerError) as info:
        parse_answer(content)
    assert info.value.kind == kind


def test_lenient_where_it_is_harmless() -> None:
    text = "```json\n" + json.dumps({"summary": "s" * 5000, "confidence": 0.4,
                                     "extra": "ignored"}) + "\n```"
    parsed = parse_answer(text)
    assert len(parsed.summary) == 2000 and parsed.confidence == 0.4


def test_action_needs_existing_evidence() -> None:
    verdict = build_assessment(answer(suggested_actions=[
        {"action": "notify_only", "params": {"message": "a"}, "evidence": ["event:zzz"]},
        {"action": "notify_only", "params": {"message": "b"}, "evidence": []},
        {"action": "notify_only", "params": {"message": "c"}, "evidence": ["event:a1"]},
        {"action": "notify_only", "params": {"message": "c"}, "evidence": ["event:a1"]},
    ]), SHOWN, model="m")
    assert [a.params["message"] for a in verdict.assessment.suggested_actions] == ["c"]
    assert len(verdict.dropped) == 2
    assert "event:zzz" in verdict.dropped[0] and "cites no evidence" in verdict.dropped[1]


@pytest.mark.parametrize(("params", "evidence", "problem"), [
    ({"pid": 1}, ["proc:4242"], "greater than 1"),
    ({"pid": 0}, ["proc:4242"], "greater than 1"),
    ({"pid": 5}, ["proc:4242"], "not a process of this incident"),
    ({"pid": 4242}, ["event:a1"], "does not cite proc:4242"),
    ({"pid": 4242, "create_time": 5.0}, ["proc:4242"], "create_time does not match"),
    ({"pid": "4242; rm -rf /"}, ["proc:4242"], "invalid parameters"),
    ({"pid": 4242, "signal": 9}, ["proc:4242"], "invalid parameters"),
])
def test_stop_process_is_guarded(params: dict[str, Any], evidence: list[str], problem: str
                                 ) -> None:
    verdict = build_assessment(answer(suggested_actions=[
        {"action": "stop_process", "params": params, "evidence": evidence}]), SHOWN, model="m")
    assert verdict.assessment.suggested_actions == ()
    assert problem in verdict.dropped[0]


def test_stop_process_never_targets_watchkeeper() -> None:
    me = os.getpid()
    shown = EvidenceIndex(ids={f"proc:{me}"},
                          processes={me: ProcessInfo(pid=me, create_time=0.0, name="wk")})
    verdict = build_assessment(answer(suggested_actions=[
        {"action": "stop_process", "params": {"pid": me}, "evidence": [f"proc:{me}"]}]),
        shown, model="m")
    assert verdict.assessment.suggested_actions == ()


def test_claims_without_valid_evidence_are_dropped_and_confidence_capped() -> None:
    verdict = build_assessment(answer(evidence=["metric:made.up@x"], claims=[
        {"text": "it is the kernel", "evidence": ["proc:1"]}]), SHOWN, model="m")
    a = verdict.assessment
    assert a.evidence == () and a.confidence == 0.3
    assert "cites no verifiable evidence" in (a.note or "")


def test_restore_applies_to_text_params_and_evidence() -> None:
    def restore(x: Any) -> Any:
        if isinstance(x, str):
            return x.replace("HOST_1", "db01")
        if isinstance(x, dict):
            return {k: restore(v) for k, v in x.items()}
        return x

    shown = EvidenceIndex(ids={"metric:disk.percent:/srv/HOST_1@t"})
    verdict = build_assessment(answer(
        summary="HOST_1 is full", evidence=[],
        suggested_actions=[{"action": "clean_disk", "params": {"root": "/srv/HOST_1"},
                            "reason": "HOST_1 full",
                            "evidence": ["metric:disk.percent:/srv/HOST_1@t"]}]),
        shown, model="m", restore=restore)
    a = verdict.assessment
    assert a.summary == "db01 is full"
    assert a.suggested_actions[0].params["root"] == "/srv/db01"
    assert a.suggested_actions[0].reason == "db01 full"
    assert a.evidence == ("metric:disk.percent:/srv/db01@t",)
