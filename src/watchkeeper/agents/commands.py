"""Operator commands over the bus: the verbs an agent takes, how it checks them, how to ask.

Every operator action (ack, silence, approve, reject, reset, remediate, pause, resume,
restart, a config change, a simulation) is a :class:`~watchkeeper.events.Command` request
on ``command.<host>.<agent>``, answered by a :class:`~watchkeeper.events.CommandReply`.
The API (and so the CLI and the terminal UI, which call the API) never reaches into an
agent's objects, so a central server can act on a remote host exactly as on the local one.

A command is hostile until checked, whoever sent it: the receiver refuses, changing
nothing, a command for another host or agent, a verb it does not take, arguments of the
wrong type or size, a change asked with the viewer role, and anything its own local policy
does not allow; each refusal is logged and published as a CommandRefused event (the
history keeps it). Authorization is decided where a request enters (the API's tokens); the
role travels with the command so that the agent can refuse a viewer's change and record who
asked.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from watchkeeper.bus import Bus, BusClosedError, NoResponderError, command_topic, system_topic
from watchkeeper.events import (
    AgentState,
    Command,
    CommandRefused,
    CommandReply,
    CommandRole,
    Event,
    ReplyCode,
)

log = logging.getLogger(__name__)

#: A command's arguments, as JSON, may be at most this large (the API's request bodies are
#: limited to the same 64 KiB).
MAX_ARGS_BYTES = 64 * 1024

#: Seconds a requester waits for a reply by default.
DEFAULT_TIMEOUT_S = 10.0

#: States in which an agent takes only the verbs marked ``any_state`` (pause, resume,
#: health_check): a paused agent does no work, a crashed or stopped one cannot.
NOT_WORKING: frozenset[AgentState] = frozenset({"paused", "crashed", "stopped"})

#: The responder of host-wide commands (configuration, simulations): the runtime itself.
RUNTIME = "runtime"


def _no_control(value: str) -> str:
    # NUL and other control characters would be cut short or misread further down (SQLite,
    # C libraries, log lines): refused here. Tabs and newlines stay allowed (comments).
    if any(ord(c) < 32 and c not in "\t\n\r" for c in value) or "\x7f" in value:
        raise ValueError("must not contain control characters")
    return value


#: A string argument: bounded, no control characters.
Text = Annotated[str, Field(max_length=1024), AfterValidator(_no_control)]
#: A short name or id argument.
Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_no_control)]


class Args(BaseModel):
    """Base of every verb's arguments: strict types (``"5"`` is not 5), no unknown keys."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class NoArgs(Args):
    """A verb that takes no arguments."""


