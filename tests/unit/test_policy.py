"""The remediation policy: every check in order, exact timing on a fake monotonic clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from watchkeeper.config import Settings
from watchkeeper.remediation.learning import success_of
from watchkeeper.remediation.policy import (
    ActionRequest,
    Decision,
    Policy,
    PolicyError,
    PolicyState,
    Target,
    window_active,
)
from watchkeeper.remediation.registry import validate_action

from ..conftest import FakeClock, make_settings

HOST = "h1"


class Env:
    """A policy on fake clocks, with settings a test may replace at any time."""

    def __init__(self, tmp_path: Path, *, remediation: dict[str, Any] | None = None,
                 agents: dict[str, Any] | None = None, failure_limit: int | None = None,
                 state: PolicyState | None = None, mono: float = 1000.0) -> None:
        self.tmp_path = tmp_path
        self.clock = FakeClock(mono)
        # Saturday 2024-06-01 12:00 UTC: outside every window the tests declare by default.
        self.wall = FakeClock(datetime(2024, 6, 1, 12, 0, tzinfo=timezone.utc).timestamp())
        self.settings = settings_for(tmp_path, remediation, agents)
        self.policy = Policy(lambda: self.settings, monotonic=self.clock, wall=self.wall,
                             state=state or PolicyState(), failure_limit=failure_limit)

    def configure(self, remediation: dict[str, Any] | None = None,
                  agents: dict[str, Any] | None = None) -> None:
        self.settings = settings_for(self.tmp_path, remediation, agents)

    def decide(self, action: str = "restart_service", target: str = "web", *,
               source: str = "rule", approved_by: str | None = None, dry_run: bool = False,
               **params: Any) -> Decision:
        if not params:
            params = {"service": target}
        req = ActionRequest(action=action, params=params, host=HOST, source=source,
                            reasoning="test", dry_run=dry_run)
        return self.policy.decide(req, approved_by=approved_by)

    def attempt(self, decision: Decision, *, duration: float = 0.0,
                success: bool | None = False) -> None:
        assert decision.verdict == "auto", decision.why
        self.policy.begin(decision)
        self.clock.advance(duration)
        self.policy.end(decision, success=success)


def settings_for(tmp_path: Path, remediation: dict[str, Any] | None,
                 agents: dict[str, Any] | None) -> Settings:
    services: dict[str, object] = {name: {"start": ["/bin/true"]} for name in ("web", "api", "db")}
    services.update({f"s{i}": {"start": ["/bin/true"]} for i in range(50)})
    rem: dict[str, object] = {
        "startup_grace_s": 0, "backoff_initial_s": 0, "backoff_max_s": 0,
        "flap_max_attempts": 1000, "flap_window_s": 300, "budget_per_hour": 1000,
        "budget_per_action_per_hour": 1000, "scripts": {"fix": {"argv": ["/bin/true"]}}}
    rem.update(remediation or {})
    ag: dict[str, object] = {"healing_cooldown": 0, "max_concurrent_actions": 10}
    ag.update(agents or {})
    return make_settings(tmp_path, services=services, remediation=rem, agents=ag)


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


# --------------------------------------------------------------------------- basics


def test_auto_decision_says_what_who_and_why(env: Env) -> None:
    d = env.decide()
    assert d.verdict == "auto" and d.check == "ok" and d.runs
    assert d.target == Target.service("web") and d.risk == "medium" and d.mode == "auto"
    assert d.why == "auto: restart_service web (mode auto, proposed by a rule)"
    assert d.params == {"service": "web"} and not d.escalate
    # Frozen, serialisable (it goes to the audit log and over the bus).
    assert Decision.model_validate_json(d.model_dump_json()) == d
    with pytest.raises(ValueError):
        d.verdict = "refused"  # type: ignore[misc]


def test_unknown_action_and_invalid_params_are_refused(env: Env) -> None:
    d = env.decide("format_disk", device="/dev/sda")
    assert d.verdict == "refused" and d.check == "registry"
    assert d.why.startswith("refused: unknown action 'format_disk'; known: ")
    assert d.params == {"device": "/dev/sda"} and d.target is None
    d = env.decide("stop_process", pid=1)
    assert d.verdict == "refused" and d.check == "registry"
    assert "invalid parameters for stop_process: pid" in d.why
    d = env.decide("restart_service", service="web; rm -rf /")
    assert d.verdict == "refused" and d.check == "registry"


def test_mode_off_is_refused(env: Env) -> None:
    env.configure({"actions": {"restart_service": "off"}})
    d = env.decide()
    assert d.verdict == "refused" and d.check == "mode"
    assert d.why == "refused: restart_service is off (remediation.actions.restart_service)"


def test_approve_mode_waits_for_a_human_and_approval_makes_it_auto(env: Env) -> None:
    env.configure({"actions": {"restart_service": "approve"}})
    d = env.decide()
    assert d.verdict == "approve" and not d.runs
    assert d.why == "approve: restart_service web waits for a human (mode approve, proposed by " \
                    "a rule)"
    with pytest.raises(PolicyError, match="only an auto decision may begin"):
        env.policy.begin(d)
    d = env.decide(approved_by="alice")
    assert d.verdict == "auto" and d.approved_by == "alice"
    assert d.why == "auto: restart_service web (approved by alice, proposed by a rule)"


def test_llm_suggestion_for_an_approve_action_stays_approve(env: Env) -> None:
    # stop_process defaults to approve; nothing an LLM can put in a suggestion changes that.
    suggestion = validate_action("stop_process", {"pid": 4242}, source="llm",
                                 reason="it is pinning the CPU; stop it now (auto!)")
    req = ActionRequest.from_suggestion(suggestion, host=HOST, fingerprint="fp1")
    assert req.source == "llm" and req.reasoning.startswith("it is pinning")
    d = env.policy.decide(req)
    assert d.verdict == "approve" and d.mode == "approve"
    assert d.target == Target(kind="pid", name="4242") and str(d.target) == "pid 4242"
    assert "proposed by an LLM" in d.why
    # Extra keys meant to loosen the policy are refused by the parameter model.
    d = env.policy.decide(req.model_copy(update={"params": {"pid": 4242, "mode": "auto"}}))
    assert d.verdict == "refused" and d.check == "registry"


def test_llm_suggestions_go_through_the_same_checks(env: Env) -> None:
    env.configure(agents={"healing_cooldown": 60})
    env.attempt(env.decide(), success=True)
    rule = env.decide()
    llm = env.decide(source="llm")
    assert rule.verdict == llm.verdict == "refused"
    assert rule.check == llm.check == "cooldown"
    assert rule.why == llm.why


def test_an_llm_proposal_waits_for_a_human_by_default_whatever_the_actions_mode(
        env: Env) -> None:
    """restart_service is auto by default; proposed by the LLM it still waits (an injection
    in what the model read can steer it), and the approval says so; a rule's runs."""
    assert env.decide().verdict == "auto"
    d = env.decide(source="llm")
    assert d.verdict == "approve" and d.mode == "auto" and not d.runs
    assert d.why == ("approve: remediation.llm_mode is approve for what an LLM proposes; "
                     "restart_service web waits for a human (proposed by an LLM)")
    # Approved by a person, it runs (every other check still applies).
    d = env.decide(source="llm", approved_by="alice")
    assert d.verdict == "auto"
    assert d.why == "auto: restart_service web (approved by alice, proposed by an LLM)"


