"""Security corpus: notifications (issue 13).

Two promises. A route URL is a secret (it carries tokens and passwords in every part): it
never appears in a log line, in `config show`, in an API body, in a config error or in what
`notify test` prints. And text from the host or the LLM cannot take over a message: control
characters are escaped, a field stays on one line (no forged "RESOLVED" line), markdown and
Slack links are broken, mass mentions are defused, and a field's length is capped.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.notify_receiver import Receiver, free_port
from watchkeeper.config import ConfigError, LoggingConfig, validate
from watchkeeper.events import Alert, Assessment
from watchkeeper.logging_setup import LOG_FILE_NAME, set_log_secrets, setup_logging
from watchkeeper.notify.message import FIELD_MAX, defuse
from watchkeeper.notify.router import Router
from watchkeeper.notify.sender import AppriseSender, secret_pieces

from ..conftest import make_settings
from ..integration.test_api_harness import OPERATOR, api_settings, serve_api
from ..integration.test_cli import wk as cli

#: (id, apprise URL, the secret in it that must never be written anywhere)
SECRET_URLS = [
    ("basic-auth-password", "json://alice:S3cr3t-Pa55word@127.0.0.1:{port}/hook",
     "S3cr3t-Pa55word"),
    ("short-password", "json://bob:pw9x@127.0.0.1:{port}/hook", "pw9x"),
    ("telegram-bot-token-as-host", "tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/987",
     "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"),
    ("slack-tokens-in-path", "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#ops",
     "TIiajkdnlazkcOXrIdevi7FQ"),
    ("discord-webhook-token", "discord://4174216298/JHMHI8qBe7bk2ZwO5U711o3dV_js",
     "JHMHI8qBe7bk2ZwO5U711o3dV_js"),
    ("token-in-query", "json://127.0.0.1:{port}/hook?token=q9Tok3nValue",
     "q9Tok3nValue"),
    ("percent-encoded-password", "ntfy://carol:p%40ss%2Fw0rd@127.0.0.1:{port}/topic",
     "p@ss/w0rd"),
]


def _url(template: str, port: int) -> str:
    return template.replace("{port}", str(port))


@pytest.fixture
def file_log(tmp_path: Path) -> Iterator[Path]:
    """watchkeeper's own handlers on the root logger, as `serve` installs them."""
    path = setup_logging(LoggingConfig(dir=tmp_path / "logs", color=False), console=False)
    try:
        yield path
    finally:
        root = logging.getLogger()
        for h in [h for h in root.handlers if getattr(h, "_watchkeeper_handler", False)]:
            root.removeHandler(h)
            h.close()
        set_log_secrets("test", [])


@pytest.mark.parametrize(("url", "secret"), [(u, s) for _i, u, s in SECRET_URLS],
                         ids=[i for i, _u, _s in SECRET_URLS])
def test_a_route_secret_never_reaches_a_log_line(file_log: Path, url: str, secret: str
                                                 ) -> None:
    url = _url(url, 9)
    assert secret in secret_pieces(url)
    set_log_secrets("test", secret_pieces(url))
    log = logging.getLogger("apprise")  # a third-party logger, as apprise's own lines are
    log.warning("posting to %s", url)
    log.warning("token %s refused", secret)
    try:
        raise ConnectionError(f"cannot reach {url}")
    except ConnectionError:
        logging.getLogger("watchkeeper.notify").exception("send failed")
    text = file_log.read_text(encoding="utf-8")
    assert "posting to" in text and "send failed" in text
    assert secret not in text and url not in text


@pytest.mark.parametrize(("url", "secret"), [(u, s) for _i, u, s in SECRET_URLS],
                         ids=[i for i, _u, _s in SECRET_URLS])
