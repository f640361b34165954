"""The model's answer: its JSON schema, parsing, and checking it against what it was shown.

The model must answer with one JSON object (``LlmAnswer``). Nothing in it is trusted:
suggested actions pass ``remediation.registry.validate_action`` (the only way an LLM
suggestion becomes a SuggestedAction) and must cite evidence IDs that were really shown to
the model; ``stop_process`` may only name a process from the incident's own data. What
fails is dropped and logged, and the rest becomes an ``events.Assessment(source="llm")``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from watchkeeper.events import Assessment, ProcessInfo, SuggestedAction
from watchkeeper.remediation.registry import ActionRefused, validate_action

log = logging.getLogger(__name__)

MAX_TEXT = 2000
MAX_REASON = 500


# --------------------------------------------------------------------------- evidence IDs


def stamp(at: datetime) -> str:
    """A timestamp as it appears in evidence IDs: UTC, whole seconds, ``Z``."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def metric_id(metric: str, dimension: str, at: datetime) -> str:
    """``metric:cpu.percent@<ts>`` or ``metric:disk.percent:/var@<ts>``."""
    name = f"{metric}:{dimension}" if dimension else metric
    return f"metric:{name}@{stamp(at)}"


def event_id(event: str) -> str:
    """``event:<alert id>``."""
    return f"event:{event}"


def proc_id(pid: int) -> str:
    """``proc:<pid>``."""
    return f"proc:{pid}"


def log_id(file_index: int, offset: int) -> str:
    """``log:<index of the file in llm.log_files>@<byte offset of the line>``."""
    return f"log:{file_index}@{offset}"


@dataclass
class EvidenceIndex:
    """Every evidence ID the model has been shown (in the form it saw them), and processes.

    ``processes`` holds the processes of the incident's own data (the alert and the
    snapshot), the only ones a ``stop_process`` suggestion may name.
    """

    ids: set[str] = field(default_factory=set)
    processes: dict[int, ProcessInfo] = field(default_factory=dict)

    def add(self, ids: Iterable[str]) -> None:
        """Record IDs that went out in a message."""
        self.ids.update(ids)

    def __contains__(self, item: object) -> bool:
        return item in self.ids


# --------------------------------------------------------------------------- the answer


class _Lenient(BaseModel):
    # Extra keys are ignored: models like to add fields, and nothing unknown is used.
    model_config = ConfigDict(extra="ignore")


def _cap(limit: int) -> Callable[[Any], Any]:
    def cap(value: Any) -> Any:
        return value[:limit] if isinstance(value, str) else value
    return cap


class ProposedAction(_Lenient):
    """One suggestion as the model wrote it (not yet validated against the registry)."""

    action: str = Field(description="an action name from the catalog")
    params: dict[str, Any] = Field(default_factory=dict, description="the action's parameters")
    reason: str = Field("", description="why, in one sentence")
    evidence: list[str] = Field(default_factory=list, description="evidence IDs it rests on")

    _cap_reason = field_validator("reason", mode="before")(_cap(MAX_REASON))


class Claim(_Lenient):
    """One statement of fact and the evidence IDs that support it."""

    text: str
    evidence: list[str] = Field(default_factory=list)

    _cap_text = field_validator("text", mode="before")(_cap(MAX_REASON))


class LlmAnswer(_Lenient):
    """The JSON object the model must answer with."""

    summary: str = Field(min_length=1, description="what is wrong, for an operator")
    likely_cause: str = Field("", description="the most likely cause")
    confidence: float = Field(ge=0.0, le=1.0, description="0..1")
    expected: bool = Field(False, description="true if this is known, expected activity")
    claims: list[Claim] = Field(default_factory=list, description="facts with evidence IDs")
    evidence: list[str] = Field(default_factory=list, description="IDs the summary rests on")
    suggested_actions: list[ProposedAction] = Field(default_factory=list)

    _cap_texts = field_validator("summary", "likely_cause", mode="before")(_cap(MAX_TEXT))


def answer_schema() -> dict[str, Any]:
    """The JSON schema of LlmAnswer, for the system prompt."""
    return LlmAnswer.model_json_schema()