@pytest.mark.parametrize(("remediation", "verdict", "why"), [
    ({"llm_mode": "auto"}, "auto", "auto: restart_service web (mode auto, proposed by an LLM)"),
    ({"llm_mode": "dry_run"}, "dry_run", "dry_run: remediation.llm_mode is dry_run for what an "
                                         "LLM proposes; restart_service web would run"),
    ({"llm_mode": "off"}, "refused", "refused: restart_service proposed by an LLM is off "
                                     "(remediation.llm_mode)"),
    ({"llm_mode": "off", "llm_actions": {"restart_service": "auto"}}, "auto",
     "auto: restart_service web (mode auto, proposed by an LLM)"),
    ({"llm_mode": "auto", "llm_actions": {"restart_service": "approve"}}, "approve",
     "approve: remediation.llm_actions.restart_service is approve for what an LLM proposes; "
     "restart_service web waits for a human (proposed by an LLM)"),
    # llm_mode auto only lets the LLM follow the action's own mode, never loosen it.
    ({"llm_mode": "auto", "actions": {"restart_service": "approve"}}, "approve",
     "approve: restart_service web waits for a human (mode approve, proposed by an LLM)"),
], ids=["opt-in-auto", "dry-run", "off", "per-action-auto", "per-action-approve",
        "auto-never-loosens-the-actions-mode"])
