"""Security corpus: what a route's delivery status shows (GET /api/notify, the health's
reasons, `watchkeeper notify status`) when the channel's answer is hostile, and hostile
values of notify.failing_after_s.

The promise: a last error and a health reason are one line, bounded, with no terminal
control, no bidi trick, and no secret (the route's URL parts, and every secret the logs
mask); a bad failing_after_s is a clear error naming the key, and nothing changes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.notify_receiver import Receiver
from watchkeeper.agents.commands import ask
from watchkeeper.config import ConfigError, ConfigStore, validate
from watchkeeper.logging_setup import set_log_secrets
from watchkeeper.notify.sender import SendResult
from watchkeeper.notify.status import MAX_ERROR_SHOWN

from ..integration.test_notify_delivery import T0, Rig, alert

PASSWORD = "Zq7-hostile-pass-55k"
OTHER_SECRET = "xoxb-2024-ANOTHER-ROUTES-TOKEN-9f8e7d"


class Answers:
    """The channel boundary: what apprise reports a channel answered (a plugin may quote
    the remote server's words)."""

    def __init__(self, answer: str) -> None:
        self.answer = answer

    def send(self, url: str, title: str, body: str, notify_type: str) -> SendResult:
        return SendResult(False, self.answer)


HOSTILE = [
    pytest.param("HTTP 500: \x1b]0;pwned\x07\x1b[2J", id="terminal-escapes"),
    pytest.param("refused\nINFO watchkeeper: all routes ok", id="forged-log-line"),
    pytest.param("error \u202egnp.exe", id="bidi-override"),
    pytest.param(f"auth failed for wk:{PASSWORD}", id="echoes-the-route-password"),
    pytest.param(f"upstream said: {OTHER_SECRET}", id="echoes-another-logged-secret"),
    pytest.param("x" * 1_000_000, id="a-megabyte-answer"),
    pytest.param("bad byte \udcff here \x00 and NUL", id="invalid-utf8-and-nul"),
]


def clean(text: str) -> None:
    assert PASSWORD not in text and OTHER_SECRET not in text
    assert not any(ord(c) < 32 or 0x7f <= ord(c) <= 0x9f for c in text), repr(text[:200])
    assert "\u202e" not in text and "\udcff" not in text


@pytest.mark.parametrize("answer", HOSTILE)
async def test_a_hostile_channel_answer_is_shown_defused(tmp_path: Path, receiver: Receiver,
                                                         answer: str) -> None:
    set_log_secrets("test.other", [OTHER_SECRET])
    rig = Rig(tmp_path, receiver, failing_after_s=1,
              routes=[{"name": "ops", "group_wait_s": 0,
                       "url": receiver.url("ops").replace("json://", f"json://wk:{PASSWORD}@")}])
    rig.agent.delivery.sender = Answers(answer)
    await rig.agent.setup()
    unserve = rig.bus.serve("command.web1.notifier", rig.agent.handle_command)
    try:
        await rig.publish(alert("a", T0))
        await rig.step(T0)
        rig.wall.now = T0 + 5
        result: dict[str, Any] = await ask(rig.bus, "web1", "notifier", "status", actor="t",
                                           role="viewer")
        (row,) = result["routes"]
        assert row["failed_total"] == 1 and row["state"] == "failing"
        clean(row["last_error"])
        assert len(row["last_error"]) <= MAX_ERROR_SHOWN * 6  # escapes at most 6x a char
        (reason,) = rig.agent.health().problems
        clean(reason)
        assert reason.startswith("notification route ops has failed for 5 s")
        assert len(reason) < 1000
    finally:
        set_log_secrets("test.other", [])
        unserve()
        await rig.close()


@pytest.mark.parametrize("value", [
    pytest.param(0, id="zero-would-degrade-on-any-failure"),
    pytest.param(-5, id="negative"),
    pytest.param(float("inf"), id="infinite-would-never-degrade"),
    pytest.param(float("nan"), id="nan-compares-false"),
    pytest.param("1e400", id="overflowing-string"),
    pytest.param(8 * 86400, id="past-a-week"),
    pytest.param("soon", id="not-a-number"),
    pytest.param([900], id="a-list"),
])
def test_a_bad_failing_after_s_is_refused_and_changes_nothing(value: object) -> None:
    with pytest.raises(ConfigError, match=r"notify\.failing_after_s"):
        validate({"notify": {"failing_after_s": value}})
    store = ConfigStore(validate({}))
    with pytest.raises(ConfigError, match=r"notify\.failing_after_s"):
        store.update({"notify": {"failing_after_s": value}}, source="api")
    assert store.current.notify.failing_after_s == 900


@pytest.fixture
def receiver() -> Any:
    r = Receiver().start()
    yield r
    r.stop()