def test_a_route_secret_is_masked_in_config_show_and_config_errors(
        tmp_path: Path, url: str, secret: str) -> None:
    url = _url(url, 9)
    (tmp_path / "wk.yaml").write_text(f"notify:\n  routes:\n    - name: ops\n      url: '{url}'\n")
    shown = cli(tmp_path, "--config", "wk.yaml", "config", "show", "--format", "json")
    assert shown.returncode == 0, shown.stderr
    assert secret not in shown.stdout + shown.stderr
    # A route that is invalid for another reason: the error names the route, not the URL.
    with pytest.raises(ConfigError) as err:
        validate({"notify": {"routes": [{"name": "ops", "url": url, "escalate_to": "ops"}]}})
    assert secret not in str(err.value) and "ops" in str(err.value)


@pytest.mark.parametrize("url", [
    "nosuchscheme://user:Hunter2Hunter2@example.com/x",
    "no-scheme-at-all-Hunter2Hunter2",
], ids=["unknown-scheme", "not-a-url"])
def test_a_url_apprise_cannot_use_is_a_config_error_without_the_url(url: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate({"notify": {"routes": [{"name": "ops", "url": url}]}})
    assert "Hunter2Hunter2" not in str(err.value)
    assert "route 'ops'" in str(err.value)


@pytest.mark.parametrize(("url", "secret"), [(u, s) for _i, u, s in SECRET_URLS[:2]
                                             + SECRET_URLS[5:]],
                         ids=[i for i, _u, _s in SECRET_URLS[:2] + SECRET_URLS[5:]])
def test_notify_test_prints_the_answer_without_the_secret(tmp_path: Path, url: str,
                                                         secret: str) -> None:
    port = free_port()  # nothing listens: the channel is down
    (tmp_path / "wk.yaml").write_text(
        f"notify:\n  routes:\n    - name: ops\n      url: '{_url(url, port)}'\n")
    out = cli(tmp_path, "--config", "wk.yaml", "notify", "test")
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stdout.startswith("ops: FAILED - ")
    assert secret not in out.stdout + out.stderr


def test_notify_test_delivers_to_a_real_receiver_and_exits_0(tmp_path: Path) -> None:
    receiver = Receiver().start()
    try:
        (tmp_path / "wk.yaml").write_text(
            "personality: off\nnotify:\n  routes:\n    - name: ops\n"
            f"      url: 'json://u:Sup3rS3cret@127.0.0.1:{receiver.port}/hook'\n"
            "    - name: am\n      alertmanager: http://127.0.0.1:9\n")
        one = cli(tmp_path, "--config", "wk.yaml", "notify", "test", "ops")
        assert one.returncode == 0, one.stdout + one.stderr
        assert one.stdout.startswith("ops: sent - ")
        assert receiver.titles("hook") == ["watchkeeper test message for route ops"]
        unknown = cli(tmp_path, "--config", "wk.yaml", "notify", "test", "nope")
        assert unknown.returncode == 2 and "routes: ops, am" in unknown.stderr
        assert "Sup3rS3cret" not in one.stdout + unknown.stderr
    finally:
        receiver.stop()


async def test_no_api_body_and_no_log_line_holds_a_route_secret(tmp_path: Path) -> None:
    secret = "Api-Leak-Canary-77x"
    port = free_port()  # a route that is down: its failures are logged
    settings = api_settings(tmp_path, notify={"routes": [
        {"name": "ops", "url": f"json://ops:{secret}@127.0.0.1:{port}/hook",
         "group_wait_s": 0}]}, thresholds={"memory_warning": 0.1, "memory_critical": 100},
        analyzer={"for_s": 0})
    log_path = setup_logging(settings.logging, console=False)
    try:
        async with serve_api(settings) as api:
            notifier = next(a for a in api.runtime.agents if a.name == "notifier")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            outbox = api.runtime.outbox
            assert outbox is not None
            while not any(p.attempts for p in outbox.pending()):
                assert loop.time() < deadline, "the route was never tried"
                await asyncio.sleep(0.05)
            bodies = []
            for path in ("/api/config", "/api/agents", "/api/system", "/api/alerts",
                         "/api/activity?limit=200"):
                r = await api.client.get(path, headers=api.auth(OPERATOR))
                bodies.append(r.text)
            assert notifier.health().checks > 0
            assert all(secret not in b for b in bodies)
            assert any('"url":"**********"' in b.replace(" ", "") for b in bodies)
            assert all(secret not in (p.last_error or "") for p in outbox.pending())
    finally:
        root = logging.getLogger()
        for h in [h for h in root.handlers if getattr(h, "_watchkeeper_handler", False)]:
            root.removeHandler(h)
            h.close()
    text = log_path.read_text(encoding="utf-8")
    assert "route ops did not take a message" in text
    assert secret not in text
    assert (log_path.parent / LOG_FILE_NAME) == log_path


# --------------------------------------------------------------------------- hostile text


HOSTILE_TEXT = [
    ("newline-forges-a-resolved-line", "disk full\n[RESOLVED] web1: all good"),
    ("carriage-return-overwrite", "cpu high\r[RESOLVED] nothing to see"),
    ("ansi-escape-retitles-terminal", "cpu \x1b]0;pwned\x07 high \x1b[31mred"),
    ("nul-and-bell", "a\x00b\x07c"),
    ("bidi-override", "process \u202egnp.exe\u202c is busy"),
    ("markdown-link", "click [here](http://evil.example/login) to fix"),
    ("markdown-autolink", "see <http://evil.example/x>"),
    ("slack-link", "see <http://evil.example|the runbook>"),
    ("slack-channel-ping", "wake <!channel> and <!here> and <@U123>"),
    ("discord-everyone-ping", "@everyone @here look"),
    ("megabyte-summary", "x" * 1_000_000),
]


def _hostile_alert(text: str) -> Alert:
    t = datetime(2027, 1, 1, tzinfo=timezone.utc)
    return Alert(host="web1", at=t, id="i", fingerprint="f", rule="threshold",
                 metric="cpu.percent", severity="critical", since=t, summary=text,
                 context=text, assessment=Assessment(source="llm", summary=text,
                                                     likely_cause=text))


def _assert_defused(text: str, body: str) -> None:
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f\u202a-\u202e]", body)
    assert "](" not in body and "<!" not in body and "<@" not in body
    assert "<http" not in body
    assert not re.search(r"(?<!\u200b)@(everyone|here)\b", body.replace("@\u200b", "@_"))
    for line in body.splitlines():
        assert not line.startswith("[RESOLVED]")
        assert len(line) < FIELD_MAX + 200


