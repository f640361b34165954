"""`watchkeeper fleet add-host NAME | add-central NAME | remove NAME | list | broker-config`:
an nkey per fleet member and the nats-server permissions to install (bus/auth.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click

from watchkeeper.bus.auth import (
    IdentityError,
    Role,
    authorization_block,
    check_name,
    read_identities,
    remove_identity,
    write_identity,
)
from watchkeeper.cli.main import EXIT_CONFIG, _config_option, _settings

_DIR_HELP = ("Directory of the fleet's identities: each member's seed (NAME.nk, mode 0600) "
             "and public key; the broker block covers all of them.")


def _dir_option(fn: click.decorators.FC) -> click.decorators.FC:
    return click.option("--dir", "directory", type=click.Path(path_type=Path, file_okay=False),
                        default=Path("fleet-keys"), show_default=True, help=_DIR_HELP)(fn)


@click.group()
def fleet() -> None:
    """A fleet's broker identities: one nkey per host, and what each may do on NATS."""


def _fail(message: str) -> NoReturn:
    click.echo(f"watchkeeper: {message}", err=True)
    sys.exit(EXIT_CONFIG)


def _identities(directory: Path) -> list[tuple[Role, str, str]]:
    """The identities made in ``directory`` (none if it does not exist); exit 2 if one of
    its files is not an identity."""
    try:
        return read_identities(directory) if directory.is_dir() else []
    except IdentityError as exc:
        _fail(str(exc))


def _add(ctx: click.Context, role: Role, name: str, directory: Path) -> None:
    prefix = _settings(ctx).bus.subject_prefix
    try:
        check_name(name)
        known = read_identities(directory) if directory.is_dir() else []
        if any(n == name for _r, n, _k in known):
            raise IdentityError(f"{name} has an identity in {directory} already (delete "
                                f"{directory / (name + '.nk')} and its .identity.json to "
                                "make a new key)")
        if role == "central" and any(r == "central" for r, _n, _k in known):
            raise IdentityError(f"{directory} has a central already: one per fleet")
        seed_path, public = write_identity(directory, role, name)
        block = authorization_block(read_identities(directory), prefix)
    except (IdentityError, OSError) as exc:
        _fail(str(exc))
        return
    member = "host" if role == "host" else "central"
    command = "watchkeeper agent" if role == "host" else "watchkeeper serve --fleet"
    click.echo(f"# {member} {name}: nkey {public}\n"
               f"# Its secret seed is in {seed_path} (mode 0600; not shown). Copy it to that\n"
               f"# machine (say /etc/watchkeeper/{name}.nk), readable only by the user\n"
               f"# {command} runs as, and set there in watchkeeper.yaml:\n"
               f"#   host_name: {name}\n"
               f"#   bus:\n"
               f"#     nkey_seed_file: /etc/watchkeeper/{name}.nk\n"
               f"# ({command} --server nats://BROKER:4222, or tls://BROKER:4222 with TLS.)\n"
               f"#\n"
               f"# In nats-server.conf, this block (every identity in {directory}/) replaces\n"
               f"# any earlier one; then `nats-server --signal reload`:\n")
    click.echo(block, nl=False)


@fleet.command("add-host")
@click.argument("name")
@_dir_option
@_config_option
@click.pass_context
def add_host(ctx: click.Context, name: str, directory: Path) -> None:
    """Make host NAME's nkey and print the broker block: NAME may publish and read only its
    own subjects (<prefix>.*.NAME...) and its own inbox."""
    _add(ctx, "host", name, directory)


@fleet.command("add-central")
@click.argument("name")
@_dir_option
@_config_option
@click.pass_context
def add_central(ctx: click.Context, name: str, directory: Path) -> None:
    """Make the central's nkey (NAME: its host_name) and print the broker block: it reads
    every host, sends commands and manages the streams (never purges or deletes them)."""
    _add(ctx, "central", name, directory)


@fleet.command("broker-config")
@_dir_option
@_config_option
@click.pass_context
def broker_config(ctx: click.Context, directory: Path) -> None:
    """Print the nats-server authorization block for every identity made so far."""
    prefix = _settings(ctx).bus.subject_prefix
    identities = _identities(directory)
    if not identities:
        _fail(f"no identities in {directory}: run `watchkeeper fleet add-central NAME` and "
              "`watchkeeper fleet add-host NAME` first")
    click.echo(authorization_block(identities, prefix), nl=False)


@fleet.command("remove")
@click.argument("name")
@_dir_option
@_config_option
@click.pass_context
def remove(ctx: click.Context, name: str, directory: Path) -> None:
    """Revoke member NAME's key (a host retired or its key leaked): delete its identity and
    print the broker block without it. Once installed and reloaded, the broker closes NAME's
    connections and refuses it."""
    prefix = _settings(ctx).bus.subject_prefix
    try:
        role = remove_identity(directory, name)
        block = authorization_block(read_identities(directory), prefix)
    except (IdentityError, OSError) as exc:
        _fail(str(exc))
        return
    click.echo(f"# {role} {name}: its key is revoked in {directory}/ (seed and public key\n"
               f"# deleted). Until the broker has the block below, it is still let in: put it\n"
               f"# in nats-server.conf in place of the earlier one, then `nats-server --signal\n"
               f"# reload`; the broker then closes {name}'s connections and refuses it.\n"
               f"# Delete its seed on {name} too.\n")
    click.echo(block, nl=False)


@fleet.command("list")
@_dir_option
@click.pass_context
def list_(ctx: click.Context, directory: Path) -> None:
    """Every member with a key: role, name and public key (never a secret)."""
    identities = _identities(directory)
    if not identities:
        click.echo(f"no identities in {directory}")
        return
    for role, name, key in identities:
        click.echo(f"{role:8} {name:40} {key}")
