"""Translation between protobuf messages and domain values, shared by every servicer.

Malformed input becomes `ServiceError(INVALID_ARGUMENT, ...)` naming the field at fault.
"""

from __future__ import annotations

from datetime import datetime, timezone

from google.protobuf import timestamp_pb2
from nija.common.v1 import common_pb2

from services.domain.signal import (
    ExecutionMethod,
    Side,
    Signal,
    SignalProblem,
    SignalType,
    check_id,
    check_limit_expiry,
    check_limit_price,
    check_metadata,
    check_pair,
    check_size,
    check_strategy,
)
from services.domain.states import Status
from services.runtime.errors import ServiceError, invalid

SIDE_TO_PB = {Side.BUY: common_pb2.SIDE_BUY, Side.SELL: common_pb2.SIDE_SELL}
SIDE_FROM_PB = {v: k for k, v in SIDE_TO_PB.items()}

SIGNAL_TYPE_TO_PB = {
    SignalType.ENTRY: common_pb2.SIGNAL_TYPE_ENTRY,
    SignalType.EXIT: common_pb2.SIGNAL_TYPE_EXIT,
    SignalType.PROFIT_TAKE: common_pb2.SIGNAL_TYPE_PROFIT_TAKE,
    SignalType.STOP_LOSS: common_pb2.SIGNAL_TYPE_STOP_LOSS,
}
SIGNAL_TYPE_FROM_PB = {v: k for k, v in SIGNAL_TYPE_TO_PB.items()}

METHOD_TO_PB = {
    ExecutionMethod.MARKET: common_pb2.EXECUTION_METHOD_MARKET,
    ExecutionMethod.LIMIT: common_pb2.EXECUTION_METHOD_LIMIT,
    ExecutionMethod.TWAP: common_pb2.EXECUTION_METHOD_TWAP,
}
METHOD_FROM_PB = {v: k for k, v in METHOD_TO_PB.items()}

STATUS_TO_PB = {s: getattr(common_pb2, f"EXECUTION_STATUS_{s.name}") for s in Status}
EXPIRY_POLICIES = (
    common_pb2.EXPIRY_POLICY_UNSPECIFIED,
    common_pb2.EXPIRY_POLICY_CANCEL,
    common_pb2.EXPIRY_POLICY_CONVERT_TO_MARKET,
)
STATUS_FROM_PB = {v: k for k, v in STATUS_TO_PB.items()}


def status_name(pb_status: int) -> str:
    status = STATUS_FROM_PB.get(pb_status)
    return status.value if status else "unspecified"


def side_from_pb(value: int) -> Side:
    try:
        return SIDE_FROM_PB[value]
    except KeyError:
        raise invalid("BAD_SIDE", "side must be SIDE_BUY or SIDE_SELL", field="side") from None


def signal_type_from_pb(value: int) -> SignalType:
    try:
        return SIGNAL_TYPE_FROM_PB[value]
    except KeyError:
        raise invalid(
            "BAD_SIGNAL_TYPE",
            "signal_type must be one of ENTRY, EXIT, PROFIT_TAKE, STOP_LOSS",
            field="signal_type",
        ) from None


def timestamp_to_datetime(ts: timestamp_pb2.Timestamp) -> datetime | None:
    """A signal's timestamp: None when unset; INVALID_ARGUMENT (BAD_TIMESTAMP) outside what a
    Timestamp may hold (years 1-9999, nanos 0-999,999,999), which the wire does not stop."""
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    try:
        return ts.ToDatetime(tzinfo=timezone.utc)
    except ValueError:
        raise invalid("BAD_TIMESTAMP", f"timestamp is out of range: seconds {ts.seconds}, nanos {ts.nanos}",
                      field="timestamp") from None


def now_pb() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


def field_error(problem: SignalProblem) -> ServiceError:
    """INVALID_ARGUMENT with reason BAD_<FIELD> for a broken signal rule."""
    return invalid(f"BAD_{problem.field.upper()}", str(problem), field=problem.field)


def checked_id(value: str, field: str) -> str:
    """An id from a request, checked like a signal's: INVALID_ARGUMENT naming `field` otherwise."""
    try:
        return check_id(value, field)
    except SignalProblem as problem:
        raise field_error(problem) from None


def order_key(user_id: str, signal_id: str) -> tuple[str, str]:
    """A (user_id, signal_id) pair from a request, each checked like a signal's."""
    return checked_id(user_id, "user_id"), checked_id(signal_id, "signal_id")


def signal_from_pb(pb: common_pb2.TradeSignal) -> Signal:
    """Validate a wire signal; every rule broken is INVALID_ARGUMENT naming its field."""
    try:
        signal_id = check_id(pb.signal_id, "signal_id")
        user_id = check_id(pb.user_id, "user_id")
        pair = check_pair(pb.pair)
        side = side_from_pb(pb.side)
        size = check_size(pb.size_usd)
        signal_type = signal_type_from_pb(pb.signal_type)
        strategy = check_strategy(pb.strategy)
        metadata = check_metadata(dict(pb.metadata))
        limit_price = check_limit_price(pb.limit_price)
        limit_expiry_s = check_limit_expiry(pb.limit_expiry_s)
        if pb.on_expiry not in EXPIRY_POLICIES:
            raise SignalProblem("on_expiry", "on_expiry must be CANCEL or CONVERT_TO_MARKET")
    except SignalProblem as problem:
        raise field_error(problem) from None
    return Signal(
        signal_id=signal_id,
        user_id=user_id,
        pair=pair,
        side=side,
        size_usd=size,
        signal_type=signal_type,
        strategy=strategy,
        timestamp=timestamp_to_datetime(pb.timestamp),
        metadata=metadata,
        limit_price=limit_price,
        limit_expiry_s=limit_expiry_s,
        convert_on_expiry=pb.on_expiry == common_pb2.EXPIRY_POLICY_CONVERT_TO_MARKET,
    )


def signal_to_pb(signal: Signal) -> common_pb2.TradeSignal:
    pb = common_pb2.TradeSignal(
        signal_id=signal.signal_id,
        user_id=signal.user_id,
        pair=signal.pair,
        side=SIDE_TO_PB[signal.side],
        size_usd=format(signal.size_usd, "f"),
        signal_type=SIGNAL_TYPE_TO_PB[signal.signal_type],
        strategy=signal.strategy,
        metadata=dict(signal.metadata),
        limit_price=format(signal.limit_price, "f") if signal.limit_price is not None else "",
        limit_expiry_s=signal.limit_expiry_s,
        on_expiry=common_pb2.EXPIRY_POLICY_CONVERT_TO_MARKET if signal.convert_on_expiry else 0,
    )
    if signal.timestamp is not None:
        pb.timestamp.FromDatetime(signal.timestamp)
    return pb
