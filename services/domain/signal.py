"""Trade signals as the domain sees them, and the rules a signal must satisfy. Pure."""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal

from services.domain.money import BadDecimal, parse_positive


class Side(enum.Enum):
    BUY = "buy"
    SELL = "sell"


class SignalType(enum.Enum):
    ENTRY = "entry"
    EXIT = "exit"
    PROFIT_TAKE = "profit_take"
    STOP_LOSS = "stop_loss"


class ExecutionMethod(enum.Enum):
    MARKET = "market"
    LIMIT = "limit"
    TWAP = "twap"


ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
PAIR_RE = re.compile(r"^[A-Z0-9]{2,12}-[A-Z]{2,6}$")
MAX_METADATA_ENTRIES = 32
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 1024
MAX_STRATEGY = 64
# Metadata key carrying a split order's parent signal id on each child signal.
PARENT_KEY = "nija.parent_signal_id"
# Sanity bound, not a risk limit (risk limits are per user in the permission service).
MAX_SIZE_USD = Decimal("1000000000")


@dataclasses.dataclass(frozen=True)
class Signal:
    signal_id: str
    user_id: str
    pair: str
    side: Side
    size_usd: Decimal
    signal_type: SignalType
    strategy: str = ""
    timestamp: datetime | None = None
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # A limit price from the strategy (None: limit orders are priced from the current touch).
    limit_price: Decimal | None = None
    # Seconds a limit order may rest (0: the executor's default), and whether the rest then goes
    # as a market order instead of being cancelled.
    limit_expiry_s: int = 0
    convert_on_expiry: bool = False

    @property
    def base(self) -> str:
        return self.pair.split("-", 1)[0]

    @property
    def quote(self) -> str:
        return self.pair.split("-", 1)[1]

    def same_order_as(self, other: "Signal") -> bool:
        """Whether a resubmission asks for the same trade (the fields that decide the order)."""
        return (
            self.user_id == other.user_id
            and self.signal_id == other.signal_id
            and self.pair == other.pair
            and self.side == other.side
            and self.size_usd == other.size_usd
            and self.signal_type == other.signal_type
            and self.limit_price == other.limit_price
        )


class SignalProblem(ValueError):
    """A signal field that breaks a rule; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def check_id(value: str, field: str) -> str:
    if not value:
        raise SignalProblem(field, f"{field} is required")
    if not ID_RE.fullmatch(value):
        raise SignalProblem(
            field, f"{field} must be 1-128 characters of letters, digits and . _ : @ - (got {value[:40]!r})"
        )
    return value


def check_pair(value: str) -> str:
    if not value:
        raise SignalProblem("pair", "pair is required")
    if not PAIR_RE.fullmatch(value):
        raise SignalProblem("pair", f"pair must look like BASE-QUOTE, e.g. BTC-USD (got {value[:40]!r})")
    return value


def check_size(text: str) -> Decimal:
    try:
        size = parse_positive(text, "size_usd")
    except BadDecimal as exc:
        raise SignalProblem("size_usd", str(exc)) from exc
    if size > MAX_SIZE_USD:
        raise SignalProblem("size_usd", f"size_usd must be at most {MAX_SIZE_USD}")
    return size


def check_metadata(metadata: Mapping[str, str]) -> Mapping[str, str]:
    if len(metadata) > MAX_METADATA_ENTRIES:
        raise SignalProblem("metadata", f"metadata has more than {MAX_METADATA_ENTRIES} entries")
    for key, value in metadata.items():
        if not key or len(key) > MAX_METADATA_KEY or len(value) > MAX_METADATA_VALUE:
            raise SignalProblem(
                "metadata",
                f"metadata keys must be 1-{MAX_METADATA_KEY} characters and values at most "
                f"{MAX_METADATA_VALUE}",
            )
    return dict(metadata)


def check_strategy(value: str) -> str:
    if len(value) > MAX_STRATEGY:
        raise SignalProblem("strategy", f"strategy must be at most {MAX_STRATEGY} characters")
    return value


def priority(signal_type: SignalType) -> int:
    """The seed's priority: stop_loss 1, exit 2, entry 3, anything else 4 (1 is highest)."""
    return {SignalType.STOP_LOSS: 1, SignalType.EXIT: 2, SignalType.ENTRY: 3}.get(signal_type, 4)


TWAP_THRESHOLD_USD = Decimal(10000)


MAX_LIMIT_EXPIRY_S = 7 * 24 * 3600


def check_limit_price(text: str) -> Decimal | None:
    if not text:
        return None
    try:
        return parse_positive(text, "limit_price")
    except BadDecimal as exc:
        raise SignalProblem("limit_price", str(exc)) from exc


def check_limit_expiry(seconds: int) -> int:
    if seconds > MAX_LIMIT_EXPIRY_S:
        raise SignalProblem("limit_expiry_s", f"limit_expiry_s must be at most {MAX_LIMIT_EXPIRY_S}")
    return seconds


def execution_method(
    size_usd: Decimal, signal_type: SignalType, limit_price: Decimal | None = None
) -> ExecutionMethod:
    """The seed's choice: over $10,000 -> TWAP; stop_loss/exit -> market; otherwise limit.
    A strategy's own limit price makes a would-be market order a limit order at that price."""
    if size_usd > TWAP_THRESHOLD_USD:
        return ExecutionMethod.TWAP
    if limit_price is not None:
        return ExecutionMethod.LIMIT
    if signal_type in (SignalType.STOP_LOSS, SignalType.EXIT):
        return ExecutionMethod.MARKET
    return ExecutionMethod.LIMIT
