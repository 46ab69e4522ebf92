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
}