def test_llm_mode_per_action(env: Env, remediation: dict[str, Any], verdict: str,
                             why: str) -> None:
    env.configure(remediation)
    d = env.decide(source="llm")
    assert (d.verdict, d.why) == (verdict, why)
    # Rules are not affected by what the LLM may do.
    assert env.decide(source="rule").verdict == (
        "approve" if remediation.get("actions") else "auto")


def test_llm_mode_is_validated_like_the_actions_modes() -> None:
    from watchkeeper.config import RemediationConfig

    with pytest.raises(ValueError, match=r"restart_servce.*did you mean 'restart_service'"):
        RemediationConfig.model_validate({"llm_actions": {"restart_servce": "auto"}})
    with pytest.raises(ValueError, match="llm_mode"):
        RemediationConfig.model_validate({"llm_mode": "sometimes"})
    # YAML reads an unquoted off as False.
    assert RemediationConfig.model_validate({"llm_mode": False}).llm_mode == "off"
    assert RemediationConfig().llm_mode_for("stop_process") == "approve"


# --------------------------------------------------------------------------- target


def test_allow_list_globs(env: Env) -> None:
    assert env.decide(target="api").verdict == "auto"  # no entry: every declared target
    env.configure({"allow": {"restart_service": ["web*", "db"]}})
    assert env.decide(target="web").verdict == "auto"
    assert env.decide(target="db").verdict == "auto"
    d = env.decide(target="api")
    assert d.verdict == "refused" and d.check == "target"
    assert d.why == ("refused: restart_service may not touch api "
                     "(remediation.allow.restart_service: web*, db)")
    # The allow-list is per action: start_service has no entry.
    assert env.decide("start_service", target="api").verdict == "auto"
    env.configure({"allow": {"restart_service": []}})
    assert "(remediation.allow.restart_service: nothing)" in env.decide().why


def test_undeclared_services_and_scripts_are_refused(env: Env) -> None:
    d = env.decide(target="ghost")
    assert d.verdict == "refused" and d.check == "target"
    assert d.why.startswith("refused: restart_service: ghost is not a declared service")
    env.configure({"actions": {"run_script": "auto"}})
    assert env.decide("run_script", name="fix").verdict == "auto"
    d = env.decide("run_script", name="other")
    assert d.check == "target" and "other is not a declared script (declared: fix)" in d.why


# --------------------------------------------------------------------------- grace, windows


def test_startup_grace_period(tmp_path: Path) -> None:
    env = Env(tmp_path, remediation={"startup_grace_s": 60})
    env.clock.advance(20)
    d = env.decide()
    assert d.verdict == "refused" and d.check == "grace" and d.retry_after_s == 40
    assert d.why == ("refused: watchkeeper started 20 s ago; no action in the first 60 s "
                     "(startup_grace_s)")
    env.clock.advance(39.9)
    assert env.decide().check == "grace"
    env.clock.advance(0.1)
    assert env.decide().verdict == "auto"


def test_a_dry_run_asked_for_in_the_grace_is_answered_with_when_it_could_run(
        tmp_path: Path) -> None:
    env = Env(tmp_path, remediation={"startup_grace_s": 60})
    env.clock.advance(20)
    d = env.decide(source="operator", dry_run=True)
    assert d.verdict == "dry_run", d.why
    assert d.why.endswith("would run once the start-up grace ends (in 40 s; startup_grace_s)")
    # Only the what-if: the real request is still held back.
    assert env.decide(source="operator").check == "grace"


def utc(day: int, hour: int, minute: int = 0) -> float:
    return datetime(2024, 6, day, hour, minute, tzinfo=timezone.utc).timestamp()


def test_maintenance_window_needs_a_human(env: Env) -> None:
    # 2024-06-01 is a Saturday.
    env.configure({"maintenance": [{"window": "02:00-04:00", "days": ["sat"],
                                    "timezone": "UTC"}]})
    env.wall.now = utc(1, 3)
    d = env.decide()
    assert d.verdict == "approve" and d.check == "maintenance"
    assert d.why == ("approve: maintenance window 02:00-04:00 on sat (UTC) is on, no automatic "
                     "action; restart_service web waits for a human (proposed by a rule)")
    assert env.decide(approved_by="alice").verdict == "auto"
    # Telling a human is not an action to hold back.
    assert env.decide("notify_only", message="disk full").verdict == "auto"
    for outside in (utc(1, 1, 59), utc(1, 4), utc(2, 3)):  # before, at the end, Sunday
        env.wall.now = outside
        assert env.decide().verdict == "auto"


