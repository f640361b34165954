"""The nine views, one module each, in key order."""

from __future__ import annotations

from watchkeeper.cli.tui.views.agents import AgentsView
from watchkeeper.cli.tui.views.alerts import AlertsView
from watchkeeper.cli.tui.views.base import Host, View
from watchkeeper.cli.tui.views.bus import BusView
from watchkeeper.cli.tui.views.commands import CommandsView
from watchkeeper.cli.tui.views.config import ConfigView
from watchkeeper.cli.tui.views.live import LiveView
from watchkeeper.cli.tui.views.metrics import MetricsView
from watchkeeper.cli.tui.views.remediation import RemediationView
from watchkeeper.cli.tui.views.status import StatusView

#: Key n shows VIEWS[n - 1].
VIEWS: tuple[type[View], ...] = (StatusView, AgentsView, MetricsView, AlertsView,
                                 RemediationView, BusView, ConfigView, CommandsView, LiveView)

__all__ = ["VIEWS", "Host", "View"]
