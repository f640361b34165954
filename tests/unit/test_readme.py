"""The README's configuration reference covers every key the settings model has."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import BaseModel

from watchkeeper.config import Settings, validate

README = Path(__file__).resolve().parents[2] / "README.md"


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += _keys(ann, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_every_setting_is_documented() -> None:
    text = README.read_text()
    undocumented = []
    for key in _keys(Settings):
        section, _, leaf = key.rpartition(".")
        # A row may document siblings together: `thresholds.cpu_warning` / `cpu_critical`.
        # A mapping of named entries is documented as `services.<name>.field`.
        if f"`{key}`" not in text and f"`{key}.<" not in text and not (
                section and f"`{leaf}`" in text and f"`{section}." in text):
            undocumented.append(key)
    assert undocumented == []


def test_readme_states_the_two_setup_commands() -> None:
    text = README.read_text()
    assert ".venv/bin/pip install -e . && .venv/bin/watchkeeper serve" in text
    assert "./scripts/test" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert "./scripts/test" in ci


def test_every_yaml_example_is_a_valid_configuration_read_as_written() -> None:
    """Copied as it is (unquoted `off` included), each example loads and means what it says."""
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 3
    settings = [validate(yaml.safe_load(block)) for block in blocks]
    modes = next(s.remediation.actions for s in settings
                 if "remediation" in s.model_fields_set
                 and "actions" in s.remediation.model_fields_set)
    assert (modes["restart_service"], modes["stop_process"], modes["run_script"]) == (
        "auto", "approve", "off")
