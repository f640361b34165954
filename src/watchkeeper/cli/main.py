"""The `watchkeeper` command tree (click). The only place, with cli/*, that prints.

Commands: run, serve, config show, config validate, audit verify; against a running server:
status, agents, metrics, alerts, services, actions, logs, ack, approve, reject, reset,
silence, command, config get/set, simulate (cli/simulate.py), and cli (the terminal
UI); offline: replay.
Exit codes: 0 ok, 1 runtime failure (or a broken audit chain, or the server said no), 2 bad
configuration or usage, 3 no server answers at the URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import click

from watchkeeper import __version__
from watchkeeper.aio import wait_for
from watchkeeper.config import ConfigError, Settings, load_settings, with_patch
from watchkeeper.instance_lock import InstanceLock, InstanceLockError
from watchkeeper.safetext import json_text

EXIT_CONFIG = 2


def _fail_config(err: ConfigError) -> None:
    click.echo(f"watchkeeper: invalid configuration ({len(err.problems)} problem"
               f"{'s' if len(err.problems) != 1 else ''}):", err=True)
    for problem in err.problems:
        click.echo(f"  {problem}", err=True)
    sys.exit(EXIT_CONFIG)


def _settings(ctx: click.Context, config_file: Path | None = None) -> Settings:
    path = config_file or ctx.obj.get("config")
    try:
        return load_settings(path)
    except ConfigError as err:
        _fail_config(err)
        raise AssertionError("unreachable") from err


def _remember_config(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    # The same --config after the subcommand (`watchkeeper run --config FILE`, as most tools
    # teach) as before it; given in both places, the later one wins.
    if value is not None:
        ctx.ensure_object(dict)["config"] = value


def _config_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--config FILE``, accepted by the group and by every subcommand."""
    return click.option(
        "--config", "-c", type=click.Path(path_type=Path, dir_okay=False), default=None,
        expose_value=False, is_eager=True, callback=_remember_config,
        help="YAML config file (default: ./watchkeeper.yaml if present).")(fn)


def _agent_names(_ctx: click.Context, _param: click.Parameter, value: str | None
                 ) -> list[str] | None:
    """--agents as a list, checked while the command line is read (a usage error, exit 2)."""
    if value is None:
        return None
    from watchkeeper.runtime import AGENTS

    names = [a.strip() for a in value.split(",") if a.strip()]
    unknown = [n for n in names if n not in AGENTS]
    if unknown or not names:
        raise click.BadParameter(f"unknown agent(s) {', '.join(unknown) or repr(value)}; "
                                 f"known: {', '.join(sorted(AGENTS))}")
    return names


def _lock_data_dir(settings: Settings) -> InstanceLock:
    """One run/serve per data directory; a second one exits 1 naming the first one's pid."""
    try:
        return InstanceLock.acquire(settings.storage.path)
    except InstanceLockError as exc:
        click.echo(f"watchkeeper: {exc}", err=True)
        sys.exit(1)


class _LazyGroup(click.Group):
    """A group whose ``lazy`` commands are imported when named (or listed in --help), so
    ``run`` and ``serve`` never load them (their memory is benchmarked)."""

    #: Command name -> "module:attribute".
    lazy: ClassVar[dict[str, str]] = {"simulate": "watchkeeper.cli.simulate:simulate",
                                      "fleet": "watchkeeper.cli.fleet:fleet"}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            import importlib

            module, _, attr = self.lazy[cmd_name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attr), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="watchkeeper")
@_config_option
@click.pass_context
def cli(ctx: click.Context) -> None:
    """watchkeeper: watches your hosts, explains what is wrong, fixes the routine things."""
    ctx.ensure_object(dict).setdefault("config", None)


def _with_server(settings: Settings, server: str | None, role: str) -> Settings:
    """--server URL: the fleet's broker (bus.backend nats at that URL). A fleet role with no
    broker at all is a usage error: it would sense or analyse for nobody."""
    if server is not None:
        try:
            settings = with_patch(settings, {"bus": {"backend": "nats", "url": server}},
                                  source="--server")
        except ConfigError as err:
            _fail_config(err)
    if role != "single" and settings.bus.backend != "nats":
        what = "watchkeeper agent reports to" if role == "agent" else \
            "watchkeeper serve --fleet follows its hosts through"
        click.echo(f"watchkeeper: {what} a NATS JetStream broker: give --server "
                   "nats://HOST:4222 (or set bus.backend: nats and bus.url in the "
                   "configuration)", err=True)
        sys.exit(EXIT_CONFIG)
    if settings.bus.backend == "nats":
        # A seed or certificate file that is missing, unreadable, world-readable or not
        # what it should be: said now, naming the key, not as a connection error later.
        from watchkeeper.bus.auth import credential_problems

        problems = credential_problems(settings.bus)
        if problems:
            _fail_config(ConfigError(problems))
    return settings


_SERVER_HELP = ("The fleet's NATS JetStream broker, nats://HOST:4222 or tls://HOST:4222 "
                "(sets bus.backend: nats and bus.url).")


@cli.command()
@click.option("--agents", "names", default=None, callback=_agent_names,
              help="Comma-separated agents to run (default: all).")
@click.option("--no-console-log", is_flag=True, help="Log only to the log file.")
@_config_option
@click.pass_context
def run(ctx: click.Context, names: list[str] | None, no_console_log: bool) -> None:
    """Run all agents in the foreground, headless (Ctrl-C or SIGTERM stops cleanly)."""
    _run(ctx, names, no_console_log, "single", None)


@cli.command()
@click.option("--server", default=None, metavar="URL", help=_SERVER_HELP)
@click.option("--no-console-log", is_flag=True, help="Log only to the log file.")
@_config_option
@click.pass_context
def agent(ctx: click.Context, server: str | None, no_console_log: bool) -> None:
    """A fleet's host agent: senses this host and heals it under its own local policy,
    reporting to the central over NATS (watchkeeper serve --fleet there)."""
    _run(ctx, None, no_console_log, "agent", server)


