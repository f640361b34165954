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
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from watchkeeper.safetext import printable

MASK = "***"
DEFAULT_MAX_LEN = 512
_ELLIPSIS = "…"

Replacement = str | Callable[[re.Match[str]], str]


@dataclass(frozen=True)
class RedactionRule:
    """One secret shape: a regex and what its match becomes (``\\g<name>`` groups allowed).

    ``needles``: lowercase substrings one of which every match contains; when the text holds
    none of them the rule is not run at all. Most lines hold no secret, and this check is
    what keeps redaction in microseconds on every process every tick. ``rewrite``, when set,
    does the whole rewrite instead of ``pattern.sub`` (for a rule that judges each match
    with what follows it).
    """

    name: str
    pattern: re.Pattern[str]
    replacement: Replacement
    needles: tuple[str, ...] = ()
    rewrite: Callable[[str], str] | None = None

    def apply(self, text: str) -> str:
        """Rewrite every match of this rule in ``text``."""
        if self.rewrite is not None:
            return self.rewrite(text)
        return self.pattern.sub(self.replacement, text)


# A value: a quoted string (backslash escapes allowed) or a run of non-space characters.
_DQ = r'"(?:[^"\\\n]|\\.)*"'
_VALUE = rf"""(?:{_DQ}|'[^']*'|[^\s"']+)"""
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
# rule below; bare --pass/-pass (openssl and friends), --pwd, --auth (proxies) and keytool's
# -storepass/-keypass take a password.
_FLAG_WORDS = _COMMON_WORDS + r"|pass|pwd|auth|(?:src|dest|new)?(?:store|key)pass"
# Programs whose short flag takes a password: mysql -pX / -p X, sshpass -p X, redis-cli -a X,
# docker login -p X, ldapsearch -w X (with the lowercase needles that gate each rule).
_SHORT_FLAG_PROGRAMS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("mysql_p", r"mysql\w*|mariadb(?:-\w+)?|sshpass", "p", ("mysql", "mariadb", "sshpass")),
    ("redis_cli_a", r"redis-cli|keydb-cli", "a", ("redis-cli", "keydb-cli")),
    ("registry_login_p", r"(?:docker|podman|buildah|skopeo|nerdctl|helm\s+registry)\s+login",
     "p", ("login",)),
    ("ldap_w", r"ldap\w+", "w", ("ldap",)),
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


# The name of a field whose value is a secret: it ends with one of the words.
_SECRET_NAME_END = re.compile(
    rf"(?:{_SECRET_WORDS}|[A-Za-z0-9]_pwd|[A-Za-z0-9]_pass|(?<![A-Za-z0-9])auth_?token)$",
    re.IGNORECASE)
# UPPER_CASE environment names ending in _KEY (STRIPE_KEY, APP_KEY, SECRET_KEY_BASE) hold key
# material unless the value is a path; lower-case sort_key=name in a log line is left alone.
_ENV_KEY_NAME = re.compile(r"[A-Z][A-Z0-9_]*_KEY(?:_BASE)?$")


# PASSWORD=x, db_password: x, "apiKey": "x", ?token=x&, STRIPE_KEY=x (no dash: an
# assignment, not a flag). Every name is matched greedily and judged afterwards: a lazy scan
# for the words at every position was nine tenths of the cost of redaction.
_ASSIGNMENT_KEY = re.compile(
    r"(?<![\w.-])(?P<q>[\"']?)(?P<name>[A-Za-z0-9_.-]{1,64})(?P=q)\s*[:=]\s*")
_ASSIGNMENT_VALUE = re.compile(rf"{_DQ}|'[^']*'|[^\s\"'&;,<]+")


