"""The brokers the mesh knows and the default local ports (DESIGN.md)."""

from __future__ import annotations

BROKERS: tuple[str, ...] = ("coinbase", "kraken", "binance", "alpaca")

DEFAULT_PORTS: dict[str, int] = {
    "router": 50051,
    "permission": 50052,
    "aggregator": 50053,
    "executor-coinbase": 50061,
    "executor-kraken": 50062,
    "executor-binance": 50063,
    "executor-alpaca": 50064,
    "simexchange": 50070,
    # gRPC health only; the webhooks arrive on its HTTP port (GATEWAY_HTTP_PORT).
    "gateway": 50180,
}

#: The webhook gateway's HTTP port (TradingView alerts) when not chosen otherwise.
GATEWAY_HTTP_PORT = 8080
