"""Settings: one validated model, layered from defaults < YAML < environment < .env.

We layer the sources ourselves instead of using pydantic-settings' source chain because
users need two things it does not give: every problem attributed to the source it came
from ("in watchkeeper.yaml: ..."), and unknown ``WATCHKEEPER_*`` variables reported as
errors with a "did you mean" hint instead of being silently ignored.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
import threading
import zoneinfo
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from dotenv import dotenv_values
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from watchkeeper.redact import MAX_PATTERNS, pattern_problem

ENV_PREFIX = "WATCHKEEPER_"
#: The command-line client's variables (`watchkeeper status --url/--token`), not settings:
#: exported for the client, they must not make `serve` in the same shell refuse to start.
CLIENT_ENV = frozenset({"WATCHKEEPER_TOKEN", "WATCHKEEPER_URL"})
ENV_NESTING = "__"
DEFAULT_CONFIG_FILE = Path("watchkeeper.yaml")
DEFAULT_DOTENV_FILE = Path(".env")
_WINDOW = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-(([01]\d|2[0-3]):[0-5]\d|24:00)$")



def _non_empty_path(value: Any) -> Any:
    # An empty string would become Path("."), the current directory: never what was meant.
    if isinstance(value, str) and not value.strip():
        raise ValueError("must not be empty")
    return value


#: A path that must be given (an empty string is refused, not read as ".").
GivenPath = Annotated[Path, BeforeValidator(_non_empty_path)]


def _personality(value: Any) -> Any:
    # `personality: off` (False in YAML) or `personality: professional`: the level for short.
    if isinstance(value, bool):
        return {"enabled": value}
    return {"level": value} if isinstance(value, str) else value


def _switch(value: Any) -> Any:
    # `personality: off` (YAML reads it as False) is shorthand for `personality: {enabled: off}`.
    return {"enabled": value} if isinstance(value, bool) else value


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, values are re-validated."""

    # No inf or nan anywhere: an infinite cooldown (YAML .inf, JSON 1e400) would switch off
    # self-healing for good, and a nan compares false with every threshold.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True,
                              allow_inf_nan=False)


class Thresholds(Section):
    """Static warning/critical thresholds in percent."""

    cpu_warning: float = Field(75.0, ge=0, le=100, description="CPU % that raises eyebrows")
    cpu_critical: float = Field(90.0, ge=0, le=100, description="CPU % that triggers panic mode")
    memory_warning: float = Field(85.0, ge=0, le=100)
    memory_critical: float = Field(95.0, ge=0, le=100, description="memory % that makes us sweat")
    swap_warning: float = Field(50.0, ge=0, le=100)
    swap_critical: float = Field(80.0, ge=0, le=100)
    disk_warning: float = Field(85.0, ge=0, le=100)
    disk_critical: float = Field(95.0, ge=0, le=100, description="disk % that's basically full")

    @model_validator(mode="wrap")
    @classmethod
    def _warning_below_critical(cls, data: Any, handler: ModelWrapValidatorHandler[Thresholds]
                                ) -> Thresholds:
        # A wrap, not an "after" validator: that one runs only once every field is valid, so
        # a file with a bad disk_warning would hide its cpu_warning above cpu_critical.
        try:
            model = handler(data)
        except ValidationError as err:
            bad = {str(e["loc"][0]) for e in err.errors() if e["loc"]}
            given = data if isinstance(data, Mapping) else {}
            order = [e for e in (_order_problem(cls, given, family) for family in FAMILIES
                                 if {f"{family}_warning", f"{family}_critical"}.isdisjoint(bad))
                     if e is not None]
            if not order:
                raise
            raise ValidationError.from_exception_data(
                cls.__name__, [*_init_details(err), *order]) from None
        problems = [p for p in (_order_problem(cls, model.model_dump(), f) for f in FAMILIES)
                    if p is not None]
        if problems:
            raise ValidationError.from_exception_data(cls.__name__, problems)
        return model


#: Metric families with a warning and a critical threshold.
FAMILIES = ("cpu", "memory", "swap", "disk")


def _order_problem(model: type[BaseModel], values: Mapping[str, Any], family: str
                   ) -> InitErrorDetails | None:
    """A warning above its critical, from ``values`` (defaults where not given), or None."""
    pair = []
    for name in (f"{family}_warning", f"{family}_critical"):
        raw = values.get(name, model.model_fields[name].default)
        try:
            pair.append(float(raw))
        except (TypeError, ValueError):
            return None  # not a number: its own field error says so
    warn, crit = pair
    if warn <= crit:
        return None
    return InitErrorDetails(
        type=PydanticCustomError("value_error", "{family}_warning ({warn}) must not be above "
                                 "{family}_critical ({crit})",
                                 {"family": family, "warn": f"{warn:g}", "crit": f"{crit:g}"}),
        loc=(), input=dict(values))


def _init_details(err: ValidationError) -> list[InitErrorDetails]:
    """The errors of ``err`` in the form that builds a new ValidationError."""
    return [InitErrorDetails(type=e["type"], loc=e["loc"], input=e["input"],
                             ctx=e.get("ctx", {})) for e in err.errors()]


class AgentsConfig(Section):
    """Agent loop settings shared by every agent."""

    check_interval: float = Field(5.0, gt=0, le=3600, description="seconds between checks")
    check_timeout: float = Field(
        30.0, gt=0, le=3600, description="seconds one check may take before it counts as failed"
    )
    heartbeat_interval: float = Field(15.0, gt=0, le=3600)
    max_concurrent_actions: int = Field(2, ge=0, le=100, description="safety limit on actions")
    healing_cooldown: float = Field(60.0, ge=0, description="seconds between healing attempts")
    restart_backoff_initial: float = Field(1.0, gt=0, description="first supervisor backoff (s)")
    restart_backoff_max: float = Field(60.0, gt=0, description="cap of the supervisor backoff (s)")
    restart_limit: int = Field(
        0, ge=0, description="restarts before the supervisor gives up on an agent (0 = never)"
    )