def _redact_assignments(text: str) -> str:
    """Mask the value of every assignment whose name says it is a secret.

    Only the name is matched, so an assignment inside another one's value ("db-backup:
    PGPASSWORD=x") is still seen, in one pass (``a=a=a=...`` costs no recursion).
    """
    out: list[str] = []
    last = 0
    for m in _ASSIGNMENT_KEY.finditer(text):
        name = m.group("name")
        if m.start() < last or not (_SECRET_NAME_END.search(name) or (
                _ENV_KEY_NAME.match(name) and not text.startswith(("/", "~", "./"), m.end()))):
            continue  # inside a value masked already, or not a secret's name
        # The value is read only when it is masked (and the scan then skips past it): read
        # for every name, a line of a=a=a=... would cost quadratic time.
        if text.startswith(MASK, m.end()):
            continue  # redacted already (keep what follows the mask: "***}")
        value = _ASSIGNMENT_VALUE.match(text, m.end())
        if value is None:
            continue
        out += (text[last:m.end()], MASK)
        last = value.end()
    if not out:
        return text
    out.append(text[last:])
    return "".join(out)


_TOKEN = re.compile(r""""(?:[^"\\]|\\.)*"|'[^']*'|\S+""")


def _positional_password(m: re.Match[str]) -> str:
    """htpasswd -b [file] user PASS, rabbitmqctl add_user USER PASS: mask the password word."""
    text = m.group(0)
    spans = [t.span() for t in _TOKEN.finditer(text)]
    words = [text[a:b] for a, b in spans]
    if words[0].endswith("htpasswd"):
        flags = "".join(w[1:] for w in words[1:] if w.startswith("-") and w[1:].isalpha())
        if "b" not in flags:
            return text  # the password is prompted for, not on the command line
        positional = [i for i, w in enumerate(words[1:], 1) if not w.startswith("-")
                      and not (i > 1 and words[i - 1] in ("-C", "-r"))]
        index = 1 if "n" in flags else 2
    else:  # rabbitmqctl <command> <user> <password>
        positional = [i for i, w in enumerate(words[1:], 1) if not w.startswith("-")]
        if not positional or words[positional[0]] not in (
                "add_user", "change_password", "authenticate_user"):
            return text
        index = 2
    if len(positional) <= index:
        return text
    start, end = spans[positional[index]]
    return text[:start] + MASK + text[end:]


def _rule(
    name: str, pattern: str, replacement: Replacement = MASK, flags: int = 0,
    needles: tuple[str, ...] = (),
) -> RedactionRule:
    return RedactionRule(name, re.compile(pattern, flags), replacement, needles)


# Lowercase needles of the keyword rules: every secret key name contains one of them.
_WORD_NEEDLES = ("pass", "secret", "token", "key", "credential", "pwd", "auth")


