"""The `watchkeeper` command tree (click). The only place, with cli/*, that prints.

Commands: run, config show, config validate. Later: serve, cli, simulate.
Exit codes: 0 ok, 1 runtime failure, 2 bad configuration or usage.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

import click

from watchkeeper import __version__
from watchkeeper.config import ConfigError, Settings, load_settings

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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="watchkeeper")
@click.option("--config", "-c", "config", type=click.Path(path_type=Path, dir_okay=False),
              default=None, help="YAML config file (default: ./watchkeeper.yaml if present).")
@click.pass_context
def cli(ctx: click.Context, config: Path | None) -> None:
    """watchkeeper: watches your hosts, explains what is wrong, fixes the routine things."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config


@cli.command()
@click.option("--agents", default=None, help="Comma-separated agents to run (default: all).")
@click.option("--no-console-log", is_flag=True, help="Log only to the log file.")
@click.pass_context
def run(ctx: click.Context, agents: str | None, no_console_log: bool) -> None:
    """Run all agents in the foreground, headless (Ctrl-C or SIGTERM stops cleanly)."""
    settings = _settings(ctx)
    from watchkeeper.logging_setup import setup_logging
    from watchkeeper.runtime import Runtime
    from watchkeeper.store.sqlite import StoreError

    log_file = setup_logging(settings.logging, console=not no_console_log)
    names = [a.strip() for a in agents.split(",") if a.strip()] if agents else None
    click.echo(f"watchkeeper {__version__}: logs in {log_file}, history in "
               f"{settings.storage.path}. Ctrl-C to stop.", err=True)
    try:
        runtime = Runtime(settings, agents=names)
    except (StoreError, ValueError) as exc:
        click.echo(f"watchkeeper: {exc}", err=True)
        sys.exit(1)
    asyncio.run(_run_until_signal(runtime))


async def _run_until_signal(runtime: Any) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # Windows: only SIGINT, via KeyboardInterrupt
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
    await runtime.run(stop)


@cli.group()
def config() -> None:
    """Show or validate the configuration."""


@config.command("show")
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml",
              show_default=True)
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
@click.pass_context
def config_validate(ctx: click.Context, file: Path | None) -> None:
    """Check a config file (with the environment and .env on top); exit 2 if invalid."""
    path = file or ctx.obj.get("config")
    _settings(ctx, path)
    shown = path or ("./watchkeeper.yaml" if Path("watchkeeper.yaml").is_file() else "defaults")
    click.echo(f"OK: configuration from {shown} is valid")


def main() -> None:
    """Console-script entry point."""
    cli(obj={})
