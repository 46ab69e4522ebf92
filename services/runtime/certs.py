"""A local certificate authority for development and tests (`nija certs`).

Writes `ca.pem` / `ca-key.pem` and, per service, `<name>.pem` / `<name>-key.pem` signed by that CA.
Every service certificate is good for both ends of a connection (serverAuth and clientAuth):
each service serves calls and makes them, and with mTLS it proves who it is either way. The names
cover local runs (localhost, 127.0.0.1, ::1), the bare service name and the Kubernetes Service name
`nija-<name>`. An existing CA in the directory is reused, so adding a service later leaves the
certificates already handed out valid. Not for production: the CA key sits next to the certs.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.runtime.config import ConfigError

CA_DAYS = 5 * 365
LEAF_DAYS = 365
CLIENT = "client"
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")  # a DNS label: it becomes a host name


def make_dev_certs(
    out_dir: str | os.PathLike[str],
    services: Sequence[str],
    hosts: Sequence[str] = DEFAULT_HOSTS,
) -> dict[str, tuple[Path, Path]]:
    """Write the CA (if absent) and a certificate per service plus one for `client`.

    Returns name -> (certificate path, key path); the CA certificate is `out_dir/ca.pem`.
    """
    out = Path(out_dir)
    names = list(dict.fromkeys([*services, CLIENT]))
    for name in names:
        if not _NAME.fullmatch(name) or name == "ca":
            raise ConfigError(f"certificate name {name!r}: use lower-case letters, digits and '-' (not 'ca')")
    out.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _load_or_make_ca(out)
    written = {}
    for name in names:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _leaf(name, key, [*hosts, name, f"nija-{name}"], ca_cert, ca_key)
        written[name] = (out / f"{name}.pem", out / f"{name}-key.pem")
        _write(written[name][0], cert.public_bytes(serialization.Encoding.PEM), 0o644)
        _write(written[name][1], _private_pem(key), 0o600)
    return written


def _load_or_make_ca(out: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert_path, key_path = out / "ca.pem", out / "ca-key.pem"
    if cert_path.exists() != key_path.exists():
        raise ConfigError(f"{out}: found only one of ca.pem and ca-key.pem; restore or remove it")
    if cert_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"{key_path}: not an EC private key")
        return x509.load_pem_x509_certificate(cert_path.read_bytes()), key
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nija dev"),
        x509.NameAttribute(NameOID.COMMON_NAME, "nija dev CA"),
    ])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(key_path, _private_pem(key), 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert, key


def _leaf(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    hosts: Sequence[str],
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
) -> x509.Certificate:
    now = _now()
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nija dev"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(min(now + datetime.timedelta(days=LEAF_DAYS), ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(_san(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _san(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """IP literals as IPAddress entries (TLS checks those for IP targets), the rest as DNSName."""
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host.strip("[]"))))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomic write; a key file is created 0600 from the start, never readable by others."""
    tmp = path.with_name(f".{path.name}.tmp")
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as fh:
        os.fchmod(fh.fileno(), mode)  # O_CREAT's mode is filtered by the umask, ignored for an old file
        fh.write(data)
    os.replace(tmp, path)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)
