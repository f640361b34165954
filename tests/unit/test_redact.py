"""Secret redaction in command lines and free text."""

from __future__ import annotations

import re

import pytest

from watchkeeper.redact import (
    REDACTION_RULES,
    RedactionRule,
    redact_cmdline,
    redact_text,
)

GH = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fw"

# (command line or text, the secret that must disappear, what must stay readable)
SECRETS = [
    ("app --password=hunter2 --port 80", "hunter2", "app --password=*** --port 80"),
    ("app --password hunter2 --port 80", "hunter2", "app --password *** --port 80"),
    ("app --db-password=s3cr3t", "s3cr3t", "app --db-password=***"),
    ("mysql -u root -pS3cret db", "S3cret", "mysql -u root -p*** db"),
    ("mysql -u root -p S3cret db", "S3cret", "mysql -u root -p *** db"),
    ("/usr/bin/mysqldump -h db -psup3r --all", "sup3r", "mysqldump -h db -p*** --all"),
    ("sshpass -p letmein ssh root@host", "letmein", "sshpass -p *** ssh root@host"),
    ("redis-cli -h cache -a r3dis ping", "r3dis", "redis-cli -h cache -a *** ping"),
    ("vault login --token=s.abcdefgh", "s.abcdefgh", "vault login --token=***"),
    ("client --api-key abc123xyz", "abc123xyz", "client --api-key ***"),
    ("client --apikey=abc123xyz", "abc123xyz", "client --apikey=***"),
    ("tool --client-secret=zzz999 --secret q1w2e3", "zzz999", "--client-secret=***"),
    ("tool --secret q1w2e3", "q1w2e3", "tool --secret ***"),
    ("env DB_PASSWORD=hunter2 ./run", "hunter2", "env DB_PASSWORD=*** ./run"),
    ("MYSQL_PWD=hunter2 mysql", "hunter2", "MYSQL_PWD=*** mysql"),
    ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY aws s3 ls",
     "wJalrXUtnFEMI", "AWS_SECRET_ACCESS_KEY=*** aws s3 ls"),
    ("curl -H 'Authorization: Bearer abc.def.ghi' https://api", "abc.def.ghi",
     "'Authorization: Bearer ***' https://api"),
    ("curl -H 'Authorization: Basic dXNlcjpwYXNz' x", "dXNlcjpwYXNz", "Authorization: Basic ***"),
    ("curl -H 'X-Api-Key: k3y' https://api", "k3y", "X-Api-Key: ***"),
    ("curl -u alice:wonderland https://api", "wonderland", "curl -u alice:*** https://api"),
    ("psql postgresql://app:pa55w0rd@db:5432/app", "pa55w0rd",
     "psql postgresql://app:***@db:5432/app"),
    ("git clone https://bob:p@ss@example.com/r.git", "ss@example", "https://bob:***@example.com"),
    ("redis://:hunter2@cache:6379/0", "hunter2", "redis://:***@cache:6379/0"),
    ("deploy AKIAIOSFODNN7EXAMPLE us-east-1", "AKIAIOSFODNN7EXAMPLE", "deploy *** us-east-1"),
    (f"git push https://{GH}@github.com/o/r", GH, "git push https://***@github.com/o/r"),
    ("bot xoxb-123456789012-1234567890123-AbCdEfGhIjKl", "xoxb-1234", "bot ***"),
    ("chat sk-proj-AbCdEfGhIjKlMnOpQrStUvWx", "sk-proj-AbCd", "chat ***"),
    ("pay sk_live_4eC39HqLyjWDarjtT1zdp7dc", "sk_live", "pay ***"),
    (f"call {JWT} now", JWT[:20], "call *** now"),
    ("openssl enc -aes256 -pass pass:topsecret -in f", "topsecret", "-pass ***"),
    ("openssl enc -k 00112233445566778899aabbccddeeff -in f", "00112233", "-k *** -in f"),
    ("signer --signing-key=Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA== run", "Zm9vYmFy",
     "signer --signing-key=*** run"),
    ('{"password": "hunter2", "user": "bob"}', "hunter2", '{"password": ***, "user": "bob"}'),
    ("GET /cb?access_token=abc123&state=ok", "abc123", "access_token=***&state=ok"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
     "MIIEpAIBAAKCAQEA", "PRIVATE KEY ***"),
    ("PRIVATE_KEY=0x4c0883a69102937d6231471b5dbb6204fe512961708279 node app",
     "4c0883a6", "PRIVATE_KEY=*** node app"),
    ("ssh-tool --private-key=LS0tLS1CRUdJTiBPUEVOU1NIIFBSSVZBVEUgS0VZ x", "LS0tLS1C",
     "--private-key=*** x"),
    ("webhook https://hooks.slack.com/services/T000/B000/XXXXXXXX", "XXXXXXXX",
     "https://hooks.slack.com/services/***"),
]