def test_maintenance_window_across_midnight_and_time_zones(env: Env) -> None:
    from watchkeeper.config import MaintenanceWindow

    night = MaintenanceWindow(window="23:00-02:00", days=("sat",), timezone="UTC")
    assert window_active(night, utc(1, 23, 30))  # Saturday night
    assert window_active(night, utc(2, 1, 59))  # still Saturday's window on Sunday
    assert not window_active(night, utc(2, 2))
    assert not window_active(night, utc(1, 1))  # Saturday 01:00 belongs to Friday's
    assert not window_active(night, utc(2, 23, 30))
    berlin = MaintenanceWindow(window="02:00-04:00", timezone="Europe/Berlin")  # UTC+2 in June
    assert window_active(berlin, utc(1, 0, 30)) and not window_active(berlin, utc(1, 2, 30))
    whole = MaintenanceWindow(window="00:00-24:00", days=("sun",), timezone="UTC")
    assert window_active(whole, utc(2, 23, 59)) and not window_active(whole, utc(1, 12))


def test_dry_run_decides_and_runs_nothing(env: Env) -> None:
    env.configure({"dry_run": True, "actions": {"stop_process": "approve"}})
    d = env.decide()
    assert d.verdict == "dry_run" and d.check == "dry_run" and not d.runs
    assert d.why == "dry_run: remediation.dry_run is on; restart_service web would run"
    assert "would wait for approval" in env.decide("stop_process", pid=42).why
    with pytest.raises(PolicyError):
        env.policy.begin(d)
    # Refusals that come before dry-run in the order still say what they are.
    assert env.decide(target="ghost").verdict == "refused"


# --------------------------------------------------------------------------- concurrency


def test_concurrency_limit_holds(tmp_path: Path) -> None:
    env = Env(tmp_path, agents={"max_concurrent_actions": 2})
    a, b = env.decide(target="web"), env.decide(target="api")
    env.policy.begin(a)
    env.policy.begin(b)
    assert env.policy.in_flight == 2
    d = env.decide(target="db")
    assert d.verdict == "refused" and d.check == "concurrency"
    assert d.why == "refused: 2 actions in flight (max_concurrent_actions 2)"
    env.policy.end(a, success=True)
    d = env.decide(target="db")
    assert d.verdict == "auto"
    # One action per target at a time, whatever the limit.
    same = env.decide("start_service", target="api")
    assert same.check == "concurrency" and same.why == \
        "refused: restart_service on api is still running"
    # A decision that waited (an await) while the slots filled up may not begin.
    late = env.decide(target="s1")
    env.policy.begin(d)
    with pytest.raises(PolicyError, match="decide again"):
        env.policy.begin(late)
    with pytest.raises(PolicyError, match="has begun already"):
        env.policy.begin(d)
    env.policy.end(b, success=True)
    env.policy.end(d, success=True)
    with pytest.raises(PolicyError, match="not begun"):
        env.policy.end(d, success=True)
    assert env.policy.in_flight == 0


def test_zero_concurrency_means_no_action(tmp_path: Path) -> None:
    env = Env(tmp_path, agents={"max_concurrent_actions": 0})
    assert env.decide().check == "concurrency"
    assert env.decide("notify_only", message="x").verdict == "auto"


# --------------------------------------------------------------------------- timing


def test_cooldown_counts_from_the_end_of_the_last_attempt(tmp_path: Path) -> None:
    env = Env(tmp_path, agents={"healing_cooldown": 60})
    env.attempt(env.decide(), duration=30, success=True)
    env.clock.advance(18)
    d = env.decide()
    assert d.verdict == "refused" and d.check == "cooldown" and d.retry_after_s == 42
    assert d.why == "refused: restart_service web is in cooldown for 42 s more " \
                    "(healing_cooldown 60 s)"
    # Per target, across actions; other targets are not held back.
    assert env.decide("start_service").check == "cooldown"
    assert env.decide(target="api").verdict == "auto"
    env.clock.advance(41.9)
    assert env.decide().check == "cooldown"
    env.clock.advance(0.1)
    assert env.decide().verdict == "auto"