def _shard_arg(_ctx: click.Context, _param: click.Parameter, value: str) -> Any:
    """--shard i/N, checked while the command line is read (a usage error, exit 2)."""
    from watchkeeper.analysis.shard import Shard

    try:
        return Shard.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@cli.command()
@click.option("--server", default=None, metavar="URL", help=_SERVER_HELP)
@click.option("--shard", "shard", required=True, metavar="i/N", callback=_shard_arg,
              help="This process analyses the hosts of shard i of N (0/2 is the first of "
                   "two); run one of each i with the same N.")
@click.option("--no-console-log", is_flag=True, help="Log only to the log file.")
@_config_option
@click.pass_context
def analyze(ctx: click.Context, server: str | None, shard: Any, no_console_log: bool) -> None:
    """One analysis shard of a fleet's central: the hosts whose name hashes to i of N,
    their alerts published to the central (serve --fleet --shards N starts these itself)."""
    settings = _with_server(_settings(ctx), server, "central")
    from watchkeeper.bus import BusError
    from watchkeeper.logging_setup import setup_logging
    from watchkeeper.shards import run_shard
    from watchkeeper.store.sqlite import StoreError

    setup_logging(settings.logging, console=not no_console_log)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await run_shard(settings, shard, stop)

    try:
        asyncio.run(main())
    except (BusError, StoreError) as exc:
        click.echo(f"watchkeeper: {exc}", err=True)
        sys.exit(1)


def _run(ctx: click.Context, names: list[str] | None, no_console_log: bool, role: str,
         server: str | None) -> None:
    settings = _with_server(_settings(ctx), server, role)
    lock = _lock_data_dir(settings)
    from watchkeeper.bus import BusError
    from watchkeeper.logging_setup import setup_logging
    from watchkeeper.remediation.audit import AuditError
    from watchkeeper.runtime import Runtime
    from watchkeeper.store.sqlite import StoreError

    log_file = setup_logging(settings.logging, console=not no_console_log)
    click.echo(f"watchkeeper {__version__}: logs in {log_file}, history in "
               f"{settings.storage.path}. Ctrl-C to stop.", err=True)
    try:
        runtime = Runtime(settings, agents=names, role=role)  # type: ignore[arg-type]
    except (StoreError, AuditError, ValueError) as exc:
        click.echo(f"watchkeeper: {exc}", err=True)
        sys.exit(1)
    try:
        asyncio.run(_run_until_signal(runtime, ctx.obj.get("config"), server))
    except BusError as exc:  # the NATS broker could not be reached at start
        click.echo(f"watchkeeper: {exc}", err=True)
        sys.exit(1)
    finally:
        lock.release()


def _reload(runtime: Any, config_file: Path | None, *, overrides: bool,
            server: str | None = None) -> None:
    """SIGHUP: read the configuration again from its sources (and the API's saved updates,
    for serve) and apply it live; an invalid one changes nothing and is logged.

    A signal rather than watching the file (watchfiles): the operator says when an edit is
    finished, as with Prometheus, nginx or `monit reload`, so a half-saved file or an
    editor's swap file is never applied, and `systemctl reload` works as expected."""
    log = logging.getLogger("watchkeeper.reload")
    try:
        settings = load_settings(config_file)
        if server is not None:  # --server stays what the command line said
            settings = with_patch(settings, {"bus": {"backend": "nats", "url": server}},
                                  source="--server")
        if overrides:
            from watchkeeper.api.routes.config import load_overrides, overrides_path

            settings = with_patch(settings, load_overrides(runtime.config.current),
                                  source=str(overrides_path(runtime.config.current)))
    except ConfigError as err:
        log.error("config reload refused, nothing changed: %s",
                  "; ".join(str(p) for p in err.problems))
        return
    runtime.reload(settings)


def _on_reload_signal(loop: asyncio.AbstractEventLoop, reload: Callable[[], None]) -> None:
    """SIGHUP reloads (systemd's ExecReload=kill -HUP $MAINPID); not on Windows."""
    if hasattr(signal, "SIGHUP"):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, reload)