class SensorConfig(Section):
    """What the SensorAgent collects and how long each collector may take."""

    collector_timeout: float = Field(
        2.0, gt=0, le=60, description="seconds one collector (or one mount) may take"
    )
    top_processes: int = Field(5, ge=0, le=100, description="processes listed per top list")
    ignore_fstypes: tuple[str, ...] = Field(
        (), description="extra filesystem types to skip (pseudo filesystems are always skipped)"
    )
    ignore_mounts: tuple[str, ...] = Field((), description="mount points to skip")
    ignore_interfaces: tuple[str, ...] = Field(("lo",), description="network interfaces to skip")
    log_paths: tuple[GivenPath, ...] = Field(
        (Path("/var/log"),), description="log files, or directories whose files (and their "
        "subdirectories' files) are watched for floods")


class LlmConfig(Section):
    """OpenAI-compatible LLM endpoint; everything works without it."""

    enabled: bool = True
    model: str = "gpt-4o-mini"
    temperature: float = Field(0.3, ge=0, le=2)
    max_tokens: int = Field(500, gt=0, le=100_000)
    base_url: str | None = Field(None, description="e.g. http://127.0.0.1:11434/v1 for Ollama")
    timeout: float = Field(30.0, gt=0, le=600)
    api_key: SecretStr | None = Field(None, description="also read from OPENAI_API_KEY")
    retries: int = Field(2, ge=0, le=10, description="our retries (the client's own are off)")
    max_calls_per_hour: int = Field(20, ge=0, description="call budget")
    max_tokens_per_day: int = Field(200_000, ge=0, description="token budget")
    max_tool_calls: int = Field(10, ge=0, le=50, description="tool calls per incident")
    cache_ttl_s: float = Field(900.0, ge=0, description="reuse an answer for the same incident")
    breaker_failures: int = Field(3, ge=1, description="failures in a row that open the breaker")
    breaker_reset_s: float = Field(300.0, gt=0, description="seconds before trying again")
    mask_identifiers: bool = Field(
        False, description="mask host names, IPs, user names and paths (restored in answers)")
    redact_patterns: tuple[str, ...] = Field((), description="extra regexes to redact")
    log_files: tuple[GivenPath, ...] = Field((), description="log files the LLM may tail")

    @field_validator("redact_patterns")
    @classmethod
    def _patterns_compile(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        # Checked here, so `config validate`, start-up and every reload refuse a bad pattern,
        # instead of the first investigation failing long after.
        if len(patterns) > MAX_PATTERNS:
            raise ValueError(f"at most {MAX_PATTERNS} patterns ({len(patterns)} given)")
        problems = [f"'{p}': {why}" for p in patterns if (why := pattern_problem(p))]
        if problems:
            raise ValueError("; ".join(problems))
        return patterns


#: Metrics that have a threshold rule (keys of ``analyzer.rules``, optionally ``:dimension``).
#: Kept here so a typo is rejected when the configuration loads; analysis/rules.py defines a
#: rule for each of these names and refuses to import if the two disagree.
RULE_METRICS: tuple[str, ...] = (
    "cpu.percent", "cpu.load_per_core", "memory.percent", "memory.swap_percent",
    "disk.percent", "disk.inodes_percent", "net.errors_in", "net.errors_out", "net.drops_in",
    "net.drops_out", "processes.zombies",
)


def llm_enabled(llm: LlmConfig) -> bool:
    """Whether the LLM is on: enabled, and an API key or a base_url (a local server) is set."""
    return llm.enabled and (llm.api_key is not None or bool(llm.base_url))


class RuleOverride(Section):
    """Per-metric (or per metric:dimension) override of a threshold rule."""

    enabled: bool = True
    warning: float | None = None
    critical: float | None = None
    for_s: float | None = Field(None, ge=0)
    hysteresis: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _warning_below_critical(self) -> RuleOverride:
        if self.warning is not None and self.critical is not None \
                and self.warning > self.critical:
            raise ValueError(f"warning ({self.warning:g}) must not be above critical "
                             f"({self.critical:g})")
        return self


class BaselineConfig(Section):
    enabled: bool = True
    warmup_samples: int = Field(120, ge=10, description="samples before anomalies may fire")
    anomaly_score: float = Field(6.0, gt=0, description="robust z-score that is abnormal")
    time_of_day: bool = Field(True, description="hourly bands once there is enough history")


class ForecastConfig(Section):
    horizon_hours: float = Field(6.0, gt=0, description="warn when a disk fills within this")
    critical_hours: float = Field(1.0, gt=0, description="critical when it fills within this")
    window_minutes: float = Field(60.0, gt=0, description="trend window")
    leak_min_minutes: float = Field(30.0, gt=0, description="steady RSS growth this long = leak")
    leak_min_mb_per_hour: float = Field(50.0, gt=0)

    @model_validator(mode="after")
    def _critical_within_horizon(self) -> ForecastConfig:
        if self.critical_hours > self.horizon_hours:
            raise ValueError(f"critical_hours ({self.critical_hours:g}) must not be above "
                             f"horizon_hours ({self.horizon_hours:g})")
        return self


class KnownJob(Section):
    """A process that is allowed to be busy (the nightly backup), by pattern and time window."""

    name: str
    match: str = Field(min_length=1, description="glob on the process name or command line")
    windows: tuple[str, ...] = Field((), description='e.g. "01:00-03:00"; empty = any time')
    timezone: str = Field(
        "local", description='zone of the windows: "local" (this machine), "UTC" or an IANA name')

    @field_validator("windows")
    @classmethod
    def _windows_are_hh_mm(cls, windows: tuple[str, ...]) -> tuple[str, ...]:
        for window in windows:
            if not _WINDOW.match(window):
                raise ValueError(f"window {window!r} is not HH:MM-HH:MM (e.g. 01:00-03:30)")
        return windows

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        if name != "local":
            try:
                zoneinfo.ZoneInfo(name)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
                raise ValueError(f"unknown time zone {name!r}") from None
        return name


class AnalyzerConfig(Section):
    """Rules, baselines, forecasts and alert lifecycle."""

    for_s: float = Field(30.0, ge=0, description="a condition must hold this long to fire")
    hysteresis: float = Field(5.0, ge=0, description="clears only below threshold minus this")
    rules: dict[str, Annotated[RuleOverride, BeforeValidator(_switch)]] = Field(
        default_factory=dict, description='keys like "disk.percent:/var"')
    baseline: Annotated[BaselineConfig, BeforeValidator(_switch)] = BaselineConfig()
    forecast: ForecastConfig = ForecastConfig()
    known_jobs: tuple[KnownJob, ...] = ()
    runaway_minutes: float = Field(10.0, gt=0, description="one process pinned this long")
    runaway_cpu_percent: float = Field(90.0, gt=0)
    log_flood_mb_per_min: float = Field(
        5.0, gt=0, description="a watched log growing this fast for for_s is a flood")
    fork_storm_processes: int = Field(
        100, ge=1, le=1_000_000,
        description="this many more processes than within fork_storm_window_s, for for_s, "
                    "is a fork storm")
    fork_storm_window_s: float = Field(60.0, gt=0, le=3600)
    host_down_after_s: float = Field(
        60.0, gt=0, le=86400,
        description="a fleet's host that sends nothing this long is down (central only)")
    escalate_after_s: float = Field(900.0, gt=0, description="a warning this old becomes critical")
    flap_window_s: float = Field(600.0, gt=0)
    flap_max_transitions: int = Field(4, ge=2, description="more changes than this = flapping")

    @field_validator("rules")
    @classmethod
    def _known_rule_metrics(cls, rules: dict[str, RuleOverride]) -> dict[str, RuleOverride]:
        for key in rules:
            metric = key.split(":", 1)[0]
            if metric not in RULE_METRICS:
                close = difflib.get_close_matches(metric, RULE_METRICS, n=1, cutoff=0.6)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ValueError(f"no threshold rule for {metric!r}{hint}; "
                                 f"rules exist for: {', '.join(RULE_METRICS)}")
        return rules


class StorageConfig(Section):
    """Where history lives and how long."""

    data_dir: Path = Field(
        Path("~/.local/share/watchkeeper"), description="SQLite database and state"
    )
    flush_interval: float = Field(
        1.0, gt=0, le=60, description="seconds between batched writes (the kill -9 loss bound)"
    )
    raw_retention_hours: float = Field(24.0, gt=0, description="keep every snapshot this long")
    rollup_step_s: int = Field(300, ge=10, description="resolution of downsampled history")
    rollup_retention_days: float = Field(30.0, gt=0, description="keep downsampled history")
    event_retention_days: float = Field(30.0, gt=0, description="keep events this long")

    @model_validator(mode="after")
    def _rollup_outlives_raw(self) -> StorageConfig:
        if self.rollup_retention_days * 24 < self.raw_retention_hours:
            raise ValueError("rollup_retention_days must cover at least raw_retention_hours")
        return self

    @property
    def path(self) -> Path:
        return self.data_dir.expanduser()


_SUBJECT_TOKEN = r"[A-Za-z0-9_-]+"


class StreamLimits(Section):
    """Limits of one JetStream stream: the oldest messages go when either is reached."""

    max_age_s: float = Field(gt=0, description="seconds a message is kept")
    max_bytes: int = Field(ge=1024, description="bytes the stream may hold")
    storage: Literal["file", "memory"] = Field(
        "file", description="file: survives a broker restart (with sync_interval: always, "
        "a kill -9 too); memory: faster, lost when the broker stops")


class StreamsConfig(Section):
    """The JetStream streams watchkeeper creates (or updates) when it connects."""

    metrics: StreamLimits = Field(
        StreamLimits(max_age_s=900, max_bytes=1 << 30, storage="memory"),
        description="metrics.<host>: a catch-up buffer, droppable (15 min, 1 GiB, memory)")
    alerts: StreamLimits = Field(
        StreamLimits(max_age_s=30 * 86400, max_bytes=1 << 30),
        description="alerts.<host>: durable (30 days, 1 GiB, file)")
    actions: StreamLimits = Field(
        StreamLimits(max_age_s=90 * 86400, max_bytes=1 << 30),
        description="actions.<host>: durable (90 days, 1 GiB, file)")
    audit: StreamLimits = Field(
        StreamLimits(max_age_s=365 * 86400, max_bytes=1 << 30),
        description="audit.<host>: durable (365 days, 1 GiB, file)")
    events: StreamLimits = Field(
        StreamLimits(max_age_s=7 * 86400, max_bytes=256 << 20),
        description="errors.>, system.>, services.>: durable (7 days, 256 MiB, file)")


class SpoolConfig(Section):
    """A fleet agent's spool: events kept on disk while the broker cannot take them."""

    max_events: int = Field(100_000, ge=100, le=10_000_000,
                            description="past this, the oldest go (snapshots first)")
    max_bytes: int = Field(256 << 20, ge=1 << 20, le=64 << 30,
                           description="past this many bytes, likewise")
    max_age_s: float = Field(86_400.0, gt=0, le=30 * 86_400,
                             description="events older than this go")


class BusConfig(Section):
    """The message bus: in-process (one host, the default) or NATS JetStream (a fleet)."""

    backend: Literal["memory", "nats"] = Field(
        "memory", description="memory: one process, no broker; nats: NATS JetStream")
    url: str = Field("nats://127.0.0.1:4222",
                     pattern=r"^(nats|tls)://[^\s/?#]+(:\d+)?$",
                     description="the nats-server to connect to (nats:// or tls://)")
    subject_prefix: str = Field(
        "wk", pattern=rf"^{_SUBJECT_TOKEN}(\.{_SUBJECT_TOKEN})*$",
        description="first token(s) of every subject (wk.metrics.<host>); stream names "
        "derive from it (WK_ALERTS)")
    connect_timeout_s: float = Field(5.0, gt=0, le=300)
    publish_timeout_s: float = Field(
        5.0, gt=0, le=300, description="seconds to wait for the broker to store an event")
    max_message_bytes: int = Field(
        1 << 20, ge=4096, le=64 << 20, description="largest event sent or accepted")
    max_depth: int = Field(32, ge=4, le=128,
                           description="deepest JSON nesting accepted from the wire")
    duplicate_window_s: float = Field(
        120.0, gt=0, le=86400, description="a re-published event (same Nats-Msg-Id) within "
        "this window is stored once")
    ack_wait_s: float = Field(
        60.0, gt=0, le=3600, description="an event handed to a subscriber and not "
        "acknowledged within this time is delivered again")
    consumer_inactive_s: float = Field(
        7 * 86400.0, gt=0, description="a durable consumer nobody uses this long is deleted "
        "by the broker (then its subscriber starts from new events)")
    replicas: int = Field(1, ge=1, le=5, description="stream replicas (a clustered broker)")
    streams: StreamsConfig = StreamsConfig()
    spool: SpoolConfig = SpoolConfig()
    # Credentials and TLS: checked at start (bus/auth.py credential_problems), not here, so
    # that commands which never connect do not need to read a root-only seed.
    nkey_seed_file: GivenPath | None = Field(
        None, description="this member's nkey seed (watchkeeper fleet add-host writes it, "
        "mode 0600)")
    creds_file: GivenPath | None = Field(None, description="a NATS .creds file (JWT + seed)")
    tls_ca_file: GivenPath | None = Field(
        None, description="CA that signed the broker's cert (default: the system's CAs)")
    tls_cert_file: GivenPath | None = Field(None, description="client certificate (mutual TLS)")
    tls_key_file: GivenPath | None = Field(None, description="client key (mutual TLS)")

    @model_validator(mode="after")
    def _pairs(self) -> BusConfig:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.nkey_seed_file is not None and self.creds_file is not None:
            raise ValueError("give nkey_seed_file or creds_file, not both")
        return self


#: A person's name as the audit log records it: letters, digits, spaces and ``_ . @ + -``.
ACTOR_PATTERN = r"^[A-Za-z0-9_.@+ -]{1,64}$"


#: An allowed Host pattern: a name (optionally ``*.`` before it), an IPv4 or [IPv6] address.
HOST_PATTERN = (r"^(\*|(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]"
                r"([A-Za-z0-9-]*[A-Za-z0-9])?)*\.?|\[[0-9A-Fa-f:.]+\])$")


#: Shortest operator token accepted (api.token and every api.operators token).
MIN_TOKEN_LENGTH = 16


class ApiConfig(Section):
    """Web dashboard and REST API (the `serve` command)."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    token: SecretStr | None = Field(None, description="operator token; generated if unset")
    read_token: SecretStr | None = None
    operators: dict[str, SecretStr] = Field(
        default_factory=dict, description="named operator tokens (name: token): what each "
        "does is recorded under its name")
    allowed_hosts: list[str] = Field(
        default_factory=list, description="more names the API answers to in the Host header "
        "(besides localhost, loopback and bound addresses, and this machine's name when "
        "bound elsewhere): exact names or *.example.com for every subdomain; '*' turns the "
        "check off")
    max_streams: int = Field(64, ge=1, le=10_000,
                             description="live /api/events streams open at once")
    max_connections: int = Field(
        256, ge=8, le=100_000, description="HTTP connections open at once (serve); also "
        "kept below what the file descriptor limit leaves after the agents' share")
    request_timeout_s: float = Field(
        10.0, gt=0, le=300, description="seconds a client has to send a whole request "
        "(head and body) before its connection is closed")
    command_timeout_s: float = Field(
        10.0, gt=0, le=300, description="seconds the API waits for an agent to answer an "
        "operator action (ack, approve, config ...) before it answers 503")

    @field_validator("token")
    @classmethod
    def _strong_token(cls, value: SecretStr | None) -> SecretStr | None:
        # Empty means unset (an empty WATCHKEEPER_API__TOKEN): a token is generated.
        if value is not None and 0 < len(value.get_secret_value()) < MIN_TOKEN_LENGTH:
            raise ValueError(f"a token needs at least {MIN_TOKEN_LENGTH} characters, as "
                             "operator tokens do (leave it unset to have one generated)")
        return value

    @field_validator("operators")
    @classmethod
    def _named_tokens(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        seen: set[str] = set()
        for name, token in value.items():
            if not re.fullmatch(ACTOR_PATTERN, name):
                raise ValueError(f"operator name {name!r}: letters, digits, spaces and "
                                 f"_ . @ + - only, at most 64")
            secret = token.get_secret_value()
            if len(secret) < MIN_TOKEN_LENGTH:
                raise ValueError(f"operator {name!r}: a token needs at least "
                                 f"{MIN_TOKEN_LENGTH} characters")
            if secret in seen:
                raise ValueError(f"operator {name!r}: two operators share one token")
            seen.add(secret)
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _host_patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not re.fullmatch(HOST_PATTERN, pattern):
                raise ValueError(f"allowed host {pattern!r}: a host name, an IP address, "
                                 "*.example.com or '*' (no scheme, port or path)")
        return [p.lower().rstrip(".") if p != "*" else p for p in value]

    @model_validator(mode="after")
    def _streams_leave_room(self) -> ApiConfig:
        if self.max_streams >= self.max_connections:
            raise ValueError(f"max_streams ({self.max_streams}) must be below "
                             f"max_connections ({self.max_connections}), so that open "
                             "streams never take every connection")
        return self


PersonalityLevel = Literal["off", "professional", "witty"]


class PersonalityConfig(Section):
    """How watchkeeper talks in logs and notification text (never in structured data)."""

    enabled: bool = Field(True, description="false is the same as level: off")
    level: PersonalityLevel = Field(
        "witty", description="off: plain text, no emoji; professional: emoji as status marks, "
        "no jokes; witty: one-liners and emoji")

    @model_validator(mode="after")
    def _off_when_disabled(self) -> PersonalityConfig:
        if not self.enabled and self.level != "off":
            return self.model_copy(update={"level": "off"})
        return self


class RouteMatch(Section):
    """Which alerts a notification route takes; every given field must match (globs)."""

    hosts: tuple[str, ...] = Field((), description="globs of host names (empty: any)")
    services: tuple[str, ...] = Field((), description="globs of service names (empty: any)")
    rules: tuple[str, ...] = Field((), description="globs of alert rules (empty: any)")
    labels: dict[str, str] = Field(default_factory=dict,
                                   description="label name -> glob of its value")


class RouteConfig(Section):
    """One notification route: an apprise URL or an Alertmanager, and what it receives."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    url: SecretStr | None = Field(None, description="any apprise URL (a secret: masked)")
    alertmanager: str | None = Field(
        None, description="an Alertmanager's base URL, e.g. http://HOST:9093")
    min_severity: Literal["info", "warning", "critical"] = "warning"
    receive: Literal["all", "escalations"] = Field(
        "all", description="all: the alerts it takes and what is escalated to it; "
        "escalations: only what another route escalates to it")
    match: RouteMatch = RouteMatch()
    group_by: tuple[str, ...] = Field(("host", "rule"),
                                      description="alerts alike in these are one message")
    group_wait_s: float = Field(30.0, ge=0, le=3600,
                                description="wait this long for related alerts to join")
    group_interval_s: float = Field(300.0, ge=0, le=86400,
                                    description="a group's next message at most this often")
    repeat_interval_s: float = Field(14400.0, gt=0, le=7 * 86400,
                                     description="repeat while still firing")
    send_resolved: bool = True
    escalate_to: str | None = Field(
        None, description="route that also gets an alert left unacknowledged past "
        "escalate_after_s, and a failed or needs-a-human remediation")
    escalate_after_s: float = Field(900.0, gt=0, le=7 * 86400)

    @model_validator(mode="after")
    def _one_destination(self) -> RouteConfig:
        if (self.url is None) == (self.alertmanager is None):
            raise ValueError(f"route {self.name!r}: give exactly one of url (an apprise URL) "
                             "or alertmanager (http://HOST:9093)")
        if self.alertmanager is not None and not re.match(r"^https?://[^\s/]+",
                                                          self.alertmanager):
            raise ValueError(f"route {self.name!r}: alertmanager must be an http(s) URL, "
                             "e.g. http://127.0.0.1:9093")
        if self.escalate_to == self.name:
            raise ValueError(f"route {self.name!r} cannot escalate to itself")
        if self.receive == "escalations" and self.alertmanager is not None:
            raise ValueError(f"route {self.name!r}: receive: escalations needs a url route "
                             "(an Alertmanager route is not escalated to; Alertmanager's "
                             "own routes do that)")
        if self.url is not None:
            from watchkeeper.notify.sender import url_problem

            problem = url_problem(self.url.get_secret_value())
            if problem is not None:  # the URL itself is a secret: never in the message
                raise ValueError(f"route {self.name!r}: {problem}")
        return self


class NotifyConfig(Section):
    """Who hears about what: notification routes, and the outbox that delivers to them."""

    routes: tuple[RouteConfig, ...] = ()
    dashboard_url: str | None = Field(
        None, description="link put in messages (default: this server's API address)")
    outbox_max_messages: int = Field(10_000, ge=100, description="undelivered messages kept "
                                     "per route; past it, older ones become one summary")
    outbox_max_age_s: float = Field(86400.0, gt=0, description="undelivered messages older "
                                    "than this become one summary")
    failing_after_s: float = Field(900.0, gt=0, le=7 * 86400, description="a route whose "
                                   "tries have failed this long makes the health degraded")

    @model_validator(mode="after")
    def _routes_consistent(self) -> NotifyConfig:
        names = [r.name for r in self.routes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"route names must be unique: {', '.join(dupes)}")
        for r in self.routes:
            if r.escalate_to is not None and r.escalate_to not in names:
                raise ValueError(f"route {r.name!r} escalates to {r.escalate_to!r}, which is "
                                 f"not a route; routes: {', '.join(names)}")
        escalated = {r.escalate_to for r in self.routes}
        for r in self.routes:
            if r.receive == "escalations" and r.name not in escalated:
                # It would never hear anything: surely not what was meant.
                raise ValueError(f"route {r.name!r} has receive: escalations but no route "
                                 f"escalates to it (set escalate_to: {r.name} on another "
                                 "route)")
        return self


class LoggingConfig(Section):
    """Console and file logging, plus the status file."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    dir: Path = Field(Path("debug_output"), description="agent_system.log and system_status.json")
    max_bytes: int = Field(5_000_000, ge=10_000)
    backups: int = Field(5, ge=0, le=100)
    color: bool = True


class HealthCheck(Section):
    """One health check of a service: exactly one of http, tcp, command, process."""

    http: str | None = Field(None, description="URL that must answer 2xx/3xx")
    tcp: str | None = Field(None, description='"host:port" that must accept a connection')
    command: tuple[str, ...] | None = Field(None, description="argv that must exit 0")
    process: bool | None = Field(None, description="the service's process must be alive")
    timeout_s: float = Field(5.0, gt=0, le=300)

    @model_validator(mode="after")
    def _exactly_one(self) -> HealthCheck:
        kinds = [k for k in ("http", "tcp", "command", "process")
                 if getattr(self, k) not in (None, False)]
        if len(kinds) != 1:
            raise ValueError("a check needs exactly one of http, tcp, command, process "
                             f"(got {', '.join(kinds) or 'none'})")
        if self.http is not None and not re.match(r"^https?://", self.http):
            raise ValueError(f"http check must be an http:// or https:// URL (got {self.http!r})")
        if self.tcp is not None and not re.match(r"^[^\s:]+:\d{1,5}$", self.tcp):
            raise ValueError(f'tcp check must look like "host:port" (got {self.tcp!r})')
        if self.command is not None and not self.command:
            raise ValueError("command check needs an argv list")
        return self


class ServiceConfig(Section):
    """A service to watch and heal (Monit-style for manager: process)."""

    manager: Literal["process", "systemd", "windows", "supervisord"] = "process"
    start: tuple[str, ...] = Field((), description="argv that starts it (manager: process)")
    stop: tuple[str, ...] = Field((), description="argv that stops it (default: SIGTERM)")
    pid_file: GivenPath | None = None
    match: str | None = Field(None, description="glob on the command line of its process")
    unit: str | None = Field(None, description="systemd unit / Windows or supervisord name")
    cwd: GivenPath | None = None
    env: dict[str, str] = Field(default_factory=dict)
    checks: tuple[HealthCheck, ...] = ()
    keep_running: bool = Field(False, description="leave it running when watchkeeper stops")
    supervisord_url: str = "http://127.0.0.1:9001/RPC2"

    @model_validator(mode="after")
    def _startable(self) -> ServiceConfig:
        if self.manager == "process" and not self.start:
            raise ValueError("a service with manager: process needs a start command (argv list)")
        return self


ActionMode = Literal["auto", "approve", "off"]


def _mode_as_written(value: Any) -> Any:
    # YAML 1.1 reads an unquoted off/no/false as False (the README writes `stop_process: off`),
    # and on/yes/true as True, which names no mode: auto and approve differ in who decides.
    if value is False:
        return "off"
    if value is True:
        raise ValueError("on/yes/true does not say who decides: write auto (it runs on its "
                         "own) or approve (it waits for a human)")
    return value


#: A mode as a user writes it in YAML: an unquoted ``off`` is "off".
ModeAsWritten = Annotated[ActionMode, BeforeValidator(_mode_as_written)]

#: The most an LLM's proposal may do: run as the action's mode says (auto), wait for a human
#: (approve), only be previewed (dry_run), or nothing (off).
LlmMode = Literal["auto", "approve", "dry_run", "off"]
LlmModeAsWritten = Annotated[LlmMode, BeforeValidator(_mode_as_written)]


class CleanupRoot(Section):
    """A directory clean_disk may delete old files under (never outside it)."""

    path: GivenPath
    patterns: tuple[str, ...] = ("*.tmp", "*.log.[0-9]*", "*.gz")
    min_age_hours: float = Field(24.0, ge=0)
    max_bytes: int | None = Field(None, gt=0, description="free at most this much per run")


class LogFileRule(Section):
    """A log file rotate_log may truncate or rotate."""

    path: GivenPath
    max_bytes: int = Field(100_000_000, gt=0)
    keep: int = Field(3, ge=0, le=100, description="rotated copies kept (0 = truncate)")


class ScriptConfig(Section):
    """A command run_script may run: argv only, with a time limit."""

    argv: tuple[str, ...]
    timeout_s: float = Field(60.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _has_argv(self) -> ScriptConfig:
        if not self.argv:
            raise ValueError("a script needs an argv list")
        return self


def _default_modes() -> dict[str, ActionMode]:
    # Conservative: only declared services are healed on their own; anything that deletes,
    # kills or runs a command waits for a human until the user says otherwise.
    return {"restart_service": "auto", "start_service": "auto", "stop_process": "approve",
            "clean_disk": "approve", "rotate_log": "approve", "run_script": "approve",
            "notify_only": "auto"}


class MaintenanceWindow(Section):
    """A recurring window in which no action runs on its own (alerts still fire)."""

    window: str = Field(description='"HH:MM-HH:MM", may cross midnight')
    days: tuple[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"], ...] = ()
    timezone: str = "local"

    @field_validator("window")
    @classmethod
    def _window_format(cls, value: str) -> str:
        if not _WINDOW.match(value):
            raise ValueError(f'window must look like "01:00-03:00" (got {value!r})')
        return value


class ProcessesConfig(Section):
    """Which processes watchkeeper may signal (stop_process, and adopting a service's pid)."""

    protect: tuple[str, ...] = Field(
        (), description="process names (globs) never signalled, on top of the built-in list")
    unprotect: tuple[str, ...] = Field(
        (), description="names from the built-in protected list that may be stopped after all")
    users: tuple[str, ...] = Field(
        (), description="users (names, globs or uids; '*': anyone) whose processes "
        "stop_process may stop besides watchkeeper's own effective user")

    @field_validator("unprotect")
    @classmethod
    def _built_in(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from watchkeeper.remediation.process_guard import DEFAULT_PROTECTED

        for name in value:
            if name not in DEFAULT_PROTECTED:
                close = difflib.get_close_matches(name, DEFAULT_PROTECTED, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"{name!r} is not a built-in protected name{hint}; only "
                                 "those can be unprotected")
        return value

    @field_validator("protect", "users")
    @classmethod
    def _not_blank(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not v.strip() for v in value):
            raise ValueError("an empty name matches nothing")
        return value


class RemediationConfig(Section):
    """What the RemediatorAgent may do, and how."""

    dry_run: bool = Field(False, description="decide and log, execute nothing")
    actions: dict[str, ModeAsWritten] = Field(default_factory=_default_modes)
    allow: dict[str, tuple[str, ...]] = Field(
        default_factory=dict, description="per action, globs of targets it may touch")
    startup_grace_s: float = Field(60.0, ge=0, description="no action this soon after start")
    verify_timeout_s: float = Field(30.0, gt=0, description="time for a fix to show")
    stable_window_s: float = Field(
        5.0, ge=0, le=3600, description="a restarted or started service counts as fixed only "
        "once it stayed up and healthy this long (supervisord's startsecs)")
    approval_ttl_s: float = Field(
        3600.0, gt=0, description="a pending approval expires unanswered after this long; "
        "the agent asks again if the problem is still there")
    flap_max_attempts: int = Field(3, ge=1, description="attempts per target per flap window")
    flap_window_s: float = Field(300.0, gt=0)
    backoff_initial_s: float = Field(1.0, ge=0, description="wait before the 2nd attempt")
    backoff_max_s: float = Field(60.0, ge=0)
    budget_per_hour: int = Field(20, ge=0, description="actions per hour, all targets")
    budget_per_action_per_hour: int = Field(10, ge=0)
    maintenance: tuple[MaintenanceWindow, ...] = ()
    cleanup_roots: tuple[CleanupRoot, ...] = ()
    log_files: tuple[LogFileRule, ...] = ()
    scripts: dict[str, ScriptConfig] = Field(default_factory=dict)
    llm_mode: LlmModeAsWritten = Field(
        "approve", description="the most an action the LLM proposes may do, whatever the "
        "action's own mode: approve (a human decides), dry_run (previewed only), off, or "
        "auto (as the action's mode says); an injection in what the LLM reads can steer it")
    llm_actions: dict[str, LlmModeAsWritten] = Field(
        default_factory=dict, description="llm_mode per action (overrides llm_mode)")
    processes: ProcessesConfig = ProcessesConfig()

    @field_validator("allow")
    @classmethod
    def _process_patterns(cls, value: dict[str, tuple[str, ...]]
                          ) -> dict[str, tuple[str, ...]]:
        from watchkeeper.remediation.process_guard import parse_patterns

        parse_patterns(value.get("stop_process", ()))  # ValueError says which entry
        return value

    @field_validator("actions")
    @classmethod
    def _known_actions(cls, value: dict[str, ActionMode]) -> dict[str, ActionMode]:
        _check_action_names(value)
        return {**_default_modes(), **value}

    @field_validator("llm_actions")
    @classmethod
    def _known_llm_actions(cls, value: dict[str, LlmMode]) -> dict[str, LlmMode]:
        _check_action_names(value)
        return value

    def llm_mode_for(self, action: str) -> LlmMode:
        """The most an LLM's proposal of ``action`` may do (llm_actions, else llm_mode)."""
        return self.llm_actions.get(action, self.llm_mode)


def _check_action_names(value: dict[str, Any]) -> None:
    from watchkeeper.remediation.registry import REGISTRY

    unknown = sorted(set(value) - set(REGISTRY))
    if unknown:
        hints = [f"{u} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(
            u, list(REGISTRY), n=1)) else u for u in unknown]
        raise ValueError(f"unknown action(s): {', '.join(hints)}")


class Settings(Section):
    """The whole effective configuration."""

    host_name: str | None = Field(None, description="name this host reports (default: hostname)")
    thresholds: Thresholds = Thresholds()
    analyzer: AnalyzerConfig = AnalyzerConfig()
    agents: AgentsConfig = AgentsConfig()
    sensor: SensorConfig = SensorConfig()
    llm: Annotated[LlmConfig, BeforeValidator(_switch)] = LlmConfig()
    storage: StorageConfig = StorageConfig()
    api: ApiConfig = ApiConfig()
    personality: Annotated[PersonalityConfig, BeforeValidator(_personality)] = PersonalityConfig()
    logging: LoggingConfig = LoggingConfig()
    services: dict[str, ServiceConfig] = Field(default_factory=dict)
    remediation: RemediationConfig = RemediationConfig()
    notify: NotifyConfig = NotifyConfig()
    bus: BusConfig = BusConfig()

    def masked(self) -> dict[str, Any]:
        """JSON-ready dict with every secret replaced by '**********'."""
        data: dict[str, Any] = self.model_dump(mode="json")
        # An Alertmanager URL may carry a user and password, or a token in its query.
        for route in data["notify"]["routes"]:
            if route.get("alertmanager"):
                route["alertmanager"] = _masked_url(route["alertmanager"])
        # nats://user:password@broker:4222
        data["bus"]["url"] = _masked_url(data["bus"]["url"])
        return data


def _masked_url(url: str) -> str:
    """``url`` with its user info and query replaced by '**********'."""
    url = re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@", r"\1**********@", url)
    return re.sub(r"\?[^#]*", "?**********", url, count=1)


# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class ConfigProblem:
    key: str
    reason: str
    source: str | None = None
    suggestion: str | None = None

    def __str__(self) -> str:
        text = f"{self.key}: {self.reason}"
        if self.suggestion:
            text += f" (did you mean '{self.suggestion}'?)"
        if self.source:
            text += f" [from {self.source}]"
        return text


class ConfigError(Exception):
    """Invalid configuration: one problem per line, nothing applied."""

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


# --------------------------------------------------------------------------- layering


def _model_at(path: tuple[str, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = Settings
    for part in path:
        field = model.model_fields.get(part)
        if field is None:
            return None
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            model = ann
        else:
            return None
    return model


def _suggest(path: tuple[str, ...]) -> str | None:
    model = _model_at(path[:-1])
    if model is None:
        return None
    match = difflib.get_close_matches(path[-1], list(model.model_fields), n=1, cutoff=0.6)
    return match[0] if match else None


def _merge(base: dict[str, Any], top: Mapping[str, Any], origin: dict[str, str], src: str,
           prefix: tuple[str, ...] = ()) -> None:
    """Deep-merge ``top`` into ``base``, recording which source set each leaf."""
    for key, value in top.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value, origin, src, path)
        else:
            base[key] = copy.deepcopy(dict(value)) if isinstance(value, Mapping) else value
            origin[".".join(path)] = src


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        parts = dotted.split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[parts[-1]] = value
    return out


def _parse_env_value(raw: str) -> Any:
    # Lists and mappings come as JSON; scalars stay strings and pydantic coerces them.
    text = raw.strip()
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return raw
    return raw


def env_layer(environ: Mapping[str, str | None]) -> dict[str, Any]:
    """``WATCHKEEPER_THRESHOLDS__CPU_WARNING=80`` -> ``{"thresholds": {"cpu_warning": "80"}}``."""
    flat: dict[str, Any] = {}
    for name, value in environ.items():
        if value is None:
            continue
        if name.upper() == "OPENAI_API_KEY" and value:
            flat["llm.api_key"] = value
        elif name.upper().startswith(ENV_PREFIX) and name.upper() not in CLIENT_ENV:
            key = name[len(ENV_PREFIX):].lower().replace(ENV_NESTING, ".")
            if key:
                flat[key] = _parse_env_value(value)
    # An explicit WATCHKEEPER_LLM__API_KEY wins over OPENAI_API_KEY.
    return _nest(flat)


def _problems_from(err: ValidationError, origin: Mapping[str, str]) -> list[ConfigProblem]:
    problems = []
    for e in err.errors():
        loc = tuple(str(p) for p in e["loc"])
        key = ".".join(loc) if loc else "(root)"
        src = None
        for i in range(len(loc), 0, -1):
            src = origin.get(".".join(loc[:i]))
            if src:
                break
        if e["type"] == "extra_forbidden":
            problems.append(ConfigProblem(key, "unknown key", src, _suggest(loc)))
        else:
            msg = e["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
            shown = e.get("input")
            if isinstance(shown, (str, int, float, bool)) and "api_key" not in key \
                    and "token" not in key:
                msg += f" (got {shown!r})"
            problems.append(ConfigProblem(key, msg, src))
    return problems


def json_type_problems(patch: Mapping[str, Any], model: type[BaseModel] | None = None,
                       prefix: tuple[str, ...] = ()) -> list[ConfigProblem]:
    """Values in a JSON patch whose JSON type is not the setting's: ``"5"`` or ``false``
    where a number goes, ``1`` where a string goes. The YAML file and the environment are
    read leniently ("5" is 5 there, as they have only strings); a JSON client says what it
    means, and a JSON ``false`` silently read as a threshold of 0 would do harm. Only types
    are checked here, leaf by leaf; unknown keys, ranges and cross-field rules are
    ``validate``'s."""
    problems: list[ConfigProblem] = []
    for key, value in patch.items():
        field = (model or Settings).model_fields.get(str(key))
        if field is None:
            continue  # validate() names it, with a suggestion
        path = (*prefix, str(key))
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel) and isinstance(value, Mapping):
            problems += json_type_problems(value, kind, path)
            continue
        if kind is None:
            continue
        try:
            TypeAdapter(kind).validate_json(json.dumps(value), strict=True)
        except ValidationError as err:
            problems += [ConfigProblem(".".join(path), reason, "api") for reason in
                         _problems_from_strict(err, value)]
        except (TypeError, ValueError):  # not JSON at all: validate() says why
            continue
    return problems


def _problems_from_strict(err: ValidationError, value: Any) -> list[str]:
    # One line per distinct reason; the value is shown only where it is a plain scalar.
    reasons = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"])
        text = f"{where}: {e['msg']}" if where else e["msg"]
        if not where and isinstance(value, (str, int, float, bool)):
            text += f" (got {json.dumps(value)})"
        if text not in reasons:
            reasons.append(text)
    return reasons


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML config file; a syntax error or a non-mapping is a ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigProblem(str(path), f"cannot read file: {exc.strerror}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigProblem(
            str(path), f"not a UTF-8 text file (byte {exc.start}); a YAML file is expected")]
        ) from exc
    # Imported here: a host configured by environment only never loads PyYAML (~0.9 MB).
    import yaml

    try:
        data = yaml.safe_load(text)
    except RecursionError:  # PyYAML composes nested nodes recursively
        raise ConfigError([ConfigProblem(
            str(path), "invalid YAML: nested too deeply (a configuration is a few levels "
                       "deep)")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([ConfigProblem(str(path), f"invalid YAML{where}: {problem}")]) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem(str(path), "top level must be a mapping of sections")])
    return data


