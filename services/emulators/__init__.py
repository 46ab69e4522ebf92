"""Local emulators of the four real exchanges' REST APIs, for testing the live (ccxt) venues.

Each emulator is an HTTP front end over the simulated exchange engine (`services.simexchange`),
speaking one exchange's dialect closely enough that unmodified ccxt works against it: the same
paths, the same JSON, the same signatures verified for real, the same error answers, the same
429s. They run inside the simexchange process (NIJA_SIMEXCHANGE_EMULATE), so the gRPC front end's
SetFault drives their faults too and one engine holds every order, whichever front end placed it.

They listen on loopback only and issue API keys from an unauthenticated admin path: a development
and test tool, never something to expose.
"""

from __future__ import annotations

import importlib

from services.emulators.base import Dialect

#: broker -> module defining DIALECT
_MODULES = {
    "binance": "services.emulators.binance",
    "kraken": "services.emulators.kraken",
    "coinbase": "services.emulators.coinbase",
    "alpaca": "services.emulators.alpaca",
}

BROKERS = tuple(_MODULES)


def dialect(broker: str) -> Dialect:
    if broker not in _MODULES:
        raise KeyError(f"no emulator for {broker!r}; known: {', '.join(_MODULES)}")
    return importlib.import_module(_MODULES[broker]).DIALECT  # type: ignore[no-any-return]