async def _run_until_signal(runtime: Any, config_file: Path | None,
                            server: str | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows: only SIGINT, via KeyboardInterrupt
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
    _on_reload_signal(loop, lambda: _reload(runtime, config_file, overrides=False,
                                            server=server))
    await runtime.run(stop)


@cli.command()
@click.option("--host", default=None, help="Address to listen on (default: api.host).")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Port to listen on (default: api.port).")
@click.option("--agents", "names", default=None, callback=_agent_names,
              help="Comma-separated agents to run (default: all).")
@click.option("--no-console-log", is_flag=True, help="Log only to the log file.")
@click.option("--fleet", is_flag=True,
              help="Be a fleet's central: analysis, notifications, history and the dashboard "
                   "for every host that reports (watchkeeper agent on each), no sensing or "
                   "healing here.")
@click.option("--server", default=None, metavar="URL", help=_SERVER_HELP)
@click.option("--shards", type=click.IntRange(0, 64), default=0, show_default=True,
              help="With --fleet: analyse the hosts in this many processes (watchkeeper "
                   "analyze --shard i/N, started and restarted by this one); 0 analyses "
                   "here.")
@_config_option
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, names: list[str] | None,
          no_console_log: bool, fleet: bool, server: str | None, shards: int) -> None:
    """Run all agents plus the REST API in one process (Ctrl-C or SIGTERM stops cleanly)."""
    role = "central" if fleet else "single"
    if shards and not fleet:
        raise click.UsageError("--shards splits a fleet central's analysis: give --fleet too")
    settings = _with_server(_settings(ctx), server, role)
    from watchkeeper.api.auth import is_loopback, token_path

    host = host or settings.api.host
    port = settings.api.port if port is None else port
    configured = settings.api.token is not None and bool(settings.api.token.get_secret_value())
    if not is_loopback(host) and not (configured or settings.api.operators):
        click.echo(f"watchkeeper: refusing to listen on {host}, which is not a loopback "
                   "address, without an operator token: set api.token (or "
                   "WATCHKEEPER_API__TOKEN), or listen on 127.0.0.1.", err=True)
        sys.exit(EXIT_CONFIG)
    lock = _lock_data_dir(settings)
    from watchkeeper.api.routes.config import load_overrides, overrides_path
    from watchkeeper.bus import BusError
    from watchkeeper.logging_setup import setup_logging
    from watchkeeper.remediation.audit import AuditError
    from watchkeeper.runtime import Runtime
    from watchkeeper.store.sqlite import StoreError

    log_file = setup_logging(settings.logging, console=not no_console_log)
    shard_procs = None
    if shards:
        from watchkeeper.shards import ShardProcesses

        shard_procs = ShardProcesses(shards, server=settings.bus.url,
                                     config_file=ctx.obj.get("config"),
                                     log_dir=settings.logging.dir.expanduser().resolve())
    try:
        runtime = Runtime(settings, agents=names, role=role,  # type: ignore[arg-type]
                          shards=shard_procs)
    except (StoreError, AuditError, ValueError) as exc:
        click.echo(f"watchkeeper: {exc}", err=True)
        sys.exit(1)
    try:  # updates made through the API last time, kept in the data dir
        overrides = load_overrides(settings)
        if overrides:
            runtime.update_config(overrides, source=str(overrides_path(settings)))
    except ConfigError as err:
        _fail_config(err)
    try:
        sock = _listen(host, port)
    except OSError as exc:
        click.echo(f"watchkeeper: cannot listen on {host}:{port}: {exc.strerror or exc}",
                   err=True)
        sys.exit(1)
    bound_port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    where = ("operator token from the configuration" if configured
             else f"operator token in {token_path(settings)}")
    click.echo(f"watchkeeper {__version__}: dashboard at http://{shown}:{bound_port}/ (API docs "
               f"at /docs; {where}); logs in {log_file}. Ctrl-C to stop.", err=True)
    try:
        asyncio.run(_serve(runtime, host, sock, ctx.obj.get("config"), server))
    except BusError as exc:  # the NATS broker could not be reached at start
        click.echo(f"watchkeeper: {exc}", err=True)
        sys.exit(1)
    finally:
        lock.release()


