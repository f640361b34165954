"""AnalyzerAgent: the brain. Snapshots in, alert changes out, LLM reasoning on the side.

The rule engine (analysis/engine.py) runs inline on every snapshot and publishes only
changes. An LLM investigation, when one is configured, runs as a background task for a new
or worsened incident: the analyzer never waits for it, so a hung or looping LLM cannot slow
analysis, let alone the sensor. Its answer is published as an update of the same alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AwareDatetime, Field

from watchkeeper.agents.base import BaseAgent
from watchkeeper.agents.commands import Args, CommandError, Name, NoArgs, Text, Verb
from watchkeeper.analysis.alerts import Silence
from watchkeeper.analysis.engine import Analyzer
from watchkeeper.analysis.fleet import FleetAnalyzer, HostState
from watchkeeper.analysis.fleet_view import FleetView
from watchkeeper.analysis.shard import Shard, shard_agent_name, shard_of
from watchkeeper.bus import (
    BusClosedError,
    BusError,
    Subscription,
    command_topic,
    metrics_topic,
    system_topic,
)
from watchkeeper.config import Settings, llm_enabled
from watchkeeper.events import (
    Alert,
    AnalyzerNotice,
    Command,
    CommandReply,
    MetricSnapshot,
    ServiceReport,
)
from watchkeeper.status import write_atomic
from watchkeeper.store.base import Store

if TYPE_CHECKING:
    from watchkeeper.analysis.llm import Investigator

log = logging.getLogger(__name__)

STATE_FILE = "analyzer_state.json"
#: Seconds between saves of the learned baselines (and once at shutdown).
SAVE_EVERY_S = 300.0
#: How many of the newest alert events a restarted central reads back from the broker (as
#: many as it reads from its own history).
UNSTORED_READBACK = 10_000
#: LLM investigations running at once; more incidents wait their turn.
MAX_INVESTIGATIONS = 2
#: Seconds between a central's looks for silent hosts (host-down is counted in tens of
#: seconds; walking every host after every batch cost a central 2 % at 1,000 hosts).
SILENT_EVERY_S = 1.0
#: Seconds a sharded central waits for a shard to answer an acknowledgement or a silence.
SHARD_TIMEOUT_S = 5.0


def alerts_topic(host: str) -> str:
    return f"alerts.{host}"


class AckArgs(Args):
    fingerprint: Name
    #: Only if the alert is this host's (a central follows many).
    host: Name | None = None


class SilenceArgs(Args):
    matchers: Annotated[dict[Text, Text], Field(min_length=1, max_length=20)]
    until: AwareDatetime
    comment: Text = ""
    #: Given by a sharded central, so every shard holds the silence under one id (the
    #: shape the engine gives its own: ``silence-`` and hex digits).
    silence_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")] | None = None


class UnsilenceArgs(Args):
    silence_id: Name
    #: Only if the silence is narrowed to this host (its ``host`` matcher).
    host: Name | None = None


def silence_json(silence: Silence) -> dict[str, Any]:
    """A silence as a command result carries it."""
    return {"id": silence.id, "matchers": dict(silence.matchers),
            "until": silence.until.isoformat(), "by": silence.by, "comment": silence.comment}


class AnalyzerAgent(BaseAgent):
    """Turns snapshots into alerts with context, assessments and suggested actions."""

    name = "analyzer"

    def __init__(self, *, store: Store, engine: Analyzer | FleetAnalyzer | None = None,
                 investigator: Investigator | None = None,
                 cleanup_roots: Callable[[], Sequence[str]] | None = None,
                 psutil_module: Any = None, fleet: bool = False, shard: Shard | None = None,
                 shards: int = 0, **kwargs: Any) -> None:
        if shard is not None:
            # Each shard its own name (an instance attribute over the class's): its durable
            # consumers, its command topic and its health all carry it.
            vars(self)["name"] = shard.name
        super().__init__(**kwargs)
        self.store = store
        #: One analysis shard of a central (``watchkeeper analyze --shard i/N``): the hosts
        #: whose name hashes to it, under a name of its own (its consumers, its commands).
        self.shard = shard
        #: A sharded central (``serve --fleet --shards N``): no analysis here, a view of
        #: what the N shards publish; acknowledgements and silences go to them.
        self.shards = shards
        #: A central's analyzer: every host's snapshots (``metrics.*``), one engine each,
        #: and host-down for those that stop reporting. Otherwise this host's only.
        self.fleet = fleet or shard is not None or shards > 0
        fleet = self.fleet
        # clean_disk is suggested only for a mount that holds a configured cleanup root.
        roots = cleanup_roots or (lambda: [str(r.path) for r in
                                           self.config.current.remediation.cleanup_roots])
        self.engine: Analyzer | FleetAnalyzer = engine or (
            FleetView(lambda: self.config.current, shards=shards) if shards
            else FleetAnalyzer(lambda: self.config.current, cleanup_roots=roots) if fleet
            else Analyzer(lambda: self.config.current, host=self.host, cleanup_roots=roots))
        self._investigator = investigator
        self._psutil = psutil_module
        self._sub: Subscription | None = None
        self._latest: MetricSnapshot | None = None
        #: A fleet's latest snapshot per host (what an investigation of its alert reads).
        self._latest_by: dict[str, MetricSnapshot] = {}
        #: Events whose host is not the one their topic names (a host speaking for another).
        self.spoofed = 0
        #: A fleet's snapshots older than the host's latest analysed one, skipped.
        self.stale = 0
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(MAX_INVESTIGATIONS)
        self._next_save = self._monotonic() + SAVE_EVERY_S
        self._restored = False
        self._services_sub: Subscription | None = None
        self._services_task: asyncio.Task[None] | None = None
        #: A sharded central's view of the alerts its shards publish.
        self._alerts_sub: Subscription | None = None
        self._next_silent = float("-inf")

    @property
    def investigator(self) -> Investigator:
        """The LLM investigator, made on first use: its package (prompts, tools, schema,
        privacy; about 0.5 MB) is not loaded while no alert needs it or no LLM is set."""
        if self._investigator is None:
            from watchkeeper.analysis.llm import Investigator, Toolbox

            self._investigator = Investigator(
                lambda: self.config.current,
                tools=Toolbox(psutil=self._psutil, history=self.store.series,
                              recent_alerts=self._recent_alerts),
                local_host=self.host if self.fleet else None)
        return self._investigator

    def _llm_on(self) -> bool:
        """Whether an investigation may call an LLM, without loading the LLM package for a
        host that has none configured (an injected investigator decides for itself)."""
        if self._investigator is not None:
            return self._investigator.enabled()
        return llm_enabled(self.config.current.llm) and self.investigator.enabled()

    # ------------------------------------------------------------------ lifecycle

    def interval(self, settings: Settings) -> float:
        # Event-driven: each check waits for the next snapshot (see _perform_check), so the
        # loop itself only pauses briefly between checks.
        return 0.01

    async def setup(self) -> None:
        if not self._restored:
            self._restore(await self._unstored_alerts())
            if self.shard is not None:
                # Before any snapshot: a failure here fails the setup, which is tried again.
                await self._restore_shard()
            self._restored = True
        if self._sub is None:
            self._sub = self.bus.subscribe(
                metrics_topic("*" if self.fleet else self.host), name=self.name,
                maxsize=10_000 if self.fleet else 100,
                keep=self.shard.owns_topic if self.shard is not None else None)
        if self.shards:
            if self._alerts_sub is None:
                self._alerts_sub = self.bus.subscribe(alerts_topic("*"),
                                                      name=f"{self.name}.alerts",
                                                      maxsize=10_000)
            return  # the shards follow the service reports
        self._follow_services()

    async def _restore_shard(self) -> None:
        """A shard (re)started: its hosts' open alerts as the alerts stream holds them now,
        the latest change of each, so nothing that was open fires again as new and nothing
        resolved comes back (the stream is the source of truth: the central's store may
        not have the last ones yet). Costs one read of the alerts stream."""
        from watchkeeper.bus.nats import NatsBus

        bus = getattr(self.bus, "inner", self.bus)
        if not isinstance(bus, NatsBus) or self.shard is None:
            return
        latest: dict[str, Alert] = {}
        changes = await bus.replay(alerts_topic("*"), keep=self.shard.owns_topic)
        for _topic, event in changes:
            if isinstance(event, Alert):
                latest[event.fingerprint] = event
        open_alerts = [a for a in latest.values() if a.state != "resolved"]
        kept = self.engine.restore(open_alerts) if open_alerts else []
        log.info("analyzer %s: %d open alert(s) of its hosts restored from the alerts "
                 "stream (%d changes read)", self.name, len(kept), len(changes))

    async def teardown(self) -> None:
        if self._services_task is not None:
            self._services_task.cancel()
            await asyncio.gather(self._services_task, return_exceptions=True)
            self._services_task = None
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
        self._save_state()
        if self._investigator is not None:
            await self._investigator.aclose()

    def _state_path(self) -> Path:
        # Each shard learns its own hosts' baselines: a file of its own.
        name = STATE_FILE if self.shard is None else f"{self.name}_state.json"
        return self.config.current.storage.path / name

    async def _unstored_alerts(self) -> list[Alert]:
        """A central's alerts still in the broker, published before a restart and perhaps
        not stored yet (its communicator was killed first): without them the new process
        would fire again, as a new alert, what its predecessor fired."""
        stored = getattr(self.bus, "stored", None)  # a NATS bus; in-process there is none
        if not self.fleet or stored is None or self.shard is not None:
            return []  # a shard reads its own hosts' from the whole stream (_restore_shard)
        try:
            # The newest alert events the broker holds, as many as the history reads back
            # (by sequence: a central's clock need not agree with the broker's).
            found = await stored("alerts.*", limit=UNSTORED_READBACK)
        except Exception as exc:  # the broker away: the stored history alone, as before
            log.warning("analyzer: could not read back alerts from the broker: %s", exc)
            return []
        return [e for _topic, e in found if isinstance(e, Alert)]

    def _restore(self, unstored: Sequence[Alert] = ()) -> None:
        """Open alerts from the stored history (and the broker's, for what a killed central
        did not store) and learned baselines survive a restart."""
        try:
            latest: dict[str, Alert] = {}
            for stored in self.store.events(kinds=["alert"], limit=10_000):
                if isinstance(stored.event, Alert) and self.shard is None and (
                        self.fleet or stored.event.host == self.host):
                    latest[stored.event.fingerprint] = stored.event
            for alert in unstored:
                known = latest.get(alert.fingerprint)
                if known is None or alert.at >= known.at:
                    latest[alert.fingerprint] = alert
            open_alerts = [a for a in latest.values() if a.state != "resolved"]
            if open_alerts:
                self.engine.restore(open_alerts)
                log.info("analyzer: %d open alert(s) restored", len(open_alerts))
            if isinstance(self.engine, FleetAnalyzer):
                # Hosts in the raw history that never report again are down after
                # host_down_after_s from now: a restart forgets no host.
                now = self._wall()
                keep = timedelta(hours=self.config.current.storage.raw_retention_hours)
                hosts = self.store.hosts(now - keep)
                if self.shard is not None:  # its own hosts only: others' are not its to judge
                    hosts = [h for h in hosts if self.shard.owns_host(h)]
                self.engine.known(hosts, now.timestamp())
        except Exception as exc:  # a damaged history must not stop analysis
            log.warning("analyzer: could not restore open alerts: %s", exc)
        path = self._state_path()
        if not path.is_file():
            return
        try:
            state = json.loads(path.read_text())
            count = self.engine.baselines_from_dict(state.get("baselines", {}))
            now = self._wall()
            for raw in state.get("silences", []):
                until = datetime.fromisoformat(raw["until"])
                if until > now:  # restored before the first observe: no spurious changes
                    self.engine.silence(raw["matchers"], until, by=raw.get("by", ""),
                                        comment=raw.get("comment", ""),
                                        silence_id=raw["id"])
            log.info("analyzer: %d learned baseline(s) and %d silence(s) restored", count,
                     len(self.engine.silences))
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            log.warning("analyzer: ignoring unreadable %s: %s", path, exc)

    def _save_state(self) -> None:
        """Baselines and silences survive a restart (written atomically, mode 0600)."""
        path = self._state_path()
        state = {
            "baselines": self.engine.baselines_to_dict(),
            "silences": [{"id": s.id, "matchers": dict(s.matchers), "until": s.until.isoformat(),
                          "by": s.by, "comment": s.comment} for s in self.engine.silences],
        }
        try:
            write_atomic(path, state)
            os.chmod(path, 0o600)
        except OSError as exc:
            log.error("analyzer: cannot save its state to %s: %s", path, exc)

    # ------------------------------------------------------------------ the check

    async def _perform_check(self) -> None:
        sub = self._sub
        if sub is None:
            return
        # Wait for a snapshot (woken at once by one, by a command or a config change), then
        # take everything queued: an alert never waits for a poll interval.
        for topic, event in await self.next_batch(sub):
            if isinstance(event, MetricSnapshot) and self._own_topic(topic, event.host):
                await self._analyse(event)
        if isinstance(self.engine, FleetView) and self._alerts_sub is not None:
            while (item := self._alerts_sub.get_nowait()) is not None:
                topic, event = item
                if isinstance(event, Alert) and self._own_topic(topic, event.host):
                    self.engine.apply(event)
        now = self._wall().timestamp()
        # On the wall clock host-down is judged by; one stepped back looks again at once.
        if isinstance(self.engine, FleetAnalyzer) and not (
                now < self._next_silent <= now + SILENT_EVERY_S):
            self._next_silent = now + SILENT_EVERY_S
            for alert in self.engine.check_silent(now):
                await self.publish_alert(alert)
        if self._monotonic() >= self._next_save:
            self._next_save = self._monotonic() + SAVE_EVERY_S
            self._save_state()

    def _own_topic(self, topic: str, host: str) -> bool:
        """Whether an event came on its own host's topic; a host that publishes as another
        (``metrics.a`` carrying host b) is refused and counted, never analysed."""
        if topic.rsplit(".", 1)[-1] == host:
            return True
        self.spoofed += 1
        if self.spoofed in (1, 10, 100) or self.spoofed % 1000 == 0:
            log.warning("analyzer: refused an event of host %r on topic %r (%d so far)",
                        host[:64], topic[:128], self.spoofed)
        return False

    async def _analyse(self, snap: MetricSnapshot) -> None:
        if isinstance(self.engine, FleetAnalyzer):
            last = self._latest_by.get(snap.host)
            if last is not None and snap.seq <= last.seq and snap.at <= last.at:
                # A delivery again of one already analysed (its process died before the
                # acknowledgement; it comes back after newer ones): order per host holds.
                # Both older: a restarted agent (seq from 1) or a clock stepped back is not.
                self.stale += 1
                return
            self._latest_by[snap.host] = snap
            changes = self.engine.observe(snap, received=self._wall().timestamp())
        else:
            self._latest = snap
            changes = self.engine.observe(snap)
        for alert in changes:
            await self.publish_alert(alert)
            if self._worth_investigating(alert):
                self._investigate(alert, snap)

    # ------------------------------------------------------------------ services

    def _follow_services(self) -> None:
        """Service reports are acted on the moment they arrive (a crash fires its alert
        at once), not at the next snapshot: a task of their own."""
        if self._services_sub is None:
            self._services_sub = self.bus.subscribe(
                f"services.{'*' if self.fleet else self.host}", name=f"{self.name}.services",
                maxsize=1000, keep=self.shard.owns_topic if self.shard is not None else None)
        if self._services_task is None or self._services_task.done():
            self._services_task = asyncio.create_task(
                self._services_loop(self._services_sub), name="analyzer-services")

    async def _services_loop(self, sub: Subscription) -> None:
        while True:
            try:
                topic, event = await sub.get()
            except BusClosedError:
                return
            if not isinstance(event, ServiceReport) or not self._own_topic(topic, event.host):
                continue
            try:
                changes = self.engine.observe_service(event)
            except Exception:  # one bad report must not stop the service alerts
                log.exception("analyzer: service report of %s failed", event.service)
                continue
            for alert in changes:
                await self.publish_alert(alert)
                # Each remediation step updates a service alert: reasoning about it is
                # worth the LLM's budget when it opens or gets worse, not at every step.
                latest = self.latest(event.host)
                if alert.labels.get("change") != "updated" \
                        and self._worth_investigating(alert) and latest is not None:
                    self._investigate(alert, latest)

    async def publish_alert(self, alert: Alert) -> None:
        """Publish one alert change on ``alerts.<host>``."""
        await self.bus.publish(alerts_topic(alert.host), alert)

    def _worth_investigating(self, alert: Alert) -> bool:
        # Only when an incident opens or gets worse: never on every tick of a healthy host.
        if alert.state != "firing" or alert.silenced or not self._llm_on():
            return False
        if alert.labels.get("change", "new") not in ("new", "escalated", "updated"):
            return False  # flapping, silence changes: nothing new to reason about
        running = self._tasks.get(alert.fingerprint)
        return running is None or running.done()

    def _investigate(self, alert: Alert, snap: MetricSnapshot) -> None:
        task = asyncio.create_task(self._run_investigation(alert, snap),
                                   name=f"investigate-{alert.fingerprint}")
        self._tasks[alert.fingerprint] = task
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        for fingerprint, known in list(self._tasks.items()):
            if known is task:
                del self._tasks[fingerprint]

    async def _run_investigation(self, alert: Alert, snap: MetricSnapshot) -> None:
        async with self._slots:
            assessment, notices = await self.investigator.assess(alert, snap)
        for notice in notices:
            await self._notice(notice)
        if assessment.source != "llm":
            return  # the rule-based assessment is already on the published alert
        # On the engine's alert, so the API, later versions and the store all keep it.
        updated = self.engine.assess(alert.fingerprint, assessment)
        if updated is None:
            return  # it cleared while we were thinking: nothing to update
        await self.publish_alert(updated)

    async def _notice(self, notice: AnalyzerNotice) -> None:
        log.warning("analyzer: %s", notice.message)
        await self.bus.publish(system_topic(self.host), notice)

    def _recent_alerts(self, limit: int) -> list[Alert]:
        alerts = sorted(self.engine.active_alerts(), key=lambda a: a.at, reverse=True)
        return alerts[:limit]

    # ------------------------------------------------------------------ commands

    def verbs(self) -> dict[str, Verb]:
        """ack, silence, unsilence; the open alerts and silences (reads)."""
        return {**super().verbs(),
                "ack": Verb(self._ack_verb, AckArgs),
                "silence": Verb(self._silence_verb, SilenceArgs),
                "unsilence": Verb(self._unsilence_verb, UnsilenceArgs),
                "alerts": Verb(self._alerts_verb, mutating=False, any_state=True),
                "silences": Verb(self._silences_verb, mutating=False, any_state=True)}

    async def _ack_verb(self, args: AckArgs, command: Command) -> dict[str, Any]:
        if args.host is not None and not any(
                a.fingerprint == args.fingerprint and a.host == args.host
                for a in self.engine.active_alerts()):
            raise CommandError("not_found", f"no open alert with fingerprint "
                                            f"{args.fingerprint!r} on host {args.host}")
        alert = await self.ack(args.fingerprint, command.actor)
        if alert is None:
            raise CommandError("not_found", f"no open alert with fingerprint "
                                            f"{args.fingerprint!r}")
        return {"alert": alert.model_dump(mode="json")}

    async def _silence_verb(self, args: SilenceArgs, command: Command) -> dict[str, Any]:
        if args.until <= self._wall():
            raise CommandError("invalid", "until must be in the future")
        sid = await self.silence(dict(args.matchers), args.until, by=command.actor,
                                 comment=args.comment, silence_id=args.silence_id)
        found = next(s for s in self.engine.silences if s.id == sid)
        return {"silence": silence_json(found)}

    async def _unsilence_verb(self, args: UnsilenceArgs, _command: Command) -> dict[str, Any]:
        if not any(s.id == args.silence_id and (args.host is None
                                                 or s.matchers.get("host") == args.host)
                   for s in self.engine.silences):
            where = "" if args.host is None else f" for host {args.host}"
            raise CommandError("not_found", f"no silence {args.silence_id!r}{where}")
        await self.unsilence(args.silence_id)
        return {"message": f"silence {args.silence_id} removed"}

    async def _alerts_verb(self, _args: NoArgs, _command: Command) -> dict[str, Any]:
        return {"alerts": [a.model_dump(mode="json") for a in self.engine.active_alerts()]}

    async def _silences_verb(self, _args: NoArgs, _command: Command) -> dict[str, Any]:
        return {"silences": [silence_json(s) for s in self.engine.silences]}

    # ------------------------------------------------------------------ the verbs' work

    async def _ask_shard(self, index: int, command: str, args: dict[str, Any], by: str
                         ) -> CommandReply:
        """A sharded central carries an operator's command to shard ``index``."""
        agent = shard_agent_name(index, self.shards)
        try:
            reply = await self.bus.request(
                command_topic(self.host, agent),
                Command(host=self.host, command=command, target=agent, args=args, actor=by),
                timeout=SHARD_TIMEOUT_S)
        except (BusError, asyncio.TimeoutError) as exc:
            raise CommandError("unavailable", f"analysis shard {index} did not answer: "
                                              f"{exc}") from None
        if not isinstance(reply, CommandReply):
            raise CommandError("error", f"analysis shard {index} answered "
                                        f"{type(reply).__name__}")
        if not reply.ok:
            raise CommandError(reply.code, reply.message)
        return reply

    async def ack(self, fingerprint: str, by: str) -> Alert | None:
        """Acknowledge an open alert; the change is published (and so stored)."""
        if isinstance(self.engine, FleetView):
            found = self.engine.owner(fingerprint)
            if found is None:
                return None
            reply = await self._ask_shard(shard_of(found.host, self.shards), "ack",
                                          {"fingerprint": fingerprint}, by)
            acked = Alert.model_validate((reply.result or {}).get("alert"))
            self.engine.apply(acked)
            return acked
        alert = self.engine.ack(fingerprint, by)
        if alert is not None:
            await self.publish_alert(alert)
        return alert

    async def resolve(self, fingerprint: str, by: str) -> Alert | None:
        """Resolve an alert by hand (it fires again if its problem persists)."""
        alert = self.engine.resolve(fingerprint, by)
        if alert is not None:
            await self.publish_alert(alert)
        return alert

    async def silence(self, matchers: dict[str, str], until: datetime, *, by: str = "",
                      comment: str = "", silence_id: str | None = None) -> str:
        """Silence matching alerts until ``until``; returns the silence id (persisted)."""
        silence, changes = self.engine.silence(matchers, until, by=by, comment=comment,
                                               silence_id=silence_id)
        took: list[int] = []
        try:
            for index in range(self.shards):  # every shard, under the one id
                await self._ask_shard(index, "silence", {
                    "matchers": dict(matchers), "until": until.isoformat(),
                    "comment": comment, "silence_id": silence.id}, by)
                took.append(index)
        except CommandError:
            # A shard is down: all or nothing, as far as the others answer (the operator
            # sees the error and tries again).
            self.engine.unsilence(silence.id)
            for index in took:
                with contextlib.suppress(CommandError):
                    await self._ask_shard(index, "unsilence", {"silence_id": silence.id}, by)
            raise
        for alert in changes:
            await self.publish_alert(alert)
        self._save_state()
        return silence.id

    async def unsilence(self, silence_id: str) -> None:
        """End a silence early."""
        for index in range(self.shards):
            await self._ask_shard(index, "unsilence", {"silence_id": silence_id}, "system")
        for alert in self.engine.unsilence(silence_id):
            await self.publish_alert(alert)
        self._save_state()

    @property
    def investigations(self) -> int:
        """LLM investigations in flight."""
        return sum(1 for t in self._tasks.values() if not t.done())

    def host_states(self) -> list[HostState]:
        """The hosts this analyzer follows (a fleet's, or just this one) and their state."""
        if isinstance(self.engine, FleetAnalyzer):
            return self.engine.host_states()
        alerts = self.engine.active_alerts()
        rank = {"info": 0, "warning": 1, "critical": 2}
        latest = self._latest
        return [HostState(
            host=self.host, last_seen=None if latest is None else latest.at.timestamp(),
            last_snapshot_at=None if latest is None else latest.at, down=False,
            open_alerts=len(alerts),
            worst=max((a.severity for a in alerts), key=lambda v: rank.get(v, 0),
                      default=None))]

    def latest_all(self) -> list[MetricSnapshot]:
        """Every followed host's latest snapshot (this host's only, unless a fleet's)."""
        if self.fleet:
            return list(self._latest_by.values())
        return [] if self._latest is None else [self._latest]

    def latest(self, host: str | None = None) -> MetricSnapshot | None:
        """The latest snapshot analysed (of ``host``, for a fleet's analyzer)."""
        if self.fleet:
            return self._latest_by.get(host or self.host)
        return self._latest
