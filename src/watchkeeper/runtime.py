"""Runtime: wires config, bus, store, agents and supervisor into one process."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Literal

from watchkeeper.agents.analyzer import AnalyzerAgent
from watchkeeper.agents.base import BaseAgent
from watchkeeper.agents.commands import RUNTIME, CommandDesk, ask
from watchkeeper.agents.communicator import CommunicatorAgent
from watchkeeper.agents.notifier import NotifierAgent
from watchkeeper.agents.remediator import RemediatorAgent
from watchkeeper.agents.sensor import SensorAgent
from watchkeeper.bus import Bus, command_topic, system_topic
from watchkeeper.bus.factory import make_bus, spooled, start_bus
from watchkeeper.config import START_ONLY, ConfigError, ConfigStore, Settings
from watchkeeper.events import Alert, Command, CommandReply, ConfigChanged
from watchkeeper.host_commands import runtime_verbs
from watchkeeper.notify.match import alertmanager_routes
from watchkeeper.notify.outbox import Outbox
from watchkeeper.remediation.audit import AuditLog
from watchkeeper.remediation.policy import Policy, PolicyState, state_path
from watchkeeper.remediation.process_guard import GuardRules, effective_uid
from watchkeeper.remediation.services import Services
from watchkeeper.simulate.demo import Demos
from watchkeeper.store.sqlite import SqliteStore
from watchkeeper.supervisor import Supervisor, send_command

if TYPE_CHECKING:
    from watchkeeper.shards import ShardProcesses

log = logging.getLogger(__name__)

AgentFactory = Callable[["Runtime"], BaseAgent]

#: How often the runtime verifies the audit chain's new entries by itself (reads through
#: the API do too); the whole chain is walked again every hour (AuditLog).
AUDIT_CHECK_INTERVAL_S = 60.0

#: Agents by name, in start order. Adding an agent: subclass BaseAgent, register here.
AGENTS: dict[str, AgentFactory] = {}
#: Agents that run only when the settings at start ask for them (by default every one runs).
AGENT_WHEN: dict[str, Callable[[Settings], bool]] = {}


def register_agent(name: str, *, when: Callable[[Settings], bool] | None = None
                   ) -> Callable[[AgentFactory], AgentFactory]:
    """Register a factory that builds an agent from the runtime (``when``: only if the
    settings at start want it)."""

    def deco(factory: AgentFactory) -> AgentFactory:
        AGENTS[name] = factory
        if when is not None:
            AGENT_WHEN[name] = when
        return factory

    return deco


#: What one process is: everything for one host (``run``, ``serve``), a fleet's host agent
#: (``watchkeeper agent``: it senses and heals its host, under its own local policy), or a
#: fleet's central (``serve --fleet``: analysis, notifications, history and the dashboard for
#: every host).
Role = Literal["single", "agent", "central"]
ROLE_AGENTS: dict[Role, tuple[str, ...] | None] = {
    "single": None,  # every registered agent (those whose ``when`` holds)
    "agent": ("communicator", "remediator", "sensor"),
    "central": ("communicator", "notifier", "alertmanager", "analyzer"),
}


def host_name(settings: Settings) -> str:
    """The name this host reports; dots would split NATS subjects, so they become '-'."""
    name = settings.host_name or socket.gethostname() or "localhost"
    return name.replace(".", "-").replace(" ", "-").replace("*", "-").replace(">", "-")


class Runtime:
    """Everything one watchkeeper process runs; ``async with Runtime(...)`` starts it."""

    def __init__(self, settings: Settings, *, bus: Bus | None = None,
                 store: SqliteStore | None = None, agents: list[str] | None = None,
                 psutil_module: Any = None, audit: AuditLog | None = None,
                 role: Role = "single", shards: ShardProcesses | None = None) -> None:
        self.role: Role = role
        #: A central's analysis shard processes (``serve --fleet --shards N``): its analyzer
        #: then shows what they publish instead of analysing.
        self.shards = shards
        self.config = ConfigStore(settings)
        self.host = host_name(settings)
        self.bus: Bus = bus or make_bus(settings.bus, client=self.host,
                                        host_agent=role == "agent")
        if bus is None and role == "agent":  # an outage of the broker waits on disk
            self.bus = spooled(self.bus, settings.bus, host=self.host,
                               data_dir=settings.storage.path)
        self.store = store or SqliteStore.open(settings.storage)
        self.psutil_module = psutil_module
        #: The notification outbox, opened by the notifier agent's factory (notify/outbox.py).
        self.outbox: Outbox | None = None
        # The protected names as configured now (a reload may change them).
        self.services = Services.from_settings(settings, guard=lambda: GuardRules.of(
            self.config.current.remediation, own_pid=os.getpid(), own_uid=effective_uid()))
        self.audit = audit or AuditLog.open(settings.storage)
        self.policy = Policy(lambda: self.config.current,
                             state=PolicyState.load(state_path(settings)))
        wanted = ROLE_AGENTS[role]
        #: The agents this process may run; those with a ``when`` start and stop with it on
        #: a reload (unless the agents were named by hand: those stay as named).
        self._allowed = [n for n in AGENTS if wanted is None or n in wanted]
        self._follow_settings = agents is None
        #: True once started: an agent built from now on joins a running process.
        self.running = False
        self._agents_lock = asyncio.Lock()
        names = [n for n in self._allowed if n not in AGENT_WHEN or AGENT_WHEN[n](settings)
                 ] if agents is None else agents
        unknown = [n for n in names if n not in AGENTS]
        if unknown:
            raise ValueError(f"unknown agents {unknown}; known: {sorted(AGENTS)}")
        self.agents: list[BaseAgent] = [AGENTS[n](self) for n in names]
        self.supervisor = Supervisor(self.agents, bus=self.bus, config=self.config,
                                     host=self.host)
        self._tasks: list[asyncio.Task[Any]] = []
        #: The demo service of `simulate service|crashloop` (POST /api/command).
        self.demos = Demos(self)
        self._audit_watch: asyncio.Task[None] | None = None
        self.config.subscribe(self._on_config_changed)
        #: The host's own commands (configuration, simulations) on command.<host>.runtime.
        self.desk = CommandDesk(bus=self.bus, host=self.host, name=RUNTIME,
                                verbs=lambda: runtime_verbs(self), state=lambda: "running")
        self._unserve: Callable[[], None] | None = None

    def supervisor_health(self) -> list[Any]:
        return self.supervisor.health()

    def agent_kwargs(self) -> dict[str, Any]:
        """The dependencies every agent takes."""
        return {"bus": self.bus, "config": self.config, "host": self.host}

    def _on_config_changed(self, _settings: Settings, changed: tuple[str, ...]) -> None:
        event = ConfigChanged(host=self.host, version=self.config.version, changed=changed)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (updated from a plain thread): nothing to tell live
            return
        jobs: list[Coroutine[Any, Any, None]] = [self.bus.publish(system_topic(self.host),
                                                                  event)]
        if any(key.split(".", 1)[0] == "services" for key in changed):
            jobs.append(self._apply_services())
        if self._follow_settings and self._agents_differ():
            jobs.append(self._apply_agents())
        for job in jobs:
            task = loop.create_task(job)
            self._tasks.append(task)
            task.add_done_callback(self._tasks.remove)

    async def _apply_services(self) -> None:
        """Bring the services in line with the current settings, live: new and changed
        managed processes are started, as at start-up."""
        await self.services.reconfigure(self.config.current.services,
                                        start=self._start_managed_services)

    def _wanted_agents(self) -> set[str]:
        """The agents with a ``when`` that the current settings want."""
        current = self.config.current
        return {n for n, when in AGENT_WHEN.items() if n in self._allowed and when(current)}

    def _agents_differ(self) -> bool:
        running = {a.name for a in self.agents} & set(AGENT_WHEN)
        return running != self._wanted_agents()

    async def _apply_agents(self) -> None:
        """Start the agents the settings now want (a reload added the first Alertmanager
        route) and stop those they no longer want (it removed the last), as Prometheus
        applies its alerting config on SIGHUP."""
        async with self._agents_lock:  # two reloads in a row: one after the other
            wanted = self._wanted_agents()
            running = {a.name for a in self.agents}
            for name in [n for n in self._allowed if n in wanted and n not in running]:
                agent = AGENTS[name](self)
                # A new list, not one changed in place: API routes read it from threads.
                self.agents = sorted([*self.agents, agent], key=lambda a: (
                    self._allowed.index(a.name) if a.name in self._allowed
                    else len(self._allowed)))
                self.supervisor.add(agent, [a.name for a in self.agents])
                log.info("config reload: the %s agent started (the settings now want it)",
                         name)
            for name in [n for n in running if n in AGENT_WHEN and n not in wanted]:
                agent = await self.supervisor.remove(name)
                self.agents = [a for a in self.agents if a is not agent]
                log.info("config reload: the %s agent stopped (the settings no longer want "
                         "it)", name)

    def update_config(self, patch: dict[str, Any], *, source: str = "api") -> tuple[str, ...]:
        """The one validated way to change settings at run time (raises ConfigError)."""
        return self.config.update(patch, source=source)

    def reload(self, settings: Settings) -> tuple[str, ...]:
        """Apply settings read anew from their sources (SIGHUP), live; what is read only at
        start keeps its current value, with a warning if the new one differs."""
        current = self.config.current
        for name in START_ONLY:
            if getattr(settings, name) != getattr(current, name):
                log.warning("config reload: %s changed, which takes effect only at the next "
                            "start; kept as it is until then", name)
        # Agents the new settings want (or no longer want) start or stop with the change
        # (_on_config_changed).
        changed = self.config.replace(settings, keep=START_ONLY)
        log.info("config reloaded: %s", ", ".join(changed) if changed else "nothing changed")
        return changed

    async def command(self, command: Command) -> list[CommandReply]:
        return await send_command(self.bus, self.host, [a.name for a in self.agents], command)

    async def start(self) -> None:
        # A NATS bus connects first (a clear error if the broker cannot be reached).
        await start_bus(self.bus)
        # The whole audit chain once at start (logged if broken), then on a timer, so a
        # break is logged even when nobody reads the API (``run``).
        await asyncio.to_thread(self.audit.chain_status)
        self._audit_watch = asyncio.get_running_loop().create_task(self._watch_audit())
        await self._start_managed_services()
        self._unserve = self.bus.serve(command_topic(self.host, RUNTIME), self.desk.handle)
        await self.supervisor.start()
        if self.shards is not None:  # after the communicator: their alerts are stored
            await self.shards.start()
        self.running = True
        log.info("watchkeeper is on watch as %s with %d agents: %s", self.host,
                 len(self.agents), ", ".join(a.name for a in self.agents))

    async def _start_managed_services(self, names: Sequence[str] | None = None) -> None:
        """Services watchkeeper manages itself (manager: process) are started, Monit-style;
        one already running (found by pid file or match) is adopted, not started twice."""
        for name in self.services.names if names is None else names:
            if name not in self.services or self.services.config(name).manager != "process":
                continue
            result = await self.services.start(name)
            if result.ok:
                log.info("service %s: %s", name, result.message)
            else:
                log.error("service %s did not start: %s", name, result.message)

    async def _watch_audit(self) -> None:
        """Verify the audit chain every minute: new entries, and all of them hourly."""
        while True:
            await asyncio.sleep(AUDIT_CHECK_INTERVAL_S)
            try:
                await asyncio.to_thread(self.audit.chain_status)
            except Exception:  # never let the watch die; the next round tries again
                log.exception("audit chain check failed")

    async def stop(self) -> None:
        if self._audit_watch is not None:
            self._audit_watch.cancel()
            await asyncio.gather(self._audit_watch, return_exceptions=True)
        if self._unserve is not None:
            self._unserve()
            self._unserve = None
        await self.demos.aclose()
        if self.shards is not None:  # first: their last alerts reach the store
            await self.shards.stop()
        await self.supervisor.stop()
        if self._tasks:  # e.g. services being reconfigured: let that finish first
            _done, late = await asyncio.wait(list(self._tasks), timeout=15)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        # Stops the processes watchkeeper started, unless a service says keep_running.
        await self.services.aclose()
        await self.audit.close()
        await self.bus.close()
        await self.store.close()
        if self.outbox is not None:
            await self.outbox.close()
        log.info("watchkeeper stopped; history flushed")

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set, then shut down cleanly."""
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()


