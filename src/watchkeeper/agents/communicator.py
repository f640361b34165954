"""CommunicatorAgent: the mouthpiece. Keeps the history, the status file, and tells people.

Now: stores every snapshot and event (batched, see store/), rewrites
``system_status.json`` and logs notable events once. Notifications come later.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from watchkeeper import __version__
from watchkeeper.agents.base import BaseAgent
from watchkeeper.bus import Subscription
from watchkeeper.config import PersonalityLevel, Settings
from watchkeeper.events import (
    AgentGaveUp,
    AgentHealth,
    AgentRestarted,
    Alert,
    AnalyzerNotice,
    ConfigChanged,
    Event,
    MetricSnapshot,
    RemediationEvent,
)
from watchkeeper.personality import mark, wording
from watchkeeper.status import STATUS_FILE_NAME, write_atomic
from watchkeeper.store.base import Store

log = logging.getLogger(__name__)

#: Seconds between retention/downsampling passes over the history.
RETENTION_EVERY_S = 300.0


class CommunicatorAgent(BaseAgent):
    """Stores what flows on the bus and keeps the status file current."""

    name = "communicator"

    def __init__(self, *, store: Store, health: Callable[[], list[AgentHealth]],
                 bus_stats: Callable[[], list[Any]] | None = None,
                 patterns: tuple[str, ...] = (">",), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.store = store
        #: What it keeps: everything on one host or a central; a fleet agent only its own
        #: host's topics (its broker lets it read no other host's).
        self.patterns = patterns
        self._health = health
        self._bus_stats = bus_stats
        self._subs: list[Subscription] = []
        self._latest: MetricSnapshot | None = None
        #: Each host's last few snapshots (seq, time): a copy delivered twice (sent again
        #: from a fleet agent's spool after its first send was stored but not acknowledged,
        #: past the broker's de-duplication) is not stored twice. The copy follows its
        #: original closely (the spool holds everything newer back), so a few suffice; the
        #: clock is not compared, so a wall clock stepped back loses nothing.
        self._recent: dict[str, collections.deque[tuple[int, datetime]]] = {}
        self.duplicates = 0
        self._started: datetime = self._wall()
        self._next_retention = float("-inf")  # once at start: catches up after downtime

    def interval(self, settings: Settings) -> float:
        # The flush cadence is the kill -9 loss bound the README promises.
        return settings.storage.flush_interval

    async def setup(self) -> None:
        if not self._subs:
            # Large queues: snapshots are droppable, everything else must be stored.
            # Each its own name: on NATS a name is a durable consumer of its own.
            for i, pattern in enumerate(self.patterns):
                sub = self.bus.subscribe(
                    pattern, name=self.name if i == 0 else f"{self.name}-{i + 1}",
                    maxsize=10_000)
                # Acknowledged once stored (commit after each flush), not once read: a
                # central killed -9 between the two gets them again when it restarts (the
                # store keeps one copy of an event delivered twice).
                sub.commit()
                self._subs.append(sub)

    async def teardown(self) -> None:
        self._drain()
        await self.store.flush()
        self._commit()
        self._write_status(self.config.current)

    def _commit(self) -> None:
        """What was drained is durable now: the bus may forget it."""
        for sub in self._subs:
            sub.commit()

    def _drain(self) -> int:
        count = 0
        for sub in self._subs:
            while True:
                item = sub.get_nowait()
                if item is None:
                    break
                topic, event = item
                count += 1
                self._handle(topic, event)
        return count

    @property
    def _level(self) -> PersonalityLevel:
        """personality.level, read every time (live reload)."""
        return self.config.current.personality.level

    def _handle(self, topic: str, event: Event) -> None:
        if isinstance(event, MetricSnapshot):
            recent = self._recent.get(event.host)
            if recent is None:
                recent = self._recent[event.host] = collections.deque(maxlen=8)
            key = (event.seq, event.at)
            if key in recent:
                self.duplicates += 1
                return
            recent.append(key)
            self._latest = event
            self.store.add_snapshot(event)
            return
        self.store.add_event(topic, event)
        lv = self._level
        if isinstance(event, Alert):
            self._log_alert(event, lv)
        elif isinstance(event, RemediationEvent):
            self._log_remediation(event, lv)
        elif isinstance(event, AnalyzerNotice):
            log.warning(mark(lv, "🧠") + "%s", event.message)
        elif isinstance(event, AgentRestarted):
            log.warning(mark(lv, "🔁") + "%s went down (%s); "
                        + wording(lv, "restarted", "back on its feet") + " (restart #%d)",
                        event.agent, event.reason, event.restarts)
        elif isinstance(event, AgentGaveUp):
            log.error(mark(lv, wording(lv, "🛑", "🪦")) + "gave up on %s after %d restarts: %s",
                      event.agent, event.restarts, event.reason)
        elif isinstance(event, ConfigChanged):
            log.info(mark(lv, "⚙️ ") + "configuration updated: %s", ", ".join(event.changed))

    def _log_alert(self, alert: Alert, lv: PersonalityLevel) -> None:
        if self._log_service_step(alert, lv):
            return
        change = alert.labels.get("change")
        if alert.silenced or change == "value":
            # A silenced alert, or a firing one whose value moved: stored and shown, not said.
            log.debug("alert %s (%s): %s", alert.fingerprint, change, alert.summary)
        elif alert.state == "resolved":
            log.info(mark(lv, "✅") + "resolved: %s", alert.summary)
        elif alert.state == "acknowledged":
            log.info(mark(lv, "👀") + "acknowledged: %s", alert.summary)
        elif change == "assessed" and alert.assessment is not None:
            a = alert.assessment
            actions = ", ".join(s.action for s in a.suggested_actions) or "none"
            log.warning(mark(lv, "🧠") + "%s — likely cause: %s (confidence %.0f%%; "
                        "suggested: %s)", a.summary, a.likely_cause or "unknown",
                        a.confidence * 100, actions)
        else:
            icon = mark(lv, "🔥" if alert.severity == "critical" else "⚠️ ")
            text = f"{icon}[{alert.severity}] {alert.summary}"
            if alert.context:
                text += f" — {alert.context}"
            if alert.severity == "critical":
                log.error("%s", text)
            else:
                log.warning("%s", text)

    @staticmethod
    def _log_service_step(alert: Alert, lv: PersonalityLevel) -> bool:
        """A service alert updated with what remediation does next: one quieter line (the
        outage itself was logged once, as critical or warning, when it opened)."""
        if alert.rule != "service" or alert.silenced or alert.state != "firing" \
                or alert.labels.get("change") != "updated":
            return False
        log.info(mark(lv, "↻") + "%s — %s", alert.summary, alert.context or "")
        return True

    def _log_remediation(self, ev: RemediationEvent, lv: PersonalityLevel) -> None:
        who = {"llm": "the LLM", "operator": "an operator",
               "supervisor": "the process supervisor"}.get(ev.source, "a rule")
        if ev.phase == "started":
            approved = f", approved by {ev.by}" if ev.by else ""
            log.info(mark(lv, "🔧") + "%s %s (proposed by %s%s)", ev.action, ev.target, who,
                     approved)
        elif ev.phase == "finished":
            if ev.outcome == "ok" and ev.verified is not False:
                log.info(mark(lv, "✅") + "fixed: %s %s — %s", ev.action, ev.target, ev.message)
            else:
                log.error(mark(lv, "❌") + "%s %s did not fix it: %s", ev.action, ev.target,
                          ev.message)
        elif ev.phase == "pending":
            log.warning(mark(lv, "✋") + "%s %s waits for approval #%s (proposed by %s): %s",
                        ev.action, ev.target, ev.approval_id, who, ev.message or ev.why)
        elif ev.phase == "rejected":
            log.info(mark(lv, "🚫") + "approval #%s rejected by %s: %s %s", ev.approval_id,
                     ev.by, ev.action, ev.target)
        elif ev.phase == "expired":
            log.warning(mark(lv, "⌛") + "%s %s: %s; asked again if still needed", ev.action,
                        ev.target, ev.message)
        elif ev.phase == "escalated":
            log.error(mark(lv, "📣") + "needs a human: %s", ev.why)
        elif ev.phase == "notice":
            log.warning(mark(lv, "🛑") + "%s", ev.message)
        elif ev.phase == "reset":
            log.warning(mark(lv, "🔓") + "%s", ev.message)

    async def _perform_check(self) -> None:
        drained = self._drain()
        # Returning from flush() means durable: this cadence is the kill -9 loss bound.
        await self.store.flush()
        self._commit()
        if drained:
            self._write_status(self.config.current)
        now = self._monotonic()
        if now >= self._next_retention:
            self._next_retention = now + RETENTION_EVERY_S
            result = await self.store.apply_retention()
            log.debug("retention: %s", result)

    def status(self) -> dict[str, Any]:
        """What system_status.json holds."""
        latest = self._latest
        now = self._wall()
        data: dict[str, Any] = {
            "host": self.host,
            "version": __version__,
            "updated_at": now.isoformat(),
            "started_at": self._started.isoformat(),
            "agents": [h.model_dump(mode="json") for h in self._health()],
            "latest_metrics": latest.model_dump(mode="json") if latest else None,
        }
        if self._bus_stats is not None:
            data["bus"] = [vars(s) for s in self._bus_stats()]
        return data

    def _write_status(self, settings: Settings) -> None:
        path = Path(settings.logging.dir).expanduser() / STATUS_FILE_NAME
        try:
            write_atomic(path, self.status())
        except OSError as exc:
            log.error("cannot write %s: %s", path, exc)
