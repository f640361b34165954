"""The effective configuration (masked) and its validated, persisted live update."""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Depends, HTTPException, Request

from watchkeeper.agents.commands import RUNTIME
from watchkeeper.api.auth import require_operator, require_read
from watchkeeper.api.routes.deps import (
    ActorDep,
    HostQuery,
    RuntimeDep,
    ask_agent,
    from_agent,
    target_host,
)
from watchkeeper.api.schemas import ConfigBody, ConfigUpdated, ErrorBody
from watchkeeper.config import (
    START_ONLY,
    Settings,
    read_yaml,
)
from watchkeeper.runtime import Runtime

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/config", tags=["config"])

OVERRIDES_FILE_NAME = "config_overrides.yaml"

#: Settings that decide what runs (service start/stop commands and command checks, scripts),
#: what may be deleted, truncated or killed (which processes are protected, whose processes
#: may be stopped, which targets an action may touch), whether what the LLM proposes may run
#: without a human (an injection in what it reads can steer it), and what leaves the host
#: (where the LLM is and its key, which files it may read, how much is masked, where
#: notifications go). Through the API they would turn the operator token into a way to run
#: anything as watchkeeper's user, or to send the host's data and the API key elsewhere;
#: they change only in the config file, on the host, read again on SIGHUP.
HOST_ONLY: tuple[tuple[str, ...], ...] = (
    ("services",), ("remediation", "scripts"), ("remediation", "cleanup_roots"),
    ("remediation", "log_files"), ("remediation", "processes"), ("remediation", "allow"),
    ("remediation", "llm_mode"), ("remediation", "llm_actions"), ("llm", "base_url"),
    ("llm", "api_key"),
    ("llm", "log_files"), ("llm", "mask_identifiers"), ("llm", "redact_patterns"),
    ("notify", "routes"), ("notify", "dashboard_url"))


def _reaches(patch: Mapping[str, Any], path: tuple[str, ...]) -> int:
    """How far ``patch`` reaches along ``path``: len(path) when it names the key itself, even
    as null (a null is a value: it resets the key to its default), the index of an ancestor
    it replaces with a non-mapping (``{"llm": "on"}`` replaces the whole section, the
    host-only keys with it), -1 when it leaves the key alone."""
    node: Any = patch
    for i, part in enumerate(path):
        if part not in node:
            return -1
        node = node[part]
        if i < len(path) - 1 and not isinstance(node, Mapping):
            return i
    return len(path)


def host_only_keys(patch: Mapping[str, Any]) -> list[str]:
    """The dotted HOST_ONLY keys a patch would change (named, nulled, or replaced with their
    section)."""
    return [".".join(path) for path in HOST_ONLY if _reaches(patch, path) >= 0]


