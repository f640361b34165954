"""The rule engine for a fleet: one :class:`Analyzer` per host, behind the same interface.

A central server follows every host's snapshots; each host gets an engine of its own (its
own baselines, forecasts and alerts) the first time it reports, so a fleet is analysed
exactly as each of its hosts would analyse itself. Silences apply across hosts (a ``host``
matcher narrows one to a host). A host that stops reporting raises ``host_down``
(analysis/hosts.py) after ``analyzer.host_down_after_s``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from watchkeeper.analysis.alerts import AlertManager, Silence
from watchkeeper.analysis.engine import Analyzer
from watchkeeper.config import Settings
from watchkeeper.events import Alert, Assessment, MetricSnapshot, ServiceReport

logger = logging.getLogger(__name__)

#: Hosts one central follows; snapshots of more are refused (and logged once): a bound on
#: memory that a flood of invented host names cannot push past.
MAX_HOSTS = 20_000


@dataclass(frozen=True)
class HostState:
    """What the central knows of one host, for ``GET /api/hosts``."""

    host: str
    last_seen: float | None  # epoch s on the central's clock; None: restored, not seen yet
    last_snapshot_at: datetime | None  # the host's own clock
    down: bool
    open_alerts: int
    worst: str | None  # the most severe open alert's severity


class FleetAnalyzer:
    """Every host's engine, routed by the event's host; the Analyzer interface across them."""

    def __init__(self, settings_provider: Callable[[], Settings], *,
                 cleanup_roots: Sequence[str] | Callable[[], Sequence[str]] = (),
                 max_hosts: int = MAX_HOSTS) -> None:
        self._provider = settings_provider
        self._roots = cleanup_roots
        self.max_hosts = max_hosts
        self._engines: dict[str, Analyzer] = {}
        self._seen: dict[str, float] = {}
        #: Hosts known from the history at a restart and not heard from since: silent from
        #: the restart on (the central's clock), so one that never reports again is down.
        self._silent_from: dict[str, float] = {}
        self._latest_at: dict[str, datetime] = {}
        self._silences: dict[str, Silence] = {}
        self._refused: set[str] = set()

    # ----------------------------------------------------------------- engines

    def engine(self, host: str) -> Analyzer | None:
        """The engine of ``host``, made on first use (None past ``max_hosts``)."""
        found = self._engines.get(host)
        if found is not None:
            return found
        if len(self._engines) >= self.max_hosts:
            if host not in self._refused and len(self._refused) < 100:
                self._refused.add(host)
                logger.error("fleet: %d hosts followed already (the most one central takes); "
                             "ignoring host %r", self.max_hosts, host)
            return None
        made = Analyzer(self._provider, host=host, cleanup_roots=self._roots)
        for sid, sil in self._silences.items():
            made.silence(sil.matchers, sil.until, by=sil.by, comment=sil.comment,
                         silence_id=sid)
        self._engines[host] = made
        return made

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(self._engines)

    # ----------------------------------------------------------------- the tick

    def observe(self, snap: MetricSnapshot, *, received: float | None = None) -> list[Alert]:
        """Analyse one host's snapshot; ``received`` (the central's clock, epoch s) is when
        it arrived, for host-down."""
        engine = self.engine(snap.host)
        if engine is None:
            return []
        if received is not None:
            self._seen[snap.host] = received
            self._silent_from.pop(snap.host, None)
        self._latest_at[snap.host] = snap.at
        return engine.observe(snap)

    def observe_service(self, report: ServiceReport) -> list[Alert]:
        engine = self.engine(report.host)
        return [] if engine is None else engine.observe_service(report)

    def check_silent(self, now: float) -> list[Alert]:
        """Host-down alerts for hosts silent for ``analyzer.host_down_after_s``."""
        after = self._provider().analyzer.host_down_after_s
        expired = datetime.fromtimestamp(now, timezone.utc)
        for sid in [k for k, v in self._silences.items() if v.until <= expired]:
            del self._silences[sid]  # each engine drops its own copy at its next tick
        changes: list[Alert] = []
        for silent in (self._seen, self._silent_from):
            for host, seen in silent.items():
                if now - seen >= after:
                    engine = self._engines[host]
                    if not engine.down:
                        changes += engine.silent(now, seen)
        return changes

    def known(self, hosts: Iterable[str], since: float) -> None:
        """Hosts the history knows, at a restart (``since``, the central's clock): each that
        sends nothing for ``analyzer.host_down_after_s`` from then on is down (once; one
        already down, its alert restored, is not alerted again)."""
        for host in hosts:
            if host not in self._seen and self.engine(host) is not None:
                self._silent_from.setdefault(host, since)

    def host_states(self) -> list[HostState]:
        """Every followed host, by name."""
        out = []
        rank = {"info": 0, "warning": 1, "critical": 2}
        for host in sorted(self._engines):
            engine = self._engines[host]
            alerts = engine.active_alerts()
            worst = max((a.severity for a in alerts), key=lambda s: rank.get(s, 0),
                        default=None)
            out.append(HostState(host=host, last_seen=self._seen.get(host),
                                 last_snapshot_at=self._latest_at.get(host), down=engine.down,
                                 open_alerts=len(alerts), worst=worst))
        return out

    # ----------------------------------------------------------------- by fingerprint

    def _owner(self, fingerprint: str) -> Analyzer | None:
        for engine in self._engines.values():
            if any(a.fingerprint == fingerprint for a in engine.active_alerts()):
                return engine
        return None

    def ack(self, fingerprint: str, by: str) -> Alert | None:
        engine = self._owner(fingerprint)
        return None if engine is None else engine.ack(fingerprint, by)

    def resolve(self, fingerprint: str, by: str) -> Alert | None:
        engine = self._owner(fingerprint)
        return None if engine is None else engine.resolve(fingerprint, by)

    def assess(self, fingerprint: str, assessment: Assessment) -> Alert | None:
        engine = self._owner(fingerprint)
        return None if engine is None else engine.assess(fingerprint, assessment)

    # ----------------------------------------------------------------- silences

    def silence(self, matchers: Mapping[str, str], until: datetime, *, by: str = "",
                comment: str = "", silence_id: str | None = None
                ) -> tuple[Silence, list[Alert]]:
        """One silence across every host (the same id on each engine, and on later ones)."""
        # Made (and its matchers checked) once, as an engine would, before any host has it.
        made, _ = AlertManager("-").silence(matchers, until, by=by, comment=comment,
                                            silence_id=silence_id)
        self._silences[made.id] = made
        changes: list[Alert] = []
        for engine in self._engines.values():
            changes += engine.silence(matchers, until, by=by, comment=comment,
                                      silence_id=made.id)[1]
        return made, changes

    def unsilence(self, silence_id: str) -> list[Alert]:
        self._silences.pop(silence_id, None)
        changes: list[Alert] = []
        for engine in self._engines.values():
            changes += engine.unsilence(silence_id)
        return changes

    @property
    def silences(self) -> list[Silence]:
        """Silences in force (each once, whatever the number of hosts)."""
        return list(self._silences.values())

    # ----------------------------------------------------------------- views and restart

    def active_alerts(self) -> list[Alert]:
        return [a for engine in self._engines.values() for a in engine.active_alerts()]

    def restore(self, alerts: Iterable[Alert]) -> list[Alert]:
        by_host: dict[str, list[Alert]] = {}
        for a in alerts:
            by_host.setdefault(a.host, []).append(a)
        kept: list[Alert] = []
        for host, mine in by_host.items():
            engine = self.engine(host)
            if engine is not None:
                kept += engine.restore(mine)
        return kept

    def baselines_to_dict(self) -> dict[str, Any]:
        return {"hosts": {h: e.baselines_to_dict() for h, e in self._engines.items()}}

    def baselines_from_dict(self, data: Mapping[str, Any]) -> int:
        hosts = data.get("hosts")
        if not isinstance(hosts, Mapping):
            return 0
        count = 0
        for host, saved in hosts.items():
            engine = self.engine(str(host)) if isinstance(saved, Mapping) else None
            if engine is not None:
                count += engine.baselines_from_dict(saved)
        return count

    def __iter__(self) -> Iterator[Analyzer]:
        return iter(self._engines.values())