def load_settings(
    config_file: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    dotenv_file: Path | None = DEFAULT_DOTENV_FILE,
    search_default: bool = True,
) -> Settings:
    """Build the effective settings: defaults < YAML < environment < .env.

    ``config_file`` None means ./watchkeeper.yaml if present (when ``search_default``).
    Raises ConfigError listing every problem, each with its source.
    """
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    layers: list[tuple[str, dict[str, Any]]] = []
    if config_file is None and search_default and DEFAULT_CONFIG_FILE.is_file():
        config_file = DEFAULT_CONFIG_FILE
    if config_file is not None:
        layers.append((str(config_file), read_yaml(Path(config_file))))
    layers.append(("environment", env_layer(os.environ if environ is None else environ)))
    if dotenv_file is not None and Path(dotenv_file).is_file():
        layers.append((str(dotenv_file), env_layer(dotenv_values(dotenv_file))))
    try:
        for src, data in layers:
            _merge(merged, data, origin, src)
        return validate(merged, origin)
    except RecursionError:  # loadable, yet too deep to merge or validate
        raise ConfigError([ConfigProblem(str(config_file or "configuration"),
                                         "nested too deeply (a configuration is a few "
                                         "levels deep)")]) from None


def with_patch(settings: Settings, patch: Mapping[str, Any], *, source: str) -> Settings:
    """``settings`` with ``patch`` deep-merged in, validated (ConfigError names ``source``)."""
    merged = _plain(settings)
    origin: dict[str, str] = {}
    _merge(merged, patch, origin, source)
    return validate(merged, origin)