class AnswerError(ValueError):
    """The reply is not valid JSON, or not an LlmAnswer; ``kind`` says which."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


_FENCE = re.compile(r"^\s*```(?:json|JSON)?\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)


def parse_answer(content: str | None) -> LlmAnswer:
    """Parse the model's reply (a bare JSON object, or one in a ```json fence)."""
    if content is None or not content.strip():
        raise AnswerError("invalid_json", "the reply is empty")
    text = content.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnswerError("invalid_json", f"the reply is not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise AnswerError("invalid_schema", "the reply is not a JSON object")
    try:
        return LlmAnswer.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
                             for e in exc.errors()[:5])
        raise AnswerError("invalid_schema", f"the reply does not match the schema: {problems}"
                          ) from None


# --------------------------------------------------------------------------- checking


@dataclass(frozen=True)
class Verdict:
    """The assessment built from an answer, and what was dropped on the way (and why)."""

    assessment: Assessment
    dropped: tuple[str, ...] = ()


def _restore_params(params: Mapping[str, Any], restore: Callable[[Any], Any]) -> dict[str, Any]:
    restored = restore(dict(params))
    return dict(restored) if isinstance(restored, Mapping) else {}


def _check_action(p: ProposedAction, shown: EvidenceIndex, restore: Callable[[Any], Any]
                  ) -> SuggestedAction | str:
    """A validated SuggestedAction, or the reason it was dropped."""
    if not p.evidence:
        return f"{p.action}: cites no evidence"
    unknown = [e for e in p.evidence if e not in shown]
    if unknown:
        return f"{p.action}: cites evidence it was not shown ({', '.join(unknown[:3])})"
    params = _restore_params(p.params, restore)
    try:
        action = validate_action(p.action, params, reason=str(restore(p.reason)), source="llm")
    except ActionRefused as exc:
        return str(exc)
    if action.action == "stop_process":
        pid = int(action.params["pid"])
        proc = shown.processes.get(pid)
        if proc is None:
            return f"stop_process: pid {pid} is not a process of this incident"
        if pid == os.getpid():
            return "stop_process: refusing to stop watchkeeper itself"
        if proc_id(pid) not in p.evidence:
            return f"stop_process: does not cite {proc_id(pid)}"
        given = action.params.get("create_time")
        if given is not None and proc.create_time and abs(float(given) - proc.create_time) > 1:
            return f"stop_process: create_time does not match pid {pid}"
        if given is None and proc.create_time:
            # Pin the suggestion to the process the model saw: a reused pid is never hit.
            action = validate_action("stop_process", {**action.params,
                                                      "create_time": proc.create_time},
                                     reason=action.reason, source="llm")
    return action


def build_assessment(
    answer: LlmAnswer,
    shown: EvidenceIndex,
    *,
    model: str | None,
    restore: Callable[[Any], Any] = lambda x: x,
    note: str | None = None,
) -> Verdict:
    """Check an answer against what the model was shown and turn it into an Assessment.

    ``restore`` turns masked placeholders back into real values (for text and parameters).
    Evidence is checked in the masked form the model saw.
    """
    dropped: list[str] = []
    actions: list[SuggestedAction] = []
    cited: list[str] = []
    for p in answer.suggested_actions:
        result = _check_action(p, shown, restore)
        if isinstance(result, str):
            dropped.append(result)
            log.warning("LLM suggestion dropped: %s", result)
            continue
        if any(a.action == result.action and a.params == result.params for a in actions):
            continue
        actions.append(result)
        cited.extend(p.evidence)
    for claim in answer.claims:
        bad = [e for e in claim.evidence if e not in shown]
        if bad or not claim.evidence:
            dropped.append(f"claim without valid evidence: {claim.text[:80]!r}")
            log.info("LLM claim dropped: no valid evidence (%s)", ", ".join(bad[:3]) or "none")
            continue
        cited.extend(claim.evidence)
    cited.extend(e for e in answer.evidence if e in shown)
    evidence = tuple(dict.fromkeys(str(restore(e)) for e in cited))
    confidence = answer.confidence
    notes = [note] if note else []
    if not evidence:
        # An answer that rests on nothing it was shown is a guess: say so and trust it less.
        confidence = min(confidence, 0.3)
        notes.append("the answer cites no verifiable evidence")
    if dropped:
        listing = str(restore("; ".join(dropped)))
        notes.append(f"{len(dropped)} item(s) of the answer dropped: {listing}"[:600])
    assessment = Assessment(
        source="llm",
        summary=str(restore(answer.summary)),
        likely_cause=str(restore(answer.likely_cause)),
        confidence=confidence,
        expected=answer.expected,
        suggested_actions=tuple(actions),
        evidence=evidence,
        model=model,
        note="; ".join(notes) or None,
    )
    return Verdict(assessment, tuple(dropped))
