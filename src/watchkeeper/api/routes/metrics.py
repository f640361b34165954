"""Current metrics, their history, and the Prometheus exposition."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from watchkeeper.agents.analyzer import AnalyzerAgent
from watchkeeper.agents.communicator import CommunicatorAgent
from watchkeeper.agents.remediator import RemediatorAgent
from watchkeeper.api.auth import require_read
from watchkeeper.api.routes.deps import RuntimeDep
from watchkeeper.api.routes.notify import METRICS_TIMEOUT_S, notify_status
from watchkeeper.api.schemas import ErrorBody, HistoryBody, NotifyBody, Point, Text
from watchkeeper.events import AgentState, MetricSnapshot
from watchkeeper.runtime import Runtime
from watchkeeper.series import METRICS, flatten

router = APIRouter(tags=["metrics"])

_STATES: tuple[AgentState, ...] = ("starting", "running", "paused", "degraded", "stopped",
                                   "crashed")


def _latest(runtime: Runtime, host: str | None = None) -> MetricSnapshot | None:
    # The analyzer holds the newest tick; the store only what has been flushed.
    for agent in runtime.agents:
        if isinstance(agent, AnalyzerAgent) and agent.latest(host) is not None:
            return agent.latest(host)
    return runtime.store.latest_snapshot(host or runtime.host)


HostQuery = Annotated[Text | None, Query(
    max_length=253, description="which host (a fleet's central follows many); default: this "
                                "one")]


def _host(runtime: Runtime, host: str | None) -> str | None:
    """The host asked for, if this server follows it (404 otherwise)."""
    if host is None or host == runtime.host:
        return host
    for agent in runtime.agents:
        if isinstance(agent, AnalyzerAgent) and agent.fleet \
                and any(h.host == host for h in agent.host_states()):
            return host
    raise HTTPException(404, f"no host {host!r} reports to this server; GET /api/hosts "
                             "lists those that do")


@router.get("/api/metrics", response_model=MetricSnapshot, dependencies=[Depends(require_read)],
            responses={503: {"model": ErrorBody, "description": "no snapshot collected yet"},
                       404: {"model": ErrorBody, "description": "no such host reports here"}})
def current(request: Request, runtime: RuntimeDep, host: HostQuery = None) -> Response:
    """The latest metric snapshot of this host (or of ``host``, on a fleet's central)."""
    snap = _latest(runtime, _host(runtime, host))
    if snap is None:
        raise HTTPException(503, "no metrics collected yet; try again in a few seconds")
    # Encoded once per tick, not once per request: a snapshot with hundreds of processes
    # costs milliseconds to validate and serialize, and every dashboard polls the same one.
    cached: tuple[MetricSnapshot, bytes] | None = getattr(request.app.state, "metrics_json",
                                                          None)
    if cached is None or cached[0] is not snap:
        cached = (snap, snap.model_dump_json().encode())
        request.app.state.metrics_json = cached
    return Response(cached[1], media_type="application/json")


#: Most points one history answer carries (a day of raw samples at the default 5 s is 17,280).
MAX_HISTORY_POINTS = 20_000


def _utc(at: datetime) -> datetime:
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at


@router.get("/api/metrics/history", response_model=HistoryBody,
            dependencies=[Depends(require_read)],
            responses={404: {"model": ErrorBody, "description": "no such host reports here"}})
def history(
    runtime: RuntimeDep,
    metric: Annotated[Text, Query(description="a name from series.METRICS, e.g. cpu.percent",
                                  json_schema_extra={"enum": list(METRICS)})],
    start: Annotated[datetime | None, Query(description="default: an hour before end")] = None,
    end: Annotated[datetime | None, Query(description="default: now")] = None,
    step: Annotated[int | None, Query(ge=1, le=86_400, description="bucket seconds")] = None,
    dimension: Annotated[Text, Query(description="mount point, interface, device")] = "",
    host: HostQuery = None,
) -> HistoryBody:
    """History of one metric between start and end, optionally bucketed by step seconds."""
    if metric not in METRICS:
        raise HTTPException(422, f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    end_at = _utc(end) if end is not None else datetime.now(timezone.utc)
    start_at = _utc(start) if start is not None else end_at - timedelta(hours=1)
    if start_at > end_at:
        raise HTTPException(422, "start must not be after end")
    try:
        points = runtime.store.series(metric, start_at, end_at, dimension=dimension,
                                      step_s=step, host=_host(runtime, host) or runtime.host)
    except (OverflowError, ValueError) as exc:  # a date outside what a float timestamp holds
        raise HTTPException(422, f"invalid range: {exc}") from None
    if len(points) > MAX_HISTORY_POINTS:
        # A day of raw samples at a fast interval is hundreds of thousands of points: tens
        # of megabytes of JSON per request, which any reader could ask for in a loop.
        span = max(1.0, (end_at - start_at).total_seconds())
        raise HTTPException(422, f"this range holds {len(points)} points, more than "
                                 f"{MAX_HISTORY_POINTS} per answer: ask for step="
                                 f"{math.ceil(span / MAX_HISTORY_POINTS)} or more, or a "
                                 "shorter range")
    return HistoryBody(metric=metric, dimension=dimension, step_s=step, start=start_at,
                       end=end_at, points=[Point(at=p.at, avg=p.avg, min=p.min, max=p.max,
                                                 count=p.count) for p in points])


#: Series names whose literal translation promtool's linter rejects: a gauge must not end
#: in ``_total`` (that suffix means a counter), and units are spelled out (``_seconds``).
_PROM_RENAMES = {"processes.total": "processes", "uptime_s": "uptime_seconds",
                 # Prometheus names carry their base unit.
                 **{f"memory.{k}": f"memory.{k}_bytes"
                    for k in ("used", "available", "swap_used")},
                 **{f"disk.{k}": f"disk.{k}_bytes" for k in ("used", "free")}}


def prometheus_name(metric: str) -> str:
    """Prometheus name of a series.METRICS name: ``net.bytes_recv_per_s`` -> ``..._per_second``."""
    name = _PROM_RENAMES.get(metric, metric).replace(".", "_")
    if name.endswith("_per_s"):
        name = name.removesuffix("s") + "second"
    return "watchkeeper_" + name


@dataclass(frozen=True)
class WireCounters:
    """Counters of what came over the bus and was not taken as it came."""

    rejected: dict[str, int]
    duplicate_publishes: int
    duplicate_snapshots: int


def wire_counters(rt: Runtime) -> WireCounters:
    """This process's bus refusals by reason, the broker's duplicates and the snapshots its
    communicator stored once (zero on the in-process bus, which has nothing to refuse)."""
    # A fleet agent's bus is the network bus behind its spool (bus/spooling.py).
    bus: Any = getattr(rt.bus, "inner", rt.bus)
    rejected = getattr(bus, "rejected", None)
    snaps = sum(a.duplicates for a in rt.agents if isinstance(a, CommunicatorAgent))
    return WireCounters(rejected=dict(rejected) if rejected else {},
                        duplicate_publishes=int(getattr(bus, "duplicates", 0) or 0),
                        duplicate_snapshots=snaps)


class RuntimeCollector(Collector):
    """Prometheus metrics computed at scrape time from the runtime's latest state."""

    def __init__(self, runtime: Runtime, notify: NotifyBody | None = None) -> None:
        self.runtime = runtime
        #: The routes' delivery, as the agents answered it before the scrape (None: none).
        self.notify = notify

    def collect(self) -> Iterator[Metric]:
        """Host metrics, agent health, open alerts by severity, action outcomes."""
        rt = self.runtime
        analyzer = next((a for a in rt.agents if isinstance(a, AnalyzerAgent)), None)
        if analyzer is not None and analyzer.fleet:
            # A central: every host's latest snapshot, labelled with its host.
            snaps = analyzer.latest_all()
        else:
            one = _latest(rt)
            snaps = [] if one is None else [one]
        families: dict[str, GaugeMetricFamily] = {}
        for snap in snaps:
            host = rt.host if not (analyzer is not None and analyzer.fleet) else snap.host
            for sample in flatten(snap):
                name = prometheus_name(sample.metric)
                family = families.get(name)
                if family is None:
                    family = families[name] = GaugeMetricFamily(
                        name, f"{sample.metric} from the latest snapshot",
                        labels=["host", "dimension"])
                family.add_metric([host, sample.dimension], sample.value)
        yield from families.values()
        if analyzer is not None and analyzer.fleet:
            up = GaugeMetricFamily("watchkeeper_host_up",
                                   "1 while the host reports, 0 once it is down "
                                   "(analyzer.host_down_after_s without a snapshot)",
                                   labels=["host"])
            for hs in analyzer.host_states():
                up.add_metric([hs.host], 0.0 if hs.down else 1.0)
            yield up
        health = GaugeMetricFamily("watchkeeper_agent_up", "1 when the agent is running",
                                   labels=["host", "agent"])
        state = GaugeMetricFamily("watchkeeper_agent_state", "1 for the agent's current state",
                                  labels=["host", "agent", "state"])
        # A counter (exposed as ..._total): rate() and increase() work on it.
        restarts = CounterMetricFamily("watchkeeper_agent_restarts",
                                       "times the supervisor restarted the agent",
                                       labels=["host", "agent"])
        for h in rt.supervisor.health():
            health.add_metric([rt.host, h.name], 1.0 if h.state == "running" else 0.0)
            restarts.add_metric([rt.host, h.name], float(h.restarts))
            for s in _STATES:
                state.add_metric([rt.host, h.name, s], 1.0 if h.state == s else 0.0)
        yield from (health, state, restarts)
        alerts = GaugeMetricFamily("watchkeeper_alerts_open", "open alerts by severity",
                                   labels=["host", "severity"])
        by_severity: Counter[tuple[str, str]] = Counter()
        hosts = [rt.host]
        if analyzer is not None:
            by_severity.update((a.host, a.severity) for a in analyzer.engine.active_alerts())
            if analyzer.fleet:
                hosts = [hs.host for hs in analyzer.host_states()]
        for host in hosts:
            for severity in ("info", "warning", "critical"):
                alerts.add_metric([host, severity], float(by_severity[host, severity]))
        yield alerts
        outcomes = GaugeMetricFamily(
            "watchkeeper_action_outcomes", "remediation outcomes in the audit log (last 10000)",
            labels=["host", "outcome"])
        counted = Counter(e.outcome or "unknown"
                          for e in rt.audit.entries(kind="outcome", limit=10_000))
        for outcome, n in sorted(counted.items()):
            outcomes.add_metric([rt.host, outcome], float(n))
        yield outcomes
        pending = GaugeMetricFamily("watchkeeper_actions_pending",
                                    "actions waiting for approval", labels=["host"])
        pending.add_metric([rt.host], float(len(rt.audit.pending())))
        yield pending
        chain = rt.audit.chain_status()
        chain_ok = GaugeMetricFamily("watchkeeper_audit_chain_ok",
                                     "1 when the audit log's hash chain verifies, 0 when broken",
                                     labels=["host"])
        chain_ok.add_metric([rt.host], 1.0 if chain.ok else 0.0)
        # Kept off the host by Prometheus: if it ever goes down, the log's tail was deleted.
        head = GaugeMetricFamily("watchkeeper_audit_chain_head",
                                 "id of the last audit entry whose chain link verified",
                                 labels=["host"])
        head.add_metric([rt.host], float(chain.head_id))
        yield from (chain_ok, head)
        yield from self._services()
        yield from self._wire()
        yield from self._notify()

    def _notify(self) -> Iterator[Metric]:
        """Per notification route: delivered, failed tries, dropped, and the outbox."""
        if self.notify is None:
            return
        rows = [r for r in self.notify.routes if r.state != "unknown"]
        # Counters (exposed as ..._total); an apprise route's are kept in the outbox file
        # across restarts, an Alertmanager route's count since this process started.
        sent = CounterMetricFamily("watchkeeper_notifications_sent",
                                   "notifications the route's channel accepted (Alertmanager: "
                                   "posts)", labels=["route"])
        failed = CounterMetricFamily("watchkeeper_notifications_failed",
                                     "failed tries to deliver on the route (each retry counts)",
                                     labels=["route"])
        dropped = CounterMetricFamily("watchkeeper_notifications_dropped",
                                      "notifications dropped past the outbox's bounds (told "
                                      "as one summary instead)", labels=["route"])
        waiting = GaugeMetricFamily("watchkeeper_notify_outbox_messages",
                                    "notifications waiting in the outbox", labels=["route"])
        oldest = GaugeMetricFamily("watchkeeper_notify_outbox_oldest_seconds",
                                   "age of the oldest notification waiting (0: none)",
                                   labels=["route"])
        for r in rows:
            sent.add_metric([r.name], float(r.sent_total))
            failed.add_metric([r.name], float(r.failed_total))
            dropped.add_metric([r.name], float(r.dropped_total))
            if r.waiting is not None:  # an Alertmanager route has no outbox
                waiting.add_metric([r.name], float(r.waiting))
                oldest.add_metric([r.name], float(r.oldest_waiting_s or 0.0))
        yield from (sent, failed, dropped, waiting, oldest)

    def _wire(self) -> Iterator[Metric]:
        """What this process refused from the bus (a spoofed or malformed message, by
        reason), publications the broker kept once, and snapshots delivered twice."""
        rt = self.runtime
        counts = wire_counters(rt)
        rejected = CounterMetricFamily(
            "watchkeeper_bus_rejected", "messages refused from the bus (not decodable, too "
            "big or deep, or not on their own host's subject), by reason",
            labels=["host", "reason"])
        for reason, n in sorted(counts.rejected.items()):
            rejected.add_metric([rt.host, reason], float(n))
        published = CounterMetricFamily(
            "watchkeeper_bus_duplicate_publishes", "publications the broker recognised as "
            "duplicates (same Nats-Msg-Id) and stored once", labels=["host"])
        published.add_metric([rt.host], float(counts.duplicate_publishes))
        snaps = CounterMetricFamily(
            "watchkeeper_duplicate_snapshots", "snapshots delivered twice (a spool replay) "
            "and stored once", labels=["host"])
        snaps.add_metric([rt.host], float(counts.duplicate_snapshots))
        yield from (rejected, published, snaps)

    def _services(self) -> Iterator[Metric]:
        """Per declared service: up (running and healthy, not being healed) and restarts."""
        rt = self.runtime
        book = next((a.book for a in rt.agents if isinstance(a, RemediatorAgent)), None)
        if book is None:
            return
        up = GaugeMetricFamily("watchkeeper_service_up",
                               "1 when the declared service is running and healthy",
                               labels=["host", "service"])
        # A counter (exposed as ..._total) since this watchkeeper started.
        restarts = CounterMetricFamily("watchkeeper_service_restarts",
                                       "restarts and starts watchkeeper ran on the service",
                                       labels=["host", "service"])
        for name, ok, count in book.counters():
            up.add_metric([rt.host, name], 1.0 if ok else 0.0)
            restarts.add_metric([rt.host, name], float(count))
        yield from (up, restarts)


@router.get("/metrics", response_class=Response, dependencies=[Depends(require_read)],
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
async def prometheus(runtime: RuntimeDep) -> Response:
    """Prometheus exposition of host metrics, agent health, alerts, action outcomes and
    notification delivery per route."""
    # The routes' delivery is the agents' to tell (over the bus, briefly: a scrape must not
    # hang on one of them); the rest is read in a worker thread, as a sync route would be.
    notify = await notify_status(runtime, METRICS_TIMEOUT_S) \
        if runtime.config.current.notify.routes else None
    # A registry per scrape: the collector reads live state, so nothing is kept between.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RuntimeCollector(runtime, notify))
    body = await asyncio.to_thread(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
