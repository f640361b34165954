"""Redact secrets from command lines and free text before they are stored or leave the host.

The rules follow the shapes detect-secrets' plugins look for (AWS, GitHub, Slack, JWT, private
keys, basic-auth URLs, secret keywords) plus command-line forms of our own (``--password x``,
``mysql -pX``, ``curl -u user:pass``). We keep our own regexes rather than depend on
detect-secrets because it only *detects* (we must rewrite in place, keeping the rest
readable) and its entropy plugins would flag every hash and container digest in a command
line. The list is module-level so callers (the LLM redaction) can append rules.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass

MASK = "***"
DEFAULT_MAX_LEN = 512
_ELLIPSIS = "…"

Replacement = str | Callable[[re.Match[str]], str]


@dataclass(frozen=True)
class RedactionRule:
    """One secret shape: a regex and what its match becomes (``\\g<name>`` groups allowed)."""

    name: str
    pattern: re.Pattern[str]
    replacement: Replacement

    def apply(self, text: str) -> str:
        """Rewrite every match of this rule in ``text``."""
        return self.pattern.sub(self.replacement, text)


# A value: a quoted string or a run of non-space characters.
_VALUE = r"""(?:"[^"]*"|'[^']*'|[^\s"']+)"""
# Key names whose value is a secret whatever it looks like (matched at the end of a name, so
# DB_PASSWORD, --auth-token and clientSecret count, while --password-file and tokenizer don't).
_COMMON_WORDS = (
    r"password|passwd|passphrase|secret|token|api[_-]?key|apikey|access[_-]?key"
    r"|secret[_-]?key|client[_-]?secret|credentials?"
)
# PRIVATE_KEY=... in an environment holds key material, and so do the *_KEY names
# detect-secrets' keyword plugin knows (AUTH_KEY, DB_KEY, ...); as flags they often take a path.
_SECRET_WORDS = (_COMMON_WORDS + r"|private[_-]?key"
                 r"|(?:auth|service|account|db|database|client|encryption|master|session)[_-]?key")
# As flags, --private-key takes a path (ansible, ssh tools) and is left to the key-material
# rule below; bare --pass/-pass (openssl and friends) takes a password.
_FLAG_WORDS = _COMMON_WORDS + r"|pass"
# Programs whose short flag takes a password: mysql -pX / -p X, sshpass -p X, redis-cli -a X.
_SHORT_FLAG_PROGRAMS: tuple[tuple[str, str, str], ...] = (
    ("mysql_p", r"mysql\w*|mariadb(?:-\w+)?|sshpass", "p"),
    ("redis_cli_a", r"redis-cli|keydb-cli", "a"),
)


def _keep_key(m: re.Match[str]) -> str:
    return f"{m.group('key')}{MASK}"


def _looks_like_key(value: str) -> bool:
    """Long hex, or base64-ish with letters and digits: key material, not a word or a path."""
    v = value.strip("\"'")
    if re.fullmatch(r"[0-9a-fA-F]{32,}", v):
        return True
    return bool(
        len(v) >= 24
        and re.fullmatch(r"[A-Za-z0-9+/_=-]+", v)
        and re.search(r"\d", v)
        and re.search(r"[A-Za-z]", v)
    )


def _keyish_value(m: re.Match[str]) -> str:
    return f"{m.group('key')}{MASK}" if _looks_like_key(m.group("value")) else m.group(0)


def _rule(
    name: str, pattern: str, replacement: Replacement = MASK, flags: int = 0
) -> RedactionRule:
    return RedactionRule(name, re.compile(pattern, flags), replacement)


