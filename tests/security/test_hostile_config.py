"""Security corpus: hostile configuration input (issue 11's config classes).

Each case is a value a token holder or a hand-edited file could send. The promise: a clear
message, exit 2 or a 422, and nothing changed or saved. Grow this corpus with each class.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from watchkeeper.api.routes.config import overrides_path
from watchkeeper.config import ConfigError, validate

from ..integration.test_api_harness import api_settings, serve_api
from ..integration.test_cli import wk as cli

#: Non-finite numbers in every form they arrive in: an infinite healing_cooldown switched
#: self-healing off for good, and a nan threshold compares false with every value.
NON_FINITE = [float("inf"), float("-inf"), float("nan"), "inf", "-Infinity", "NaN", "1e400"]


@pytest.mark.parametrize("value", NON_FINITE)
@pytest.mark.parametrize("key", [("agents", "healing_cooldown"), ("thresholds", "cpu_warning"),
                                 ("remediation", "backoff_max_s"), ("analyzer", "for_s")])
def test_non_finite_numbers_are_refused_everywhere(key: tuple[str, str], value: object) -> None:
    with pytest.raises(ConfigError, match=f"{key[0]}.{key[1]}"):
        validate({key[0]: {key[1]: value}})


def test_a_yaml_inf_is_refused_by_config_validate(tmp_path: Path) -> None:
    (tmp_path / "wk.yaml").write_text("agents:\n  healing_cooldown: .inf\n"
                                      "thresholds:\n  cpu_warning: .nan\n")
    result = cli(tmp_path, "config", "validate", "wk.yaml")
    assert result.returncode == 2
    assert "agents.healing_cooldown" in result.stderr + result.stdout
    assert "thresholds.cpu_warning" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("content", [b"\xff\xfe\x00a\x00", b"agents: {}\n\x80\x81"])
def test_a_binary_config_file_is_a_message_and_exit_2(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "wk.yaml").write_bytes(content)
    for args in (("config", "validate", "wk.yaml"), ("--config", "wk.yaml", "config", "show")):
        result = cli(tmp_path, *args)
        assert result.returncode == 2, result.stderr
        assert "not a UTF-8 text file" in result.stderr + result.stdout
        assert "Traceback" not in result.stderr


async def test_hostile_config_patches_are_422_and_change_nothing(tmp_path: Path) -> None:
    settings = api_settings(tmp_path)
    deep = "[" * 3000 + "]" * 3000
    nested = {"thresholds": {"cpu_warning": 70}}
    for _ in range(40):
        nested = {"analyzer": {"rules": nested}}
    bodies = [
        '{"agents": {"healing_cooldown": 1e400}}',
        '{"agents": {"healing_cooldown": Infinity}}',
        '{"thresholds": {"cpu_warning": NaN}}',
        '{"analyzer": ' + deep + "}",
        json.dumps(nested),
    ]
    async with serve_api(settings) as api:
        before = api.runtime.config.version
        for body in bodies:
            r = await api.client.patch("/api/config", headers={
                **api.auth(), "Content-Type": "application/json"}, content=body)
            assert r.status_code == 422, (body[:60], r.status_code, r.text[:200])
            assert isinstance(r.json()["detail"], list)
        assert api.runtime.config.version == before
        assert api.runtime.config.current.agents.healing_cooldown == 60
        assert not overrides_path(settings).exists()


async def test_null_or_a_replaced_section_cannot_reach_the_config_file_only_keys(
        tmp_path: Path) -> None:
    """A null resets a key to its default, and a non-mapping section value replaces the
    section: both would send the LLM traffic (with the host's data) to the default endpoint,
    or drop the clean-up roots, through the operator token. Refused like naming the key."""
    settings = api_settings(tmp_path, llm={"enabled": False, "base_url": "http://127.0.0.1:9/v1"})
    async with serve_api(settings) as api:
        before = api.runtime.config.version
        for patch, key in (({"llm": {"base_url": None}}, "llm.base_url"),
                           ({"llm": {"api_key": None}}, "llm.api_key"),
                           ({"llm": "on"}, "llm.base_url"),
                           ({"llm": True}, "llm.base_url"),
                           ({"remediation": {"cleanup_roots": None}}, "remediation.cleanup_roots"),
                           ({"remediation": None}, "remediation.scripts"),
                           ({"services": None}, "services")):
            r = await api.client.patch("/api/config", headers=api.auth(), json=patch)
            assert r.status_code == 422, (patch, r.text)
            assert any(line.startswith(key) for line in r.json()["detail"]), r.text
        assert api.runtime.config.version == before
        assert api.runtime.config.current.llm.base_url == "http://127.0.0.1:9/v1"
        assert not overrides_path(settings).exists()
        # Turning the LLM off through the API still works, by its own key.
        r = await api.client.patch("/api/config", headers=api.auth(),
                                   json={"llm": {"enabled": True}})
        assert r.status_code == 200, r.text
        assert api.runtime.config.current.llm.base_url == "http://127.0.0.1:9/v1"


@pytest.mark.parametrize("patch", [
    {"remediation": {"llm_mode": "auto"}},
    {"remediation": {"llm_actions": {"stop_process": "auto"}}},
    {"remediation": {"llm_mode": None}},
    {"remediation": {"allow": {}}},
    {"remediation": {"allow": {"stop_process": ["*"]}}},
], ids=["llm-acts-alone", "llm-stops-processes-alone", "llm-mode-nulled-to-default",
        "allow-list-emptied", "allow-list-widened"])
async def test_the_operator_token_cannot_let_the_llm_act_alone_or_widen_the_allow_list(
        tmp_path: Path, patch: dict[str, object]) -> None:
    """What the LLM may run without a human, and which targets an action may touch, change
    only in the config file: a stolen operator token must not turn a prompt injection into
    an action nobody approves, nor widen what may be killed."""
    settings = api_settings(tmp_path, remediation={
        "llm_mode": "dry_run", "allow": {"stop_process": ["name:wk-victim"]}})
    async with serve_api(settings) as api:
        before = api.runtime.config.version
        r = await api.client.patch("/api/config", headers=api.auth(), json=patch)
        assert r.status_code == 422, r.text
        assert "decides what runs" in r.json()["detail"][0], r.text
        assert api.runtime.config.version == before
        rem = api.runtime.config.current.remediation
        assert rem.llm_mode == "dry_run" and rem.llm_actions == {}
        assert rem.allow == {"stop_process": ("name:wk-victim",)}
        assert not overrides_path(settings).exists()


@pytest.mark.parametrize("text", ["a: " + "[" * 5000 + "]" * 5000,
                                  "thresholds:\n" + "".join(f"{' ' * (i + 1)}k{i}:\n"
                                                            for i in range(900)) + " " * 902
                                  + "x: 1\n"],
                         ids=["5000-nested-flow-lists", "900-nested-block-mappings"])
def test_a_config_file_nested_too_deeply_is_a_clear_error(tmp_path: Path, text: str) -> None:
    from watchkeeper.config import ConfigError, load_settings

    path = tmp_path / "deep.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_settings(path, environ={}, dotenv_file=None)
    assert len(str(err.value)) < 2000
