"""Fleet identities (bus/auth.py): seed files, the permission block, start-time checks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from watchkeeper.bus.auth import (
    IdentityError,
    authorization_block,
    credential_problems,
    host_permissions,
    identity_secret,
    read_identities,
    write_identity,
)
from watchkeeper.bus.subjects import durable_name
from watchkeeper.config import validate


def test_a_seed_is_written_for_its_owner_only_and_never_over_another_file(
        tmp_path: Path) -> None:
    old = os.umask(0)  # the most permissive umask: the seed is 0600 all the same
    try:
        seed, public = write_identity(tmp_path / "keys", "host", "web-1")
    finally:
        os.umask(old)
    assert seed.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "keys").stat().st_mode & 0o777 == 0o700
    assert seed.read_text().startswith("SU") and public.startswith("U")
    assert read_identities(tmp_path / "keys") == [("host", "web-1", public)]
    # A link planted where the next seed goes is not followed (nor is the file overwritten).
    target = tmp_path / "elsewhere"
    (tmp_path / "keys" / "db-1.nk").symlink_to(target)
    with pytest.raises(IdentityError, match="exists"):
        write_identity(tmp_path / "keys", "host", "db-1")
    assert not target.exists()


@pytest.mark.parametrize("data", [
    pytest.param({"role": "admin", "name": "web-1", "nkey": "U" + "A" * 55}, id="unknown-role"),
    pytest.param({"role": "host", "name": "web.1", "nkey": "U" + "A" * 55}, id="bad-name"),
    pytest.param({"role": "host", "name": "web-1", "nkey": 'U"}]}'}, id="nkey-injection"),
    pytest.param({"role": "host"}, id="missing-fields"),
])
def test_a_tampered_identity_file_is_refused(tmp_path: Path, data: dict[str, str]) -> None:
    (tmp_path / "web-1.identity.json").write_text(json.dumps(data))
    with pytest.raises(IdentityError, match="not an identity file"):
        read_identities(tmp_path)


def test_a_host_is_granted_no_stream_api_and_consumers_on_its_own_subjects_only() -> None:
    perms = host_permissions("web-1", "wk")
    publish = perms["publish"]["allow"]
    assert not [p for p in publish if p.startswith("$JS.API.STREAM")]
    api = [p for p in publish if p.startswith("$JS.")]
    assert api and all(p.startswith("$JS.API.CONSUMER.CREATE.WK_") for p in api)
    assert all(p.split(".")[6:8] in (["wk", "metrics"], ["wk", "alerts"], ["wk", "actions"],
                                     ["wk", "audit"], ["wk", "errors"], ["wk", "system"],
                                     ["wk", "services"]) and p.split(".")[8] == "web-1"
               for p in api)
    assert perms["subscribe"]["allow"] == ["wk.*.web-1", "wk.*.web-1.>", "_INBOX.web-1.>"]
    block = authorization_block([("host", "web-1", "U" + "A" * 55)], "wk")
    assert block.startswith("authorization {\n  users = [\n") and '"wk.*.web-1"' in block


def test_consumer_names_are_keyed_by_the_members_own_seed(tmp_path: Path) -> None:
    write_identity(tmp_path, "host", "web-1")
    write_identity(tmp_path, "host", "db-1")
    secrets = [identity_secret(validate({"bus": {"nkey_seed_file": str(tmp_path / f)}}).bus)
               for f in ("web-1.nk", "db-1.nk")]
    assert secrets[0] != secrets[1] and all(len(s) == 32 for s in secrets)
    names = {durable_name("web-1", "remediator", "wk.alerts.web-1", s) for s in secrets}
    assert len(names) == 2
    assert durable_name("web-1", "remediator", "wk.alerts.web-1") not in names
    assert identity_secret(validate({}).bus) == b""  # no key: names as before


@pytest.mark.parametrize(("fields", "wanted"), [
    pytest.param({"nkey_seed_file": "/nonexistent/web-1.nk"}, "bus.nkey_seed_file: cannot read",
                 id="seed-missing"),
    pytest.param({"creds_file": "{tmp}/plain.txt"}, "bus.creds_file:", id="creds-not-creds"),
    pytest.param({"tls_ca_file": "{tmp}/plain.txt"}, "bus.tls_ca_file: cannot load",
                 id="ca-not-pem"),
    pytest.param({"tls_cert_file": "{tmp}/plain.txt", "tls_key_file": "{tmp}/plain.txt"},
                 "bus.tls_cert_file: cannot load", id="cert-not-pem"),
])
def test_credential_and_tls_files_are_checked_before_connecting(
        tmp_path: Path, fields: dict[str, str], wanted: str) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("hello\n")
    plain.chmod(0o600)
    bus = validate({"bus": {k: v.format(tmp=tmp_path) for k, v in fields.items()}}).bus
    problems = [str(p) for p in credential_problems(bus)]
    assert any(p.startswith(wanted) for p in problems), problems


def test_each_client_has_an_inbox_of_its_own_that_is_one_subject_token() -> None:
    from watchkeeper.bus.subjects import inbox_prefix

    assert inbox_prefix("web-1") == "_INBOX.web-1"
    assert inbox_prefix("web 1.example*>") == "_INBOX.web-1-example--"
