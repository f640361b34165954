"""The README's configuration reference covers every key the settings model has."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from watchkeeper.config import Settings

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