def _listen(host: str, port: int) -> Any:
    """Bind the listening socket before anything starts, so a busy port fails fast."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted connections only when the
    # listening socket says TCP, and without it every keep-alive answer waits ~40 ms for
    # the client's delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(64)  # asyncio listens again with uvicorn's backlog (BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


async def _serve(runtime: Any, host: str, sock: Any, config_file: Path | None,
                 broker: str | None = None, *,
                 started: Callable[[Callable[[], None]], None] | None = None) -> None:
    """The agents and the API behind the connection guard until told to stop: by a signal
    in the main thread; ``started`` is given a thread-safe stop once the agents run (the
    terminal UI's in-process agents, in a thread where no signal handler can be set)."""
    import uvicorn

    from watchkeeper.api import create_app
    from watchkeeper.api.connections import (
        BACKLOG,
        ConnectionGuard,
        connection_budget,
        fds_in_use,
        fds_needed,
        raise_fd_limit,
    )
    from watchkeeper.api.routes.events import close_streams

    loop = asyncio.get_running_loop()

    class _Server(uvicorn.Server):
        """uvicorn wakes up ten times a second to see whether it should stop; an idle
        monitor should not. This one wakes once a second (the Date header's resolution),
        or at once when told to stop, and then ends the live event streams, which would
        otherwise hold the shutdown until its time limit."""

        exit_requested = asyncio.Event()

        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            # Called from a signal handler too: only hand the work to the loop from here.
            loop.call_soon_threadsafe(close_streams, app)
            loop.call_soon_threadsafe(self.exit_requested.set)

        async def main_loop(self) -> None:
            ticks = 0
            while not await self.on_tick(ticks):  # its once-a-second work: ticks % 10 == 0
                ticks = (ticks + 10) % 864_000
                with contextlib.suppress(asyncio.TimeoutError):
                    await wait_for(self.exit_requested.wait(), 1.0)

    app = create_app(runtime, bind_host=host)
    api = runtime.config.current.api
    soft_limit = raise_fd_limit(fds_needed(api.max_connections))
    guard = ConnectionGuard(limit=api.max_connections, timeout=api.request_timeout_s)
    # log_config=None: our logging setup stays in charge; uvicorn handles the signals.
    # ws="none": no route takes a WebSocket, so no upgrade is ever accepted.
    server = _Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                                    server_header=False, timeout_graceful_shutdown=5,
                                    http=guard.protocol(), ws="none", backlog=BACKLOG))
    # uvicorn takes SIGINT/SIGTERM while it serves, then restores the previous handlers and
    # raises the signal again; with the default handlers that would kill the process before
    # the runtime flushes its history, so the previous handlers are ours and only stop it.
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Windows has no add_signal_handler: uvicorn's own handling is all there is.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, server.handle_exit, sig, None)
    _on_reload_signal(loop, lambda: _reload(runtime, config_file, overrides=True,
                                            server=broker))
    await runtime.start()
    # Counted once the agents hold what they hold at rest: the rest of the limit, less
    # their reserve, is what connections may use.
    guard.limit = connection_budget(api.max_connections, soft_limit, fds_in_use())
    if guard.limit < api.max_connections:
        logging.getLogger("watchkeeper.serve").warning(
            "the open-file limit (ulimit -n %d) leaves room for %d connections, fewer than "
            "api.max_connections (%d): raise the limit (LimitNOFILE= in a systemd unit)",
            soft_limit, guard.limit, api.max_connections)
    app.state.max_streams = min(app.state.max_streams, max(1, guard.limit // 2))
    if started is not None:
        started(lambda: server.handle_exit(signal.SIGTERM, None))
    try:
        await server.serve(sockets=[sock])
    finally:
        await runtime.stop()
        sock.close()


@cli.group()
def config() -> None:
    """Show or validate the configuration; get or set one value of a running server."""


@config.command("show")
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml",
              show_default=True)
@_config_option
@click.pass_context
def config_show(ctx: click.Context, fmt: str) -> None:
    """Print the effective configuration (all sources merged), secrets masked."""
    data = _settings(ctx).masked()
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
    else:
        import yaml

        click.echo(yaml.safe_dump(data, sort_keys=False).rstrip())


@config.command("validate")
@click.argument("file", required=False, type=click.Path(path_type=Path, dir_okay=False))
@_config_option
@click.pass_context
def config_validate(ctx: click.Context, file: Path | None) -> None:
    """Check a config file (with the environment and .env on top); exit 2 if invalid."""
    path = file or ctx.obj.get("config")
    settings = _settings(ctx, path)
    shown = path or ("./watchkeeper.yaml" if Path("watchkeeper.yaml").is_file() else "defaults")
    notes = _host_notes(settings)
    for note in notes:
        click.echo(f"warning: {note}", err=True)
    click.echo(f"OK: configuration from {shown} is valid"
               + (f" ({len(notes)} warning{'s' if len(notes) > 1 else ''} above)"
                  if notes else ""))


def _host_notes(settings: Settings) -> list[str]:
    """What the file cannot tell but this host can: configured paths an action or the LLM
    will refuse because they go through a symlink (file actions never follow one)."""
    from watchkeeper.remediation.actions.safepath import symlink_on
    from watchkeeper.safetext import printable

    rem = settings.remediation
    paths = ([("remediation.cleanup_roots", r.path) for r in rem.cleanup_roots]
             + [("remediation.log_files", r.path) for r in rem.log_files]
             + [("llm.log_files", p) for p in settings.llm.log_files])
    notes = []
    for key, p in paths:
        link = symlink_on(str(p))
        if link is not None:
            notes.append(f"{key}: {printable(str(p))} goes through the symlink "
                         f"{printable(link)}; it will be refused when used (file actions "
                         "never follow symlinks): configure the real path")
    if settings.bus.backend == "nats":  # a fleet role would refuse to start (exit 2)
        from watchkeeper.bus.auth import credential_problems

        notes += [f"{printable(str(p))} (refused at start)"
                  for p in credential_problems(settings.bus)]
    return notes


@cli.group()
def notify() -> None:
    """Notification routes (notify.routes in the config file)."""


@notify.command("test")
@click.argument("route", required=False)
@_config_option
@click.pass_context
def notify_test(ctx: click.Context, route: str | None) -> None:
    """Send a test message through ROUTE (default: every route) and print what the
    channel answered; exit 1 if any route did not take it. No server needed."""
    settings = _settings(ctx)
    from watchkeeper.notify.testsend import UnknownRoute, send_test_messages

    if not settings.notify.routes:
        click.echo("watchkeeper: no notification routes configured (notify.routes in the "
                   "config file)", err=True)
        sys.exit(EXIT_CONFIG)
    # apprise's own warnings would reach stderr unmasked: its answer is printed below.
    logging.getLogger("apprise").propagate = False
    try:
        answers = send_test_messages(settings, route)
    except UnknownRoute as exc:
        click.echo(f"watchkeeper: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    for a in answers:
        click.echo(f"{a.route}: {'sent' if a.ok else 'FAILED'} - {a.answer}")
    sys.exit(0 if all(a.ok for a in answers) else 1)


@cli.group()
def audit() -> None:
    """Check the remediation audit log."""


@audit.command("verify")
@_config_option
@click.pass_context
def audit_verify(ctx: click.Context) -> None:
    """Walk the audit log's hash chain: exit 0 if it holds, 1 at the first broken link."""
    import time

    from watchkeeper.remediation.audit import AUDIT_FILENAME, AuditError, verify_file

    settings = _settings(ctx)
    path = settings.storage.path / AUDIT_FILENAME
    if not path.is_file():
        click.echo(f"watchkeeper: no audit log at {path} (storage.data_dir "
                   f"{settings.storage.path})", err=True)
        sys.exit(EXIT_CONFIG)
    started = time.perf_counter()
    try:
        status = verify_file(path)
    except AuditError as exc:
        click.echo(f"watchkeeper: {exc}", err=True)
        sys.exit(1)
    took = time.perf_counter() - started
    rate = f", {status.checked / took:,.0f} records/s" if status.checked >= 1000 else ""
    click.echo(f"{path}: {status.checked} records checked in {took:.2f} s{rate}")
    broken = status.broken_at
    if broken is None:
        click.echo("ok")
        return
    where = "" if broken.id is None else f" at record #{broken.id}"
    when = "" if broken.at is None else f" ({broken.at:%Y-%m-%d %H:%M:%S} UTC)"
    click.echo(f"BROKEN{where}{when}: {broken.problem}: {broken.message}")
    sys.exit(1)


# --- against a running server (REST API) ---------------------------------------------------
# httpx and rich tables are imported inside these commands only: `run` and `serve` never load
# them for this.


def _remote_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--url`` and ``--token`` for a command that talks to a running server."""
    fn = click.option("--token", default=None, metavar="TOKEN",
                      help="API token (default: $WATCHKEEPER_TOKEN, api.token, else the "
                           "api_token file in the data dir).")(fn)
    fn = click.option("--url", default=None, metavar="URL", envvar="WATCHKEEPER_URL",
                      help="The server (default: $WATCHKEEPER_URL, else http://api.host:"
                           "api.port from the configuration, i.e. http://127.0.0.1:8000).")(fn)
    return _config_option(fn)


def _host_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--host NAME``: which host of a fleet's central to list or act on."""
    return click.option(
        "--host", "on_host", default=None, metavar="NAME",
        help="On a fleet's central (serve --fleet): the host to list or act on (`curl "
             "URL/api/hosts` lists them); lists default to every host, and an action on a "
             "central needs it.")(fn)


def _on(host: str | None, params: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Query parameters with ``host`` added when one is named."""
    merged = {**(params or {}), **({"host": host} if host else {})}
    return merged or None


def _json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True,
                        help="Print the server's JSON as it sent it (for jq).")(fn)


def _client(ctx: click.Context, url: str | None, token: str | None) -> Any:
    """A client for --url (or the configured server) with the token found for it."""
    from watchkeeper.cli.client import Client, default_url, find_token

    loaded: list[Settings] = []

    def settings() -> Settings:  # read only when --url or --token leaves it needed
        if not loaded:
            loaded.append(_settings(ctx))
        return loaded[0]

    found, source = find_token(token, settings)
    return Client(url or default_url(settings()), found, source)


def _call(ctx: click.Context, url: str | None, token: str | None,
          request: Callable[[Any], Any]) -> Any:
    """Run ``request(client)``; a ClientError ends the command with its one line and code."""
    from watchkeeper.cli.client import ClientError

    client = _client(ctx, url, token)
    try:
        return request(client)
    except ClientError as exc:
        click.echo(f"watchkeeper: {exc}", err=True)
        sys.exit(exc.code)
    finally:
        client.close()


def _show(ctx: click.Context, url: str | None, token: str | None, as_json: bool, path: str,
          render: Callable[..., None], params: dict[str, Any] | None = None) -> None:
    """GET ``path``; print its JSON as sent, or render it as a table."""
    reply = _call(ctx, url, token, lambda c: c.get(path, params))
    if as_json:
        click.echo(json_text(reply.data))
        return
    from datetime import datetime, timezone

    from rich.console import Console

    from watchkeeper.cli import tables

    # rich honours NO_COLOR and a non-terminal stdout; piped rows stay whole lines
    console = Console(highlight=False,
                      width=tables.console_width(sys.stdout.isatty(), os.environ))
    try:
        if not isinstance(reply.data, dict):
            raise TypeError("not an object")
        render(console, reply.data, datetime.now(timezone.utc))
    except (AttributeError, TypeError, ValueError, KeyError):  # shaped like no answer of ours
        click.echo(f"watchkeeper: the answer to GET {path} is not what watchkeeper sends: is "
                   "--url a watchkeeper server of this version? (--json shows it)", err=True)
        sys.exit(1)


@cli.command()
@_json_option
@_remote_options
@click.pass_context
def status(ctx: click.Context, as_json: bool, url: str | None, token: str | None) -> None:
    """The host's overall status and why (GET /api/system)."""
    from watchkeeper.cli import tables

    _show(ctx, url, token, as_json, "/api/system", tables.status)


@cli.command()
@_json_option
@_remote_options
@click.pass_context
def metrics(ctx: click.Context, as_json: bool, url: str | None, token: str | None) -> None:
    """The latest snapshot: CPU, memory, disks, top processes (GET /api/metrics)."""
    from watchkeeper.cli import tables

    _show(ctx, url, token, as_json, "/api/metrics", tables.metrics)


@cli.command()
@_json_option
@_remote_options
@click.pass_context
def agents(ctx: click.Context, as_json: bool, url: str | None, token: str | None) -> None:
    """Each agent's state, checks, errors and restarts (GET /api/agents)."""
    from watchkeeper.cli import tables

    _show(ctx, url, token, as_json, "/api/agents", tables.agents)


@cli.command()
@click.option("--severity", type=click.Choice(["critical", "warning", "info"]), default=None,
              help="Only this severity.")
@_host_option
@_json_option
@_remote_options
@click.pass_context
def alerts(ctx: click.Context, severity: str | None, on_host: str | None, as_json: bool,
           url: str | None, token: str | None) -> None:
    """Open alerts, newest first, with the fingerprint to ack (GET /api/alerts)."""
    from watchkeeper.cli import tables

    params = {"severity": severity} if severity else None
    _show(ctx, url, token, as_json, "/api/alerts", tables.alerts, _on(on_host, params))


@cli.command()
@_host_option
@_json_option
@_remote_options
@click.pass_context
def services(ctx: click.Context, on_host: str | None, as_json: bool, url: str | None,
             token: str | None) -> None:
    """Declared services, their condition and remediation (GET /api/services); on a
    central, every host's (or --host's), and the hosts that did not answer."""
    from watchkeeper.cli import tables

    _show(ctx, url, token, as_json, "/api/services", tables.services, _on(on_host))


@cli.command()
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True,
              help="How many recent audit entries.")
@_host_option
@_json_option
@_remote_options
@click.pass_context
def actions(ctx: click.Context, limit: int, on_host: str | None, as_json: bool,
            url: str | None, token: str | None) -> None:
    """Approvals waiting and recent remediation actions (GET /api/actions); on a central,
    every host's approvals with their host (or --host's approvals and audit log)."""
    from watchkeeper.cli import tables

    _show(ctx, url, token, as_json, "/api/actions", tables.actions,
          _on(on_host, {"limit": limit}))


@cli.command()
@click.option("--from", "start", default=None, metavar="WHEN",
              help="Start: ISO 8601 (naive is UTC) or relative like -24h, -7d "
                   "(default: 24 h before --to).")
@click.option("--to", "end", default=None, metavar="WHEN",
              help="End: ISO 8601, 'now' or relative like -1h (default: now).")
@_json_option
@_remote_options
@click.pass_context
def history(ctx: click.Context, start: str | None, end: str | None, as_json: bool,
            url: str | None, token: str | None) -> None:
    """Incidents, time to detect/recover, uptime and remediation success (GET /api/history)."""
    from watchkeeper.cli import tables

    params = {k: v for k, v in (("from", start), ("to", end)) if v}
    _show(ctx, url, token, as_json, "/api/history", tables.history, params or None)


@notify.command("status")
@_json_option
@_remote_options
@click.pass_context
def notify_status(ctx: click.Context, as_json: bool, url: str | None, token: str | None
                  ) -> None:
    """Whether each route's notifications get through, from a running server (GET
    /api/notify): state, waiting, sent, failed, dropped, last success and error."""
    from watchkeeper.cli import tables

    _show(ctx, url, token, as_json, "/api/notify", tables.notify)


def _done(as_json: bool, reply: Any, line: str) -> None:
    """A mutation's answer: the server's JSON as sent, or one line saying what happened."""
    click.echo(json_text(reply.data) if as_json else line)


def _said(reply: Any, key: str, max_len: int = 200) -> str:
    """One field of the server's answer, safe to print (empty if the answer has no such)."""
    return _said_in(reply.data, key, max_len)


def _said_in(data: Any, key: str, max_len: int = 200) -> str:
    """One field of a JSON object from the server, safe to print (empty if none)."""
    from watchkeeper.safetext import printable

    value = data.get(key) if isinstance(data, dict) else None
    return "" if value is None else printable(str(value), max_len)


@cli.command()
@click.argument("fingerprint")
@_host_option
@_json_option
@_remote_options
@click.pass_context
def ack(ctx: click.Context, fingerprint: str, on_host: str | None, as_json: bool,
        url: str | None, token: str | None) -> None:
    """Acknowledge the open alert FINGERPRINT (see `watchkeeper alerts`); operator token."""
    from urllib.parse import quote

    reply = _call(ctx, url, token,
                  lambda c: c.post(f"/api/alerts/{quote(fingerprint, safe='')}/ack",
                                   params=_on(on_host)))
    _done(as_json, reply, f"acknowledged: {_said(reply, 'summary')}")


@cli.command()
@click.argument("approval_id", metavar="ID", type=click.IntRange(1))
@_host_option
@_json_option
@_remote_options
@click.pass_context
def approve(ctx: click.Context, approval_id: int, on_host: str | None, as_json: bool,
            url: str | None, token: str | None) -> None:
    """Approve pending action ID (see `watchkeeper actions`); it runs if the policy still
    allows it (on a central: --host's policy, on that host). Operator token."""
    reply = _call(ctx, url, token, lambda c: c.post(f"/api/actions/{approval_id}/approve",
                                                    params=_on(on_host)))
    _done(as_json, reply, f"approval #{approval_id}: {_said(reply, 'verdict', 40)}: "
          f"{_said(reply, 'why')}")


@cli.command()
@click.argument("approval_id", metavar="ID", type=click.IntRange(1))
@click.option("--reason", default="", help="Why (kept in the audit log).")
@_host_option
@_json_option
@_remote_options
@click.pass_context
def reject(ctx: click.Context, approval_id: int, reason: str, on_host: str | None,
           as_json: bool, url: str | None, token: str | None) -> None:
    """Reject pending action ID, with an optional --reason. Operator token."""
    reply = _call(ctx, url, token,
                  lambda c: c.post(f"/api/actions/{approval_id}/reject", {"reason": reason},
                                   params=_on(on_host)))
    _done(as_json, reply, f"approval #{approval_id} rejected")


@cli.command()
@click.argument("target")
@_host_option
@_json_option
@_remote_options
@click.pass_context
def reset(ctx: click.Context, target: str, on_host: str | None, as_json: bool,
          url: str | None, token: str | None) -> None:
    """Reset a failing TARGET (a service name, or kind:name such as script:fix) so automatic
    tries are allowed again. Operator token."""
    body = {"target": target} if ":" in target else {"service": target}
    reply = _call(ctx, url, token, lambda c: c.post("/api/actions/reset", body,
                                                    params=_on(on_host)))
    _done(as_json, reply, _said(reply, "detail", 300))


@cli.command()
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True,
              help="How many recent events.")
@click.option("--follow", "-f", is_flag=True,
              help="Then print new events as they happen (GET /api/events) until Ctrl-C.")
@_json_option
@_remote_options
@click.pass_context
def logs(ctx: click.Context, limit: int, follow: bool, as_json: bool, url: str | None,
         token: str | None) -> None:
    """Recent activity: alerts, remediation, agent errors and restarts, config changes
    (GET /api/activity), oldest first; --follow goes on live, reconnecting if the server
    restarts (--json then prints one event per line)."""
    from watchkeeper.cli import tables

    if not follow or not as_json:
        _show(ctx, url, token, as_json, "/api/activity", tables.logs, {"limit": limit})
    if follow:
        _follow(ctx, url, token, as_json)


def _follow(ctx: click.Context, url: str | None, token: str | None, as_json: bool) -> None:
    """Print the live stream's activity until Ctrl-C (exit 0)."""
    from datetime import datetime, timezone

    from watchkeeper.cli import tables
    from watchkeeper.cli.client import ClientError

    kinds = {"alert", "remediation", "agent_error", "agent_restarted", "agent_gave_up",
             "config_changed", "analyzer_notice"}
    lost = [False]
    client = _client(ctx, url, token)

    def on_message(event: str, data: str, _id: str | None) -> None:
        if event == "ready":  # on stderr: stdout stays the events only, for scripts
            click.echo("watchkeeper: reconnected" if lost[0] else
                       f"watchkeeper: following {client.url} (Ctrl-C to stop)", err=True)
            lost[0] = False
            return
        if event not in kinds:
            return
        try:
            body = json.loads(data)
        except ValueError:
            return
        if as_json:
            click.echo(json_text(body))
            return
        now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        click.echo(f"{now}  {event:<15}  {tables.event_line(event, body)}")

    def on_lost() -> None:
        if not lost[0]:
            click.echo("watchkeeper: lost the server; reconnecting (Ctrl-C to stop)", err=True)
        lost[0] = True

    try:
        client.follow("/api/events", {"snapshots": "none"}, on_message, on_lost)
    except ClientError as exc:
        click.echo(f"watchkeeper: {exc}", err=True)
        sys.exit(exc.code)
    except KeyboardInterrupt:
        pass
    finally:
        client.close()


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(_ctx: click.Context, _param: click.Parameter, value: str) -> float:
    """--for 90s, 30m, 2h, 1d (a usage error, exit 2, otherwise)."""
    import re

    found = re.fullmatch(r"\s*(\d{1,6}(?:\.\d{1,3})?)\s*([smhd])\s*", value)
    if not found or float(found.group(1)) <= 0:
        raise click.BadParameter(f"{value!r} is not a duration like 90s, 30m, 2h or 1d")
    return float(found.group(1)) * _UNITS[found.group(2)]


def _matchers(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]
              ) -> dict[str, str]:
    """KEY=GLOB pairs (a usage error, exit 2, otherwise)."""
    pairs: dict[str, str] = {}
    for item in value:
        key, sep, glob = item.partition("=")
        if not sep or not key.strip() or not glob:
            raise click.BadParameter(f"{item!r} is not KEY=GLOB (e.g. metric=disk.*)")
        pairs[key.strip()] = glob
    return pairs


