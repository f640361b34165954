"""Events on the wire: JSON with a stable type tag, decoded as hostile input.

A message is ``{"type": "<Event class name>", "event": {...the event's fields...}}``. The
type tag is looked up in a registry of the Event subclasses (by class name, built from the
class tree, so an event added to events.py travels without a change here); the fields are
validated by that pydantic model (unknown fields refused). Nothing from the wire can name
any other Python type. Every failure is a :class:`WireError` with a short ``reason`` code,
which the bus counts; a subscriber never sees it as a crash.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import pydantic_core
from pydantic import ValidationError

from watchkeeper.bus.base import BusError
from watchkeeper.events import Event

#: Largest message accepted (bytes); nats-server's own default max_payload is 1 MiB too.
DEFAULT_MAX_BYTES = 1024 * 1024
#: Deepest JSON nesting accepted; a metric snapshot is 5 levels deep, a command's args a few.
DEFAULT_MAX_DEPTH = 32

#: Topic families whose events are of a known type: anything else on them is refused, so a
#: host cannot slip, say, an Alert onto a metrics subject. Other families (system, command,
#: audit and any new one) carry any registered event.
TOPIC_EVENTS: dict[str, frozenset[str]] = {
    "metrics": frozenset({"MetricSnapshot"}),
    "alerts": frozenset({"Alert"}),
    "actions": frozenset({"RemediationEvent"}),
    "services": frozenset({"ServiceReport"}),
    "health": frozenset({"Heartbeat"}),
    "errors": frozenset({"AgentError"}),
}
#: Families whose second token is not the publishing host (requests name their target).
_NO_HOST_CHECK = frozenset({"command"})

_TYPE_KEY = "type"
_EVENT_KEY = "event"


class WireError(BusError):
    """A message from the wire that is not an acceptable event; ``reason`` is a short code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


_registry: dict[str, type[Event]] = {}


def _scan() -> None:
    """Rebuild the registry from Event's subclass tree (events defined since are found)."""
    found: dict[str, type[Event]] = {}
    stack: list[type[Event]] = list(Event.__subclasses__())
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        name = cls.__name__
        other = found.get(name)
        # Two classes of one name (a test's own subclass): watchkeeper's own one wins.
        if other is None or (not other.__module__.startswith("watchkeeper.")
                             and cls.__module__.startswith("watchkeeper.")):
            found[name] = cls
    _registry.clear()
    _registry.update(found)


def event_class(name: str) -> type[Event] | None:
    """The Event subclass registered under ``name``, or None."""
    cls = _registry.get(name)
    if cls is None:
        _scan()
        cls = _registry.get(name)
    return cls


def type_tag(event: Event) -> str:
    """The stable type tag of an event on the wire: its class name."""
    name = type(event).__name__
    if event_class(name) is not type(event):
        raise BusError(f"{type(event).__module__}.{name} is not the registered event "
                       f"{name!r} and cannot go on the wire")
    return name


def encode(event: Event, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The wire form of an event; BusError if it exceeds ``max_bytes``."""
    data = b'{"%s":"%s","%s":%s}' % (_TYPE_KEY.encode(), type_tag(event).encode(),
                                     _EVENT_KEY.encode(), event.model_dump_json().encode())
    if len(data) > max_bytes:
        raise BusError(f"{type(event).__name__} is {len(data)} bytes on the wire, over the "
                       f"{max_bytes}-byte limit (bus.max_message_bytes)")
    return data


def message_id(topic: str, data: bytes) -> str:
    """A de-duplication id (``Nats-Msg-Id``): the digest of the topic and the encoded event.

    Events carry their creation time to the microsecond, so the same event published twice
    (a retry after a lost acknowledgement) has one id, and two events never share one.
    """
    digest = hashlib.blake2b(topic.encode() + b"\0" + data, digest_size=16).hexdigest()
    return digest


_INT_LIMIT = 2**63 - 1  # what SQLite (and every other reader) can hold
_isfinite = math.isfinite


def _check_shape(value: Any, max_depth: int) -> None:
    """WireError for nesting deeper than ``max_depth``, a non-finite number (1e400 parses
    as infinity) or an integer past 64 bits; iterative, so no recursion to exhaust.

    It visits every value of every message (a 50-process snapshot has about 1,500), so it
    compares exact types (what the JSON parser makes: dict, list, str, int, float, bool,
    None) instead of isinstance, and skips strings first: a third of the time it took."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    push = stack.append
    while stack:
        item, level = stack.pop()
        if level > max_depth:
            raise WireError("too_deep", f"nested deeper than {max_depth} levels")
        for child in (item.values() if type(item) is dict else item):
            kind = type(child)
            if kind is str:
                continue
            if kind is float:
                if not _isfinite(child):
                    raise WireError("bad_number", "a number out of range (infinite)")
            elif kind is int:
                if not -_INT_LIMIT <= child <= _INT_LIMIT:
                    raise WireError("bad_number", "an integer past 64 bits")
            elif kind is dict or kind is list:
                push((child, level + 1))


def decode(data: bytes, *, topic: str | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
           max_depth: int = DEFAULT_MAX_DEPTH) -> Event:
    """Parse and validate one wire message; WireError (never anything else) if unacceptable.

    With ``topic`` (unprefixed, e.g. ``alerts.web1``), the event must also be of a type that
    topic carries and, for per-host topics, name the host the topic names.
    """
    if len(data) > max_bytes:
        raise WireError("oversize", f"{len(data)} bytes, over the {max_bytes}-byte limit")
    try:
        # jiter: no NaN/Infinity, and its own recursion limit turns absurd nesting into
        # an error instead of a RecursionError.
        raw = pydantic_core.from_json(data, allow_inf_nan=False)
    except ValueError as exc:
        reason = "too_deep" if "recursion" in str(exc).lower() else "not_json"
        raise WireError(reason, str(exc)[:200]) from None
    if isinstance(raw, (dict, list)):
        _check_shape(raw, max_depth)
    if not isinstance(raw, dict) or set(raw) != {_TYPE_KEY, _EVENT_KEY}:
        raise WireError("not_envelope",
                        f'expected an object with exactly "{_TYPE_KEY}" and "{_EVENT_KEY}"')
    name, body = raw[_TYPE_KEY], raw[_EVENT_KEY]
    if not isinstance(name, str) or not isinstance(body, dict):
        raise WireError("not_envelope", f'"{_TYPE_KEY}" must be a string and '
                        f'"{_EVENT_KEY}" an object')
    cls = event_class(name)
    if cls is None:
        raise WireError("unknown_type", f"no event type {name[:80]!r}")
    try:
        event = cls.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors()[:3])
        raise WireError("invalid_event", f"{name}: {problems}"[:300]) from None
    if topic is not None:
        check_topic(topic, event)
    return event


def check_topic(topic: str, event: Event) -> None:
    """WireError unless ``event`` belongs on ``topic`` (its type, and its host)."""
    tokens = topic.split(".")
    family = tokens[0]
    allowed = TOPIC_EVENTS.get(family)
    name = type(event).__name__
    if allowed is not None and name not in allowed:
        raise WireError("wrong_topic", f"a {name} on {topic!r}, which carries "
                        f"{', '.join(sorted(allowed))}")
    if family not in _NO_HOST_CHECK and len(tokens) >= 2 and event.host != tokens[1]:
        raise WireError("wrong_host", f"an event of host {event.host[:80]!r} on {topic!r}")
