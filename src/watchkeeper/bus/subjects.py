"""NATS subject arithmetic: which stream a topic lives in, and where two patterns overlap."""

from __future__ import annotations

import hashlib
import re
import secrets

#: Streams by config name, with the topic families (first token) each one stores. Topics of
#: other families (health.<host>.<agent>, command.<host>.<agent>) go over core NATS only.
STREAM_FAMILIES: dict[str, tuple[str, ...]] = {
    "metrics": ("metrics",),
    "alerts": ("alerts",),
    "actions": ("actions",),
    "audit": ("audit",),
    "events": ("errors", "system", "services"),
}
#: Request/reply topics: never stored, never seen by plain subscribers.
REQUEST_FAMILIES = frozenset({"command"})

FAMILY_STREAM: dict[str, str] = {
    family: stream for stream, families in STREAM_FAMILIES.items() for family in families
}


def intersect(a: str, b: str) -> str | None:
    """The subjects both patterns match, as one pattern; None when they share none."""
    ta, tb = a.split("."), b.split(".")
    out: list[str] = []
    for i in range(max(len(ta), len(tb))):
        if i >= len(ta) or i >= len(tb):
            return None
        x, y = ta[i], tb[i]
        if x == ">":
            return ".".join(out + tb[i:])
        if y == ">":
            return ".".join(out + ta[i:])
        if x == "*":
            out.append(y)
        elif y in ("*", x):
            out.append(x)
        else:
            return None
    return ".".join(out)


def within(pattern: str, container: str) -> bool:
    """Whether every subject ``pattern`` matches is matched by ``container`` too."""
    return intersect(pattern, container) == pattern


def stream_name(prefix: str, stream: str) -> str:
    """JetStream stream name: ``wk`` + ``alerts`` -> ``WK_ALERTS``."""
    return f"{prefix.replace('.', '_')}_{stream}".upper()


def stream_subjects(prefix: str, stream: str) -> list[str]:
    return [f"{prefix}.{family}.>" for family in STREAM_FAMILIES[stream]]


def durable_name(client: str, name: str, filter_subject: str, secret: bytes = b"") -> str:
    """A stable consumer name for (this client, this subscriber, this filter).

    With a ``secret`` (derived from this client's broker credentials) the name cannot be
    guessed: a host allowed to create consumers on its own subjects cannot name, and so
    cannot re-point, another client's consumer.
    """
    clean = re.sub(r"[^A-Za-z0-9_-]", "-", f"{client}__{name}")[:120]
    if secret:
        digest = hashlib.blake2b(filter_subject.encode(), key=secret[:64],
                                 digest_size=12).hexdigest()
    else:
        digest = hashlib.blake2b(filter_subject.encode(), digest_size=5).hexdigest()
    return f"{clean}__{digest}"


def ephemeral_name(client: str) -> str:
    """A consumer name for one subscriber's life (removed by the broker once unused)."""
    clean = re.sub(r"[^A-Za-z0-9_-]", "-", client)[:100]
    return f"{clean}__eph__{secrets.token_hex(8)}"


def inbox_prefix(client: str) -> str:
    """Where this client's replies and push deliveries arrive (``_INBOX.<client>``): a
    broker can then let each host read its own inbox only."""
    return "_INBOX." + re.sub(r"[^A-Za-z0-9_-]", "-", client)[:120]
