"""A fleet's broker with authentication, for tests: identities made as `watchkeeper fleet
add-central/add-host` makes them (bus/auth.py), and a real nats-server started with the
authorization block it prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client

from tests.nats_server import NatsServer
from watchkeeper.bus.auth import authorization_block, read_identities, write_identity
from watchkeeper.bus.subjects import inbox_prefix
from watchkeeper.config import BusConfig, validate

CENTRAL = "central-1"
HOSTS = ("web-1", "db-1")


@dataclass
class Fleet:
    """A broker that knows a central and some hosts, and each member's seed file."""

    server: NatsServer
    keys: Path
    prefix: str = "wk"

    def seed(self, name: str) -> Path:
        return self.keys / f"{name}.nk"

    def config(self, name: str, **bus: Any) -> BusConfig:
        """``bus.*`` for ``name`` as its YAML would say, through the settings validation."""
        fields = {"backend": "nats", "url": self.server.url, "subject_prefix": self.prefix,
                  "nkey_seed_file": str(self.seed(name)), **bus}
        return validate({"bus": fields}).bus


def make_fleet(root: Path, *, central: str = CENTRAL, hosts: tuple[str, ...] = HOSTS,
               prefix: str = "wk", extra: str = "", scheme: str = "nats") -> Fleet:
    keys = root / "fleet-keys"
    write_identity(keys, "central", central)
    for host in hosts:
        write_identity(keys, "host", host)
    block = authorization_block(read_identities(keys), prefix)
    (root / "broker").mkdir()
    server = NatsServer(root / "broker", extra=block + extra, scheme=scheme)
    return Fleet(server, keys, prefix)


@dataclass
class Client_:
    """A raw nats-py connection as one member, recording what the broker refused."""

    nc: Client
    errors: list[str] = field(default_factory=list)

    async def settled(self) -> None:
        """Return once the broker has handled everything sent so far (and any refusal of
        it has arrived): a message to our own inbox travels behind it, in order."""
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox, max_msgs=1)
        await self.nc.publish(inbox, b"")
        await sub.next_msg(timeout=10)

    def refused(self, what: str, subject: str) -> bool:
        """Whether the broker refused ``what`` (publish, subscription) on ``subject``."""
        wanted = f'permissions violation for {what} to "{subject.lower()}"'
        return any(wanted in error for error in self.errors)


async def connect_as(fleet: Fleet, name: str, *, seed: Path | None = None) -> Client_:
    client = Client_(nc=Client())

    async def on_error(exc: Exception) -> None:
        client.errors.append(str(exc).lower())

    client.nc = await nats.connect(fleet.server.url, nkeys_seed=str(seed or fleet.seed(name)),
                                   inbox_prefix=inbox_prefix(name), error_cb=on_error,
                                   allow_reconnect=False, connect_timeout=5)
    return client
