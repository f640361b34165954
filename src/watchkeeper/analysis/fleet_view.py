"""A sharded central's picture of its fleet: what the analysis shards publish, no analysis.

With ``serve --fleet --shards N`` the central analyses nothing itself: each host's engine
lives in exactly one shard process (analysis/shard.py). The central still answers for every
host (``GET /api/hosts``, open alerts, the dashboard) from what travels on the bus: every
host's latest snapshot and every alert change the shards publish. It has the interface of
:class:`FleetAnalyzer`, holding no engines; acknowledgements and silences are carried to
the shards by the analyzer agent (agents/analyzer.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from watchkeeper.analysis.alerts import AlertManager, Silence
from watchkeeper.analysis.engine import Analyzer
from watchkeeper.analysis.fleet import MAX_HOSTS, FleetAnalyzer, HostState
from watchkeeper.analysis.hosts import RULE as HOST_DOWN_RULE
from watchkeeper.config import Settings
from watchkeeper.events import Alert, Assessment, MetricSnapshot, ServiceReport

logger = logging.getLogger(__name__)

_RANK = {"info": 0, "warning": 1, "critical": 2}


class FleetView(FleetAnalyzer):
    """Every host's latest snapshot time and open alerts, as the shards report them."""

    def __init__(self, settings_provider: Callable[[], Settings], *, shards: int,
                 cleanup_roots: Sequence[str] | Callable[[], Sequence[str]] = (),
                 max_hosts: int = MAX_HOSTS) -> None:
        super().__init__(settings_provider, cleanup_roots=cleanup_roots, max_hosts=max_hosts)
        self.shards = shards
        #: host -> fingerprint -> the latest change of each open alert.
        self._open: dict[str, dict[str, Alert]] = {}

    def engine(self, host: str) -> Analyzer | None:
        return None  # the shards hold the engines

    def _known(self, host: str) -> bool:
        """Whether ``host`` is followed (made so on first sight, up to ``max_hosts``)."""
        if host in self._latest_at or host in self._open:
            return True
        if len(self._latest_at) + len(self._open) >= self.max_hosts:
            if host not in self._refused and len(self._refused) < 100:
                self._refused.add(host)
                logger.error("fleet: %d hosts followed already; ignoring host %r",
                             self.max_hosts, host)
            return False
        return True

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(sorted({*self._latest_at, *self._open}))

    def observe(self, snap: MetricSnapshot, *, received: float | None = None) -> list[Alert]:
        """Note when the host last reported; its analysis is its shard's."""
        if self._known(snap.host):
            if received is not None:
                self._seen[snap.host] = received
            self._latest_at[snap.host] = snap.at
        return []

    def observe_service(self, report: ServiceReport) -> list[Alert]:
        return []

    def check_silent(self, now: float) -> list[Alert]:
        return []  # host-down is raised by the host's shard

    def apply(self, alert: Alert) -> None:
        """One alert change a shard published: kept while open, forgotten once resolved."""
        if not self._known(alert.host):
            return
        mine = self._open.setdefault(alert.host, {})
        if alert.state == "resolved":
            mine.pop(alert.fingerprint, None)
        else:
            mine[alert.fingerprint] = alert

    def owner(self, fingerprint: str) -> Alert | None:
        """The open alert with this fingerprint, whichever host it is on."""
        for mine in self._open.values():
            found = mine.get(fingerprint)
            if found is not None:
                return found
        return None

    def host_states(self) -> list[HostState]:
        out = []
        for host in self.hosts:
            alerts = list(self._open.get(host, {}).values())
            worst = max((a.severity for a in alerts), key=lambda s: _RANK.get(s, 0),
                        default=None)
            out.append(HostState(host=host, last_seen=self._seen.get(host),
                                 last_snapshot_at=self._latest_at.get(host),
                                 down=any(a.rule == HOST_DOWN_RULE for a in alerts),
                                 open_alerts=len(alerts), worst=worst))
        return out

    def ack(self, fingerprint: str, by: str) -> Alert | None:
        return None  # carried to the owning shard by the agent

    def resolve(self, fingerprint: str, by: str) -> Alert | None:
        return None

    def assess(self, fingerprint: str, assessment: Assessment) -> Alert | None:
        return None

    def silence(self, matchers: Mapping[str, str], until: datetime, *, by: str = "",
                comment: str = "", silence_id: str | None = None
                ) -> tuple[Silence, list[Alert]]:
        """Record a silence (checked as an engine would); the shards apply it."""
        made, _ = AlertManager("-").silence(matchers, until, by=by, comment=comment,
                                            silence_id=silence_id)
        self._silences[made.id] = made
        return made, []

    def unsilence(self, silence_id: str) -> list[Alert]:
        self._silences.pop(silence_id, None)
        return []

    @property
    def silences(self) -> list[Silence]:
        now = datetime.now(timezone.utc)
        return [s for s in self._silences.values() if s.until > now]

    def active_alerts(self) -> list[Alert]:
        return [a for mine in self._open.values() for a in mine.values()]

    def restore(self, alerts: Iterable[Alert]) -> list[Alert]:
        kept = list(alerts)
        for alert in kept:
            self.apply(alert)
        return kept

    def baselines_to_dict(self) -> dict[str, Any]:
        return {}

    def baselines_from_dict(self, data: Mapping[str, Any]) -> int:
        return 0

    def __iter__(self) -> Iterator[Analyzer]:
        return iter(())
