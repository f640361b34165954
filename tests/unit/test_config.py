"""Configuration: layering, validation messages, masking, live updates."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from watchkeeper.config import (
    ConfigError,
    ConfigStore,
    Settings,
    json_type_problems,
    load_settings,
    validate,
)


def test_defaults_match_the_documented_values() -> None:
    s = Settings()
    assert (s.thresholds.cpu_warning, s.thresholds.cpu_critical) == (75, 90)
    assert (s.thresholds.memory_warning, s.thresholds.memory_critical) == (85, 95)
    assert (s.thresholds.disk_warning, s.thresholds.disk_critical) == (85, 95)
    assert s.agents.check_interval == 5
    assert s.agents.max_concurrent_actions == 2
    assert s.agents.healing_cooldown == 60
    assert (s.llm.temperature, s.llm.max_tokens, s.llm.timeout) == (0.3, 500, 30)
    assert (s.api.host, s.api.port) == ("127.0.0.1", 8000)
    assert s.personality.enabled is True


def test_layers_apply_lowest_first(tmp_path: Path) -> None:
    yaml_file = tmp_path / "wk.yaml"
    yaml_file.write_text("thresholds:\n  cpu_warning: 60\n  cpu_critical: 70\n"
                         "agents:\n  check_interval: 2\n")
    dotenv = tmp_path / ".env"
    dotenv.write_text("WATCHKEEPER_THRESHOLDS__CPU_CRITICAL=80\n")
    env = {"WATCHKEEPER_THRESHOLDS__CPU_CRITICAL": "75", "WATCHKEEPER_AGENTS__CHECK_INTERVAL": "3"}
    s = load_settings(yaml_file, environ=env, dotenv_file=dotenv)
    assert s.thresholds.cpu_warning == 60  # YAML over defaults
    assert s.agents.check_interval == 3  # environment over YAML
    assert s.thresholds.cpu_critical == 80  # .env over environment
    assert s.thresholds.memory_warning == 85  # default kept


def test_default_yaml_file_is_found_in_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "watchkeeper.yaml").write_text("personality:\n  enabled: false\n")
    assert load_settings(environ={}).personality.enabled is False


def test_openai_key_is_read_and_masked() -> None:
    s = load_settings(environ={"OPENAI_API_KEY": "sk-test-123456"}, dotenv_file=None,
                      search_default=False)
    assert s.llm.api_key is not None
    assert s.llm.api_key.get_secret_value() == "sk-test-123456"
    shown = repr(s.masked())
    assert "sk-test" not in shown and "**********" in shown


def test_unknown_key_gets_a_did_you_mean(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("thresholds:\n  cpu_warnign: 50\nagent:\n  check_interval: 1\n")
    with pytest.raises(ConfigError) as info:
        load_settings(f, environ={}, dotenv_file=None)
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("thresholds.cpu_warnign: unknown key (did you mean 'cpu_warning'?)")
    assert str(f) in lines[0]
    assert "agent: unknown key (did you mean 'agents'?)" in lines[1]


def test_bad_values_name_key_reason_and_source(tmp_path: Path) -> None:
    env = {"WATCHKEEPER_AGENTS__CHECK_INTERVAL": "soon", "WATCHKEEPER_API__PORT": "70000"}
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ=env, dotenv_file=None, search_default=False)
    text = str(info.value)
    assert "agents.check_interval: Input should be a valid number" in text
    assert "api.port: Input should be less than or equal to 65535" in text
    assert text.count("[from environment]") == 2


def test_warning_above_critical_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"cpu_warning .* must not be above cpu_critical"):
        load_settings(None, environ={"WATCHKEEPER_THRESHOLDS__CPU_WARNING": "95"},
                      dotenv_file=None, search_default=False)


def test_invalid_yaml_syntax_and_shape(tmp_path: Path) -> None:
    f = tmp_path / "broken.yaml"
    f.write_text("thresholds: [1, 2\n")
    with pytest.raises(ConfigError, match="invalid YAML at line"):
        load_settings(f, environ={}, dotenv_file=None)
    f.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_settings(f, environ={}, dotenv_file=None)
    with pytest.raises(ConfigError, match="cannot read file"):
        load_settings(tmp_path / "missing.yaml", environ={}, dotenv_file=None)


def test_env_lists_parse_as_json() -> None:
    s = load_settings(None, environ={"WATCHKEEPER_SENSOR__IGNORE_MOUNTS": '["/boot", "/snap"]'},
                      dotenv_file=None, search_default=False)
    assert s.sensor.ignore_mounts == ("/boot", "/snap")


def test_update_applies_valid_change_and_reports_keys() -> None:
    store = ConfigStore(Settings())
    seen: list[tuple[str, ...]] = []
    store.subscribe(lambda _s, changed: seen.append(changed))
    changed = store.update({"thresholds": {"cpu_warning": 70}, "agents": {"check_interval": 1}})
    assert changed == ("agents.check_interval", "thresholds.cpu_warning")
    assert store.current.thresholds.cpu_warning == 70
    assert store.version == 2
    assert seen == [changed]
    assert store.update({"thresholds": {"cpu_warning": 70}}) == ()  # no-op is not a change


def test_replace_swaps_everything_but_what_it_keeps() -> None:
    store = ConfigStore(validate({"services": {"web": {"start": ["a"]}, "db": {"start": ["b"]}},
                                  "api": {"port": 8000}}))
    seen: list[tuple[str, ...]] = []
    store.subscribe(lambda _s, changed: seen.append(changed))
    fresh = validate({"services": {"web": {"start": ["a"]}}, "api": {"port": 9000},
                      "thresholds": {"cpu_warning": 70}})
    changed = store.replace(fresh, keep=("api",))
    # A reload removes what the file no longer has (a patch could not), and keeps "api".
    assert list(store.current.services) == ["web"]
    assert store.current.thresholds.cpu_warning == 70 and store.current.api.port == 8000
    assert changed == ("services.db", "thresholds.cpu_warning")
    assert not [k for k in changed if k.startswith("api")]
    assert seen == [changed] and store.version == 2
    assert store.replace(fresh, keep=("api",)) == () and store.version == 2


@pytest.mark.parametrize(("patch", "problem"), [
    ({"thresholds": {"cpu_warning": "80"}},
     'thresholds.cpu_warning: Input should be a valid number (got "80") [from api]'),
    ({"thresholds": {"cpu_warning": False}},
     "thresholds.cpu_warning: Input should be a valid number (got false) [from api]"),
    ({"personality": {"enabled": "false"}},
     'personality.enabled: Input should be a valid boolean (got "false") [from api]'),
    ({"agents": {"max_concurrent_actions": 2.5}},
     "agents.max_concurrent_actions: Input should be a valid integer (got 2.5) [from api]"),
    ({"remediation": {"actions": {"stop_process": 1}}},
     "remediation.actions: stop_process: Input should be 'auto', 'approve' or 'off' "
     "[from api]"),
    ({"thresholds": 5}, "thresholds: Input should be an object (got 5) [from api]"),
])
def test_json_patches_are_typed_strictly(patch: dict[str, Any], problem: str) -> None:
    # YAML and the environment only have strings; a JSON client says what it means, and a
    # false read as a threshold of 0 would page everyone.
    assert [str(p) for p in json_type_problems(patch)] == [problem]


def test_json_patches_of_the_right_types_pass() -> None:
    assert json_type_problems({
        "thresholds": {"cpu_warning": 80, "cpu_critical": 95.5},  # an int is a number
        "agents": {"check_interval": 1},
        "remediation": {"actions": {"stop_process": "approve"}, "dry_run": True,
                        "maintenance": [{"window": "02:00-04:00", "days": ["sat"]}]},
        "analyzer": {"rules": {"cpu": {"warning": 80}}},
        "sensor": {"ignore_mounts": ["/boot"]},
        "unknown_section": {"x": "left to validate(), which suggests a name"},
    }) == []


@pytest.mark.parametrize(("operators", "problem"), [
    ({"alice": "short"}, "operator 'alice': a token needs at least 16 characters"),
    ({"alice": "x" * 20, "bob": "x" * 20}, "operator 'bob': two operators share one token"),
    ({"al;ice": "x" * 20}, "operator name 'al;ice': letters, digits, spaces"),
])
def test_named_operator_tokens_are_checked(operators: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(problem)):
        validate({"api": {"operators": operators}})


def test_invalid_update_changes_nothing() -> None:
    store = ConfigStore(Settings())
    before = store.current
    with pytest.raises(ConfigError) as info:
        store.update({"thresholds": {"cpu_warning": 99, "cpu_critcal": 1}}, source="api")
    text = str(info.value)
    assert "did you mean 'cpu_critical'" in text and "[from api]" in text
    assert store.current is before and store.version == 1


def test_update_keeps_secrets() -> None:
    store = ConfigStore(load_settings(None, environ={"OPENAI_API_KEY": "sk-keep"},
                                      dotenv_file=None, search_default=False))
    store.update({"llm": {"model": "other"}})
    key = store.current.llm.api_key
    assert key is not None and key.get_secret_value() == "sk-keep"


@pytest.mark.parametrize("section", [
    {"remediation": {"log_files": [{"path": ""}]}},
    {"remediation": {"cleanup_roots": [{"path": "  "}]}},
    {"llm": {"log_files": [""]}},
])
def test_an_empty_path_is_refused_not_read_as_the_current_directory(
        section: dict[str, Any]) -> None:
    store = ConfigStore(Settings())
    with pytest.raises(ConfigError, match="must not be empty"):
        store.update(section)
    assert store.version == 1


def test_every_problem_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    """A bad field does not hide a warning above its critical elsewhere in the section."""
    path = tmp_path / "wk.yaml"
    path.write_text("thresholds:\n  cpu_warning: 95\n  cpu_critical: 70\n  disk_warning: 150\n"
                    "  memory_warning: 99\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={}, dotenv_file=None)
    assert [str(p) for p in info.value.problems] == [
        f"thresholds.disk_warning: Input should be less than or equal to 100 (got 150) "
        f"[from {path}]",
        f"thresholds: cpu_warning (95) must not be above cpu_critical (70) [from {path}]",
        f"thresholds: memory_warning (99) must not be above memory_critical (95) "
        f"[from {path}]",
    ]


def test_a_pair_with_a_bad_member_is_not_also_reported_as_out_of_order() -> None:
    with pytest.raises(ConfigError) as info:
        validate({"thresholds": {"disk_warning": "lots", "disk_critical": 50}})
    assert [p.key for p in info.value.problems] == ["thresholds.disk_warning"]


def test_modes_are_read_as_the_readme_writes_them(tmp_path: Path) -> None:
    """YAML 1.1 reads an unquoted `off` as false: it is the mode "off"; `on` names no mode."""
    path = tmp_path / "wk.yaml"
    path.write_text("remediation:\n  actions:\n    stop_process: off\n    clean_disk: no\n"
                    "personality: off\nanalyzer:\n  baseline: off\n  rules:\n"
                    "    disk.percent:/boot: off\n")
    s = load_settings(path, environ={}, dotenv_file=None)
    assert s.remediation.actions["stop_process"] == "off"
    assert s.remediation.actions["clean_disk"] == "off"
    assert s.remediation.actions["restart_service"] == "auto"  # the defaults stay
    assert s.personality.enabled is False
    assert s.analyzer.baseline.enabled is False
    assert s.analyzer.rules["disk.percent:/boot"].enabled is False
    path.write_text("remediation:\n  actions:\n    stop_process: on\n")
    with pytest.raises(ConfigError, match=r"remediation\.actions\.stop_process: on/yes/true "
                                          r"does not say who decides: write auto .* or approve"):
        load_settings(path, environ={}, dotenv_file=None)
    env = {"WATCHKEEPER_REMEDIATION__ACTIONS__STOP_PROCESS": "off"}
    assert load_settings(None, environ=env, dotenv_file=None, search_default=False
                         ).remediation.actions["stop_process"] == "off"


@pytest.mark.parametrize("token", ["short", "x" * 15])
def test_the_shared_api_token_is_as_strong_as_named_ones(token: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate({"api": {"token": token}})
    (problem,) = info.value.problems
    assert problem.key == "api.token"
    assert "a token needs at least 16 characters" in str(problem)
    assert token not in str(problem)  # a secret is never echoed
    assert validate({"api": {"token": "x" * 16}}).api.token is not None
    assert validate({"api": {"token": ""}}).api.token is not None  # empty: generated
