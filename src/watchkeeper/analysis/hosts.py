"""Host down: a host of a fleet that stops reporting is an alert of its own (rule ``host_down``).

Only a central that follows other hosts' snapshots can tell; it judges by its own clock when
it last received a snapshot (a host's clock may be wrong), and fires once the silence lasts
``analyzer.host_down_after_s``. The alert resolves with the host's next snapshot. Notification
routing holds back what a down host explains (notify/router.py's inhibition table).
"""

from __future__ import annotations

from datetime import datetime, timezone

from watchkeeper.analysis.alerts import Description, Finding, fmt_duration

RULE = "host_down"
METRIC = "host.reporting"


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


class HostDownDetector:
    """One host's reporting state: silent since when, and whether its alert is open."""

    __slots__ = ("down_since", "host")

    def __init__(self, host: str) -> None:
        self.host = host
        #: When the last snapshot arrived (central's wall clock), once the host is down.
        self.down_since: float | None = None

    def silent(self, last_seen: float, silent_s: float) -> Finding | None:
        """The firing finding when the host just went silent (None while it already is)."""
        if self.down_since is not None:
            return None
        self.down_since = last_seen
        host = self.host

        def describe(_since: float) -> Description:
            return Description(
                summary=f"Host {host} stopped reporting: nothing since {_clock(last_seen)}",
                context=(f"No snapshot for {fmt_duration(silent_s)}: the host, its watchkeeper "
                         "agent or the network between them is down. Its other alerts are "
                         "held back until it reports again."),
                likely_cause="host, agent or network down", confidence=0.5,
                labels={"last_seen": _clock(last_seen)},
                evidence=(f"last snapshot received at {_clock(last_seen)}",))

        return Finding(rule=RULE, metric=METRIC, dimension="", severity="critical",
                       value=0.0, since=last_seen, describe=describe, worse=None)

    def reporting(self, t: float) -> Finding | None:
        """The clearing finding when a down host reports again (None if it was not down)."""
        if self.down_since is None:
            return None
        gone = t - self.down_since
        self.down_since = None
        host = self.host

        def describe(_since: float) -> Description:
            return Description(
                summary=f"Host {host} reports again after {fmt_duration(max(gone, 0.0))}",
                confidence=1.0)

        return Finding(rule=RULE, metric=METRIC, dimension="", severity=None, value=1.0,
                       since=t, describe=describe, worse=None)

    def seed(self, since: float) -> None:
        """A restored host-down alert: the host is down until it reports."""
        self.down_since = since
