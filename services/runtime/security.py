"""Transport security settings: TLS, mutual TLS, and this process's own bearer token.

One frozen `Security` per process, loaded from the environment at start. Both sides use it: the
server (`RunningServer`) for its certificate and the CA its clients must be signed by, and
outbound channels (`open_channel`) for the CA that signs servers, the client certificate that
proves our identity, and the token we present. Plaintext is for loopback only unless someone
opts out explicitly (e.g. behind a service mesh that already encrypts), because a bearer token
on a plaintext network is a token given away.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Mapping

import grpc

from services.runtime.config import ConfigError


@dataclasses.dataclass(frozen=True)
class Security:
    tls_cert_file: str = ""
    tls_key_file: str = ""
    #: CA that signs the peers' certificates (servers for a client, clients for a server).
    tls_ca_file: str = ""
    #: With TLS and a CA, servers require and verify client certificates (mTLS).
    client_auth: bool = True
    allow_plaintext_remote: bool = False
    #: This process's bearer token for outbound calls; kept out of repr so it never reaches a log.
    token: str = dataclasses.field(default="", repr=False)

    def __post_init__(self) -> None:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError("TLS needs both a certificate and its key (NIJA_TLS_CERT, NIJA_TLS_KEY)")

    @property
    def tls(self) -> bool:
        return bool(self.tls_cert_file and self.tls_key_file)

    @property
    def mtls(self) -> bool:
        """A server with this configuration requires verified client certificates."""
        return self.tls and self.client_auth and bool(self.tls_ca_file)


def token_from_env(env: Mapping[str, str], name: str) -> str:
    """$name, or the contents of the file ${name}_FILE; "" when neither is set."""
    token, token_file = env.get(name, ""), env.get(f"{name}_FILE", "")
    if token and token_file:
        raise ConfigError(f"set {name} or {name}_FILE, not both")
    if token_file:
        token = read_file(token_file).decode().strip()
        if not token:
            raise ConfigError(f"{name}_FILE {token_file} is empty")
    return token


def load_security(environ: Mapping[str, str] | None = None) -> Security:
    """`Security` from NIJA_TLS_* / NIJA_ALLOW_PLAINTEXT_REMOTE / NIJA_SERVICE_TOKEN[_FILE].

    Every file is checked here so that a wrong path stops the process at start, not at the first
    connection.
    """
    env = os.environ if environ is None else environ
    token = token_from_env(env, "NIJA_SERVICE_TOKEN")
    security = Security(
        tls_cert_file=env.get("NIJA_TLS_CERT", ""),
        tls_key_file=env.get("NIJA_TLS_KEY", ""),
        tls_ca_file=env.get("NIJA_TLS_CA", ""),
        client_auth=_flag(env, "NIJA_TLS_CLIENT_AUTH", True),
        allow_plaintext_remote=_flag(env, "NIJA_ALLOW_PLAINTEXT_REMOTE", False),
        token=token,
    )
    for path in (security.tls_cert_file, security.tls_key_file, security.tls_ca_file):
        if path:
            read_file(path)
    return security


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}: expected true or false, got {raw!r}")


def read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc


def server_credentials(security: Security) -> grpc.ServerCredentials | None:
    """TLS credentials for a server (None: plaintext). Client certificates are required when a
    CA is configured and client_auth is on; without a CA there is nothing to verify them with."""
    if not security.tls:
        return None
    ca = read_file(security.tls_ca_file) if security.tls_ca_file else None
    return grpc.ssl_server_credentials(
        [(read_file(security.tls_key_file), read_file(security.tls_cert_file))],
        root_certificates=ca,
        require_client_auth=security.mtls,
    )


def channel_credentials(security: Security) -> grpc.ChannelCredentials | None:
    """TLS credentials for a channel (None: plaintext). Without a CA the system roots are used;
    with a certificate it is presented to servers that require one."""
    if not (security.tls or security.tls_ca_file):
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=read_file(security.tls_ca_file) if security.tls_ca_file else None,
        private_key=read_file(security.tls_key_file) if security.tls else None,
        certificate_chain=read_file(security.tls_cert_file) if security.tls else None,
    )


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost. Wildcards ("0.0.0.0", "[::]", "") are not loopback."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback


def target_is_local(target: str) -> bool:
    """Whether a gRPC target ("host:port", "dns:///host:port", "ipv4:a:p,b:p", "unix:...")
    stays on this machine."""
    scheme, sep, rest = target.partition(":")
    if sep and scheme in ("unix", "unix-abstract"):
        return True
    if sep and scheme in ("ipv4", "ipv6"):
        return all(is_loopback(_host_of(part)) for part in rest.split(","))
    if sep and scheme == "dns":
        target = rest.lstrip("/")
        if "/" in target:  # dns://authority/host:port
            target = target.split("/", 1)[1]
    return is_loopback(_host_of(target))


def _host_of(address: str) -> str:
    if address.startswith("["):
        return address[1 : address.find("]")]
    if address.count(":") == 1:
        return address.rsplit(":", 1)[0]
    return address  # a bare host or a bare IPv6 address
