"""The services of a mesh and where to reach them: the manifest `nija up` writes
(`<data-dir>/mesh.json`: name -> target, metrics address, pid, log), or the default ports."""

from __future__ import annotations

import dataclasses
import json
import pathlib

from services.domain.brokers import DEFAULT_PORTS

#: Service kind -> the gRPC service name its health is reported under.
HEALTH_NAMES = {
    "simexchange": "nija.simexchange.v1.SimulatedExchangeService",
    "aggregator": "nija.aggregator.v1.AggregatorService",
    "permission": "nija.permission.v1.PermissionService",
    "executor": "nija.executor.v1.ExecutorService",
    "router": "nija.router.v1.RouterService",
    # No gRPC API of its own: its health name says whether its router answers.
    "gateway": "nija.gateway.v1.WebhookGateway",
}


def kind_of(name: str) -> str:
    """The service kind of a mesh member ("executor-kraken" -> "executor", "router-2" -> "router")."""
    return name.split("-", 1)[0] if name.startswith(("executor-", "router-")) else name


@dataclasses.dataclass(frozen=True)
class Member:
    name: str  # "router", "executor-kraken", ...
    target: str  # gRPC "host:port"
    metrics: str  # HTTP "host:port" serving /metrics

    @property
    def kind(self) -> str:
        return kind_of(self.name)

    @property
    def health_name(self) -> str:
        return HEALTH_NAMES[self.kind]

    @property
    def broker(self) -> str | None:
        """The broker an executor serves."""
        return self.name.split("-", 1)[1] if self.kind == "executor" else None


def _plus_1000(target: str) -> str:
    host, _, port = target.rpartition(":")
    return f"{host}:{int(port) + 1000}"


def read_manifest(path: str | pathlib.Path | None) -> dict[str, Member]:
    """Name -> member, from `path` (default var/mesh.json when it exists), else the default
    ports. A manifest named explicitly must exist."""
    candidate = pathlib.Path(path or "var/mesh.json")
    if candidate.exists():
        entries = json.loads(candidate.read_text())
        return {
            name: Member(name, entry["target"], entry.get("metrics") or _plus_1000(entry["target"]))
            for name, entry in entries.items()
        }
    if path:
        raise SystemExit(f"no mesh manifest at {path}")
    return {
        name: Member(name, f"127.0.0.1:{port}", f"127.0.0.1:{port + 1000}") for name, port in DEFAULT_PORTS.items()
    }
