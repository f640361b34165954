"""Fleet identities on the NATS broker: one nkey per host and one for the central, and the
nats-server permissions that keep each host to its own subjects.

A host (``watchkeeper agent``) may publish only ``<prefix>.<family>.<host>[.…]``, read only
the same subjects and its own inbox ``_INBOX.<host>.>``, answer only the requests it
received (``allow_responses``: replies to the central's commands, acknowledgements of its
JetStream deliveries), and use one JetStream API call: create a consumer filtered on its own
subjects. It can never create, change, purge or delete a stream, read another consumer's
settings, or delete a consumer. Consumer names are keyed by a secret derived from each
client's own seed (:func:`identity_secret`), so a host cannot name, and re-point, someone
else's consumer.

The central (``serve --fleet``) reads and publishes every host's subjects (alerts, commands)
and manages the streams and its consumers, but cannot purge or delete a stream either.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import ssl
import stat
from pathlib import Path
from typing import Any, Literal

from watchkeeper.bus.subjects import STREAM_FAMILIES, inbox_prefix, stream_name
from watchkeeper.config import BusConfig, ConfigProblem

#: A fleet member's name: one NATS subject token (what ``watchkeeper agent`` reports as its
#: host, ``host_name``; dots would split subjects), safe in permissions and file names.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
Role = Literal["host", "central"]
#: How long an answer to a received message (a command reply, a JetStream acknowledgement)
#: stays allowed: longer than any handler holds an event before acknowledging it.
RESPONSE_WINDOW = "1h"
#: Answers allowed per received message. The broker counts every delivery of a request to
#: one of the client's matching subscriptions against it (an agent's communicator follows
#: its own host's subjects, commands included, beside the responder), so one is too few.
RESPONSE_MAX = 8
SEED_SUFFIX = ".nk"
IDENTITY_SUFFIX = ".identity.json"


class IdentityError(ValueError):
    """A fleet name or an identity file that cannot be used."""


def check_name(name: str) -> str:
    """The name as given, or IdentityError saying what a valid one looks like."""
    if NAME_PATTERN.fullmatch(name):
        return name
    shown = name[:80].encode("unicode_escape").decode("ascii")  # no raw control characters
    hint = ""
    suggestion = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-_")[:63]
    if suggestion and NAME_PATTERN.fullmatch(suggestion):
        hint = (f" (for that host, set host_name: {suggestion} in its configuration and use "
                f"that name here)")
    raise IdentityError(f"invalid fleet name '{shown}': 1-63 letters, digits, '-' and '_', "
                        f"starting with a letter or digit{hint}")


def new_seed() -> tuple[str, str]:
    """A fresh nkey user identity: (seed, public key)."""
    import nkeys  # type: ignore[import-untyped]  # nats-py's nkey library (PyNaCl)

    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    return seed.decode(), public


def host_permissions(host: str, prefix: str) -> dict[str, Any]:
    """What a host may do on the broker: its own subjects, its own inbox, and consumers
    filtered on its own subjects."""
    own = [f"{prefix}.*.{host}", f"{prefix}.*.{host}.>"]
    consumers = [
        f"$JS.API.CONSUMER.CREATE.{stream_name(prefix, stream)}.*.{prefix}.{family}.{host}{tail}"
        for stream, families in STREAM_FAMILIES.items() for family in families
        for tail in ("", ".>")
    ]
    inbox = f"{inbox_prefix(host)}.>"  # published to as well: the bus's own barrier
    return {
        "publish": {"allow": [*own, inbox, *consumers]},
        "subscribe": {"allow": [*own, inbox]},
        "allow_responses": {"max": RESPONSE_MAX, "expires": RESPONSE_WINDOW},
    }


def central_permissions(central: str, prefix: str) -> dict[str, Any]:
    """What the central may do: every host's subjects, its streams and consumers (never a
    stream's purge or deletion), its own inbox."""
    api: list[str] = []
    for stream in STREAM_FAMILIES:
        name = stream_name(prefix, stream)
        api += [f"$JS.API.STREAM.CREATE.{name}", f"$JS.API.STREAM.UPDATE.{name}",
                f"$JS.API.STREAM.INFO.{name}", f"$JS.API.CONSUMER.CREATE.{name}",
                f"$JS.API.CONSUMER.CREATE.{name}.>", f"$JS.API.CONSUMER.INFO.{name}.*",
                f"$JS.API.CONSUMER.DELETE.{name}.*"]
    inbox = f"{inbox_prefix(central)}.>"
    return {
        "publish": {"allow": [f"{prefix}.>", inbox, *api]},
        "subscribe": {"allow": [f"{prefix}.>", inbox]},
        "allow_responses": {"max": RESPONSE_MAX, "expires": RESPONSE_WINDOW},
    }


def permissions(role: Role, name: str, prefix: str) -> dict[str, Any]:
    return (host_permissions if role == "host" else central_permissions)(name, prefix)


def user_entry(role: Role, name: str, public_key: str, prefix: str) -> str:
    """One ``users`` entry of nats-server's ``authorization`` block (JSON is valid there)."""
    perms = json.dumps(permissions(role, name, prefix), indent=2).replace("\n", "\n    ")
    return (f"    # {role} {name} (watchkeeper fleet add-{role})\n"
            f"    {{nkey: {json.dumps(public_key)}, permissions: {perms}}}")


def authorization_block(identities: list[tuple[Role, str, str]], prefix: str) -> str:
    """nats-server's ``authorization`` block for (role, name, public key) identities."""
    entries = "\n".join(user_entry(role, name, key, prefix) for role, name, key in identities)
    return f"authorization {{\n  users = [\n{entries}\n  ]\n}}\n"


