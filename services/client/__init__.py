"""The Python client of the mesh, for strategies and tools.

    from decimal import Decimal
    from services.client import NijaClient, NijaError

    async with NijaClient(token=...) as nija:        # or NIJA_ROUTER / NIJA_TOKEN / NIJA_TLS_*
        result = await nija.place_order_async("alice", "ETH-USD", "buy", Decimal("150"), signal_id="bar-0931")
        print(result.state, result.filled_quantity, result.average_price)

`submit` streams a signal's updates (re-attaching if the stream breaks), `place_order_async` waits
for the outcome, `cancel` and `quote` ask the router, `watch` follows the ledger and `positions`
the permission service; `submit_many` sends many signals over one stream. Money is `Decimal`
(strings on the wire, never floats); refusals raise
`NijaError` with the gRPC status code and the ErrorInfo reason.
"""

from services.client.client import NijaClient
from services.client.config import client_environ, client_security, client_token
from services.client.console import describe, stream_trade
from services.client.errors import NijaError
from services.client.models import (
    BrokerQuote,
    Fill,
    Leg,
    Position,
    Positions,
    Quote,
    Route,
    SignalRefusal,
    TradeResult,
    Update,
)
from services.client.signals import make_signal, new_signal_id
from services.domain.signal import Side, SignalType
from services.domain.states import Status

__all__ = [
    "BrokerQuote", "Fill", "Leg", "NijaClient", "NijaError", "Position", "Positions", "Quote", "Route",
    "Side", "SignalRefusal", "SignalType", "Status", "TradeResult", "Update", "client_environ", "client_security",
    "client_token", "describe", "make_signal", "new_signal_id", "stream_trade",
]