class CommandError(Exception):
    """A verb refused its command: a reply code, a message, and optional detail (JSON)."""

    def __init__(self, code: ReplyCode, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.code: ReplyCode = code
        self.message = message
        self.detail = detail


Handler = Callable[[Any, Command], Awaitable[dict[str, Any] | None]]


@dataclass(frozen=True)
class Verb:
    """One command an agent takes: its arguments' model and what runs it."""

    handler: Handler
    args: type[Args] = NoArgs
    #: Changes something: refused to the viewer role.
    mutating: bool = True
    #: Answered whatever the agent's state (pause, resume, health_check).
    any_state: bool = False


def _problems(exc: ValidationError) -> list[str]:
    # Where and why only: echoing the value could echo a secret or a hostile string.
    return [f"{'.'.join(str(p) for p in e['loc']) or 'args'}: {e['msg']}" for e in exc.errors()]


def parse_args(verb: Verb, args: Mapping[str, Any]) -> Args:
    """The command's arguments checked against the verb's model (CommandError if not)."""
    try:
        raw = json.dumps(args, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        raise CommandError("invalid", "arguments must be plain JSON") from None
    if len(raw) > MAX_ARGS_BYTES:
        raise CommandError("invalid", f"arguments are limited to {MAX_ARGS_BYTES} bytes")
    try:
        return verb.args.model_validate_json(raw)
    except ValidationError as exc:
        problems = _problems(exc)
        raise CommandError("invalid", "; ".join(problems), problems) from None


class CommandDesk:
    """What an agent (or the runtime) runs every command through: checks, then the verb."""

    def __init__(self, *, bus: Bus, host: str, name: str,
                 verbs: Callable[[], Mapping[str, Verb]],
                 state: Callable[[], AgentState]) -> None:
        self.bus = bus
        self.host = host
        self.name = name
        self._verbs = verbs
        self._state = state

    def reply(self, command: Command, ok: bool, message: str, *, code: ReplyCode = "ok",
              result: Mapping[str, Any] | None = None) -> CommandReply:
        return CommandReply(host=self.host, agent=self.name, command=command.command, ok=ok,
                            message=message, code=code, request_id=command.request_id,
                            result=dict(result) if result is not None else None)

    def check(self, event: Event) -> tuple[Command, Verb, Args]:
        """Everything a command must pass before its verb runs (CommandError if not)."""
        if not isinstance(event, Command):
            raise CommandError("invalid", f"expected a command, got {type(event).__name__}")
        if event.host != self.host:
            raise CommandError("invalid", f"this is host {self.host}; the command is for "
                                          f"{event.host}")
        if event.target not in (self.name, "all"):
            raise CommandError("invalid", f"this is the {self.name} agent; the command is "
                                          f"for {event.target}")
        verbs = self._verbs()
        verb = verbs.get(event.command)
        if verb is None:
            raise CommandError("unknown_command", f"the {self.name} agent takes no command "
                               f"{event.command!r}; it takes: {', '.join(sorted(verbs))}")
        if verb.mutating and event.role != "operator":
            raise CommandError("forbidden", f"{event.command} changes things: it needs the "
                                            "operator role")
        args = parse_args(verb, event.args)
        state = self._state()
        if not verb.any_state and state in NOT_WORKING:
            hint = ("resume it and try again" if state == "paused"
                    else "try again once it runs again")
            raise CommandError("unavailable", f"the {self.name} agent is {state}: {hint}")
        return event, verb, args

    async def handle(self, event: Event) -> CommandReply:
        """Check and run one command; its reply says what happened (never raises)."""
        try:
            command, verb, args = self.check(event)
        except CommandError as exc:
            return await self._refused(event, exc)
        # The verb runs as a task of its own: a requester that stops waiting (its timeout)
        # does not cancel a change half made; it completes, and is logged, regardless.
        task = asyncio.ensure_future(verb.handler(args, command))
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(lambda done: self._finished_late(command, done))
            raise
        except CommandError as exc:
            return await self._refused(command, exc)
        except Exception:
            log.exception("%s: command %s (request %s) failed", self.name, command.command,
                          command.request_id)
            return await self._refused(command, CommandError(
                "error", f"the {self.name} agent could not complete {command.command}; "
                         "its log has the details"))
        if verb.mutating:
            log.info("%s: %s by %r (%s), request %s", self.name, command.command,
                     command.actor, command.role, command.request_id)
        return self.reply(command, True, str((result or {}).get("message") or "done"),
                          result=result)

    def _finished_late(self, command: Command, task: asyncio.Future[Any]) -> None:
        """Log how a command ended whose requester stopped waiting for it."""
        if task.cancelled():
            outcome = "cancelled"
        elif task.exception() is not None:
            outcome = f"failed: {task.exception()}"
        else:
            outcome = "done"
        log.warning("%s: %s by %s (request %s) finished after its requester stopped "
                    "waiting: %s", self.name, command.command, command.actor,
                    command.request_id, outcome)

    async def _refused(self, event: Event, exc: CommandError) -> CommandReply:
        command = event if isinstance(event, Command) else None
        verb = command.command if command is not None else "?"
        actor = command.actor if command is not None else "?"
        role = command.role if command is not None else "?"
        request_id = command.request_id if command is not None else ""
        # A missing target or a policy's no is an answer, not an attack: logged quietly.
        quiet = exc.code in ("not_found", "conflict", "unavailable")
        # The verb and the actor are the sender's words: quoted, so that a newline in them
        # cannot forge a log line of its own.
        log.log(logging.INFO if quiet else logging.WARNING,
                "%s refused %r from %r (%s), request %s: %s: %s", self.name, verb, actor, role,
                request_id, exc.code, exc.message)
        try:
            await self.bus.publish(system_topic(self.host), CommandRefused(
                host=self.host, agent=self.name, command=verb[:64], actor=actor[:200],
                role=role, request_id=request_id, code=exc.code, message=exc.message[:2000]))
        except Exception as err:  # the audit event failing must not hide the refusal itself
            log.error("%s could not publish a command refusal: %s", self.name, err)
        result = {"detail": exc.detail} if exc.detail is not None else None
        return CommandReply(host=self.host, agent=self.name, command=verb[:64], ok=False,
                            message=exc.message, code=exc.code, request_id=request_id,
                            result=result)


class CommandFailed(Exception):
    """What :func:`ask` raises when the command was refused or went unanswered
    (``answered``: whether the agent replied at all)."""

    def __init__(self, code: ReplyCode, message: str, detail: Any = None, *,
                 answered: bool = True) -> None:
        super().__init__(message)
        self.code: ReplyCode = code
        self.message = message
        self.detail = detail
        self.answered = answered


async def ask(bus: Bus, host: str, agent: str, verb: str, args: Mapping[str, Any] | None = None,
              *, actor: str, role: CommandRole = "operator",
              timeout: float = DEFAULT_TIMEOUT_S, local: bool = True) -> dict[str, Any]:
    """Send one command to ``agent`` on ``host`` and return its result; CommandFailed with
    the reply's code when refused, ``unavailable`` when nobody serves the agent's topic
    (``local``: the asker's own host, so the agent is missing from its process),
    ``timeout`` when no reply comes within ``timeout`` seconds."""
    command = Command(host=host, target=agent, command=verb, args=dict(args or {}),
                      actor=actor, role=role)
    try:
        reply = await bus.request(command_topic(host, agent), command, timeout=timeout)
    except (NoResponderError, BusClosedError):
        missing = (f"the {agent} agent is not running in this process" if local
                   else f"no {agent} agent of host {host} answers")
        raise CommandFailed("unavailable", missing, answered=False) from None
    except asyncio.TimeoutError:
        raise CommandFailed("timeout", f"the {agent} agent did not answer {verb} within "
                                       f"{timeout:g}s", answered=False) from None
    if not isinstance(reply, CommandReply) or reply.request_id != command.request_id:
        raise CommandFailed("error", f"the {agent} agent answered {verb} with something "
                                     "other than its reply")
    if not reply.ok:
        detail = (reply.result or {}).get("detail")
        raise CommandFailed(reply.code, reply.message, detail)
    return dict(reply.result or {})
