"""The one gate between host data and the LLM: secrets redacted, identifiers masked.

Everything the investigator sends (the alert, the snapshot, every tool result) goes through
``Privacy.clean_data``. Secrets are removed for good with the shared rules of
``watchkeeper.redact`` plus the configured ``llm.redact_patterns``. With
``llm.mask_identifiers`` on, host names, IP addresses and user names (also the user part of
home directory paths) are replaced by stable placeholders (``HOST_1``, ``IP_2``, ``USER_1``)
that ``restore`` turns back into the real values in the answer shown to the user.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

from watchkeeper.config import LlmConfig
from watchkeeper.redact import MASK, is_secret_name, pattern_problem, redact_text

log = logging.getLogger(__name__)


class PrivacyError(ValueError):
    """The privacy settings cannot be applied (an invalid redact pattern): send nothing."""


#: Accounts every host has; masking them hides nothing and would turn "root cause" into
#: "USER_1 cause".
SYSTEM_USERS = frozenset({
    "root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp",
    "proxy", "www-data", "backup", "list", "irc", "gnats", "nobody", "nogroup", "sshd",
    "messagebus", "syslog", "polkitd", "avahi", "colord", "rtkit", "dnsmasq", "chrony",
    "ntp", "postfix", "git", "admin", "user", "system", "local", "service", "network",
    "SYSTEM", "LOCAL SERVICE", "NETWORK SERVICE",
})

#: Keys of structured data whose value names a host or a user (learned, then masked).
_HOST_KEYS = frozenset({"host", "hostname", "host_name", "node", "server"})
_USER_KEYS = frozenset({"user", "username", "user_name", "owner", "login"})

# Top-level domains that make a dotted lowercase word a host name rather than a module path
# (os.path.join) or a file name (app.tar.gz); two-letter labels count unless they are also
# common file extensions.
_TLDS = frozenset({
    "com", "net", "org", "io", "dev", "app", "cloud", "internal", "local", "lan", "corp",
    "home", "intra", "intranet", "localdomain", "priv", "private", "edu", "gov", "mil", "int",
    "info", "biz", "tech", "site", "online", "xyz", "arpa", "test", "example", "svc",
})
_FILE_EXT2 = frozenset({"py", "js", "ts", "gz", "xz", "sh", "db", "md", "so", "go", "rb", "pl",
                        "rs", "cc", "hh", "el", "ml", "pm", "mo", "po", "ps", "7z", "bz"})

# No leading \b: an address glued to a word (user10.1.2.3) becomes userIP_1 and must come
# back. A literal "HOST_1" already in host text would be restored too: a rare, harmless clash.
_TOKEN_RE = r"(?:HOST|IP|USER)_\d+(?!\d)"
_IPV4 = r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_PARTS = (
    rf"(?P<token>{_TOKEN_RE})",
    # Loose edges on purpose: masking the start of a version string (1.2.3.4.5) costs
    # nothing, missing an address glued to other text would leak it.
    rf"(?P<ipv4>(?<!\d){_IPV4}(?!\d))",
    r"(?P<home>(?:/home/|/Users/|[A-Za-z]:\\Users\\)(?P<homeuser>[A-Za-z0-9_][\w.-]{0,31})"
    r"(?![\w.-]))",
    # The TLD test is part of the pattern (not a check afterwards), so a dotted word that is
    # not a host name stays available to the other alternatives, like a known short name.
    rf"(?P<fqdn>(?<![\w.-])(?:[a-z0-9](?:[a-z0-9-]{{0,61}}[a-z0-9])?\.){{2,}}"
    rf"(?:{'|'.join(sorted(_TLDS))}|(?!(?:{'|'.join(sorted(_FILE_EXT2))})(?![a-z]))[a-z]{{2}})"
    r"(?![\w-])(?!\.[A-Za-z0-9]))",
)
# A candidate only, in a pass of its own: ipaddress decides (times like 12:30:45 and MACs are
# not addresses), and a rejected candidate must not hide an IPv4 address or a name inside it.
_IPV6_RE = re.compile(r"(?<![\w:.])(?=[0-9A-Fa-f:]*:[0-9A-Fa-f]*:)[0-9A-Fa-f:]{2,39}(?![\w:])")
_LEARN_RE = re.compile(
    r"(?:/home/|/Users/|[A-Za-z]:\\Users\\)(?P<homeuser>[A-Za-z0-9_][\w.-]{0,31})(?![\w.-])"
    r"|(?<![\w.+-])(?P<atuser>[A-Za-z_][\w.-]{0,31})@(?=[A-Za-z])"
)
_RESTORE_RE = re.compile(_TOKEN_RE)


class Masker:
    """Reversible replacement of host names, IPs and user names by numbered placeholders."""

    def __init__(self) -> None:
        self._token_of: dict[tuple[str, str], str] = {}
        self._original: dict[str, str] = {}
        self._counts: dict[str, int] = {}
        self._hosts: set[str] = set()
        self._users: set[str] = set()
        self._regex: re.Pattern[str] | None = None

    # ------------------------------------------------------------------ learning

    def learn_host(self, name: str | None) -> None:
        """Mask this host name (and its short name) wherever it appears from now on."""
        name = (name or "").strip()
        if len(name) < 2 or name.lower() in ("localhost", "localhost.localdomain"):
            return
        added = {name.lower()}
        short = name.split(".")[0]
        if "." in name and len(short) >= 3 and not short.isdigit():
            added.add(short.lower())
        if not added <= self._hosts:
            self._hosts |= added
            self._regex = None

    def learn_user(self, name: str | None) -> None:
        """Mask this user name wherever it appears as a word from now on."""
        name = (name or "").strip()
        # Very short names would match inside ordinary words everywhere.
        if len(name) < 3 or name in SYSTEM_USERS or name.startswith(("_", "systemd-")):
            return
        if name not in self._users:
            self._users.add(name)
            self._regex = None

    def learn_from(self, text: str) -> None:
        """Pick up user names from home paths (/home/alice) and user@host forms."""
        for m in _LEARN_RE.finditer(text):
            self.learn_user(m.group("homeuser") or m.group("atuser"))

    # ------------------------------------------------------------------ masking

    def _token(self, kind: str, original: str) -> str:
        # Keyed by the exact spelling, so restore() gives back exactly what was there.
        k = (kind, original)
        token = self._token_of.get(k)
        if token is None:
            self._counts[kind] = self._counts.get(kind, 0) + 1
            token = f"{kind}_{self._counts[kind]}"
            self._token_of[k] = token
            self._original[token] = original
        return token

    def _pattern(self) -> re.Pattern[str]:
        if self._regex is None:
            parts = list(_PARTS)
            if self._hosts:
                names = "|".join(re.escape(h) for h in sorted(self._hosts, key=len, reverse=True))
                parts.append(rf"(?P<host>(?<![\w-])(?i:{names})(?![\w-]))")
            if self._users:
                names = "|".join(re.escape(u) for u in sorted(self._users, key=len, reverse=True))
                # Dashes and dots count as boundaries for users (alice-etl.log), not for
                # hosts (web-01 is not web-01-replica).
                parts.append(rf"(?P<user>(?<![A-Za-z0-9_])(?:{names})(?![A-Za-z0-9_]))")
            self._regex = re.compile("|".join(parts))
        return self._regex

    def _ip(self, text: str) -> str:
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            return text
        if addr.is_loopback or addr.is_unspecified:
            return text  # 127.0.0.1 and 0.0.0.0 say how, not where
        return self._token("IP", text)

    def _replace(self, m: re.Match[str]) -> str:
        kind = m.lastgroup
        text = m.group(0)
        if kind == "ipv4":
            return self._ip(text)
        if kind == "home":
            user = m.group("homeuser")
            if user in SYSTEM_USERS:
                return text
            prefix = text[: m.start("homeuser") - m.start()]
            return prefix + self._token("USER", user)
        if kind == "fqdn" or kind == "host":
            return self._token("HOST", text)
        if kind == "user":
            return self._token("USER", text)
        return text  # an existing placeholder stays as it is

    def mask(self, text: str) -> str:
        """Replace every known or recognisable identifier in ``text`` by its placeholder."""
        text = _IPV6_RE.sub(lambda m: self._ip(m.group(0)), text)
        return self._pattern().sub(self._replace, text)

    def restore(self, text: str) -> str:
        """Turn placeholders back into the values they stand for."""
        return _RESTORE_RE.sub(lambda m: self._original.get(m.group(0), m.group(0)), text)

    @property
    def mapping(self) -> Mapping[str, str]:
        """Placeholder -> original (for tests and debugging; never sent anywhere)."""
        return dict(self._original)


def compile_patterns(patterns: Iterable[str]) -> tuple[re.Pattern[str], ...]:
    """Compile ``llm.redact_patterns``; raise PrivacyError naming the first invalid one."""
    out = []
    for p in patterns:
        # The configuration refuses these already; checked again for settings built in code.
        why = pattern_problem(p)
        if why is not None:
            raise PrivacyError(f"llm.redact_patterns: '{p}': {why}")
        out.append(re.compile(p))
    return tuple(out)


class Privacy:
    """Redaction (always) and reversible masking (with ``mask_identifiers``) for one incident.

    One instance per investigation, so placeholders stay stable across its messages.
    """

    def __init__(self, llm: LlmConfig) -> None:
        self._extra = compile_patterns(llm.redact_patterns)
        self.masker: Masker | None = Masker() if llm.mask_identifiers else None

    def learn(self, *, hosts: Iterable[str | None] = (), users: Iterable[str | None] = ()
              ) -> None:
        """Make these host and user names known, so they are masked wherever they appear."""
        if self.masker is None:
            return
        for h in hosts:
            self.masker.learn_host(h)
        for u in users:
            self.masker.learn_user(u)

    def redact(self, text: str) -> str:
        """Remove secrets: the shared rules, then the configured patterns."""
        text = redact_text(text)
        for pattern in self._extra:
            text = pattern.sub(MASK, text)
        return text

    def clean(self, text: str) -> str:
        """Redact, then mask: what one string may look like when it leaves the machine."""
        text = self.redact(text)
        if self.masker is not None:
            self.masker.learn_from(text)
            text = self.masker.mask(text)
        return text

    def clean_data(self, data: Any) -> Any:
        """``clean`` every string in a JSON-like structure (keys too); secret fields emptied."""
        if self.masker is not None:
            self._learn_data(data)
        return self._clean(data)

    def _learn_data(self, data: Any, key: str = "") -> None:
        assert self.masker is not None
        if isinstance(data, Mapping):
            for k, v in data.items():
                self._learn_data(v, str(k).lower())
        elif isinstance(data, (list, tuple)):
            for v in data:
                self._learn_data(v, key)
        elif isinstance(data, str):
            if key in _HOST_KEYS:
                self.masker.learn_host(data)
            elif key in _USER_KEYS:
                self.masker.learn_user(data)
            self.masker.learn_from(self.redact(data))

    def _clean(self, data: Any, key: str = "") -> Any:
        if isinstance(data, Mapping):
            return {self.clean(str(k)): self._clean(v, str(k)) for k, v in data.items()}
        if isinstance(data, (list, tuple)):
            return [self._clean(v, key) for v in data]
        if key and is_secret_name(key) and data not in (None, "", True, False):
            return MASK  # {"db_password": "x"}: the name says it all, the value is the secret
        if isinstance(data, str):
            return self.clean(data)
        return data

    def restore(self, text: str) -> str:
        """Placeholders back to real names (identity when masking is off)."""
        return text if self.masker is None else self.masker.restore(text)

    def restore_data(self, data: Any) -> Any:
        """``restore`` every string in a JSON-like structure."""
        if isinstance(data, Mapping):
            return {k: self.restore_data(v) for k, v in data.items()}
        if isinstance(data, (list, tuple)):
            return [self.restore_data(v) for v in data]
        if isinstance(data, str):
            return self.restore(data)
        return data