def _wait_needed(env: Env) -> float:
    """Probe the exact wait before the next attempt is allowed (to 1 ms)."""
    d = env.decide()
    if d.verdict == "auto":
        return 0.0
    assert d.check == "backoff", d.why
    assert d.retry_after_s is not None
    return d.retry_after_s


@pytest.mark.parametrize("jump", [0.0, 3600.0, -3600.0])
def test_backoff_schedule_is_exact_and_ignores_the_wall_clock(tmp_path: Path,
                                                               jump: float) -> None:
    env = Env(tmp_path, remediation={"backoff_initial_s": 1, "backoff_max_s": 16,
                                     "flap_max_attempts": 50, "flap_window_s": 100_000})
    waits = []
    for _ in range(8):
        d = env.decide()
        env.attempt(d, duration=0.5)  # waits count from the end of the attempt
        env.wall.advance(jump)  # NTP, a VM resume, a user with `date -s`: no effect
        waits.append(_wait_needed(env))
        wait = waits[-1]
        env.clock.advance(wait - 0.001)
        early = env.decide()
        assert early.check == "backoff" and early.retry_after_s == pytest.approx(0.001)
        env.wall.advance(-jump)
        env.clock.advance(0.001)
    assert waits == [1, 2, 4, 8, 16, 16, 16, 16]
    d = env.decide()
    assert d.verdict == "auto"


def test_backoff_why_in_plain_words(tmp_path: Path) -> None:
    env = Env(tmp_path, remediation={"backoff_initial_s": 1, "backoff_max_s": 60})
    env.attempt(env.decide())
    env.clock.advance(1)
    env.attempt(env.decide())
    env.clock.advance(0.5)
    d = env.decide()
    assert d.why == ("refused: backoff: next try on web in 1.5 s (attempt 3 waits 2 s after "
                     "the last one ended; backoff_initial_s 1 s, backoff_max_s 60 s)")


def _scenario(env: Env, jump: Callable[[], None]) -> list[tuple[str, str, bool]]:
    """A mix of cooldowns, backoff, flap and budgets; the wall clock jumps at every step."""
    out: list[tuple[str, str, bool]] = []
    plan = [("restart_service", "web"), ("restart_service", "web"), ("start_service", "api"),
            ("restart_service", "web"), ("start_service", "db"), ("restart_service", "web")]
    for step in range(60):
        action, target = plan[step % len(plan)]
        d = env.decide(action, target=target)
        out.append((d.verdict, d.why, d.escalate))
        if d.verdict == "auto":
            env.attempt(d, duration=2, success=step % 3 == 0 and step > 40)
        jump()
        env.clock.advance(3600 if step == 30 else 1 + step % 5)
    return out


@pytest.mark.parametrize("jump", [3600.0, -3600.0])
def test_wall_clock_jump_changes_nothing(tmp_path: Path, jump: float) -> None:
    knobs: dict[str, Any] = {
        "remediation": {"backoff_initial_s": 5, "backoff_max_s": 20, "flap_max_attempts": 4,
                        "flap_window_s": 120, "budget_per_hour": 9,
                        "budget_per_action_per_hour": 8},
        "agents": {"healing_cooldown": 4, "max_concurrent_actions": 1}}
    steady = _scenario(Env(tmp_path, **knobs), lambda: None)
    jumping_env = Env(tmp_path, **knobs)
    jumped = _scenario(jumping_env, lambda: jumping_env.wall.advance(jump))
    assert jumped == steady
    verdicts = {v for v, _, _ in steady}
    checks = " ".join(w for _, w, _ in steady)
    # The scenario exercised what it claims to.
    assert verdicts == {"auto", "refused"}
    for word in ("cooldown", "backoff", "breaker open", "escalate", "is failing",
                 "failed 4 times in a row"):
        assert word in checks
    # The budget refilled after the hour on the monotonic clock, not on the wall clock.
    assert steady[32][0] == "auto"


# --------------------------------------------------------------------------- flap