@pytest.mark.parametrize("text", [t for _i, t in HOSTILE_TEXT],
                         ids=[i for i, _t in HOSTILE_TEXT])
def test_hostile_alert_text_is_neutralised_in_the_message(tmp_path: Path, text: str) -> None:
    settings = make_settings(tmp_path, notify={"routes": [
        {"name": "ops", "url": "json://127.0.0.1:9/h", "group_wait_s": 0}]})
    router = Router(lambda: settings)
    router.observe_alert(_hostile_alert(text))
    (msg,) = router.tick(datetime(2027, 1, 1, 0, 1, tzinfo=timezone.utc).timestamp())
    _assert_defused(text, msg.title + "\n" + msg.body)
    assert len(msg.body) < 4 * FIELD_MAX + 1000
    assert defuse(text) in msg.body or len(text) > FIELD_MAX


async def test_hostile_text_reaches_a_real_channel_defused(tmp_path: Path) -> None:
    receiver = Receiver().start()
    try:
        text = "\n".join(t for _i, t in HOSTILE_TEXT[:-1])
        settings = make_settings(tmp_path, notify={"routes": [
            {"name": "ops", "url": receiver.url("h"), "group_wait_s": 0}]})
        router = Router(lambda: settings)
        router.observe_alert(_hostile_alert(text))
        (msg,) = router.tick(datetime(2027, 1, 1, 0, 1, tzinfo=timezone.utc).timestamp())
        result = await asyncio.to_thread(AppriseSender().send, receiver.url("h"), msg.title,
                                         msg.body, msg.notify_type)
        assert result.ok, result.answer
        (got,) = receiver.messages("h")
        _assert_defused(text, got["title"] + "\n" + got["message"])
    finally:
        receiver.stop()