@cli.command()
@click.argument("matchers", metavar="KEY=GLOB...", nargs=-1, required=True,
                callback=_matchers)
@click.option("--for", "for_s", required=True, metavar="DURATION", callback=_duration,
              help="How long: 90s, 30m, 2h, 1d.")
@click.option("--comment", default="", help="Why (shown with the silence).")
@_host_option
@_json_option
@_remote_options
@click.pass_context
def silence(ctx: click.Context, matchers: dict[str, str], for_s: float, comment: str,
            on_host: str | None, as_json: bool, url: str | None, token: str | None) -> None:
    """Silence alerts whose rule, metric, dimension, host, severity or label match every
    KEY=GLOB (e.g. metric=disk.* dimension=/var) for a while. Operator token."""
    from datetime import datetime, timedelta, timezone

    until = datetime.now(timezone.utc) + timedelta(seconds=for_s)
    body = {"matchers": matchers, "until": until.isoformat(), "comment": comment}
    reply = _call(ctx, url, token, lambda c: c.post("/api/alerts/silences", body,
                                                    params=_on(on_host)))
    _done(as_json, reply, f"{_said(reply, 'id', 64)} until {_said(reply, 'until', 64)}")


def _json_or_text(value: str) -> Any:
    """A command-line VALUE: JSON if it parses (80, true, ["a"]), else the string itself."""
    try:
        return json.loads(value)
    except ValueError:
        return value