# -- identity files (the directory `fleet add-host` writes)

def write_identity(directory: Path, role: Role, name: str) -> tuple[Path, str]:
    """Make ``name``'s nkey: the seed in ``<dir>/<name>.nk`` (mode 0600, never printed) and
    the public part in ``<dir>/<name>.identity.json``. IdentityError if it exists."""
    check_name(name)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    seed_path = directory / f"{name}{SEED_SUFFIX}"
    meta_path = directory / f"{name}{IDENTITY_SUFFIX}"
    for path in (seed_path, meta_path):
        if os.path.lexists(path):  # a dangling link too
            raise IdentityError(f"{path} exists: {name} has an identity already (delete "
                                f"{seed_path} and {meta_path} first to make a new key)")
    seed, public = new_seed()
    # O_EXCL: never through a file or link someone put there meanwhile.
    try:
        fd = os.open(seed_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise IdentityError(f"{seed_path} exists: {name} has an identity already") from None
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, (seed + "\n").encode())
    finally:
        os.close(fd)
    fd = os.open(meta_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w") as meta:
        meta.write(json.dumps({"role": role, "name": name, "nkey": public}) + "\n")
    return seed_path, public


def remove_identity(directory: Path, name: str) -> Role:
    """Delete ``name``'s seed and public key from ``directory`` (its role returned): the
    next authorization block leaves it out. IdentityError if it has none there."""
    check_name(name)
    known = {n: r for r, n, _k in read_identities(directory)} if directory.is_dir() else {}
    if name not in known:
        raise IdentityError(f"{name} has no identity in {directory} (`watchkeeper fleet "
                            "list` shows those that do)")
    for suffix in (SEED_SUFFIX, IDENTITY_SUFFIX):
        with contextlib.suppress(FileNotFoundError):  # the seed may live on its host only
            (directory / f"{name}{suffix}").unlink()
    return known[name]


def read_identities(directory: Path) -> list[tuple[Role, str, str]]:
    """Every (role, name, public key) made in ``directory``, the central first."""
    out: list[tuple[Role, str, str]] = []
    for path in sorted(directory.glob(f"*{IDENTITY_SUFFIX}")):
        try:
            data = json.loads(path.read_text())
            role, name, key = data["role"], check_name(data["name"]), str(data["nkey"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IdentityError(f"{path}: not an identity file ({exc})") from None
        if role not in ("host", "central") or not re.fullmatch(r"U[A-Z2-7]{55}", key):
            raise IdentityError(f"{path}: not an identity file (role or nkey)")
        out.append((role, name, key))
    return sorted(out, key=lambda i: (i[0] != "central", i[1]))


# -- the client side: checks at start, and the secret that keys consumer names

def credential_problems(config: BusConfig) -> list[ConfigProblem]:
    """What is wrong with the credential and TLS files ``bus.*`` names (empty if nothing)."""
    problems: list[ConfigProblem] = []
    for key in ("nkey_seed_file", "creds_file"):
        path: Path | None = getattr(config, key)
        if path is None:
            continue
        path = path.expanduser()
        try:
            data = path.read_text().strip()
            mode = path.stat().st_mode
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(ConfigProblem(f"bus.{key}", f"cannot read {path}: "
                                          f"{getattr(exc, 'strerror', None) or exc}"))
            continue
        if os.name == "posix" and mode & 0o077:
            problems.append(ConfigProblem(f"bus.{key}", f"{path} can be read by other users "
                                          f"(mode {stat.S_IMODE(mode):04o}); it holds this "
                                          f"host's secret key: chmod 600 {path}"))
        if key == "nkey_seed_file" and not _is_user_seed(data):
            problems.append(ConfigProblem(f"bus.{key}", f"{path} is not an nkey user seed (one "
                                          "line starting with SU, as `watchkeeper fleet "
                                          "add-host` writes)"))
        if key == "creds_file" and "-----BEGIN USER NKEY SEED-----" not in data:
            problems.append(ConfigProblem(f"bus.{key}",
                                          f"{path} is not a NATS .creds file (JWT and seed)"))
    ca = config.tls_ca_file.expanduser() if config.tls_ca_file else None
    if ca is not None:
        try:
            ssl.create_default_context().load_verify_locations(cafile=str(ca))
        except (OSError, ssl.SSLError) as exc:
            problems.append(ConfigProblem("bus.tls_ca_file", f"cannot load {ca} as PEM "
                                          f"certificates: {getattr(exc, 'strerror', None) or exc}"))
    if config.tls_cert_file is not None and config.tls_key_file is not None:
        cert, key_file = config.tls_cert_file.expanduser(), config.tls_key_file.expanduser()
        try:
            ssl.create_default_context().load_cert_chain(str(cert), str(key_file))
        except (OSError, ssl.SSLError) as exc:
            problems.append(ConfigProblem("bus.tls_cert_file", f"cannot load {cert} with "
                                          f"bus.tls_key_file {key_file}: "
                                          f"{getattr(exc, 'strerror', None) or exc}"))
    return problems


def _is_user_seed(text: str) -> bool:
    if not text.startswith("SU"):
        return False
    try:
        import nkeys

        nkeys.from_seed(bytearray(text.encode()))
    except Exception:
        return False
    return True


def identity_secret(config: BusConfig) -> bytes:
    """A key for this client's consumer names, derived one-way from its own secret seed
    (empty without credentials: names as before, for an open broker)."""
    path = config.nkey_seed_file or config.creds_file
    if path is None:
        return b""
    data = path.expanduser().read_bytes().strip()
    return hashlib.blake2b(data, digest_size=32, person=b"wk-consumers").digest()
