"""A restarted central reads its alerts back from the broker (what it published and may not
have stored before it died). Whatever sits in the alerts stream is wire input: each hostile
message is refused (counted by reason), the valid alerts around it are read back, and none
of it reaches the analysis engine's restore except a valid alert on its own host's subject.
A real nats-server; the hostile messages are published raw, as any client with publish
rights on the subject could."""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.nats_server import NatsServer
from watchkeeper.agents.analyzer import AnalyzerAgent
from watchkeeper.bus import codec
from watchkeeper.bus.nats import NatsBus
from watchkeeper.config import ConfigStore, validate
from watchkeeper.events import Alert, MetricSnapshot
from watchkeeper.store.sqlite import SqliteStore

from ..conftest import make_settings

_prefixes = itertools.count()
NOW = datetime.now(timezone.utc)


def alert(host: str, n: int) -> Alert:
    return Alert(host=host, id=f"{host}-{n}", fingerprint=f"fp{n}", rule="threshold",
                 metric="cpu.percent", severity="critical", since=NOW, summary=f"alert {n}")


def envelope(event: dict[str, object], kind: str = "Alert") -> bytes:
    return json.dumps({"type": kind, "event": event}).encode()


VALID = json.loads(codec.encode(alert("web-1", 1)))["event"]

HOSTILE: list[tuple[str, str, bytes]] = [
    ("not_json", "alerts.web-1", b"\xff\xfe not json"),
    ("not_envelope", "alerts.web-1", json.dumps(VALID).encode()),
    ("unknown_type", "alerts.web-1", envelope(VALID, "Nonsense")),
    ("invalid_event", "alerts.web-1", envelope({**VALID, "severity": "apocalyptic"})),
    ("invalid_event", "alerts.web-1", envelope({**VALID, "extra": "field"})),
    ("wrong_host", "alerts.web-1", codec.encode(alert("web-2", 2))),
    ("wrong_topic", "alerts.web-1", codec.encode(MetricSnapshot(host="web-1", seq=1,
                                                                 interval_s=5.0))),
    ("too_deep", "alerts.web-1", envelope({**VALID, "labels": {"a": "[" * 200}})
     .replace(b'"' + b"[" * 200 + b'"', b"[" * 200 + b"]" * 200)),
    ("bad_number", "alerts.web-1", envelope({**VALID, "value": 10 ** 30})),
]
# (An oversize message never gets into the stream: the broker refuses what is larger than
# the stream's max_msg_size, bus.max_message_bytes.)


@pytest.mark.parametrize(("reason", "topic", "data"), HOSTILE,
                         ids=[f"{i}-{h[0]}" for i, h in enumerate(HOSTILE)])
async def test_a_hostile_message_in_the_alerts_stream_is_refused_at_read_back(
        nats_server: NatsServer, tmp_path: Path, reason: str, topic: str, data: bytes) -> None:
    settings = validate({"bus": {"backend": "nats", "url": nats_server.url,
                                 "subject_prefix": f"rb{next(_prefixes)}",
                                 "max_message_bytes": 65_536},
                         "storage": {"data_dir": str(tmp_path / "data")}})
    bus = await NatsBus.open(settings.bus, client="central")
    try:
        assert bus._js is not None
        good = [alert("web-1", 10), alert("web-1", 11)]
        await bus.publish("alerts.web-1", good[0])
        await bus._js.publish(f"{bus.prefix}.{topic}", data)  # raw: no checks on the way
        await bus.publish("alerts.web-1", good[1])
        back = await bus.stored("alerts.*")
        assert [e for _t, e in back] == good
        assert bus.rejected[reason] == 1, dict(bus.rejected)

        # The restarted central's analyzer restores the valid alerts only.
        store = SqliteStore.open(make_settings(tmp_path).storage)
        agent = AnalyzerAgent(store=store, bus=bus, config=ConfigStore(settings),
                              host="central", fleet=True)
        try:
            restored = await agent._unstored_alerts()
            assert restored == good
        finally:
            await store.close()
    finally:
        await bus.close()