def validate(data: Mapping[str, Any], origin: Mapping[str, str] | None = None) -> Settings:
    """Validate a plain mapping into Settings, or raise ConfigError."""
    try:
        return Settings.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_problems_from(err, origin or {})) from None


def _plain(settings: Settings) -> dict[str, Any]:
    """Settings as a dict that validates back to the same settings (secrets unmasked)."""
    data = settings.model_dump(mode="python")

    def unwrap(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: unwrap(v) for k, v in node.items()}
        if isinstance(node, SecretStr):
            return node.get_secret_value()
        return node

    result: dict[str, Any] = unwrap(data)
    return result


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for key in sorted(set(a) | set(b)):
            out += _diff(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]


Listener = Callable[[Settings, tuple[str, ...]], None]

#: Settings read only when the process starts (socket and tokens, open files, log setup, the
#: host's name on every event and stored row): a live change to them would not happen.
START_ONLY: tuple[str, ...] = ("api", "storage", "logging", "host_name", "bus")


class ConfigStore:
    """Holds the effective settings; the one place they change at run time.

    Agents read ``store.current`` at the start of every cycle, so an accepted update is
    applied on their next cycle without a restart. An invalid update raises ConfigError and
    changes nothing.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._version = 1
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []

    @property
    def current(self) -> Settings:
        return self._settings

    @property
    def version(self) -> int:
        return self._version

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def update(self, patch: Mapping[str, Any], *, source: str = "update") -> tuple[str, ...]:
        """Deep-merge ``patch`` into the current settings, validate, and swap atomically.

        Returns the dotted keys that changed. Raises ConfigError (nothing applied).
        """
        with self._lock:
            new = with_patch(self._settings, patch, source=source)
            changed = self._swap(new)
        self._notify(new, changed)
        return changed

    def replace(self, settings: Settings, *, keep: Sequence[str] = ()) -> tuple[str, ...]:
        """Swap in settings read anew (a reload), but for the top-level fields in ``keep``,
        which stay as they are. Returns the dotted keys that changed."""
        with self._lock:
            new = settings.model_copy(update={k: getattr(self._settings, k) for k in keep})
            changed = self._swap(new)
        self._notify(new, changed)
        return changed

    def _swap(self, new: Settings) -> tuple[str, ...]:
        """Make ``new`` current if it differs (the lock held); the dotted keys that changed."""
        changed = tuple(_diff(_plain(self._settings), _plain(new)))
        if changed:
            self._settings = new
            self._version += 1
        return changed

    def _notify(self, new: Settings, changed: tuple[str, ...]) -> None:
        if changed:
            for listener in list(self._listeners):
                listener(new, changed)
