"""Privacy gate for the LLM: secrets redacted for good, identifiers masked and restored."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from watchkeeper.analysis.llm.privacy import Masker, Privacy, PrivacyError
from watchkeeper.config import LlmConfig
from watchkeeper.redact import is_secret_name, redact_text

# --------------------------------------------------------------------------- redaction


@pytest.mark.parametrize(("text", "secret"), [
    ("hub hf_abcdefghijklmnopqrstuvwxyz0123456789", "hf_abcdef"),
    ("npm npm_abcdefghijklmnopqrstuvwxyz0123456789", "npm_abcdef"),
    ("sg SG.abcdefghijklmnopqr.abcdefghijklmnopqrstuv", "SG.abcdef"),
    ("google ya29.a0AfH6SMBabcdefghijklmnop", "ya29.a0Af"),
    ("docker dckr_pat_abcdefghijklmnopqrstuv", "dckr_pat_abc"),
    ("DefaultEndpointsProtocol=https;AccountName=x;AccountKey=abc+/def==;", "abc+/def"),
    ("Endpoint=sb://x/;SharedAccessKeyName=k;SharedAccessKey=zzz999=", "zzz999"),
    ("Server=db;Uid=sa;Pwd=hunter2;", "hunter2"),
    ("https://b.s3.amazonaws.com/k?X-Amz-Signature=abc123&X-Amz-Credential=AKID/x", "abc123"),
    ("AUTH_KEY=s3cr3tv4lue ./run", "s3cr3tv4lue"),
    ("db_key: s3cr3tv4lue", "s3cr3tv4lue"),
])
def test_added_redaction_rules(text: str, secret: str) -> None:
    assert secret not in redact_text(text)


@pytest.mark.parametrize("text", [
    "PWD=/home/bob OLDPWD=/tmp make",
    "python -m signing.key_tool --keyfile=/etc/app/key.pem",
    "cache hit key=user:42",
])
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact_text(text) == text


@pytest.mark.parametrize(("name", "secret"), [
    ("password", True), ("DB_PASSWORD", True), ("apiKey", True), ("clientSecret", True),
    ("api-token", True), ("MYSQL_PWD", True), ("auth_key", True), ("private_key", True),
    ("tokenizer", False), ("password_file", False), ("user", False), ("team", False),
    ("keyboard", False),
])
def test_is_secret_name(name: str, secret: bool) -> None:
    assert is_secret_name(name) is secret


def test_clean_data_redacts_values_and_secret_fields() -> None:
    privacy = Privacy(LlmConfig(redact_patterns=(r"ACME-\d{6}",)))
    data = {
        "labels": {"db_password": "plain", "team": "core", "token": 12345},
        "lines": ["ok", "login password=hunter2", "ticket ACME-123456 opened"],
        "nested": [{"cmdline": "mysql -pS3cret db"}],
        "count": 3,
    }
    cleaned = privacy.clean_data(data)
    assert cleaned == {
        "labels": {"db_password": "***", "team": "core", "token": "***"},
        "lines": ["ok", "login password=***", "ticket *** opened"],
        "nested": [{"cmdline": "mysql -p*** db"}],
        "count": 3,
    }


def test_invalid_configured_pattern_is_an_error() -> None:
    with pytest.raises(PrivacyError, match="invalid regex"):
        Privacy(LlmConfig().model_copy(update={"redact_patterns": ("(",)}))


def test_without_masking_names_pass_and_restore_is_identity() -> None:
    privacy = Privacy(LlmConfig())
    text = "alice@db01.acme.com from 10.1.2.3"
    assert privacy.clean(text) == text
    assert privacy.restore("HOST_1") == "HOST_1"


# --------------------------------------------------------------------------- masking


def masked(text: str, hosts: tuple[str, ...] = (), users: tuple[str, ...] = ()
           ) -> tuple[str, Masker]:
    privacy = Privacy(LlmConfig(mask_identifiers=True))
    privacy.learn(hosts=hosts, users=users)
    out = privacy.clean(text)
    assert privacy.masker is not None
    assert privacy.restore(out) == text
    return out, privacy.masker


def test_ip_addresses_are_masked_but_loopback_is_not() -> None:
    out, _ = masked("from 10.20.30.40 and 2001:db8::7 via 127.0.0.1 and ::1 on 0.0.0.0")
    assert out == "from IP_2 and IP_1 via 127.0.0.1 and ::1 on 0.0.0.0"  # IPv6 goes first


@pytest.mark.parametrize("text", [
    "at 12:30:45 the job ran", "mac aa:bb:cc:dd:ee:ff", "version 1.2.3", "std::vector",
    "os.path.join failed", "backup.tar.gz written", "watchkeeper.analysis.llm", "cpu.percent",
    "metric:cpu.percent@2024-01-01T12:00:00Z", "proc:4242", "log:0@512", "root cause",
])
def test_things_that_are_not_identifiers_stay(text: str) -> None:
    assert masked(text, users=("root",))[0] == text


def test_host_names_known_and_recognised() -> None:
    out, masker = masked("web-01 and web-01.corp.example.com and db.acme.internal and WEB-01",
                         hosts=("web-01.corp.example.com",))
    assert out == "HOST_1 and HOST_2 and HOST_3 and HOST_4"  # restored exactly as written
    assert masker.mapping["HOST_2"] == "web-01.corp.example.com"


def test_user_names_from_processes_home_paths_and_logins() -> None:
    out, _ = masked("alice ran /home/bob/bin/x as carol@build-7.example.org; "
                    "C:\\Users\\dave\\app.exe; nobody and root stay", users=("alice",))
    assert out == ("USER_1 ran /home/USER_2/bin/x as USER_3@HOST_1; "
                   "C:\\Users\\USER_4\\app.exe; nobody and root stay")


def test_learned_names_are_masked_everywhere_later() -> None:
    privacy = Privacy(LlmConfig(mask_identifiers=True))
    data = {"processes": [{"user": "alice", "cmdline": "sync"}],
            "lines": ["alice logged in", "host=edge7"], "host": "edge7"}
    cleaned = privacy.clean_data(data)
    assert cleaned["lines"] == ["USER_1 logged in", "host=HOST_1"]
    assert cleaned["host"] == "HOST_1"
    assert cleaned["processes"][0]["user"] == "USER_1"
    assert privacy.restore_data(cleaned) == data


def test_secrets_go_before_masking_and_never_come_back() -> None:
    privacy = Privacy(LlmConfig(mask_identifiers=True))
    out = privacy.clean("psql postgres://alice:hunter2@10.0.0.5/app")
    assert "hunter2" not in out and "10.0.0.5" not in out
    assert "hunter2" not in privacy.restore(out)
    assert privacy.restore(out) == "psql postgres://alice:***@10.0.0.5/app"


def test_unknown_placeholders_are_left_as_they_are() -> None:
    privacy = Privacy(LlmConfig(mask_identifiers=True))
    assert privacy.restore("HOST_9 and USER_2") == "HOST_9 and USER_2"


_PIECES = st.sampled_from([
    "alice", "bob.smith", "10.1.2.3", "192.168.0.1", "fe80::1", "db01", "db01.acme.com",
    "/home/carol/x", "eve@mail.example.org", "cpu.percent", "12:00:01", " ", "\n", "=", ":",
    "/", "@", ".", "error", "ok", "root", "app.py", "***",
])


@given(st.lists(_PIECES, max_size=30))
def test_mask_then_restore_is_the_identity(pieces: list[str]) -> None:
    text = "".join(pieces)
    privacy = Privacy(LlmConfig(mask_identifiers=True))
    privacy.learn(hosts=("db01.acme.com",), users=("alice",))
    out = privacy.clean(text)
    assert privacy.restore(out) == redact_text(text)
    for name in ("alice", "10.1.2.3", "192.168.0.1", "db01"):
        assert not re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w-])", out), (name, out)