# Start order: consumers before producers, so nothing is published before it is stored;
# the supervisor stops them in reverse.
@register_agent("communicator")
def _communicator(rt: Runtime) -> BaseAgent:
    own = (f"*.{rt.host}", f"*.{rt.host}.>")  # a fleet agent keeps its own host's only
    return CommunicatorAgent(store=rt.store, health=rt.supervisor_health,
                             bus_stats=rt.bus.stats,
                             patterns=own if rt.role == "agent" else (">",),
                             **rt.agent_kwargs())


@register_agent("notifier")
def _notifier(rt: Runtime) -> BaseAgent:
    if rt.outbox is None:
        rt.outbox = Outbox.open(rt.config.current.storage.path)
    return NotifierAgent(store=rt.store, outbox=rt.outbox, **rt.agent_kwargs())


@register_agent("alertmanager", when=lambda s: bool(alertmanager_routes(s)))
def _alertmanager(rt: Runtime) -> BaseAgent:
    # Imported only when a route wants it: httpx (and its CLI's rich and pygments) is about
    # 5 MB that a host without an Alertmanager route never needs.
    from watchkeeper.agents.alertmanager import AlertmanagerAgent

    async def open_alerts() -> list[Alert]:
        found = await ask(rt.bus, rt.host, "analyzer", "alerts", actor="alertmanager",
                          role="viewer")
        return [Alert.model_validate(raw) for raw in found.get("alerts", [])]

    # Joining a running process (a reload): the analyzer has alerts the history may not
    # have written yet. At process start the analyzer starts later and restores from the
    # same history.
    return AlertmanagerAgent(store=rt.store, open_alerts=open_alerts if rt.running else None,
                             **rt.agent_kwargs())


@register_agent("remediator")
def _remediator(rt: Runtime) -> BaseAgent:
    return RemediatorAgent(services=rt.services, policy=rt.policy, audit=rt.audit,
                           psutil_module=rt.psutil_module, **rt.agent_kwargs())


@register_agent("analyzer")
def _analyzer(rt: Runtime) -> BaseAgent:
    import psutil

    return AnalyzerAgent(store=rt.store, psutil_module=rt.psutil_module or psutil,
                         fleet=rt.role == "central",
                         shards=rt.shards.count if rt.shards is not None else 0,
                         **rt.agent_kwargs())


@register_agent("sensor")
def _sensor(rt: Runtime) -> BaseAgent:
    return SensorAgent(psutil_module=rt.psutil_module, services=rt.services,
                       **rt.agent_kwargs())


__all__ = ["AGENTS", "ConfigError", "Runtime", "register_agent"]
