"""Building the trade signals a client sends.

A signal's id is what makes it idempotent: the mesh places one order per (user, signal_id), and
submitting the same id again re-attaches to that order. A strategy that must survive its own
restart chooses the id itself (e.g. from its bar time); otherwise `new_signal_id` makes one.
Sizes and prices go on the wire as plain decimal strings; a float is refused here, before it
can round a price.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from decimal import Decimal

from nija.common.v1 import common_pb2

from services.domain.signal import Side, SignalType
from services.runtime.wire import SIDE_TO_PB, SIGNAL_TYPE_TO_PB

Amount = Decimal | str | int


def new_signal_id(prefix: str = "sig") -> str:
    """A fresh id, unique for practical purposes (96 random bits)."""
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def wire_decimal(value: Amount, field: str) -> str:
    """A money value as the plain decimal string the wire expects ("1000", never "1E+3")."""
    if isinstance(value, bool) or not isinstance(value, (Decimal, str, int)):
        raise TypeError(f"{field} must be a Decimal, a decimal string or an int, not {type(value).__name__}")
    if isinstance(value, str):
        return value.strip()
    return format(Decimal(value), "f")


def make_signal(
    user: str,
    pair: str,
    side: Side | str,
    usd: Amount,
    kind: SignalType | str = SignalType.ENTRY,
    signal_id: str | None = None,
    *,
    strategy: str = "nija-client",
    limit_price: Amount | None = None,
    limit_expiry_s: int = 0,
    convert_on_expiry: bool = False,
    routing: common_pb2.RoutingOptions | None = None,
    metadata: Mapping[str, str] | None = None,
) -> common_pb2.TradeSignal:
    """A TradeSignal for `user`: `side` "buy"/"sell", `usd` the size in USD, `kind` "entry",
    "exit", "profit_take" or "stop_loss". The mesh validates the rest (and says why with a reason)."""
    pb = common_pb2.TradeSignal(
        signal_id=signal_id or new_signal_id(),
        user_id=user,
        pair=pair,
        side=SIDE_TO_PB[Side(side)],
        size_usd=wire_decimal(usd, "usd"),
        signal_type=SIGNAL_TYPE_TO_PB[SignalType(kind)],
        strategy=strategy,
        metadata=dict(metadata or {}),
        limit_expiry_s=limit_expiry_s,
        on_expiry=(
            common_pb2.EXPIRY_POLICY_CONVERT_TO_MARKET if convert_on_expiry else common_pb2.EXPIRY_POLICY_UNSPECIFIED
        ),
    )
    if limit_price is not None:
        pb.limit_price = wire_decimal(limit_price, "limit_price")
    if routing is not None:
        pb.routing.CopyFrom(routing)
    pb.timestamp.GetCurrentTime()
    return pb
