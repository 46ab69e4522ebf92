"""One module per exchange, each defining ADAPTER (see venues/live.py for what an adapter does)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any

_MODULES = {
    "binance": "services.executor.venues.adapters.binance",
    "kraken": "services.executor.venues.adapters.kraken",
    "coinbase": "services.executor.venues.adapters.coinbase",
    "alpaca": "services.executor.venues.adapters.alpaca",
}


class _Adapters(Mapping[str, Any]):
    """broker -> adapter, each module imported when first asked for."""

    def __getitem__(self, broker: str) -> Any:
        if broker not in _MODULES:
            raise KeyError(broker)
        return importlib.import_module(_MODULES[broker]).ADAPTER

    def __iter__(self) -> Iterator[str]:
        return iter(_MODULES)

    def __len__(self) -> int:
        return len(_MODULES)


ADAPTERS = _Adapters()