def test_crash_loop_gets_exactly_its_budget_then_one_escalation(tmp_path: Path) -> None:
    knobs = {"flap_max_attempts": 3, "flap_window_s": 300, "backoff_initial_s": 1,
             "backoff_max_s": 60}
    env = Env(tmp_path, remediation=knobs)
    decisions = []
    for _ in range(20):
        d = env.decide()
        decisions.append(d)
        if d.verdict == "auto":
            # It restarts, and crashes at once: verification fails.
            env.attempt(d, duration=0.2, success=False)
        env.clock.advance(5)
    assert [d.verdict for d in decisions].count("auto") == 3
    assert [d.verdict for d in decisions[:3]] == ["auto"] * 3
    assert sum(d.escalate for d in decisions) == 1
    assert decisions[3].escalate and decisions[3].check == "flap"
    assert decisions[3].why == (
        "refused: escalate: web marked failing after 3 attempts within 300 s, "
        "flap_max_attempts 3; no more automatic tries until a human resets it or it stays "
        "healthy for 300 s")
    assert all(d.verdict == "refused" and d.check == "flap" for d in decisions[4:])
    assert decisions[5].why.startswith("refused: web is failing (3 attempts within 300 s")
    assert [f.target for f in env.policy.failing()] == [Target.service("web")]

    # watchkeeper restarts (even the machine: the monotonic clock starts over).
    path = tmp_path / "policy_state.json"
    env.policy.state.save(monotonic=env.clock, path=path)
    env2 = Env(tmp_path, remediation=knobs, mono=3.0,
               state=PolicyState.load(path, monotonic=lambda: 3.0))
    later = []
    for _ in range(10):
        later.append(env2.decide())
        env2.clock.advance(60)  # the whole window passes: still failing, never healthy
    assert all(d.verdict == "refused" and d.check == "flap" for d in later)
    assert not any(d.escalate for d in later)


def test_crash_loop_whose_restarts_never_stay_up_still_stops(tmp_path: Path) -> None:
    """A restart that was healthy a moment but did not last the stability window is a
    failure (the service action's verification says so), so the loop is stopped."""
    env = Env(tmp_path, remediation={"flap_max_attempts": 3, "flap_window_s": 300})
    verdicts = []
    for _ in range(10):
        d = env.decide()
        verdicts.append((d.verdict, d.escalate))
        if d.verdict == "auto":
            env.attempt(d, success=False)  # up a moment, died inside the stability window
        env.clock.advance(10)
    assert verdicts[:4] == [("auto", False)] * 3 + [("refused", True)]
    assert set(verdicts[4:]) == {("refused", False)}


def test_a_run_that_stayed_up_forgives_earlier_tries(tmp_path: Path) -> None:
    """supervisord's startretries: only starts that did not survive startsecs count; a
    service action succeeds only after its stability window, and then the tries before it
    no longer count for flap protection or backoff."""
    env = Env(tmp_path, remediation={"flap_max_attempts": 3, "flap_window_s": 300,
                                     "backoff_initial_s": 10, "backoff_max_s": 60,
                                     "actions": {"run_script": "auto"}})
    env.attempt(env.decide(), success=False)
    env.clock.advance(10)
    env.attempt(env.decide(), success=False)
    env.clock.advance(20)
    env.attempt(env.decide(), success=True)  # this one stayed up
    # Killed again a second later: no backoff, no flap count from the earlier tries.
    env.clock.advance(1)
    assert env.decide().verdict == "auto"
    # Any other action's success forgives nothing: its attempts still count.
    env.attempt(env.decide("run_script", target="fix", name="fix"), success=True)
    env.clock.advance(0.5)
    assert env.decide("run_script", target="fix", name="fix").check == "backoff"


def test_a_supervised_restart_skips_grace_and_cooldown_but_not_backoff_or_flap(
        tmp_path: Path) -> None:
    """A managed process that exits is restarted at once, in the start-up grace and
    regardless of healing_cooldown; when it keeps dying, backoff and flap protection hold."""
    env = Env(tmp_path, remediation={"startup_grace_s": 60, "flap_max_attempts": 3,
                                     "backoff_initial_s": 1, "backoff_max_s": 60},
              agents={"healing_cooldown": 60})
    env.policy = Policy(lambda: env.settings, monotonic=env.clock, wall=env.wall,
                        state=PolicyState(), started_at=env.clock.now)

    def supervised() -> Decision:
        return env.policy.decide(ActionRequest(
            action="restart_service", params={"service": "web"}, host=HOST, supervised=True,
            reasoning="web exited unexpectedly: killed by SIGKILL"))

    assert env.decide().check == "grace"  # what a rule proposes waits out the grace
    first = supervised()
    assert first.verdict == "auto", first.why
    env.attempt(first, success=True)  # stayed up
    env.clock.advance(8)
    assert env.decide().check == "grace"  # a rule's restart still waits out the grace
    second = supervised()
    assert second.verdict == "auto", second.why  # no cooldown for the supervisor
    env.attempt(second, success=False)  # died inside the stability window
    backoff = supervised()
    assert backoff.check == "backoff" and backoff.retry_after_s == pytest.approx(1)
    env.clock.advance(1)
    env.attempt(supervised(), success=False)
    env.clock.advance(2)
    env.attempt(supervised(), success=False)
    env.clock.advance(4)
    flap = supervised()
    assert flap.check == "flap" and flap.escalate


