"""TLS and mTLS between real grpc.aio servers and channels, dev certificates, security config."""

from __future__ import annotations

import ipaddress
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.runtime.certs import make_dev_certs
from services.runtime.channels import open_channel
from services.runtime.config import ConfigError
from services.runtime.security import Security, is_loopback, load_security, target_is_local
from services.runtime.server import Listen, RunningServer


class WhoamiApp:
    """No services of its own: health, plus one raw method echoing the caller's authorization."""

    service_names = ()

    def register(self, server: grpc.aio.Server) -> None:
        async def whoami(request: bytes, context: Any) -> bytes:
            return dict(context.invocation_metadata()).get("authorization", "").encode()

        handler = grpc.unary_unary_rpc_method_handler(whoami)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", {"Whoami": handler}),))

    async def start(self, health: Any) -> None:
        pass

    async def stop(self) -> None:
        pass


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    return make_dev_certs(tmp_path / "certs", ["router", "aggregator"])


def server_security(certs: dict[str, tuple[Path, Path]], ca: Path, **kw: Any) -> Security:
    cert, key = certs["router"]
    return Security(tls_cert_file=str(cert), tls_key_file=str(key), tls_ca_file=str(ca), **kw)


def client_security(ca: Path, pair: tuple[Path, Path] | None = None, **kw: Any) -> Security:
    cert, key = pair or ("", "")
    return Security(tls_cert_file=str(cert), tls_key_file=str(key), tls_ca_file=str(ca), **kw)


@pytest.fixture
async def mtls_server(certs, tmp_path) -> AsyncIterator[RunningServer]:
    security = server_security(certs, tmp_path / "certs" / "ca.pem")
    assert security.mtls
    running = await RunningServer(WhoamiApp(), Listen(port=0), security).start()
    yield running
    await running.stop(0)


async def health_status(channel: grpc.aio.Channel) -> int:
    response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return response.status


async def assert_refused(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await health_status(channel)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mtls_client_with_a_valid_certificate_is_served(mtls_server, certs, tmp_path) -> None:
    security = client_security(tmp_path / "certs" / "ca.pem", certs["aggregator"], token="agg-token")
    async with open_channel(mtls_server.target, security) as ch:
        assert await health_status(ch) == health_pb2.HealthCheckResponse.SERVING
        # The process's token rides on the TLS channel too.
        assert await ch.unary_unary("/test.Echo/Whoami")(b"", timeout=5) == b"Bearer agg-token"


async def test_mtls_client_without_a_certificate_is_refused(mtls_server, tmp_path) -> None:
    async with open_channel(mtls_server.target, client_security(tmp_path / "certs" / "ca.pem")) as ch:
        await assert_refused(ch)


async def test_mtls_client_with_a_certificate_from_another_ca_is_refused(mtls_server, tmp_path) -> None:
    stranger = make_dev_certs(tmp_path / "other", ["router"])
    async with open_channel(mtls_server.target, client_security(tmp_path / "certs" / "ca.pem", stranger["client"])) as ch:
        await assert_refused(ch)


async def test_client_refuses_a_server_its_ca_did_not_sign(mtls_server, certs, tmp_path) -> None:
    make_dev_certs(tmp_path / "other", [])
    async with open_channel(mtls_server.target, client_security(tmp_path / "other" / "ca.pem", certs["client"])) as ch:
        await assert_refused(ch)


async def test_plaintext_client_is_refused_by_a_tls_server(mtls_server) -> None:
    async with open_channel(mtls_server.target) as ch:
        await assert_refused(ch)


async def test_tls_without_client_auth_serves_clients_that_only_trust_the_ca(certs, tmp_path) -> None:
    ca = tmp_path / "certs" / "ca.pem"
    security = server_security(certs, ca, client_auth=False)
    assert security.tls and not security.mtls
    running = await RunningServer(WhoamiApp(), Listen(port=0), security).start()
    try:
        async with open_channel(running.target, client_security(ca)) as ch:
            assert await health_status(ch) == health_pb2.HealthCheckResponse.SERVING
    finally:
        await running.stop(0)


async def test_plaintext_listen_off_loopback_needs_an_explicit_opt_out(certs, tmp_path) -> None:
    with pytest.raises(ConfigError, match="plaintext"):
        RunningServer(WhoamiApp(), Listen(host="0.0.0.0", port=0))
    with pytest.raises(ConfigError, match="plaintext"):
        RunningServer(WhoamiApp(), Listen(host="[::]", port=0), Security())
    for security in (Security(allow_plaintext_remote=True), server_security(certs, tmp_path / "certs" / "ca.pem")):
        running = await RunningServer(WhoamiApp(), Listen(host="0.0.0.0", port=0), security).start()
        await running.stop(0)


async def test_plaintext_channels_off_loopback_need_an_explicit_opt_out(tmp_path, certs) -> None:
    with pytest.raises(ConfigError, match="plaintext"):
        open_channel("nija-router:50051", Security(token="t"))
    # These only build channels; nothing connects.
    for target, security in [
        ("nija-router:50051", Security(allow_plaintext_remote=True)),
        ("nija-router:50051", client_security(tmp_path / "certs" / "ca.pem", certs["client"])),
        ("127.0.0.1:50051", Security(token="t")),
        ("nija-router:50051", None),  # no Security: plaintext as before, the caller's choice
    ]:
        await open_channel(target, security).close()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.9.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("::ffff:127.0.0.1", True), ("0.0.0.0", False), ("[::]", False), ("", False), ("10.0.0.5", False),
     ("nija-router", False), ("localhost.evil.com", False)],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("target", "local"),
    [("127.0.0.1:50051", True), ("localhost:1", True), ("[::1]:443", True), ("dns:///localhost:5", True),
     ("ipv4:127.0.0.1:1,127.0.0.2:2", True), ("unix:/tmp/s.sock", True), ("nija-router:50051", False),
     ("dns:///nija-router:50051", False), ("dns://8.8.8.8/localhost:5", True), ("ipv4:127.0.0.1:1,10.0.0.1:2", False),
     ("10.0.0.1:50051", False)],
)
def test_target_is_local(target: str, local: bool) -> None:
    assert target_is_local(target) is local


