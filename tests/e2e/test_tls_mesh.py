"""`nija up --tls`: every service speaks TLS and demands a client certificate from the mesh's CA
(issue 5, acceptance 7). The simulated exchanges stand in for the exchanges, outside the mesh,
and stay plaintext on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.runtime.certs import make_dev_certs
from services.runtime.channels import open_channel
from services.runtime.security import Security
from tests.e2e.up import UpMesh, start_up

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpMesh]:
    up = start_up(tmp_path_factory.mktemp("tls"), "--tls")
    yield up
    assert up.stop() == 0


async def _health(target: str, security: Security | None, plaintext: bool = False) -> str:
    channel = grpc.aio.insecure_channel(target) if plaintext else open_channel(target, security)
    async with channel:
        try:
            response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def test_no_service_accepts_a_client_without_a_valid_certificate(mesh: UpMesh, tmp_path) -> None:
    certs = mesh.dir / "certs"
    ca = str(certs / "ca.pem")
    client = Security(tls_cert_file=str(certs / "client.pem"), tls_key_file=str(certs / "client-key.pem"), tls_ca_file=ca)
    no_cert = Security(tls_ca_file=ca)
    make_dev_certs(tmp_path / "other-ca", ["client"])  # a certificate from a CA the mesh does not trust
    foreign = Security(tls_cert_file=str(tmp_path / "other-ca" / "client.pem"),
                       tls_key_file=str(tmp_path / "other-ca" / "client-key.pem"), tls_ca_file=ca)

    async def probe() -> dict[str, dict[str, str]]:
        out = {}
        for name, target in mesh.targets.items():
            if name == "simexchange":
                continue
            out[name] = {
                "valid": await _health(target, client),
                "no certificate": await _health(target, no_cert),
                "foreign certificate": await _health(target, foreign),
                "plaintext": await _health(target, None, plaintext=True),
            }
        return out

    results = asyncio.run(probe())
    assert len(results) == 8  # every gRPC server but the simulated exchange's (outside the mesh)
    for name, outcome in results.items():
        assert outcome["valid"] == "SERVING", (name, outcome)
        for attempt in ("no certificate", "foreign certificate", "plaintext"):
            assert outcome[attempt] == "UNAVAILABLE", (name, attempt, outcome)


def test_a_trade_goes_through_the_tls_mesh(mesh: UpMesh) -> None:
    certs = mesh.dir / "certs"
    env = {"NIJA_TLS_CA": str(certs / "ca.pem"), "NIJA_TLS_CERT": str(certs / "client.pem"),
           "NIJA_TLS_KEY": str(certs / "client-key.pem")}
    out = mesh.nija("trade", "--user", "alice", "--pair", "ETH-USD", "--side", "buy", "--usd", "120", "--type", "exit", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().splitlines()[-1].split()[1] == "filled"