#: Applied in order by redact_text(); append a RedactionRule to extend.
REDACTION_RULES: list[RedactionRule] = [
    _rule(
        "private_key_block",
        r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY"
        r"( BLOCK)?-----|\Z)",
        f"-----PRIVATE KEY {MASK}-----",
        re.DOTALL,
        ("private key",),
    ),
    _rule(
        "auth_header",
        r"(?P<key>\b(?:proxy-)?authorization\s*:\s*(?:(?:bearer|basic|token|bot|digest|negotiate)"
        r"\s+)?)[^\s\"']+",
        _keep_key,
        re.IGNORECASE,
        ("authorization",),
    ),
    _rule(
        "api_key_header",
        r"(?P<key>\b(?:x-api-key|x-auth-token|api-key|x-access-token|private-token)\s*:\s*)"
        r"[^\s\"']+",
        _keep_key,
        re.IGNORECASE,
        ("key", "token"),
    ),
    # Cookie: a=1; b=2 - every cookie may be a session: the whole value, up to a quote.
    _rule("cookie_header", r"(?P<key>\b(?:set-)?cookie\s*:\s*)[^\"'\r\n]+", _keep_key,
          re.IGNORECASE, ("cookie",)),
    _rule("bearer", r"(?P<key>\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}", _keep_key, re.IGNORECASE,
          ("bearer",)),
    # scheme://user:password@host -> scheme://user:***@host (up to the last @: unencoded @s)
    _rule(
        "url_credentials",
        r"(?P<key>(?<![\w+.-])[a-zA-Z][a-zA-Z0-9+.-]{0,31}://[^\s/:@\"']{0,256}:)"
        r"[^\s/\"']{1,256}(?=@)",
        _keep_key,
        needles=("://",),
    ),
    # scheme://KEY@host with no password: a token as the user (Sentry DSNs, git over https).
    _rule(
        "url_token_user",
        r"(?P<key>(?<![\w+.-])[a-zA-Z][a-zA-Z0-9+.-]{0,31}://)(?P<value>[^\s/:@\"']{24,256})(?=@)",
        _keyish_value,
        needles=("://",),
    ),
    # jdbc:oracle:thin:scott/tiger@db, sqlplus scott/tiger@db: user/password@connect
    _rule(
        "oracle_credentials",
        r"(?P<key>(?:\bjdbc:oracle:\w+:|\bsqlplus\s+(?:-\w+\s+)*)[^\s/@\"':]+/)[^\s@\"']+",
        _keep_key,
        re.IGNORECASE,
        ("oracle", "sqlplus"),
    ),
    _rule("slack_webhook", r"(?P<key>https://hooks\.slack\.com/services/)[A-Za-z0-9/_-]+",
          _keep_key, needles=("hooks.slack.com",)),
    _rule("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*", needles=("eyj",)),
    _rule("aws_access_key_id", r"\b(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}\b",
          needles=("akia", "asia", "abia", "acca", "a3t")),
    _rule("github_token", r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})",
          needles=("gh",)),
    _rule("gitlab_token", r"\bglpat-[A-Za-z0-9_-]{20,}", needles=("glpat-",)),
    _rule("slack_token", r"\bxox[baprs]-[A-Za-z0-9-]{10,}", needles=("xox",)),
    _rule("openai_key", r"\bsk-(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_-]{20,}",
          needles=("sk-",)),
    _rule("stripe_key", r"\b[rsp]k_(?:live|test)_[A-Za-z0-9]{16,}", needles=("_live_", "_test_")),
    _rule("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}", needles=("aiza",)),
    _rule("google_oauth_token", r"\bya29\.[0-9A-Za-z_-]{20,}", needles=("ya29.",)),
    # Vendor tokens with a fixed prefix: Hugging Face, npm, PyPI, SendGrid, DigitalOcean,
    # Shopify, Docker Hub, Slack app-level, Grafana service accounts, age secret keys.
    _rule(
        "vendor_token",
        r"\b(?:hf_[A-Za-z0-9]{30,}|npm_[A-Za-z0-9]{36}|pypi-[A-Za-z0-9_-]{50,}"
        r"|SG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}|do[por]_v1_[a-f0-9]{64}"
        r"|shp(?:at|ss|ca|pa)_[a-fA-F0-9]{32}|dckr_pat_[A-Za-z0-9_-]{20,}"
        r"|xapp-\d-[A-Za-z0-9-]{10,}|glsa_[A-Za-z0-9_]{32,}|AGE-SECRET-KEY-1[0-9A-Z]{50,})",
        needles=("hf_", "npm_", "pypi-", "sg.", "_v1_", "shp", "_pat_", "xapp-", "glsa_", "key"),
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
        ("key", "sig", "x-amz-", "pwd"),
    ),
    # ?auth=, &key=, &code= ... in a URL's query string: short names that are secrets there.
    _rule(
        "query_secret",
        r"(?P<key>[?&](?:auth|key|code|session|sessionid|sid|signature|ticket|otp)=)[^\s&#\"']+",
        _keep_key,
        re.IGNORECASE,
        ("auth", "key", "code", "session", "sid", "sig", "ticket", "otp"),
    ),
    _rule("openssl_pass_arg", r"(?P<key>(?<![\w-])pass:)[^\s\"']+", _keep_key,
          needles=("pass",)),
    # curl -u user:pass, -uuser:pass, --user=user:pass (no colon: no password; docker -u
    # 1000:1000: ids); smbclient -U user%pass
    _rule(
        "user_colon_password",
        r"(?P<key>(?<![\w-])(?:-u|--user|--proxy-user)(?:=|\s+)?(?![0-9]+:[0-9]+(?![^\s\"']))"
        r"[^\s:\"'-][^\s:\"']*:)[^\s\"']+",
        _keep_key,
        needles=("-u",),
    ),
    _rule("user_percent_password",
          r"(?P<key>(?<![\w-])(?:-U|--user)(?:=|\s+)[^\s%\"']+%)[^\s\"']+", _keep_key,
          needles=("-u",)),
    # curl -b 'session=x' / --cookie 'a=1; b=2' (a cookie jar path has no "=" and stays)
    _rule(
        "curl_cookie",
        r"(?P<key>\bcurl\b[^\n|;&]{0,300}?\s(?:-b|--cookie)(?:=|\s+))"
        r"(?=[\"']?[^\s\"']*=)(?:\"[^\"]*\"|'[^']*'|[^\s\"']+)",
        _keep_key,
        needles=("curl",),
    ),
    # --password=x, --db-password x, -token x (but not --no-password, --password-file)
    _rule(
        "secret_flag",
        rf"(?P<key>(?<![\w-])--?(?!no-)(?:[A-Za-z0-9]+[_.-])*(?:{_FLAG_WORDS})(?:=|\s+(?!-)))"
        rf"{_VALUE}",
        _keep_key,
        re.IGNORECASE,
        _WORD_NEEDLES,
    ),
    RedactionRule("secret_assignment", _ASSIGNMENT_KEY, MASK, _WORD_NEEDLES,
                  rewrite=_redact_assignments),
    # <password>x</password>, <apiKey>x</apiKey> in XML configs and SOAP logs
    _rule(
        "xml_secret",
        rf"(?P<key><(?P<tag>[\w.:-]{{0,64}}?(?:{_SECRET_WORDS}))>)[^<]{{0,1024}}(?=</(?P=tag)>)",
        _keep_key,
        re.IGNORECASE,
        _WORD_NEEDLES,
    ),
    # SQL: IDENTIFIED BY 'x', IDENTIFIED WITH plugin BY 'x', PASSWORD 'x', SET PASSWORD ... = 'x'
    _rule(
        "sql_password",
        r"(?P<key>\b(?:IDENTIFIED(?:\s+WITH\s+\w+)?\s+BY(?:\s+PASSWORD)?|PASSWORD"
        r"(?:\s+FOR\s+[^\s=]+)?)(?:\s*=\s*|\s+))(?:'(?:[^'\\]|\\.|'')*'|\"[^\"]*\")",
        _keep_key,
        re.IGNORECASE,
        ("identified", "pass"),
    ),
    # echo 'alice:pw' | chpasswd
    _rule("chpasswd_echo",
          r"(?P<key>\becho\s+(?:-e\s+)?['\"]?[\w.-]+:)[^\s'\"|]+(?=['\"]?\s*\|\s*(?:sudo\s+)?"
          r"chpasswd)", _keep_key, needles=("pass",)),
    # htpasswd -b file user PASS, rabbitmqctl add_user user PASS
    _rule("positional_password", r"\b(?:htpasswd|rabbitmqctl)\b[^\n|;&]*", _positional_password,
          needles=("pass", "rabbitmqctl")),
    *(
        _rule(
            name,
            rf"(?P<key>\b(?:{programs})\b[^\n|;&]{{0,300}}?\s-{flag}(?:\s+(?!-))?)"
            rf"(?!{re.escape(MASK)})[^\s\"']+",
            _keep_key,
            needles=needles,
        )
        for name, programs, flag, needles in _SHORT_FLAG_PROGRAMS
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
    # Needles are looked up in the original text: a rule only ever removes text (or writes
    # the mask), so it cannot create a needle for a later rule.
    lowered = text.lower()
    present = {n for n in _all_needles() if n in lowered}
    for rule in REDACTION_RULES:
        if not rule.needles or not present.isdisjoint(rule.needles):
            text = rule.apply(text)
    return text


_needle_cache: tuple[tuple[RedactionRule, ...], frozenset[str]] = ((), frozenset())


def _all_needles() -> frozenset[str]:
    """Every rule's needles, each once (recomputed when a rule is added or removed)."""
    global _needle_cache
    rules = tuple(REDACTION_RULES)
    if _needle_cache[0] != rules:
        _needle_cache = (rules, frozenset(n for r in rules for n in r.needles))
    return _needle_cache[1]


def _quote(arg: str) -> str:
    if arg and not any(ch.isspace() or ch in "\"'" for ch in arg):
        return arg
    # "SET PASSWORD = 'x'" reads (and redacts) better in double quotes than shlex's '"'"'.
    if "'" in arg and not any(ch in arg for ch in "\"\\$`"):
        return f'"{arg}"'
    return shlex.quote(arg)


def _join(argv: Sequence[str]) -> str:
    # Quote only arguments that need it, so the common case reads like `ps` output.
    return " ".join(_quote(a) for a in argv)


def redact_cmdline(cmdline: Sequence[str] | str, max_len: int = DEFAULT_MAX_LEN) -> str:
    """A command line (argv list or string) as one readable line with secrets replaced.

    Redaction runs before truncation so a secret cut in half can't slip past its pattern;
    the input is first capped far above ``max_len`` so a megabyte-long argv stays cheap.
    """
    text = cmdline if isinstance(cmdline, str) else _join(cmdline)
    text = text[: max(8 * max_len, 4096)]
    # Newlines and other control characters would let a process forge log lines.
    text = _CONTROL.sub(" ", text.replace("\n", " ").replace("\t", " "))
    # What is left that a terminal or an encoder would trip on (C1 controls, bidi overrides,
    # bytes that were not UTF-8) is escaped visibly, after the redaction has seen the text.
    text = printable(redact_text(text))
    if len(text) > max_len:
        text = text[: max_len - 1] + _ELLIPSIS
    return text


# --------------------------------------------------------------------------- extra patterns

#: Limits on ``llm.redact_patterns``: each pattern runs on every string sent to the LLM.
MAX_PATTERNS = 32
MAX_PATTERN_LEN = 256


def _nested_repeat(items: Any, inside: bool = False) -> bool:
    """Whether a parsed regex repeats (unboundedly) something that itself repeats: (a+)+."""
    for op, arg in items:
        name = str(op)
        if name in ("MAX_REPEAT", "MIN_REPEAT"):
            _low, high, sub = arg
            if high > 100 and inside:  # MAXREPEAT, or a count large enough to explode
                return True
            if _nested_repeat(sub, inside or high > 1):
                return True
        elif name in ("SUBPATTERN", "BRANCH"):
            branches = [arg[-1]] if name == "SUBPATTERN" else arg[1]
            if any(_nested_repeat(b, inside) for b in branches):
                return True
        # ATOMIC_GROUP and POSSESSIVE_REPEAT never backtrack into themselves: left alone.
    return False


def _parse(pattern: str) -> Any:
    if sys.version_info >= (3, 11):
        from re import _parser  # type: ignore[attr-defined]
        return _parser.parse(pattern)
    with warnings.catch_warnings():  # sre_parse is the same parser before 3.11
        warnings.simplefilter("ignore", DeprecationWarning)
        import sre_parse
        return sre_parse.parse(pattern)


def pattern_problem(pattern: str) -> str | None:
    """Why an extra redaction regex is refused (invalid, too long, catastrophic), or None."""
    if len(pattern) > MAX_PATTERN_LEN:
        return f"longer than {MAX_PATTERN_LEN} characters"
    if not pattern:
        return "empty (it would match everywhere)"
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        return f"invalid regex: {exc}"
    if compiled.match(""):
        return "matches the empty string (it would insert *** everywhere)"
    if _nested_repeat(_parse(pattern)):
        return ("nests one repeat inside another, as in (a+)+, which can take exponential "
                "time on a hostile line; use an atomic group (?>...) or a possessive a++")
    return None