@pytest.mark.parametrize(("text", "secret", "kept"), SECRETS)
def test_secret_shapes_are_redacted(text: str, secret: str, kept: str) -> None:
    out = redact_cmdline(text) if "\n" not in text else redact_text(text)
    assert secret not in out
    assert kept in out


def test_argv_with_spaces_in_a_secret_value() -> None:
    out = redact_cmdline(["app", "--password", "correct horse battery", "--verbose"])
    assert out == "app --password *** --verbose"


NOT_SECRETS = [
    "python -m http.server 8000",
    "/usr/sbin/sshd -D -p 2222",
    "nginx: worker process",
    "git log --author=bob --since=2.weeks",
    "java -Xmx2g -Dspring.profiles.active=prod -jar app.jar",
    "docker run -p 8080:80 -u 1000:1000 nginx:1.25",
    "ssh -p 2222 deploy@host",
    "tar -czf backup.tar.gz /etc",
    "python train.py --max-tokens 512 --tokenizer bert-base",
    "git checkout 3f2a9c1d8e3f2a9c1d8e3f2a9c1d8e3f2a9c1d8e",
    "docker pull redis@sha256:3f2a9c1d8e3f2a9c1d8e3f2a9c1d8e3f2a9c1d8e3f2a9c1d8e3f2a9c1d8e",
    "sort --key=2 --reverse data.csv",
    "app --password-file=/run/secrets/db --no-password --token-ttl=30",
    "passwd alice",
    "grep -r password src/",
    "sudo -u postgres psql",
    "curl -k https://example.com:8443/health",
    "ls --color=auto -la /home/user",
    "postgres: checkpointer",
    "kubectl get secret app-tls -n prod",
    "PWD=/home/bob OLDPWD=/tmp make",
    "ansible-playbook --private-key ~/.ssh/id_ed25519 site.yml",
    "/usr/lib/firefox/firefox -contentproc -childID 5 -isForBrowser -prefsLen 31 tab",
    "[kworker/0:1-events]",
]


@pytest.mark.parametrize("cmd", NOT_SECRETS)
def test_ordinary_command_lines_are_untouched(cmd: str) -> None:
    assert redact_cmdline(cmd) == cmd


@pytest.mark.parametrize(("text", "secret", "kept"), SECRETS)
def test_redaction_is_idempotent(text: str, secret: str, kept: str) -> None:
    once = redact_text(text)
    assert redact_text(once) == once


def test_long_command_lines_are_truncated_after_redaction() -> None:
    argv = ["java", *[f"-Dprop{i}=value{i}" for i in range(200)], f"--token={'x' * 40}"]
    out = redact_cmdline(argv)
    assert len(out) == 512 and out.endswith("…")
    assert redact_cmdline(argv, max_len=10_000).endswith("--token=***")


def test_secret_straddling_the_cut_does_not_leak_a_prefix() -> None:
    out = redact_cmdline(["app", "x" * 480, f"--api-key={'k' * 100}"])
    assert "kkk" not in out


def test_control_characters_cannot_forge_log_lines() -> None:
    out = redact_cmdline(["sh", "-c", "echo hi\nERROR fake line\x1b[31m"])
    assert "\n" not in out and "\x1b" not in out
    assert "ERROR fake line" in out


def test_rules_are_extensible() -> None:
    rule = RedactionRule("acme", re.compile(r"\bacme_[a-z0-9]{8}\b"), "***")
    REDACTION_RULES.append(rule)
    try:
        assert redact_text("key acme_abcd1234 here") == "key *** here"
    finally:
        REDACTION_RULES.remove(rule)
    assert redact_text("key acme_abcd1234 here") == "key acme_abcd1234 here"


def test_empty_inputs() -> None:
    assert redact_cmdline([]) == ""
    assert redact_cmdline("") == ""
    assert redact_text("") == ""


@pytest.mark.timeout(10)
@pytest.mark.parametrize("text", [
    "a." * 200_000, "mysql " * 50_000, "http://a:" * 40_000, "a:b@" * 100_000,
    " -" + "a-" * 200_000, 'password="' * 50_000, "--token " * 50_000,
])
def test_pathological_text_is_linear_not_catastrophic(text: str) -> None:
    # Rules are reused on whole log excerpts for the LLM: no nested unbounded scans.
    redact_text(text)
