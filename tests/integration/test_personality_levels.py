"""Personality levels in the log of a real sequence: a real runtime whose managed service
(a process it started) is killed with SIGKILL, alerted on, restarted by remediation and
resolved; and a memory warning at 0.1 % (changed from the default so that a notable state,
the Commentator's subject, exists at once). stable_window_s is 1 (default 5) to keep each
run short; everything else is the default.

off: plain words, no emoji, no quips; professional: emoji as status marks, no quips;
witty (the default): marks and the Commentator's one-liners.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from watchkeeper.personality import _ALL_CLEAR, _LINES, _RECOVERY
from watchkeeper.runtime import Runtime

from ..conftest import make_settings
from .test_api_harness import until
from .test_remediator import free_port
from .test_services_api import web

#: Emoji and pictographs, dingbats, arrows used as marks, variation selector 16.
EMOJI = re.compile("[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF\u21BB\uFE0F]")


def quip_fragments() -> list[str]:
    """The literal words of every one-liner (between its placeholders), long enough to be
    telling: finding one in a text means a quip got there."""
    templates = [t for group in (*_LINES.values(), *_RECOVERY.values(), _ALL_CLEAR)
                 for t in group]
    parts = [re.sub(r"^[^A-Za-z]+|[^A-Za-z]+$", "", p)
             for t in templates for p in re.split(r"\{[^}]*\}", t)]
    return sorted({p for p in parts if len(p) >= 14})


QUIPS = quip_fragments()


def has_quip(text: str) -> bool:
    return any(q in text for q in QUIPS)


async def run_sequence(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                       personality: dict[str, Any] | None) -> list[str]:
    """The log lines (watchkeeper.*, INFO and up) of crash -> alert -> restart -> resolve."""
    sections: dict[str, Any] = {
        "llm": {"enabled": False},
        "thresholds": {"memory_warning": 0.1, "memory_critical": 100},
        "analyzer": {"for_s": 0},
        "services": {"web": web(free_port())},
        "remediation": {"stable_window_s": 1},
    }
    if personality is not None:
        sections["personality"] = personality
    caplog.set_level(logging.INFO, logger="watchkeeper")
    runtime = Runtime(make_settings(tmp_path, **sections))
    await runtime.start()
    try:
        status = await runtime.services.wait_healthy("web", timeout_s=10)
        assert status.pid is not None
        os.kill(status.pid, signal.SIGKILL)  # the runtime started it for this test

        async def resolved() -> bool:
            return any("resolved: Service web" in r.getMessage() for r in caplog.records)
        await until(resolved, timeout=30)

        async def memory_said() -> bool:
            return any("[warning] Memory is" in r.getMessage() for r in caplog.records)
        await until(memory_said, timeout=30)
    finally:
        await runtime.stop()
    return [r.getMessage() for r in caplog.records if r.name.startswith("watchkeeper")]


def the(lines: list[str], words: str) -> str:
    found = [line for line in lines if words in line]
    assert found, f"no log line with {words!r} in:\n" + "\n".join(lines)
    return found[0]


async def test_witty_is_the_default_with_marks_and_quips(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lines = await run_sequence(tmp_path, caplog, None)
    assert the(lines, "[critical] Service web").startswith("🔥 [critical] Service web")
    assert re.match(r"⚠️ +\[warning\] Memory is", the(lines, "[warning] Memory is"))
    assert the(lines, "restart_service web (proposed by").startswith("🔧 ")
    assert the(lines, "resolved: Service web").startswith("✅ resolved: Service web")
    quips = [line for line in lines if has_quip(line)]
    # The Commentator spoke (of memory, which the thresholds make notable, unless the
    # machine's load made CPU or load the more notable state at that moment).
    assert quips, lines


async def test_professional_keeps_the_marks_and_drops_the_quips(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lines = await run_sequence(tmp_path, caplog, {"level": "professional"})
    assert the(lines, "[critical] Service web").startswith("🔥 [critical] Service web")
    assert the(lines, "restart_service web (proposed by").startswith("🔧 ")
    assert the(lines, "resolved: Service web").startswith("✅ resolved: Service web")
    assert [line for line in lines if has_quip(line)] == []


@pytest.mark.parametrize("personality", [{"level": "off"}, {"enabled": False}],
                         ids=["level-off", "enabled-false"])
async def test_off_is_plain_words_without_emoji_or_quips(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, personality: dict[str, Any]) -> None:
    lines = await run_sequence(tmp_path, caplog, personality)
    assert the(lines, "[critical] Service web").startswith("[critical] Service web")
    assert the(lines, "restart_service web (proposed by").startswith("restart_service web")
    assert the(lines, "resolved: Service web").startswith("resolved: Service web")
    assert [line for line in lines if EMOJI.search(line)] == []
    assert [line for line in lines if has_quip(line)] == []


def test_the_quip_fragments_are_telling() -> None:
    assert "the OOM killer is sharpening its pencil" in QUIPS
    assert not has_quip("Memory is 97% used (critical at 95%) for 30 s")
    assert sys.version_info >= (3, 11)