def test_failing_target_recovers_by_reset_or_a_healthy_window(tmp_path: Path) -> None:
    env = Env(tmp_path, remediation={"flap_max_attempts": 2, "flap_window_s": 300})
    web = Target.service("web")

    def exhaust() -> None:
        for _ in range(2):
            env.attempt(env.decide(), success=False)
        assert env.decide().escalate

    exhaust()
    assert env.policy.reset(web, by="alice")
    assert not env.policy.reset(web, by="alice")  # nothing left to clear
    assert env.decide().verdict == "auto"  # earlier attempts no longer count
    exhaust()
    # Healthy, but a new request in between starts the stretch over.
    assert not env.policy.mark_healthy(web, host=HOST)
    env.clock.advance(200)
    assert env.decide().check == "flap"
    env.clock.advance(200)
    assert not env.policy.mark_healthy(web, host=HOST)
    env.clock.advance(299)
    assert not env.policy.mark_healthy(web, host=HOST)
    env.policy.mark_unhealthy(web, host=HOST)
    env.clock.advance(10)
    assert not env.policy.mark_healthy(web, host=HOST)
    env.clock.advance(300)
    assert env.policy.mark_healthy(web, host=HOST)
    assert env.policy.failing() == []
    assert env.decide().verdict == "auto"


def test_healthy_window_also_counts_when_noticed_at_the_next_request(tmp_path: Path) -> None:
    env = Env(tmp_path, remediation={"flap_max_attempts": 1, "flap_window_s": 60})
    env.attempt(env.decide())
    assert env.decide().escalate
    env.policy.mark_healthy(Target.service("web"), host=HOST)  # once, then nothing for long
    env.clock.advance(600)
    assert env.decide().verdict == "auto"


# --------------------------------------------------------------------------- learning


def test_a_strategy_that_keeps_failing_is_not_repeated(tmp_path: Path) -> None:
    env = Env(tmp_path, failure_limit=2)
    env.attempt(env.decide(), success=True)
    env.attempt(env.decide(), success=False)
    env.attempt(env.decide(), success=False)
    d = env.decide()
    assert d.verdict == "refused" and d.check == "learning" and d.escalate
    assert d.why == ("refused: escalate: restart_service has failed 2 times in a row for web; "
                     "no more automatic tries until a human resets it or it stays healthy "
                     "for 300 s")
    again = env.decide()
    assert again.check == "learning" and not again.escalate
    assert "escalated already" in again.why
    assert again.stats is not None and again.stats.success_rate == pytest.approx(1 / 3)
    # Another strategy for the same target may still be tried.
    other = env.decide("start_service")
    assert other.verdict == "auto"
    # It shows in later decisions.
    env.attempt(env.decide(target="api"), success=False)
    env.configure({"actions": {"restart_service": "approve"}})
    shown = env.decide(target="api")
    assert shown.verdict == "approve"
    assert shown.why.endswith("; history: 0 of 1 attempts worked, the last 1 failed")
    assert [(st.target, st.successes, st.failures, st.failures_in_a_row)
            for st in env.policy.stats(action="restart_service")] == [("api", 0, 1, 1),
                                                                      ("web", 1, 2, 2)]
    # A success (after a human reset) ends the streak.
    env.configure()
    env.policy.reset(Target.service("web"), by="bob")
    env.attempt(env.decide(), success=True)
    d = env.decide()
    assert d.verdict == "auto" and "history: 2 of 4 attempts worked" in d.why


def test_default_failure_limit_is_the_flap_budget(tmp_path: Path) -> None:
    env = Env(tmp_path, remediation={"flap_max_attempts": 3, "flap_window_s": 10})
    for _ in range(3):
        env.attempt(env.decide(), success=False)
        env.clock.advance(20)  # spaced out: flap protection never sees them together
    d = env.decide()
    assert d.check == "learning" and d.escalate
    assert "restart_service has failed 3 times in a row for web" in d.why


