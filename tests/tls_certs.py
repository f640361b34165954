"""A self-signed CA made at test time, and certificates it signs (PyPI ``cryptography``)."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: A fixed, wide validity (this century): the broker (Go) reads the real clock while the
#: year-ahead test pass moves Python's, so a certificate valid "from now" would not be valid
#: yet to one of them; none of these dates is near today's.
VALID_FROM = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
VALID_UNTIL = datetime.datetime(2099, 12, 31, tzinfo=datetime.timezone.utc)


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write(root: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
           ) -> Pair:
    cert_path, key_path = root / f"{stem}.pem", root / f"{stem}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return Pair(cert_path, key_path)


class TestCA:
    """A CA of the test's own; it signs a server cert for 127.0.0.1 and client certs."""

    __test__ = False  # not a pytest test class

    def __init__(self, root: Path, name: str = "watchkeeper test CA") -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = (
            x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(VALID_FROM).not_valid_after(VALID_UNTIL)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(self.key, hashes.SHA256()))
        self.pem = _write(root, "ca", self.cert, self.key).cert

    def issue(self, stem: str, common: str, *, server: bool) -> Pair:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder().subject_name(_name(common)).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(VALID_FROM).not_valid_after(VALID_UNTIL)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False)
        return _write(self.root, stem, builder.sign(self.key, hashes.SHA256()), key)


def tls_block(ca: TestCA, server: Pair, *, verify_clients: bool) -> str:
    """nats-server's tls block: its certificate, and client certificates required or not."""
    return (f'tls {{\n  cert_file: "{server.cert}"\n  key_file: "{server.key}"\n'
            f'  ca_file: "{ca.pem}"\n  verify: {"true" if verify_clients else "false"}\n'
            f'  timeout: 5\n}}\n')
