"""Learning from outcomes: success rates per (action, target) and failure streaks.

A *strategy* is one action on one target ("restart_service on web"). Each finished attempt
that did or did not fix the problem is recorded; the policy refuses a strategy that failed
``limit`` times in a row and escalates once instead (see policy.py). The counters are kept
in the persisted PolicyState, so a restart of watchkeeper forgets nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from watchkeeper.events import Frozen
from watchkeeper.remediation.actions.base import ActionResult, Verification


@dataclass
class StrategyStats:
    """Counters of one strategy (mutable; owned by PolicyState)."""

    successes: int = 0
    failures: int = 0
    failures_in_a_row: int = 0
    #: Whether the one escalation for the current failure streak was raised already.
    escalated: bool = False

    @property
    def attempts(self) -> int:
        """Attempts with a known outcome."""
        return self.successes + self.failures

    def record(self, success: bool) -> None:
        """Count one finished attempt."""
        if success:
            self.successes += 1
            self.failures_in_a_row = 0
            self.escalated = False
        else:
            self.failures += 1
            self.failures_in_a_row += 1

    def forget_streak(self) -> None:
        """A human reset, or the target healthy again: the streak no longer says anything."""
        self.failures_in_a_row = 0
        self.escalated = False


class ActionStats(Frozen):
    """What is known about one strategy, as shown in decisions and the API."""

    host: str
    action: str
    target: str
    successes: int
    failures: int
    failures_in_a_row: int

    @property
    def attempts(self) -> int:
        """Attempts with a known outcome."""
        return self.successes + self.failures

    @property
    def success_rate(self) -> float | None:
        """Share of attempts that worked, None before the first one."""
        return self.successes / self.attempts if self.attempts else None

    def describe(self) -> str:
        """'2 of 3 attempts worked, the last 1 failed' in plain words."""
        if not self.attempts:
            return "never tried"
        text = f"{self.successes} of {self.attempts} attempts worked"
        if self.failures_in_a_row:
            text += f", the last {self.failures_in_a_row} failed"
        return text


def success_of(result: ActionResult | None, verification: Verification | None = None
               ) -> bool | None:
    """Whether an attempt worked: True, False, or None when nothing was tried.

    A refused or dry-run result changed nothing, so it says nothing about the strategy; an
    action that ran but whose verification failed did not fix the problem.
    """
    return attempt_worked(None if result is None else result.outcome,
                          None if verification is None else verification.ok)


def attempt_worked(outcome: str | None, verified: bool | None) -> bool | None:
    """success_of from what a finished RemediationEvent records (outcome, verified)."""
    if outcome is None or outcome in ("refused", "dry_run"):
        return None
    if outcome != "ok":
        return False
    return verified if verified is not None else True