def test_success_of_result_and_verification() -> None:
    from watchkeeper.remediation.actions import ActionResult, Verification

    now = datetime.now(timezone.utc)

    def result(outcome: str) -> ActionResult:
        return ActionResult(action="restart_service", outcome=outcome, message="m",
                            started_at=now, duration_s=0)

    ok = Verification(action="restart_service", ok=True, message="healthy", at=now)
    bad = Verification(action="restart_service", ok=False, message="still down", at=now)
    assert success_of(None) is None
    assert success_of(result("refused")) is None and success_of(result("dry_run")) is None
    assert success_of(result("failed")) is False
    assert success_of(result("ok")) is True and success_of(result("ok"), ok) is True
    assert success_of(result("ok"), bad) is False


# --------------------------------------------------------------------------- breaker


def test_per_action_budget_and_notices(tmp_path: Path) -> None:
    env = Env(tmp_path, remediation={"budget_per_action_per_hour": 2})
    env.attempt(env.decide(target="web"), success=True)
    env.clock.advance(100)
    env.attempt(env.decide(target="api"), success=True)
    d = env.decide(target="db")
    assert d.verdict == "refused" and d.check == "breaker"
    assert d.notice is not None and d.notice.code == "breaker_open"
    assert d.why == ("refused: breaker open: alert-only; restart_service ran 2 times in the "
                     "last hour (budget_per_action_per_hour 2), next in 59 min")
    assert d.retry_after_s == pytest.approx(3500)
    assert env.policy.breaker_is_open and env.policy.breaker_notice() is None
    assert env.decide(target="db").notice is None
    # Other actions have their own budget; notify_only is alert-only itself.
    assert env.decide("start_service", target="db").verdict == "auto"
    assert env.decide("notify_only", message="x").verdict == "auto"
    env.clock.advance(3500)
    notice = env.policy.breaker_notice()
    assert notice is not None and notice.code == "breaker_closed"
    assert env.policy.breaker_notice() is None
    d = env.decide(target="db")
    assert d.verdict == "auto" and d.notice is None


def test_budget_zero_is_alert_only(tmp_path: Path) -> None:
    env = Env(tmp_path, remediation={"budget_per_hour": 0})
    d = env.decide()
    assert d.check == "breaker" and d.retry_after_s is None
    assert d.why == "refused: breaker open: alert-only; 0 actions in the last hour " \
                    "(budget_per_hour 0)"


# --------------------------------------------------------------------------- persistence


def test_state_file_stores_ages_and_ignores_downtime(tmp_path: Path) -> None:
    env = Env(tmp_path, agents={"healing_cooldown": 60})
    env.attempt(env.decide(), duration=5, success=False)
    env.clock.advance(10)  # the attempt ended 10 s ago
    path = tmp_path / "state.json"
    env.policy.state.path = path
    assert env.policy.save()
    assert not env.policy.save()  # unchanged: nothing written
    assert '"ended_age_s":10.0' in path.read_text()
    # Back up 3 hours later on a rebooted machine: downtime does not count.
    env2 = Env(tmp_path, agents={"healing_cooldown": 60}, mono=7.0,
               state=PolicyState.load(path, monotonic=lambda: 7.0))
    d = env2.decide()
    assert d.check == "cooldown" and d.retry_after_s == 50
    assert env2.policy.stats()[0].failures == 1


def test_damaged_state_file_is_set_aside(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                         ) -> None:
    path = tmp_path / "state.json"
    path.write_text("{not json")
    state = PolicyState.load(path)
    assert state.attempts == [] and state.path == path
    assert (tmp_path / "state.json.damaged").read_text() == "{not json"
    assert "policy state" in caplog.text and "damaged" in caplog.text
    assert PolicyState.load(tmp_path / "missing.json").attempts == []
    with pytest.raises(PolicyError, match="no file"):
        PolicyState().save()


async def test_persist_writes_off_the_loop_and_in_order(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.json"
    env = Env(tmp_path, state=PolicyState(path=path))
    assert not await env.policy.persist()  # nothing changed yet
    env.attempt(env.decide(), success=True)
    assert await env.policy.persist()
    loaded = PolicyState.load(path, monotonic=env.clock)
    assert len(loaded.attempts) == 1 and loaded.strategies[(HOST, "restart_service",
                                                             "service:web")].successes == 1
    assert oct(path.stat().st_mode & 0o777) == "0o600"