@cli.command()
@click.argument("name", type=click.Choice(["health_check", "pause", "resume", "restart",
                                           "remediate"]))
@click.argument("args", nargs=-1, metavar="[ACTION KEY=VALUE...]")
@click.option("--target", default="all", show_default=True,
              help="An agent's name, or all (agent commands).")
@click.option("--dry-run", is_flag=True, help="remediate: only show what would happen.")
@click.option("--reason", default="", help="remediate: why (kept in the audit log).")
@_host_option
@_json_option
@_remote_options
@click.pass_context
def command(ctx: click.Context, name: str, args: tuple[str, ...], target: str, dry_run: bool,
            reason: str, on_host: str | None, as_json: bool, url: str | None,
            token: str | None) -> None:
    """Send an agent command, or `remediate ACTION KEY=VALUE...` (e.g. remediate
    restart_service service=web --dry-run), through POST /api/command; exit 1 if an agent did
    not say ok or the policy refused. Operator token."""
    if name == "remediate":
        _remediate(ctx, args, dry_run, reason, on_host, as_json, url, token)
        return
    if args or dry_run or reason:
        raise click.UsageError(f"{name} takes only --target; ACTION, KEY=VALUE, --dry-run and "
                               "--reason are for remediate")
    from watchkeeper.safetext import printable

    reply = _call(ctx, url, token,
                  lambda c: c.post("/api/command", {"command": name, "target": target},
                                   params=_on(on_host)))
    replies = reply.data.get("replies") if isinstance(reply.data, dict) else None
    replies = [r for r in replies if isinstance(r, dict)] if isinstance(replies, list) else []
    if as_json:
        click.echo(json_text(reply.data))
    else:
        for r in replies:
            click.echo(f"{printable(str(r.get('agent')), 64)}: "
                       f"{'ok' if r.get('ok') is True else 'FAILED'}: "
                       f"{printable(str(r.get('message', '')), 200)}")
    if not replies or not all(r.get("ok") is True for r in replies):
        sys.exit(1)


