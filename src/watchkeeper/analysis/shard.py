"""Which analysis shard owns a host: a stable hash of its name, the same in every process.

A central may split its fleet's analysis across ``N`` processes on one broker (``watchkeeper
serve --fleet --shards N``, or ``watchkeeper analyze --shard i/N`` run by hand). Analysis is
stateful per host (baselines, trends, open alerts), so a host must always reach the same
shard: each shard keeps the hosts whose name hashes to its index and lets the others pass
unread (acknowledged before they are decoded, so a skipped snapshot costs almost nothing).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

#: The most shards one central runs (each is a process of its own).
MAX_SHARDS = 64
#: ``i/N`` in ASCII digits (``str.isdigit`` takes other scripts' digits too), short.
_SPEC = re.compile(r"([0-9]{1,3})/([0-9]{1,3})", re.ASCII)


def shard_of(host: str, count: int) -> int:
    """The shard (0 .. count-1) that analyses ``host``: blake2b of the name, never Python's
    per-process salted ``hash``."""
    digest = hashlib.blake2b(host.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            raise ValueError(f"a fleet has 1 to {MAX_SHARDS} shards, not {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard index {self.index} is not in 0..{self.count - 1}")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"i/N"`` (``"0/4"``: the first of four); ValueError with the expected form."""
        found = _SPEC.fullmatch(text.strip())
        if found is None:
            raise ValueError(f"a shard is given as i/N (0/2 is the first of two), not "
                             f"{text[:40]!r}")
        return cls(int(found[1]), int(found[2]))

    @property
    def name(self) -> str:
        """Its agent's name: the durable consumers and the command topic carry it, so a
        restarted shard resumes exactly where this one stopped (and N is in it: another
        split is another set of consumers)."""
        return f"analyzer-shard-{self.index}-of-{self.count}"

    def owns_host(self, host: str) -> bool:
        return shard_of(host, self.count) == self.index

    def owns_topic(self, topic: str) -> bool:
        """Whether a per-host topic (``metrics.<host>``, ``services.<host>``,
        ``alerts.<host>``) is this shard's; read from the subject, before any decoding."""
        parts = topic.split(".")
        return len(parts) >= 2 and self.owns_host(parts[1])


def shard_agent_name(index: int, count: int) -> str:
    """The agent name (and command topic suffix) of shard ``index`` of ``count``."""
    return Shard(index, count).name