def without_host_only(patch: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``patch`` that changes no HOST_ONLY key (such keys, or the non-mapping value
    that would replace their section, are left out)."""
    out = copy.deepcopy(dict(patch))
    for path in HOST_ONLY:
        reach = _reaches(out, path)
        if reach < 0:
            continue
        cut = path[:reach + 1] if reach < len(path) else path
        node: Any = out
        for part in cut[:-1]:
            node = node[part]
        node.pop(cut[-1], None)
    return out


def overrides_path(settings: Settings) -> Path:
    """Where updates made through the API are kept, to be applied again at the next start."""
    return settings.storage.path / OVERRIDES_FILE_NAME


def load_overrides(settings: Settings) -> dict[str, Any]:
    """The saved API updates ({} if none); a broken file is a ConfigError. Settings only the
    config file may hold (written there by an older version) are left out, and said so."""
    path = overrides_path(settings)
    data = read_yaml(path) if path.is_file() else {}
    ignored = host_only_keys(data)
    if ignored:
        log.warning("%s: ignoring %s (these change only in the config file)", path,
                    ", ".join(ignored))
        data = without_host_only(data)
    return data


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value
    return base


def save_overrides(settings: Settings, patch: Mapping[str, Any]) -> None:
    """Merge ``patch`` into the overrides file, atomically and readable by the owner only."""
    path = overrides_path(settings)
    data = _deep_merge(load_overrides(settings), patch)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yaml.safe_dump(data, handle, sort_keys=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _body(runtime: Runtime) -> dict[str, Any]:
    return runtime.config.current.masked()


_HOST_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "no such host reports here"},
    502: {"model": ErrorBody, "description": "the host's answer is not valid"},
    503: {"model": ErrorBody, "description": "the host does not answer"},
    504: {"model": ErrorBody, "description": "the host did not answer in time"}}


@router.get("", response_model=ConfigBody, dependencies=[Depends(require_read)],
            responses=_HOST_ERRORS)
async def get_config(runtime: RuntimeDep, host: HostQuery = None) -> ConfigBody:
    """The effective configuration, every secret masked (on a fleet's central, ``host=``:
    that host's, as its agent has it)."""
    remote = target_host(runtime, host)
    if remote is None:
        return ConfigBody(version=runtime.config.version, config=_body(runtime))
    done = await ask_agent(runtime, RUNTIME, "config", actor="api", role="viewer",
                           host=remote)
    return from_agent(ConfigBody, done, remote)


#: The patch's schema, named in components (and filled in by create_app): every settings
#: section but the restart-only ones, with nothing required at any level.
PATCH_SCHEMA_REF = {"$ref": "#/components/schemas/ConfigPatch"}


def config_patch_schemas() -> dict[str, Any]:
    """OpenAPI component schemas: ConfigPatch and the settings sections it refers to."""
    full = Settings.model_json_schema(ref_template="#/components/schemas/Settings{model}")
    defs = {f"Settings{name}": schema for name, schema in full.pop("$defs", {}).items()}
    for name in START_ONLY:
        full["properties"].pop(name, None)
    for path in HOST_ONLY:
        node = full if len(path) == 1 else defs[
            full["properties"][path[0]]["$ref"].rsplit("/", 1)[-1]]
        node["properties"].pop(path[-1], None)
    full["title"] = "ConfigPatch"
    full["description"] = ("A partial configuration, deep-merged into the current one. "
                           f"{', '.join(START_ONLY)} change only in the config file, with a "
                           f"restart; {', '.join('.'.join(p) for p in HOST_ONLY)} only in the "
                           "config file, read again on SIGHUP.")
    schemas = {"ConfigPatch": full, **defs}
    _optional(schemas)
    return schemas


def _optional(node: Any) -> None:
    # A patch names only what it changes: no field is required anywhere.
    if isinstance(node, dict):
        node.pop("required", None)
        for value in node.values():
            _optional(value)
    elif isinstance(node, list):
        for value in node:
            _optional(value)


async def _patch_body(request: Request) -> dict[str, Any]:
    """The request's JSON object (read here: the schema in the docs is ConfigPatch)."""
    raw = await request.body()
    try:
        patch = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HTTPException(422, [f"body: invalid JSON ({exc})"]) from None
    except RecursionError:  # thousands of nested brackets: the decoder's own stack
        raise HTTPException(422, [f"body: nested deeper than {MAX_PATCH_DEPTH} levels"]
                            ) from None
    if not isinstance(patch, dict):
        raise HTTPException(422, ["body: a JSON object of settings sections is expected"])
    if _depth(patch) > MAX_PATCH_DEPTH:
        # Every step after this (merge, validation) recurses too: refuse before it.
        raise HTTPException(422, [f"body: nested deeper than {MAX_PATCH_DEPTH} levels"])
    return patch


def _non_finite(patch: dict[str, Any]) -> list[str]:
    """A problem line for each inf or nan in ``patch``, worded as the settings word it."""
    problems: list[str] = []
    stack: list[tuple[Any, str]] = [(patch, "")]
    while stack:
        node, where = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            path = f"{where}.{key}" if where else str(key)
            if isinstance(value, float) and not math.isfinite(value):
                problems.append(f"{path}: Input should be a finite number (got {value})")
            elif isinstance(value, (dict, list)):
                stack.append((value, path))
    return sorted(problems)


#: The configuration is at most a few levels deep; a patch deeper than this is no patch.
MAX_PATCH_DEPTH = 16


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in ``value`` (iterative: no recursion to exhaust)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_PATCH_DEPTH:
            break
        stack.extend((child, level + 1) for child in children)
    return deepest


@router.patch("", response_model=ConfigUpdated, dependencies=[Depends(require_operator)],
              responses={422: {"model": ErrorBody, "description": "one problem per line"},
                         **_HOST_ERRORS},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": PATCH_SCHEMA_REF,
                                       "example": {"thresholds": {"cpu_warning": 80}}}}}})
async def update_config(runtime: RuntimeDep, by: ActorDep,
                        patch: Annotated[dict[str, Any], Depends(_patch_body)],
                        host: HostQuery = None) -> ConfigUpdated:
    """Validate and apply a partial configuration live; it is kept for the next start. On a
    fleet's central, ``host=`` patches that host's agent (its own rules decide: what it runs
    or may delete changes only in its config file); without it, the central's own."""
    # The host's runtime checks the patch against its own rules (restart-only and host-only
    # settings, JSON types, validation) and applies it: asked over the bus.
    # JSON has no inf or nan (Python's decoder reads them, and 1e400 as inf): refused here
    # as the settings would refuse them, since a command's arguments are plain JSON.
    non_finite = _non_finite(patch)
    if non_finite:
        raise HTTPException(422, non_finite)
    remote = target_host(runtime, host)
    done = await ask_agent(runtime, RUNTIME, "config_patch", {"patch": patch}, actor=by,
                           host=remote)
    if remote is not None:
        return from_agent(ConfigUpdated, done, remote)
    return ConfigUpdated(version=done["version"], changed=list(done["changed"]),
                         config=_body(runtime))