def test_load_security_from_the_environment(certs, tmp_path) -> None:
    (cert, key), ca = certs["router"], tmp_path / "certs" / "ca.pem"
    token_file = tmp_path / "token"
    token_file.write_text("  s3cret-token\n")
    security = load_security({
        "NIJA_TLS_CERT": str(cert), "NIJA_TLS_KEY": str(key), "NIJA_TLS_CA": str(ca),
        "NIJA_TLS_CLIENT_AUTH": "false", "NIJA_ALLOW_PLAINTEXT_REMOTE": "1",
        "NIJA_SERVICE_TOKEN_FILE": str(token_file), "UNRELATED": "x",
    })
    assert security == Security(str(cert), str(key), str(ca), client_auth=False, allow_plaintext_remote=True,
                                token="s3cret-token")
    assert "s3cret-token" not in repr(security)
    assert load_security({}) == Security()
    assert load_security({"NIJA_SERVICE_TOKEN": "tok"}).token == "tok"


@pytest.mark.parametrize(
    "env",
    [
        {"NIJA_TLS_CERT": "CERT"},  # no key
        {"NIJA_TLS_KEY": "KEY"},  # no certificate
        {"NIJA_TLS_CERT": "CERT", "NIJA_TLS_KEY": "/nonexistent/key.pem"},
        {"NIJA_TLS_CA": "/nonexistent/ca.pem"},
        {"NIJA_SERVICE_TOKEN_FILE": "/nonexistent/token"},
        {"NIJA_SERVICE_TOKEN": "a", "NIJA_SERVICE_TOKEN_FILE": "TOKEN"},
        {"NIJA_TLS_CLIENT_AUTH": "maybe"},
    ],
)
def test_load_security_refuses_bad_settings(env: dict[str, str], certs, tmp_path) -> None:
    cert, _ = certs["router"]
    token_file = tmp_path / "token"
    token_file.write_text("t")
    values = {k: v.replace("CERT", str(cert)).replace("TOKEN", str(token_file)) for k, v in env.items()}
    with pytest.raises(ConfigError):
        load_security(values)


def test_dev_certs_names_usages_and_key_modes(certs, tmp_path) -> None:
    out = tmp_path / "certs"
    assert set(certs) == {"router", "aggregator", "client"}
    assert stat.S_IMODE((out / "ca-key.pem").stat().st_mode) == 0o600
    for cert_path, key_path in certs.values():
        assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
        assert cert_path.parent == out
    cert = x509.load_pem_x509_certificate(certs["router"][0].read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "router", "nija-router"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    ca = x509.load_pem_x509_certificate((out / "ca.pem").read_bytes())
    cert.verify_directly_issued_by(ca)


def test_dev_certs_reuse_the_ca_so_old_certificates_stay_valid(certs, tmp_path) -> None:
    out = tmp_path / "certs"
    ca_before = (out / "ca.pem").read_bytes()
    old_router = x509.load_pem_x509_certificate(certs["router"][0].read_bytes())
    added = make_dev_certs(out, ["executor-binance"])
    assert (out / "ca.pem").read_bytes() == ca_before
    ca = x509.load_pem_x509_certificate(ca_before)
    old_router.verify_directly_issued_by(ca)
    x509.load_pem_x509_certificate(added["executor-binance"][0].read_bytes()).verify_directly_issued_by(ca)


@pytest.mark.parametrize("name", ["ca", "Router", "a/b", "", "-x"])
def test_dev_certs_refuse_names_that_are_not_host_names(name: str, tmp_path) -> None:
    with pytest.raises(ConfigError):
        make_dev_certs(tmp_path, [name])