#: Applied in order by redact_text(); append a RedactionRule to extend.
REDACTION_RULES: list[RedactionRule] = [
    _rule(
        "private_key_block",
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY"
        r"( BLOCK)?-----|\Z)",
        f"-----PRIVATE KEY {MASK}-----",
        re.DOTALL,
    ),
    _rule(
        "auth_header",
        r"(?P<key>\b(?:proxy-)?authorization\s*:\s*(?:(?:bearer|basic|token|bot|digest|negotiate)"
        r"\s+)?)[^\s\"']+",
        _keep_key,
        re.IGNORECASE,
    ),
    _rule(
        "api_key_header",
        r"(?P<key>\b(?:x-api-key|x-auth-token|api-key|x-access-token|private-token)\s*:\s*)"
        r"[^\s\"']+",
        _keep_key,
        re.IGNORECASE,
    ),
    _rule("bearer", r"(?P<key>\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}", _keep_key, re.IGNORECASE),
    # scheme://user:password@host -> scheme://user:***@host (up to the last @: unencoded @s)
    _rule(
        "url_credentials",
        r"(?P<key>(?<![\w+.-])[a-zA-Z][a-zA-Z0-9+.-]{0,31}://[^\s/:@\"']{0,256}:)"
        r"[^\s/\"']{1,256}(?=@)",
        _keep_key,
    ),
    _rule("slack_webhook", r"(?P<key>https://hooks\.slack\.com/services/)[A-Za-z0-9/_-]+",
          _keep_key),
    _rule("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
    _rule("aws_access_key_id", r"\b(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}\b"),
    _rule("github_token", r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})"),
    _rule("gitlab_token", r"\bglpat-[A-Za-z0-9_-]{20,}"),
    _rule("slack_token", r"\bxox[baprs]-[A-Za-z0-9-]{10,}"),
    _rule("openai_key", r"\bsk-(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_-]{20,}"),
    _rule("stripe_key", r"\b[rsp]k_(?:live|test)_[A-Za-z0-9]{16,}"),
    _rule("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}"),
    _rule("google_oauth_token", r"\bya29\.[0-9A-Za-z_-]{20,}"),
    # Vendor tokens with a fixed prefix: Hugging Face, npm, PyPI, SendGrid, DigitalOcean,
    # Shopify, Docker Hub, Slack app-level, Grafana service accounts.
    _rule(
        "vendor_token",
        r"\b(?:hf_[A-Za-z0-9]{30,}|npm_[A-Za-z0-9]{36}|pypi-[A-Za-z0-9_-]{50,}"
        r"|SG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}|do[por]_v1_[a-f0-9]{64}"
        r"|shp(?:at|ss|ca|pa)_[a-fA-F0-9]{32}|dckr_pat_[A-Za-z0-9_-]{20,}"
        r"|xapp-\d-[A-Za-z0-9-]{10,}|glsa_[A-Za-z0-9_]{32,})"
    ),
    # Key=value;... connection strings (Azure storage, Service Bus, ADO.NET, ODBC):
    # AccountKey=..., SharedAccessKey=..., Pwd=... (Password= is caught by secret_assignment);
    # a PWD= whose value is a path is the shell's working directory, not a password.
    _rule(
        "connection_string_secret",
        r"(?P<key>(?<![\w-])(?:AccountKey|SharedAccessKey|SharedAccessSignature|sig"
        r"|X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Pwd(?=\s*=\s*[^\s/~]))"
        r"\s*=\s*)[^\s;&\"']+",
        _keep_key,
        re.IGNORECASE,
    ),
    _rule("openssl_pass_arg", r"(?P<key>(?<![\w-])pass:)[^\s\"']+", _keep_key),
    # curl -u user:pass, --user=user:pass (no colon: no password; docker -u 1000:1000: ids)
    _rule(
        "user_colon_password",
        r"(?P<key>(?<![\w-])(?:-u|--user|--proxy-user)(?:=|\s+)(?![0-9]+:[0-9]+(?![^\s\"']))"
        r"[^\s:\"']+:)[^\s\"']+",
        _keep_key,
    ),
    # --password=x, --db-password x, -token x (but not --no-password, --password-file)
    _rule(
        "secret_flag",
        rf"(?P<key>(?<![\w-])--?(?!no-)(?:[A-Za-z0-9]+[_.-])*(?:{_FLAG_WORDS})(?:=|\s+(?!-)))"
        rf"{_VALUE}",
        _keep_key,
        re.IGNORECASE,
    ),
    # PASSWORD=x, db_password: x, "apiKey": "x", ?token=x&  (no dash: an assignment, not a flag)
    _rule(
        "secret_assignment",
        rf"(?P<key>(?<![\w.-])(?P<q>[\"']?)[A-Za-z0-9_.-]{{0,64}}?"
        rf"(?:{_SECRET_WORDS}|[A-Za-z0-9]{{1,32}}_pwd)"
        rf"(?P=q)\s*[:=]\s*)(?:\"[^\"]*\"|'[^']*'|[^\s\"'&;,]+)",
        _keep_key,
        re.IGNORECASE,
    ),
    *(
        _rule(
            name,
            rf"(?P<key>\b(?:{programs})\b[^\n|;&]{{0,300}}?\s-{flag}(?:\s+(?!-))?)"
            rf"(?!{re.escape(MASK)})[^\s\"']+",
            _keep_key,
        )
        for name, programs, flag in _SHORT_FLAG_PROGRAMS
    ),
    # --key / -k / --signing-key / --hmac ... followed by something that looks like key material
    _rule(
        "keyish_flag_value",
        r"(?P<key>(?<![\w-])--?(?:[A-Za-z0-9]+[_.-])*(?:key|k|sig|signature|hmac|salt|seed|license"
        r"|cred|auth)(?:=|\s+))(?P<value>[^\s\"']+)",
        _keyish_value,
        re.IGNORECASE,
    ),
]

# Matched at the end of a name, like the secret_assignment rule: DB_PASSWORD, clientSecret.
_SECRET_NAME = re.compile(rf"(?:{_SECRET_WORDS}|pwd)$", re.IGNORECASE)


def is_secret_name(name: str) -> bool:
    """Whether a field named ``name`` holds a secret whatever its value (DB_PASSWORD, apiKey).

    For structured data (labels, JSON fields) where the key and the value are separate
    strings, so the text rules above, which need ``key=value``, cannot see them together.
    """
    return bool(_SECRET_NAME.search(name.strip().strip("\"'")))


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def redact_text(text: str) -> str:
    """Replace every secret shape in ``text`` by ``***``, keeping the rest as it was."""
    for rule in REDACTION_RULES:
        text = rule.apply(text)
    return text


def _join(argv: Sequence[str]) -> str:
    # Quote only arguments that need it, so the common case reads like `ps` output.
    return " ".join(
        shlex.quote(a) if (not a or any(ch.isspace() or ch in "\"'" for ch in a)) else a
        for a in argv
    )


def redact_cmdline(cmdline: Sequence[str] | str, max_len: int = DEFAULT_MAX_LEN) -> str:
    """A command line (argv list or string) as one readable line with secrets replaced.

    Redaction runs before truncation so a secret cut in half can't slip past its pattern;
    the input is first capped far above ``max_len`` so a megabyte-long argv stays cheap.
    """
    text = cmdline if isinstance(cmdline, str) else _join(cmdline)
    text = text[: max(8 * max_len, 4096)]
    # Newlines and other control characters would let a process forge log lines.
    text = _CONTROL.sub(" ", text.replace("\n", " ").replace("\t", " "))
    text = redact_text(text)
    if len(text) > max_len:
        text = text[: max_len - 1] + _ELLIPSIS
    return text