def _remediate(ctx: click.Context, args: tuple[str, ...], dry_run: bool, reason: str,
               on_host: str | None, as_json: bool, url: str | None, token: str | None
               ) -> None:
    """``command remediate ACTION KEY=VALUE...``: the policy's verdict, the preview of a dry
    run, or the approval to wait for."""
    from watchkeeper.safetext import printable

    if not args:
        raise click.UsageError("remediate needs an ACTION, e.g. remediate restart_service "
                               "service=web")
    action, params = args[0], {}
    for item in args[1:]:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.UsageError(f"{item!r} is not KEY=VALUE (e.g. service=web)")
        params[key.strip()] = _json_or_text(value)
    body = {"command": "remediate", "action": action, "params": params, "dry_run": dry_run,
            "reason": reason}
    reply = _call(ctx, url, token, lambda c: c.post("/api/command", body,
                                                    params=_on(on_host)))
    decision = reply.data.get("decision") if isinstance(reply.data, dict) else None
    decision = decision if isinstance(decision, dict) else {}
    verdict = str(decision.get("verdict", "?"))
    if as_json:
        click.echo(json_text(reply.data))
    else:
        what = " ".join(p for p in (_said_in(decision, "action", 64),
                                    _said_in(decision, "target", 200)) if p)
        why = _said_in(decision, "why", 300).removeprefix(f"{verdict}: ")
        line = f"{printable(verdict, 20)}: {what} — {why}"
        if decision.get("preview"):
            line += f"\n  would: {_said_in(decision, 'preview', 500)}"
        if decision.get("approval_id") is not None:
            on = f" --host {printable(on_host, 253)}" if on_host else ""
            line += (f"\n  waits for approval #{_said_in(decision, 'approval_id', 20)}: "
                     f"watchkeeper approve {_said_in(decision, 'approval_id', 20)}{on}")
        click.echo(line)
    if verdict not in ("auto", "approve", "dry_run"):
        sys.exit(1)


@cli.command()
@click.option("--from", "start", default=None, metavar="TIME",
              help="Start: ISO 8601 (UTC unless it says otherwise) or relative (-24h, -30m). "
                   "Default: 24 h before --to.")
