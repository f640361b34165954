"""NATS JetStream bus: the same Bus protocol across processes and hosts (a fleet).

Subjects are the protocol's topics under a prefix: ``wk.metrics.<host>``,
``wk.alerts.<host>``, ``wk.health.<host>.<agent>``, ``wk.command.<host>.<agent>``.

- Streams (created or updated on connect, limits in ``bus.streams``): metrics (a catch-up
  buffer by age and size, droppable), alerts, actions, audit and events (errors, system,
  services), durable on file. Every stored event is published with ``Nats-Msg-Id`` (the
  digest of topic and event), so a re-publication within ``duplicate_window_s`` is stored
  once.
- A subscriber with a ``name`` reads stored topics through durable consumers named after this
  client and that name: stopped and started again (a central's restart), it gets what it
  missed, in order, once. Stored events are never dropped for a slow subscriber: they wait in
  the stream (``max_ack_pending`` keeps at most ``maxsize`` in the process). An event handed
  out is acknowledged when the subscriber asks for the next one or closes, so the one being
  worked on when a process dies comes again (after ``ack_wait_s``, after newer ones); a
  subscriber that stores what it gets (the communicator) calls ``commit()`` once it is
  durable, and only then are its events acknowledged.
- A subscriber with ``keep`` (an analysis shard: its own hosts) has the other topics'
  stored events acknowledged unread, judged by subject before any decoding; ``replay``
  reads what a stream holds now, once (a restarted shard's open alerts).
- Topics that are not stored (health heartbeats) and ``lossy`` observers use core NATS
  subscriptions with the in-memory bus's overflow policy.
- Request/reply for ``command.*`` over core NATS (never stored): no responder raises
  NoResponderError, no reply in time asyncio.TimeoutError, a failing handler BusError.
- Replies and push deliveries come to this client's own inbox, ``_INBOX.<client>``; consumers
  are named (keyed by the client's seed) and created on the filtered API subject, never
  looked up: a fleet host's broker permissions (:mod:`watchkeeper.bus.auth`) allow no more.
- Every message from the wire is decoded by :mod:`watchkeeper.bus.codec`; one that does not
  decode, or does not belong on its subject, is refused, counted in ``rejected`` and logged,
  and the subscriber carries on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import ssl
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as CoreSubscription
from nats.js import JetStreamContext, api

from watchkeeper.aio import wait_for
from watchkeeper.bus import codec
from watchkeeper.bus.auth import credential_problems, identity_secret
from watchkeeper.bus.base import (
    BusClosedError,
    BusError,
    Handler,
    NoResponderError,
    SubscriptionStats,
    TopicFilter,
    TopicStats,
)
from watchkeeper.bus.subjects import (
    FAMILY_STREAM,
    REQUEST_FAMILIES,
    STREAM_FAMILIES,
    durable_name,
    ephemeral_name,
    inbox_prefix,
    intersect,
    stream_name,
    stream_subjects,
    within,
)
from watchkeeper.config import BusConfig, StreamLimits
from watchkeeper.events import Event

log = logging.getLogger(__name__)

DEFAULT_MAXSIZE = 1000
#: Topics counted one by one; past this many (a flood of made-up subjects) the rest share
#: one counter, so counters cannot grow without bound.
MAX_TOPICS = 50_000
OTHER_TOPICS = "(other)"
#: Snapshots one consumer may have unacknowledged in this process. The broker buffers at
#: most 64 MB for a connection (nats-server's max_pending) and cuts off a client that does
#: not read it in time, as a "slow consumer"; what was in flight then comes again only after
#: ack_wait_s, all at once. 10,000 in flight (maxsize) of 23 KB snapshots is 230 MB: a
#: central at 3,000 hosts was cut off within 20 s. 1,000 is 23 MB (two such consumers share
#: a central's connection) and still lets its history take 1,000 snapshots per flush.
METRICS_MAX_ACK = 1000
#: Recently decoded messages kept to hand the same event to each subscriber of this process.
DECODED_CACHE = 256
#: Acknowledged events a subscription remembers, to answer one delivered again unhandled.
ACKED_KEPT = 4096
#: Header of a reply whose handler failed (the body is empty).
ERROR_HEADER = "Wk-Error"
MSG_ID_HEADER = "Nats-Msg-Id"
#: Where requesters receive replies (nats-py's default inbox prefix).
INBOX_PREFIX = "_INBOX."
_TOPIC = re.compile(r"^[^.\s*>]+(\.[^.\s*>]+)*$")
#: A fleet host waits this many times this long for the central to make a lost stream again.
RECOVER_TRIES = 150
RECOVER_WAIT_S = 2.0
# nats-server's error code for "stream name already in use with a different configuration".
_STREAM_EXISTS = 10058


@dataclass
class _Counters:
    published: int = 0
    delivered: int = 0
    dropped: int = 0
    depth: int = 0


@dataclass
class _Item:
    topic: str
    event: Event
    msg: Msg | None = None  # a JetStream message, acknowledged once handled


@dataclass
class _Responder:
    topic: str
    handler: Handler
    sub: CoreSubscription | None = None
    ready: asyncio.Task[None] | None = field(default=None, repr=False)


class NatsSubscription:
    """One subscriber: JetStream consumers for stored topics, core NATS for the rest."""

    def __init__(self, bus: NatsBus, pattern: str, name: str, maxsize: int, lossy: bool,
                 keep: TopicFilter | None = None) -> None:
        self.bus = bus
        #: Topics this subscriber takes; the others are acknowledged unread (a shard's hosts).
        self.keep = keep
        #: Stored events passed over by ``keep`` (not decoded).
        self.skipped = 0
        self.pattern = pattern
        self.name = name or pattern
        self.durable = bool(name) and not lossy
        self.maxsize = maxsize
        self.lossy = lossy
        self.dropped = 0
        #: Deliveries again of an event already queued here (after ack_wait), skipped.
        self.redelivered = 0
        self._items: collections.deque[_Item] = collections.deque()
        self._readable = asyncio.Event()
        self._closed = False
        self._error: BusError | None = None
        self._core: CoreSubscription | None = None
        self._js: list[JetStreamContext.PushSubscription] = []
        self._ephemeral: list[tuple[str, str]] = []  # (stream, consumer) deleted on close
        #: (stream, filter subject, max_ack_pending, subscription) of every consumer, to make
        #: them again when the broker lost a stream (a memory stream across its restart).
        self._consumers: list[tuple[str, str, int, Any]] = []
        self._pending: dict[str, int] = {}  # consumer -> messages still in the stream
        #: (consumer, stream sequence) of every event queued or handed here and not yet
        #: acknowledged: a delivery again of one of these (after ack_wait) is skipped. Not
        #: "at or below the last sequence seen": after a restart, what the killed process
        #: held comes again after newer events, and must not be taken for a copy.
        self._unacked: set[tuple[str, int]] = set()
        #: The last events acknowledged here. One delivered again was handled, but its
        #: acknowledgement was lost (the broker restarted in between and no longer lets a
        #: host answer a delivery made before): the new delivery is acknowledged, not handed
        #: out twice.
        self._acked: collections.OrderedDict[tuple[str, int], None] = collections.OrderedDict()
        self._handed: Msg | None = None
        self._handed_droppable = False
        #: After commit() was first called: events handed out are acknowledged only at the
        #: next commit() (once the subscriber made them durable), not at the next get().
        self._commit_mode = False
        self._held: list[Msg] = []
        self._setup: asyncio.Task[None] | None = None
        self._created: dict[str, Any] = {}  # consumer -> when the broker made it

    # -- set-up (a task the bus awaits before its next publish or request)
    async def _start(self) -> None:
        try:
            await self._open()
        except Exception as exc:
            self._error = exc if isinstance(exc, BusError) else BusError(
                f"subscription {self.name!r} on {self.pattern!r} could not start: "
                f"{type(exc).__name__}: {exc}")
            log.error("%s", self._error)
            self._readable.set()

    async def _open(self) -> None:
        bus = self.bus
        nc, js = await bus._ready()
        subject = bus._subject(self.pattern)
        covered = False
        if not self.lossy:
            overlaps = _overlaps(bus, subject)
            max_ack = max(1, self.maxsize // max(1, len(overlaps)))
            metrics = stream_name(bus.prefix, "metrics")
            for stream, filter_subject in overlaps:
                if self._closed:
                    return
                await self._consume(js, stream, filter_subject,
                                    min(max_ack, METRICS_MAX_ACK) if stream == metrics
                                    else max_ack)
            # Entirely inside one stream (alerts.*): no core subscription needed.
            covered = any(within(subject, stored) for stream in STREAM_FAMILIES
                          for stored in stream_subjects(bus.prefix, stream))
        if not covered and not self._closed:
            self._core = await nc.subscribe(subject, cb=self._on_core)
            # Once settled, the broker routes every later publication here, whichever
            # connection it comes from.
            await _barrier(nc)

    async def _consume(self, js: JetStreamContext, stream: str, filter_subject: str,
                       max_ack: int) -> None:
        bus = self.bus
        if self.durable:
            consumer = durable_name(bus.client, self.name, filter_subject, bus._secret)
        else:
            consumer = ephemeral_name(bus.client)
        config = self._config(consumer, filter_subject, max_ack)
        # Created (or brought back to this configuration) and then bound, never looked up
        # first: a host's broker permissions let it create consumers on its own subjects,
        # not read the settings of anyone else's.
        info = await js._jsm.add_consumer(stream, config=config)
        self._created[consumer] = info.created
        psub = await js.subscribe_bind(stream, config=info.config, consumer=info.name,
                                       cb=self._on_stored, manual_ack=True)
        self._js.append(psub)
        self._consumers.append((stream, filter_subject, max_ack, psub))
        if not self.durable:
            self._ephemeral.append((stream, consumer))

    def _config(self, consumer: str, filter_subject: str, max_ack: int) -> api.ConsumerConfig:
        bus = self.bus
        return api.ConsumerConfig(
            # Named, so that nats-py creates it on $JS.API.CONSUMER.CREATE.<stream>.<name>.
            # <filter>: a broker can allow a host consumers on its own subjects only.
            name=consumer,
            durable_name=consumer if self.durable else None,
            # In this client's inbox, the same one again after a restart.
            deliver_subject=f"{bus.inbox}.{consumer}",
            filter_subject=filter_subject,
            # A new consumer starts at the events published from now on; an existing durable
            # one resumes where its subscriber left off.
            deliver_policy=api.DeliverPolicy.NEW,
            ack_policy=api.AckPolicy.EXPLICIT,
            ack_wait=bus.config.ack_wait_s,
            max_ack_pending=max_ack,
            inactive_threshold=bus.config.consumer_inactive_s if self.durable else 60.0,
        )

    async def _lost_streams(self, js: JetStreamContext, streams: set[str]) -> set[str]:
        """Of ``streams``, those whose consumers of ours the broker no longer had: asked for
        again (create-or-update changes nothing that exists), one made anew is a stream
        lost and made again. NotFoundError while a stream is not there (yet)."""
        lost: set[str] = set()
        for stream, filter_subject, max_ack, psub in list(self._consumers):
            if stream in streams and not self._closed:
                consumer = psub._consumer
                info = await js._jsm.add_consumer(
                    stream, config=self._config(consumer, filter_subject, max_ack))
                if info.created != self._created.get(consumer):
                    lost.add(stream)
        return lost

    async def _reconsume(self, streams: set[str]) -> None:
        """The broker lost these streams (and so their consumers): make ours again. Their
        sequence numbers start over, so what was seen of them is forgotten."""
        js = self.bus._js
        if js is None or self._closed:
            return
        lost = [c for c in self._consumers if c[0] in streams]
        for stream, filter_subject, max_ack, psub in lost:
            self._consumers.remove((stream, filter_subject, max_ack, psub))
            if psub in self._js:
                self._js.remove(psub)
            with contextlib.suppress(Exception):
                await psub.unsubscribe()
            self._unacked = {key for key in self._unacked if key[0] != psub._consumer}
            # A stream made again numbers from 1: its sequences name other events now.
            for key in [k for k in self._acked if k[0] == psub._consumer]:
                del self._acked[key]
            await self._consume(js, stream, filter_subject, max_ack)

    # -- arrivals
    async def _on_core(self, msg: Msg) -> None:
        topic = self.bus._topic(msg.subject)
        if topic is None or self._closed:
            return
        if self.keep is not None and not self.keep(topic):
            return
        family = topic.split(".", 1)[0]
        # Stored topics reach a non-lossy subscriber through its consumers; requests are
        # for their responder only.
        if family in REQUEST_FAMILIES or (not self.lossy and family in FAMILY_STREAM):
            return
        event = self.bus._decode(topic, msg.data)
        if event is not None:
            self._put_core(topic, event)

    def _put_core(self, topic: str, event: Event) -> None:
        bus = self.bus
        if len(self._items) >= self.maxsize:
            victim = None
            if self.lossy:
                victim = self._items.popleft()
            elif type(event).droppable:
                for i, item in enumerate(self._items):
                    if item.msg is None and type(item.event).droppable:
                        victim = item
                        del self._items[i]
                        break
            if victim is None:
                # Nothing to give way: the new event is the loser, counted (a publisher
                # over core NATS is never held back by one slow process).
                self.dropped += 1
                bus._counter(topic).dropped += 1
                if not type(event).droppable:
                    log.error("subscriber %r is full (%d events): %s on %r dropped",
                              self.name, self.maxsize, type(event).__name__, topic)
                return
            self.dropped += 1
            bus._counter(victim.topic).dropped += 1
            bus._counter(victim.topic).depth -= 1
        self._items.append(_Item(topic, event))
        bus._counter(topic).depth += 1
        self._readable.set()

    async def _on_stored(self, msg: Msg) -> None:
        if self._closed:
            return  # not acknowledged: the consumer delivers it again to the next subscriber
        bus = self.bus
        meta = msg.metadata
        consumer = meta.consumer or ""
        seq = meta.sequence.stream if meta.sequence is not None else 0
        if (consumer, seq) in self._unacked:
            self.redelivered += 1
            return  # still queued here (its acknowledgement covers this delivery too)
        if (consumer, seq) in self._acked:
            self.redelivered += 1
            bus._ack_soon(msg)  # handled already; this delivery may be answered
            return
        self._unacked.add((consumer, seq))
        self._pending[consumer] = meta.num_pending or 0
        topic = bus._topic(msg.subject)
        if topic is not None and self.keep is not None and not self.keep(topic):
            # Another shard's host: done with, unread (the subject names the host).
            self.skipped += 1
            self._acknowledge(msg)
            return
        event = bus._decode(topic, msg.data) if topic is not None else None
        if topic is None or event is None:
            self._forget(msg)
            with contextlib.suppress(Exception):
                await msg.term()  # never deliver it again
            return
        self._items.append(_Item(topic, event, msg))
        bus._counter(topic).depth += 1
        self._readable.set()

    # -- consumer side
    def _take(self) -> tuple[str, Event]:
        item = self._items.popleft()
        counter = self.bus._counter(item.topic)
        counter.delivered += 1
        counter.depth -= 1
        self._handed = item.msg
        self._handed_droppable = type(item.event).droppable
        return item.topic, item.event

    def _ack_handed(self) -> None:
        # The subscriber asks for the next event (or closes): the one before is handled.
        if self._handed is not None:
            if self._commit_mode and not self._handed_droppable:
                self._held.append(self._handed)
            else:
                self._acknowledge(self._handed)
            self._handed = None

    def _acknowledge(self, msg: Msg) -> None:
        self._forget(msg, acked=True)
        self.bus._ack_soon(msg)

    def _forget(self, msg: Msg, acked: bool = False) -> None:
        with contextlib.suppress(Exception):
            meta = msg.metadata
            seq = meta.sequence.stream if meta.sequence is not None else 0
            key = (meta.consumer or "", seq)
            self._unacked.discard(key)
            if acked:
                self._acked[key] = None
                if len(self._acked) > ACKED_KEPT:
                    self._acked.popitem(last=False)

    def commit(self) -> None:
        """Acknowledge every event handed out so far: the subscriber has made them durable.

        From the first call on, events are acknowledged only here, never when the next one
        is asked for: a process killed before its commit gets them again after a restart
        (after ``ack_wait_s``). Droppable events (snapshots) are still acknowledged when
        the next is asked for (they would hold a large window of the broker's for little).
        """
        self._commit_mode = True
        self._ack_handed()  # the last one handed out is done with too
        held, self._held = self._held, []
        for msg in held:
            self._acknowledge(msg)

    async def get(self) -> tuple[str, Event]:
        self._ack_handed()
        while not self._items:
            if self._error is not None:
                raise self._error
            if self._closed:
                raise BusClosedError(f"subscription {self.name!r} closed")
            self._readable.clear()
            await self._readable.wait()
        return self._take()

    def get_nowait(self) -> tuple[str, Event] | None:
        self._ack_handed()
        if not self._items:
            if self._error is not None:
                raise self._error
            return None
        return self._take()

    def __len__(self) -> int:
        return len(self._items)

    def depth(self) -> int:
        """Events waiting for this subscriber: queued here plus still in the streams."""
        return len(self._items) + sum(self._pending.values())

    async def __aiter__(self) -> AsyncIterator[tuple[str, Event]]:
        while True:
            try:
                yield await self.get()
            except BusClosedError:
                return

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._ack_handed()
        # Handed out but never committed (the subscriber did not make them durable) and
        # queued but never handed out: back to the consumer at once, for the next subscriber.
        naks = self._held + [item.msg for item in self._items if item.msg is not None]
        self._held = []
        for item in self._items:
            self.bus._counter(item.topic).depth -= 1
        self._items.clear()
        self._readable.set()
        self.bus._unsubscribe(self)
        self.bus._spawn(self._stop(naks))

    async def _stop(self, naks: list[Msg]) -> None:
        if self._setup is not None:  # closed while its consumers were being made
            await asyncio.gather(self._setup, return_exceptions=True)
        # Queued but never handed out: back to the consumer at once, for the next subscriber.
        for msg in naks:
            with contextlib.suppress(Exception):
                await msg.nak()
        for psub in self._js:
            with contextlib.suppress(Exception):
                await psub.unsubscribe()
        if self._core is not None:
            with contextlib.suppress(Exception):
                await self._core.unsubscribe()
        js = self.bus._js
        # A host may not delete consumers (its broker permissions): the broker removes an
        # ephemeral one after a minute without its subscriber.
        for stream, consumer in self._ephemeral if self.bus.manage_streams else ():
            if js is not None:
                with contextlib.suppress(Exception):
                    await js._jsm.delete_consumer(stream, consumer)


async def _barrier(nc: NatsClient, timeout: float = 10.0) -> None:
    """Return once the broker has processed everything this connection sent so far.

    Not ``nc.flush()``: nats-py writes its PING straight to the socket, ahead of commands
    still queued (a SUB just made), so its PONG proves nothing about them. A message to
    ourselves travels behind them, in order.
    """
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, max_msgs=1)
    try:
        await nc.publish(inbox, b"")
        await sub.next_msg(timeout=timeout)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def _ack(msg: Msg) -> None:
    with contextlib.suppress(nats.errors.MsgAlreadyAckdError, nats.errors.Error):
        await msg.ack()


def _overlaps(bus: NatsBus, subject: str) -> list[tuple[str, str]]:
    """(stream name, filter subject) for every stored family ``subject`` reaches."""
    out: list[tuple[str, str]] = []
    for stream in STREAM_FAMILIES:
        for stored in stream_subjects(bus.prefix, stream):
            both = intersect(subject, stored)
            if both is not None:
                out.append((stream_name(bus.prefix, stream), both))
    return out


class NatsBus:
    """The Bus protocol over NATS JetStream (``bus.backend: nats``)."""

    def __init__(self, config: BusConfig | None = None, *, client: str = "watchkeeper",
                 default_maxsize: int = DEFAULT_MAXSIZE, manage_streams: bool = True) -> None:
        self.config = config or BusConfig(backend="nats")
        #: This process's name on the broker and in its durable consumers' names (the host).
        self.client = client
        #: Where replies and deliveries reach this client (a broker lets it read only there).
        self.inbox = inbox_prefix(client)
        #: Whether this client creates and repairs the streams (a central); a fleet host
        #: with its own credentials may not, and leaves them to the central.
        self.manage_streams = manage_streams
        #: Keys this client's durable consumer names (bus/auth.py), set at connect.
        self._secret = b""
        #: What the broker refused this client (permissions violations), and the last one.
        self.denied = 0
        self.last_denied = ""
        self._first_error: Exception | None = None
        self._tls_failed = asyncio.Event()
        self.prefix = self.config.subject_prefix
        self.default_maxsize = default_maxsize
        self._nc: NatsClient | None = None
        self._decoded: collections.OrderedDict[tuple[str, bytes], Event] = \
            collections.OrderedDict()
        self._js: JetStreamContext | None = None
        self._connected = asyncio.Event()
        self._setup: set[asyncio.Task[None]] = set()
        self._bg: set[asyncio.Task[Any]] = set()
        self._answers: set[asyncio.Task[None]] = set()  # handlers still running
        self._subs: list[NatsSubscription] = []
        self._handlers: dict[str, _Responder] = {}
        self._counters: dict[str, _Counters] = {}
        #: Messages refused from the wire, by reason (codec.WireError.reason).
        self.rejected: collections.Counter[str] = collections.Counter()
        #: Publications the broker recognised as duplicates (same Nats-Msg-Id) and stored once.
        self.duplicates = 0
        self._closed = False
        self._offline_logged = False
        #: Acknowledgements waiting for the one task that sends them (not a task each).
        self._acks: list[Msg] = []
        self._ack_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ connection

    @classmethod
    async def open(cls, config: BusConfig, *, client: str,
                   default_maxsize: int = DEFAULT_MAXSIZE, manage_streams: bool = True
                   ) -> NatsBus:
        """Connect to the broker and set up the streams; BusError if it cannot."""
        bus = cls(config, client=client, default_maxsize=default_maxsize,
                  manage_streams=manage_streams)
        await bus.connect()
        return bus

    @property
    def connected(self) -> bool:
        """Whether connect() succeeded (a broker outage since is waited out, not reported)."""
        return self._connected.is_set()

    @property
    def online(self) -> bool:
        """Whether the broker can be reached right now (False during an outage)."""
        return self._nc is not None and self._nc.is_connected and not self._closed

    async def connect(self) -> None:
        """Connect and create or update the streams (subscriptions made before wait)."""
        cfg = self.config
        problems = credential_problems(cfg)
        if problems:
            raise BusError("; ".join(str(p) for p in problems))
        options: dict[str, Any] = {
            "servers": [cfg.url],
            "name": f"watchkeeper:{self.client}",
            "connect_timeout": cfg.connect_timeout_s,
            "allow_reconnect": True,
            # Two tries at start (a clear error, not a hang), then never give up (below).
            "max_reconnect_attempts": 1,
            "reconnect_time_wait": 2,
            "drain_timeout": 5,
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
            "inbox_prefix": self.inbox,
        }
        tls = self._tls_context()
        if tls is not None:
            options["tls"] = tls
        if cfg.nkey_seed_file is not None:
            options["nkeys_seed"] = str(cfg.nkey_seed_file.expanduser())
        if cfg.creds_file is not None:
            options["user_credentials"] = str(cfg.creds_file.expanduser())
        try:
            self._secret = identity_secret(cfg)
        except OSError as exc:
            raise BusError(f"cannot read this host's NATS credentials: {exc}") from exc
        nc = NatsClient()
        try:
            # nats-py retries a failed TLS handshake (a certificate it does not trust)
            # without end while reconnecting is allowed: the first such error ends it.
            await self._connect_or_tls_error(nc, options)
        except Exception as exc:
            with contextlib.suppress(Exception):
                await nc.close()
            cause = self._first_error or exc
            raise BusError(f"cannot connect to the NATS server at {_safe_url(cfg.url)}: "
                           f"{type(cause).__name__}: {cause}") from exc
        # Once connected, a broker restart or a network cut is waited out for good.
        nc.options["max_reconnect_attempts"] = -1
        self._nc = nc
        self._js = nc.jetstream(timeout=cfg.publish_timeout_s)
        try:
            for stream in STREAM_FAMILIES if self.manage_streams else ():
                await self._ensure_stream(stream, getattr(cfg.streams, stream))
        except BaseException:
            await nc.close()
            raise
        self._connected.set()

    async def _connect_or_tls_error(self, nc: NatsClient, options: dict[str, Any]) -> None:
        self._tls_failed = asyncio.Event()
        connecting = asyncio.ensure_future(nc.connect(**options))
        failed = asyncio.ensure_future(self._tls_failed.wait())
        try:
            await asyncio.wait({connecting, failed}, timeout=2 * self.config.connect_timeout_s
                               + 5, return_when=asyncio.FIRST_COMPLETED)
        finally:
            failed.cancel()
        if not connecting.done():
            connecting.cancel()
            await asyncio.gather(connecting, return_exceptions=True)
            raise asyncio.TimeoutError("no connection")
        connecting.result()

    def _tls_context(self) -> ssl.SSLContext | None:
        cfg = self.config
        if cfg.tls_ca_file is None and cfg.tls_cert_file is None \
                and not cfg.url.startswith("tls://"):
            return None
        ctx = ssl.create_default_context(
            cafile=str(cfg.tls_ca_file.expanduser()) if cfg.tls_ca_file else None)
        if cfg.tls_cert_file is not None and cfg.tls_key_file is not None:
            ctx.load_cert_chain(str(cfg.tls_cert_file.expanduser()),
                                str(cfg.tls_key_file.expanduser()))
        return ctx

    async def _ensure_stream(self, stream: str, limits: StreamLimits) -> None:
        assert self._js is not None
        cfg = self.config
        config = api.StreamConfig(
            name=stream_name(self.prefix, stream),
            subjects=stream_subjects(self.prefix, stream),
            retention=api.RetentionPolicy.LIMITS,
            discard=api.DiscardPolicy.OLD,
            max_age=limits.max_age_s,
            max_bytes=limits.max_bytes,
            max_msg_size=cfg.max_message_bytes,
            storage=api.StorageType.FILE if limits.storage == "file" else api.StorageType.MEMORY,
            num_replicas=cfg.replicas,
            duplicate_window=cfg.duplicate_window_s,
        )
        try:
            try:
                await self._js.add_stream(config)
            except nats.js.errors.BadRequestError as exc:
                if exc.err_code != _STREAM_EXISTS:
                    raise
                await self._js.update_stream(config)
        except nats.js.errors.Error as exc:
            raise BusError(f"stream {config.name} ({', '.join(config.subjects or [])}) could "
                           f"not be set up: {exc} (bus.streams.{stream}; a stream's storage "
                           "cannot change in place: delete it with `nats stream rm` first)"
                           ) from exc

    async def _ready(self) -> tuple[NatsClient, JetStreamContext]:
        if self._closed:
            raise BusClosedError("bus is closed")
        if not self._connected.is_set():
            try:
                await wait_for(self._connected.wait(), self.config.connect_timeout_s)
            except asyncio.TimeoutError:
                raise BusError("not connected to NATS (NatsBus.connect was not called or "
                               "did not succeed)") from None
        assert self._nc is not None and self._js is not None
        return self._nc, self._js

    async def _on_error(self, exc: Exception) -> None:
        if self._first_error is None and not self._connected.is_set():
            self._first_error = exc  # why connect() fails, if it does
        if isinstance(exc, ssl.SSLError) and not self._connected.is_set():
            self._tls_failed.set()
        text = str(exc)
        if "permissions violation" not in text.lower():
            log.debug("nats client error: %s", exc)
            return
        if '"$js.ack.' in text.lower():
            # An acknowledgement of a delivery made before a reconnect: the broker lets a
            # host answer only deliveries on its current connection. The event comes again
            # and is acknowledged then (see NatsSubscription._acked); nothing is wrong.
            log.debug("an acknowledgement from before a reconnect was refused: %s", text[:300])
            return
        # The broker refused a publication or subscription this client's credentials do not
        # allow: a misconfigured host (or a wrong bus.subject_prefix), or an attempt at
        # another host's subjects. The first at error, then one in a thousand.
        self.denied += 1
        self.last_denied = text[:300]
        level = logging.ERROR if self.denied == 1 or self.denied % 1000 == 0 else logging.DEBUG
        log.log(level, "the NATS server refused this client (%d so far): %s (the broker "
                "permissions of %r do not allow it: is host_name the name its key was made "
                "for, and bus.subject_prefix the broker block's?)", self.denied, text[:300],
                self.client)

    async def _on_disconnected(self) -> None:
        if not self._closed and not self._offline_logged:
            self._offline_logged = True
            log.warning("lost the connection to the NATS server at %s; reconnecting",
                        _safe_url(self.config.url))

    async def _on_reconnected(self) -> None:
        if self._offline_logged:
            self._offline_logged = False
            log.info("reconnected to the NATS server")
        if not self._closed and self._connected.is_set():
            self._spawn(self._recover())

    async def _recover(self) -> None:
        """After a reconnect: a stream the broker no longer has (a memory stream across its
        restart) is set up again, with the consumers of it, so publishing and subscribers
        carry on instead of failing or going quiet for good."""
        js = self._js
        if js is None:
            return
        if not self.manage_streams:
            await self._recover_consumers(js)
            return
        lost: set[str] = set()
        for stream in STREAM_FAMILIES:
            name = stream_name(self.prefix, stream)
            try:
                await js.stream_info(name)
            except nats.js.errors.NotFoundError:
                lost.add(name)
            except Exception as exc:  # the broker went again: the next reconnect retries
                log.warning("after reconnecting, stream %s could not be checked: %s", name, exc)
                return
        if not lost:
            return
        log.warning("the NATS server lost stream(s) %s (memory storage across its restart): "
                    "set up again; what they held is gone", ", ".join(sorted(lost)))
        try:
            for stream in STREAM_FAMILIES:
                if stream_name(self.prefix, stream) in lost:
                    await self._ensure_stream(stream, getattr(self.config.streams, stream))
            for sub in list(self._subs):
                await sub._reconsume(lost)
        except Exception as exc:
            log.error("setting up stream(s) %s again failed: %s", ", ".join(sorted(lost)), exc)

    async def _recover_consumers(self, js: JetStreamContext) -> None:
        """After a reconnect, a client that may not look at the streams (a fleet host) asks
        for its consumers of memory streams again, until the central has made a lost stream
        again; a consumer made anew is bound again, as the central does for its own."""
        memory = {stream_name(self.prefix, s) for s in STREAM_FAMILIES
                  if getattr(self.config.streams, s).storage == "memory"}
        for _attempt in range(RECOVER_TRIES):
            try:
                for sub in list(self._subs):
                    lost = await sub._lost_streams(js, memory)
                    if lost:
                        log.warning("the NATS server lost stream(s) %s (memory storage "
                                    "across its restart): reading them again",
                                    ", ".join(sorted(lost)))
                        await sub._reconsume(lost)
                return
            except nats.js.errors.NotFoundError:
                pass  # the central has not made the stream again yet
            except Exception as exc:  # the broker went again: the next reconnect retries
                log.warning("after reconnecting, consumers could not be checked: %s", exc)
                return
            if self._closed:
                return
            await asyncio.sleep(RECOVER_WAIT_S)
        log.error("stream(s) %s still missing after %.0f s: the central sets them up again "
                  "when it reconnects", ", ".join(sorted(memory)), RECOVER_TRIES * RECOVER_WAIT_S)

    # ------------------------------------------------------------------ helpers

    def _subject(self, topic: str) -> str:
        return f"{self.prefix}.{topic}"

    def _topic(self, subject: str) -> str | None:
        head = self.prefix + "."
        return subject[len(head):] if subject.startswith(head) else None

    def _counter(self, topic: str) -> _Counters:
        counter = self._counters.get(topic)
        if counter is None:
            if len(self._counters) >= MAX_TOPICS:
                topic = OTHER_TOPICS
                counter = self._counters.get(topic)
            if counter is None:
                counter = self._counters[topic] = _Counters()
        return counter

    def _decode(self, topic: str, data: bytes) -> Event | None:
        # One message reaches several subscribers of this process (a central's analyzer,
        # history and live stream each get every snapshot): validated once, the same frozen
        # event handed to each, as the in-process bus does. Keyed by the exact bytes.
        key = (topic, data)
        cached = self._decoded.get(key)
        if cached is not None:
            self._decoded.move_to_end(key)
            return cached
        try:
            event = codec.decode(data, topic=topic, max_bytes=self.config.max_message_bytes,
                                 max_depth=self.config.max_depth)
        except codec.WireError as exc:
            self._reject(topic, exc)
            return None
        self._decoded[key] = event
        if len(self._decoded) > DECODED_CACHE:
            self._decoded.popitem(last=False)
        return event

    def _reject(self, topic: str, exc: codec.WireError) -> None:
        self.rejected[exc.reason] += 1
        if topic in self._counters:
            self._counters[topic].dropped += 1
        count = self.rejected[exc.reason]
        # The first of each kind at warning, then one in a thousand: a flood stays readable.
        level = logging.WARNING if count == 1 or count % 1000 == 0 else logging.DEBUG
        log.log(level, "refused a message on %r (%d so far of this kind): %s",
                topic[:200], count, exc)

    def _ack_soon(self, msg: Msg) -> None:
        """Acknowledge ``msg`` from one task that sends every acknowledgement queued so far:
        at a central's rate a task per message cost more than the acknowledgement itself."""
        self._acks.append(msg)
        if self._ack_task is None:
            self._ack_task = self._spawn(self._send_acks())

    async def _send_acks(self) -> None:
        try:
            while self._acks:
                msgs, self._acks = self._acks, []
                for msg in msgs:
                    await _ack(msg)
        finally:
            self._ack_task = None

    async def replay(self, pattern: str, *, keep: TopicFilter | None = None,
                     timeout: float = 5.0) -> list[tuple[str, Event]]:
        """Every event the streams hold now on ``pattern`` (oldest first), read once
        through an ordered ephemeral consumer (nothing acknowledged, nothing durable):
        what a restarted analysis shard rebuilds its open alerts from."""
        _nc, js = await self._ready()
        out: list[tuple[str, Event]] = []
        for stream, filter_subject in _overlaps(self, self._subject(pattern)):
            state = (await js.stream_info(stream)).state
            if not state.messages:
                continue
            psub = await js.subscribe(filter_subject, stream=stream, ordered_consumer=True,
                                      deliver_policy=api.DeliverPolicy.ALL)
            try:
                # Each delivery says how many more the filter holds (the consumer's own
                # count may not be ready the moment it is made); the stream's last
                # sequence ends a filter whose last message is of another subject.
                left = 1
                while left > 0:
                    try:
                        msg = await psub.next_msg(timeout=timeout)
                    except (nats.errors.TimeoutError, asyncio.TimeoutError):
                        break  # nothing (more) on this filter
                    meta = msg.metadata
                    left = 0 if meta.sequence.stream >= state.last_seq \
                        else meta.num_pending or 0
                    topic = self._topic(msg.subject)
                    if topic is None or (keep is not None and not keep(topic)):
                        continue
                    event = self._decode(topic, msg.data)
                    if event is not None:
                        out.append((topic, event))
            finally:
                with contextlib.suppress(Exception):
                    await psub.unsubscribe()
        return out

    def _spawn(self, job: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(job)
        self._bg.add(task)
        task.add_done_callback(self._bg.discard)
        return task

    def _start(self, job: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(job)
        self._setup.add(task)
        task.add_done_callback(self._setup.discard)
        return task

    async def settle(self) -> None:
        """Wait until every subscription and responder made so far is in place."""
        if self._setup:
            await asyncio.gather(*list(self._setup), return_exceptions=True)

    def _unsubscribe(self, sub: NatsSubscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    @staticmethod
    def _check_topic(topic: str) -> None:
        if not _TOPIC.match(topic):
            raise ValueError(f"invalid topic {topic[:200]!r}: dot-separated tokens without "
                             "spaces or wildcards")

    # ------------------------------------------------------------------ Bus protocol

    async def publish(self, topic: str, event: Event) -> None:
        self._check_topic(topic)
        # What every receiver would refuse fails here, loudly, at its source.
        codec.check_topic(topic, event)
        data = codec.encode(event, max_bytes=self.config.max_message_bytes)
        await self._send(topic, data, codec.message_id(topic, data), type(event).__name__)

    async def publish_wire(self, topic: str, data: bytes, *, msg_id: str) -> bool:
        """Send an event already in wire form (a spooled one, sent again after an outage)
        with the message id it had the first time; True if the broker already had it.

        The bytes are decoded first, as a receiver would: a corrupt row is a WireError
        here, never a message on the wire.
        """
        self._check_topic(topic)
        event = codec.decode(data, topic=topic, max_bytes=self.config.max_message_bytes,
                             max_depth=self.config.max_depth)
        before = self.duplicates
        await self._send(topic, data, msg_id, type(event).__name__)
        return self.duplicates > before

    async def _send(self, topic: str, data: bytes, msg_id: str, kind: str) -> None:
        await self.settle()
        nc, js = await self._ready()
        self._counter(topic).published += 1
        subject = self._subject(topic)
        if topic.split(".", 1)[0] not in FAMILY_STREAM:
            await nc.publish(subject, data)
            return
        try:
            ack = await js.publish(subject, data, timeout=self.config.publish_timeout_s,
                                   headers={MSG_ID_HEADER: msg_id})
        except asyncio.TimeoutError:
            if f'"{subject.lower()}"' in self.last_denied.lower():
                raise BusError(f"the NATS server refused {kind} on {topic!r}: the broker "
                               f"permissions of {self.client!r} do not allow publishing to "
                               f"{subject!r}") from None
            raise BusError(f"the NATS server did not confirm storing {kind} on {topic!r} "
                           f"within {self.config.publish_timeout_s:g}s") from None
        except nats.js.errors.NoStreamResponseError:
            raise BusError(f"no JetStream stream stores {subject!r} (is JetStream enabled "
                           "on the server?)") from None
        except nats.js.errors.Error as exc:
            raise BusError(f"the NATS server refused {kind} on {topic!r}: {exc}") from exc
        if ack.duplicate:
            self.duplicates += 1

    def subscribe(self, pattern: str, *, name: str = "", maxsize: int | None = None,
                  lossy: bool = False, keep: TopicFilter | None = None) -> NatsSubscription:
        if self._closed:
            raise BusClosedError("bus is closed")
        sub = NatsSubscription(self, pattern, name, maxsize or self.default_maxsize, lossy,
                               keep)
        if sub.durable and any(s.durable and s.name == sub.name for s in self._subs):
            raise ValueError(f"a subscription named {name!r} is already open on this bus: "
                             "two would share (and split) one durable consumer")
        self._subs.append(sub)
        sub._setup = self._start(sub._start())
        return sub

    def serve(self, topic: str, handler: Handler) -> Callable[[], None]:
        self._check_topic(topic)
        if topic in self._handlers:
            raise ValueError(f"topic {topic!r} already has a responder")
        responder = _Responder(topic, handler)
        self._handlers[topic] = responder

        async def start() -> None:
            nc, _ = await self._ready()

            async def on_request(msg: Msg) -> None:
                # Replies go to a requester's inbox only: a request whose reply subject is,
                # say, another host's alerts would make this host publish there for it.
                if msg.reply.startswith(INBOX_PREFIX):
                    task = self._spawn(self._answer(responder, msg))
                    self._answers.add(task)
                    task.add_done_callback(self._answers.discard)

            responder.sub = await nc.subscribe(self._subject(topic), cb=on_request)
            await _barrier(nc)  # the broker knows the responder before serve() is settled

        responder.ready = self._start(start())

        def stop() -> None:
            if self._handlers.get(topic) is responder:
                del self._handlers[topic]
                if not self._closed:
                    self._spawn(self._unserve(responder))

        return stop

    async def _unserve(self, responder: _Responder) -> None:
        if responder.ready is not None:
            await asyncio.gather(responder.ready, return_exceptions=True)
        if responder.sub is not None:
            with contextlib.suppress(Exception):
                await responder.sub.unsubscribe()

    async def _answer(self, responder: _Responder, msg: Msg) -> None:
        nc = self._nc
        if nc is None:
            return
        event = self._decode(responder.topic, msg.data)
        if event is None:
            await _reply_error(nc, msg, "the request was refused (not a valid event)")
            return
        counter = self._counter(responder.topic)
        counter.delivered += 1
        try:
            reply = await responder.handler(event)
            data = codec.encode(reply, max_bytes=self.config.max_message_bytes)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("responder on %r failed: %s", responder.topic, exc)
            await _reply_error(nc, msg, f"{type(exc).__name__}: {exc}")
            return
        with contextlib.suppress(Exception):
            await nc.publish(msg.reply, data)

    async def request(self, topic: str, event: Event, *, timeout: float = 5.0) -> Event:
        self._check_topic(topic)
        await self.settle()
        nc, _ = await self._ready()
        data = codec.encode(event, max_bytes=self.config.max_message_bytes)
        self._counter(topic).published += 1
        try:
            msg = await nc.request(self._subject(topic), data, timeout=timeout)
        except nats.errors.NoRespondersError:
            raise NoResponderError(f"no responder on {topic!r}") from None
        except asyncio.TimeoutError:
            raise asyncio.TimeoutError(f"no reply on {topic!r} within {timeout:g}s") from None
        if msg.headers and ERROR_HEADER in msg.headers:
            raise BusError(f"the responder on {topic!r} failed: {msg.headers[ERROR_HEADER]}")
        try:
            return codec.decode(msg.data, max_bytes=self.config.max_message_bytes,
                                max_depth=self.config.max_depth)
        except codec.WireError as exc:
            self._reject(topic, exc)
            raise

    async def stored(self, pattern: str, *, limit: int = 10_000,
                     timeout: float = 10.0) -> list[tuple[str, Event]]:
        """What the broker's streams hold on ``pattern`` among the last ``limit`` messages
        of each stream, oldest first: a restarted central reads back what it published and
        may not have stored before it died. Counted by the streams' sequences, never by
        time: the broker's clock and this host's need not agree. Read through a throw-away
        consumer; decoded and checked as any delivery."""
        _nc, js = await self._ready()
        out: list[tuple[str, Event]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for stream, filter_subject in _overlaps(self, self._subject(pattern)):
            state = (await js.stream_info(stream)).state
            if not state.messages:
                continue
            first = max(state.first_seq, state.last_seq - limit + 1)
            config = api.ConsumerConfig(
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=first,
                ack_policy=api.AckPolicy.NONE, inactive_threshold=30.0, mem_storage=True)
            psub = await js.pull_subscribe(filter_subject, stream=stream, config=config)
            consumer = ""
            try:
                info = await psub.consumer_info()
                consumer = info.name
                left = info.num_pending or 0
                while left > 0 and loop.time() < deadline:
                    try:
                        msgs = await psub.fetch(min(256, left), timeout=max(
                            0.1, deadline - loop.time()))
                    except (nats.errors.TimeoutError, asyncio.TimeoutError):
                        break
                    for msg in msgs:
                        topic = self._topic(msg.subject)
                        event = self._decode(topic, msg.data) if topic is not None else None
                        if topic is not None and event is not None:
                            out.append((topic, event))
                    left = msgs[-1].metadata.num_pending or 0 if msgs else 0
            finally:
                if consumer:  # else the broker drops it after inactive_threshold
                    with contextlib.suppress(Exception):
                        await js.delete_consumer(stream, consumer)
                with contextlib.suppress(Exception):
                    await psub.unsubscribe()
        return out

    def responders(self) -> list[str]:
        return sorted(self._handlers)

    def stats(self) -> list[TopicStats]:
        return [
            TopicStats(topic, c.published, c.delivered, c.dropped, max(c.depth, 0))
            for topic, c in sorted(self._counters.items())
        ]

    def subscriptions(self) -> list[SubscriptionStats]:
        return [SubscriptionStats(s.name, s.pattern, s.depth(), s.maxsize, s.dropped)
                for s in self._subs]

    async def close(self) -> None:
        if self._closed:
            return
        for sub in list(self._subs):
            sub.close()
        self._handlers.clear()
        await self.settle()
        self._closed = True
        for task in list(self._answers):
            task.cancel()  # a handler still running: its requester gets no reply
        if self._bg:
            # Acknowledgements, naks and unsubscriptions reach the broker before we go.
            _done, pending = await asyncio.wait(list(self._bg), timeout=5.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        nc = self._nc
        if nc is not None and not nc.is_closed:
            try:
                if not nc.is_connected:
                    raise ConnectionError("offline: nothing to drain")
                await nc.drain()  # bounded by the drain_timeout given at connect
            except Exception:
                await nc.close()


async def _reply_error(nc: NatsClient, msg: Msg, text: str) -> None:
    if not msg.reply:
        return
    with contextlib.suppress(Exception):
        await nc.publish(msg.reply, b"", headers={ERROR_HEADER: text[:500].replace("\n", " ")})


def _safe_url(url: str) -> str:
    """The URL without user info (a password must not reach the log)."""
    return re.sub(r"//[^@/]*@", "//", url)

