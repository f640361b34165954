"""Security corpus: hostile input to a sharded central's analysis (issue 15).

The promises: a shard never parses another shard's hosts' messages (whatever bytes they
carry, they are passed over by subject, acknowledged unread, and counted as skipped, not
refused); its own hosts' messages are decoded and refused as on any subscriber; the
``silence_id`` a sharded central sends with a silence is a checked name; ``--shard`` is
checked before anything starts.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

import nats
import pytest
from pydantic import ValidationError

from tests.nats_server import NatsServer
from watchkeeper.agents.analyzer import SilenceArgs
from watchkeeper.analysis.shard import Shard, shard_of
from watchkeeper.bus.nats import NatsBus
from watchkeeper.config import BusConfig

_prefixes = itertools.count()
MINE = next(h for h in (f"web-{i}" for i in range(50)) if shard_of(h, 2) == 0)
THEIRS = next(h for h in (f"web-{i}" for i in range(50)) if shard_of(h, 2) == 1)

HOSTILE = {
    "not-json": b"\xff\xfe{{{",
    "deep-nesting": b'{"type":"MetricSnapshot","event":' + b"[" * 5000 + b"]" * 5000 + b"}",
    "unknown-type": b'{"type":"os.system","event":{}}',
    "infinite-number": b'{"type":"MetricSnapshot","event":{"host":"x","seq":1e400}}',
    "empty": b"",
}


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[NatsBus]:
    prefix = f"hshard{next(_prefixes)}"
    opened = await NatsBus.open(BusConfig(backend="nats", url=nats_server.url,
                                          subject_prefix=prefix), client="central")
    yield opened
    await opened.close()


@pytest.mark.parametrize("payload", list(HOSTILE.values()), ids=list(HOSTILE))
async def test_another_shards_host_is_never_parsed_and_its_own_is_refused(
        bus: NatsBus, nats_server: NatsServer, payload: bytes) -> None:
    sub = bus.subscribe("metrics.*", name="analyzer-shard-0-of-2", maxsize=100,
                        keep=Shard(0, 2).owns_topic)
    await bus.settle()
    raw = await nats.connect(nats_server.url)
    try:
        js = raw.jetstream()
        await js.publish(f"{bus.prefix}.metrics.{THEIRS}", payload)
        await js.publish(f"{bus.prefix}.metrics.{MINE}", payload)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while sub.skipped < 1 or not bus.rejected:
            assert loop.time() < deadline, (sub.skipped, bus.rejected)
            await asyncio.sleep(0.02)
        # Another shard's host: passed over unread. Its own: decoded and refused, once.
        assert sub.skipped == 1 and sum(bus.rejected.values()) == 1
        assert sub.get_nowait() is None
    finally:
        await raw.close()
        sub.close()


@pytest.mark.parametrize("silence_id", ["", "x" * 201, "a\nb", "\x00", "id\x1b[31m"],
                         ids=["empty", "oversize", "newline", "nul", "terminal-escape"])
def test_a_silence_id_from_the_bus_is_a_checked_name(silence_id: str) -> None:
    until = datetime.now(timezone.utc) + timedelta(hours=1)
    with pytest.raises(ValidationError):
        SilenceArgs.model_validate({"matchers": {"host": "web-1"}, "until": until,
                                    "silence_id": silence_id})


@pytest.mark.parametrize("text", ["1/1", "64/64", "-0/2", "0/2 extra", "0x1/2", "1e3/2",
                                  "0/999999999999999999999", "٠/٢"],
                         ids=["index-equals-count", "index-past-end", "signed",
                              "trailing-junk", "hex", "exponent", "huge-count",
                              "arabic-digits"])
def test_a_hostile_shard_spec_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        Shard.parse(text)