@click.option("--to", "end", default=None, metavar="TIME", help="End (default: now).")
@click.option("--host", default=None, help="Whose history (default: the newest snapshot's).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@_config_option
@click.pass_context
def replay(ctx: click.Context, start: str | None, end: str | None, host: str | None,
           as_json: bool) -> None:
    """Shadow mode: run the rules and the remediation policy of --config FILE (default: the
    current configuration) over stored history, executing nothing; show what would have
    fired and been done next to what did. Exit 2 on a bad range, config or database."""
    from datetime import datetime, timezone

    from rich.console import Console

    from watchkeeper.cli.replay import render
    from watchkeeper.replay import ReplayError, parse_range
    from watchkeeper.replay import replay as run_replay
    from watchkeeper.safetext import printable
    from watchkeeper.store.reader import HistoryReader
    from watchkeeper.store.sqlite import DB_FILENAME, StoreError

    # Every bad input is one line and exit 2, before anything is opened.
    try:
        t0, t1 = parse_range(start, end, datetime.now(timezone.utc))
    except ReplayError as exc:
        click.echo(f"watchkeeper: {printable(str(exc), 300)}", err=True)
        sys.exit(EXIT_CONFIG)
    config_file = ctx.obj.get("config")
    try:
        settings = load_settings(config_file)
    except ConfigError as err:
        click.echo(f"watchkeeper: invalid configuration {config_file or ''}: "
                   f"{printable('; '.join(str(p) for p in err.problems), 500)}", err=True)
        sys.exit(EXIT_CONFIG)
    except RecursionError:  # the YAML parser on thousands of nested brackets
        click.echo(f"watchkeeper: invalid configuration {config_file or ''}: nested too "
                   "deeply to read", err=True)
        sys.exit(EXIT_CONFIG)
    try:
        with HistoryReader(settings.storage.path / DB_FILENAME) as reader:
            report = run_replay(reader, settings, t0, t1, host=host,
                                config=str(config_file) if config_file else
                                "the current configuration")
    except StoreError as exc:
        click.echo(f"watchkeeper: {printable(str(exc), 500)}", err=True)
        sys.exit(EXIT_CONFIG)
    if as_json:
        click.echo(json_text(report.to_json()))
    else:
        console = Console(highlight=False)
        if not console.is_terminal:
            console.width = 160  # into a file or a pipe: whole rows, not 80 wrapped columns
        render(console, report)


def _setting(config: Any, key: str) -> Any:
    """The value at dotted ``key`` in the server's configuration; LookupError if none."""
    node = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            import difflib

            known = list(node) if isinstance(node, dict) else []
            close = difflib.get_close_matches(part, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise LookupError(f"no setting {key!r}{hint}")
        node = node[part]
    return node


@config.command("get")
@click.argument("key")
@_host_option
@_json_option
@_remote_options
@click.pass_context
def config_get(ctx: click.Context, key: str, on_host: str | None, as_json: bool,
               url: str | None, token: str | None) -> None:
    """Print one setting (e.g. thresholds.cpu_warning) of the running server, secrets
    masked; a section prints as JSON."""
    from watchkeeper.safetext import printable

    reply = _call(ctx, url, token, lambda c: c.get("/api/config", _on(on_host)))
    try:
        value = _setting(reply.data.get("config") if isinstance(reply.data, dict) else None, key)
    except LookupError as exc:
        click.echo(f"watchkeeper: {printable(str(exc), 300)}", err=True)
        sys.exit(1)
    if as_json or isinstance(value, (dict, list)) or value is None or isinstance(value, bool):
        click.echo(json.dumps(value, indent=None if as_json else 2))
    else:
        click.echo(printable(str(value)))


@config.command("set")
@click.argument("key")
@click.argument("value")
@_host_option
@_json_option
@_remote_options
@click.pass_context
def config_set(ctx: click.Context, key: str, value: str, on_host: str | None, as_json: bool,
               url: str | None, token: str | None) -> None:
    """Change one setting of the running server, validated and kept for its next start.
    VALUE is JSON if it parses (80, true, ["a"]), else a string. Operator token."""
    parts = key.split(".")
    if not all(parts):
        raise click.BadParameter(f"{key!r} is not a dotted setting name", param_hint="KEY")
    patch: Any = _json_or_text(value)
    for part in reversed(parts):
        patch = {part: patch}
    reply = _call(ctx, url, token, lambda c: c.patch("/api/config", patch, _on(on_host)))
    changed = reply.data.get("changed") if isinstance(reply.data, dict) else None
    changed = [str(c) for c in changed] if isinstance(changed, list) else []
    _done(as_json, reply, f"changed: {', '.join(changed)} (version {_said(reply, 'version')})"
          if changed else "unchanged: it had that value already")


@cli.command("cli")
@click.option("--plain", is_flag=True,
              help="No emoji and no colour (NO_COLOR=1 drops the colour only).")
@_remote_options
@click.pass_context
def tui(ctx: click.Context, plain: bool, url: str | None, token: str | None) -> None:
    """The full-screen terminal UI: nine views on keys 1-9, q to quit. Follows a running
    server (--url, $WATCHKEEPER_URL, else the configured one); with none there, offers to
    start the agents in this process."""
    # Textual is imported here only: `run` and `serve` never load it (their memory is
    # benchmarked).
    from watchkeeper.cli.client import default_url, find_token
    from watchkeeper.cli.tui.app import WatchkeeperApp

    loaded: list[Settings] = []

    def settings() -> Settings:
        if not loaded:
            loaded.append(_settings(ctx))
        return loaded[0]

    app = WatchkeeperApp(url or default_url(settings()), lambda: find_token(token, settings),
                         plain=plain, settings=settings)
    try:
        code = app.run()
    finally:
        app.stop_local()  # however it ended: the agents started here flush and let go
    sys.exit(code or 0)


def main() -> None:
    """Console-script entry point."""
    cli(obj={})
