"""TradingView alerts: raw body in, a strategy signal or a typed refusal out. Pure (no I/O).

TradingView posts the alert's message as the raw body (often with Content-Type text/plain), so
the body is parsed as JSON whatever its content type. The documented alert template:

    {
      "passphrase": "<the strategy's passphrase>",
      "id": "{{strategy.order.id}}-{{timenow}}",      optional alert id
      "ticker": "{{ticker}}",                          BTCUSD, BTCUSDT, BINANCE:BTCUSDT, ...
      "action": "{{strategy.order.action}}",           buy | sell
      "size_usd": "100",                               exactly one of size_usd ...
      "percent": "2",                                  ... or percent (of reference_capital_usd)
      "signal_type": "entry",                          entry | exit | profit_take | stop_loss (default entry)
      "limit_price": "61000.5",                        optional
      "time": "{{timenow}}"                            optional, kept as metadata
    }

Numbers may be JSON strings or JSON numbers: either way the exact text is parsed as a Decimal
(never a float). Fields other than these are refused (a typo in a size field must not trade a
default). Each refusal carries the HTTP status, an UPPER_SNAKE reason and a human message.

The id sent to the router (`strategy_signal_id`, also the alert id of `GET /alerts/<id>`) is
deterministic, so the router's idempotent fan-out places nothing twice for a repeated alert, even
across a gateway restart: the alert's "id" when it is 1-100 characters of letters, digits and
. _ : @ - (else "tv-" + a hash of it); without an "id", "tv-" + a hash of the strategy, the
normalized content and the dedupe window's time bucket.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any

from google.protobuf import timestamp_pb2
from nija.router.v1 import router_pb2

from services.domain.money import BadDecimal, fmt, parse_positive
from services.domain.signal import MAX_SIZE_USD, PAIR_RE, Side, SignalType
from services.runtime.wire import SIDE_TO_PB, SIGNAL_TYPE_TO_PB

#: The fields of the alert template; anything else is refused.
FIELDS = ("passphrase", "id", "ticker", "action", "size_usd", "percent", "signal_type", "limit_price", "time")
ALERT_ID_RE = re.compile(r"^[A-Za-z0-9._:@-]{1,100}$")
SIGNATURE_HEADER = "X-Nija-Signature"
#: Header carrying the strategy's passphrase on GET /alerts/<id> (never in the URL: URLs get logged).
PASSPHRASE_HEADER = "X-Nija-Passphrase"
CENT = Decimal("0.01")
MAX_TICKER = 64
MAX_TIME = 64


@dataclasses.dataclass(frozen=True)
class Strategy:
    """One strategy of the strategies file (see strategies.py for the file's format)."""

    strategy_id: str
    #: sha256 of the passphrase the alert's "passphrase" must match; None: no passphrase.
    passphrase_sha256: bytes | None = dataclasses.field(default=None, repr=False)
    #: When set, X-Nija-Signature: sha256=<hex HMAC-SHA256 of the raw body> is required.
    hmac_secret: bytes | None = dataclasses.field(default=None, repr=False)
    #: The strategy principal's bearer token for the router; never logged.
    token: str = dataclasses.field(default="", repr=False)
    #: Upper-case TradingView ticker ("BTCUSD", "BINANCE:BTCUSDT") -> mesh pair ("BTC-USD").
    tickers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: What an alert's "percent" is a percentage of; None: percent alerts are refused.
    reference_capital_usd: Decimal | None = None
    rate_per_minute: float = 60.0
    burst: int = 10

    def pair_for(self, ticker: str) -> str | None:
        """The mesh pair of a TradingView ticker: its exact key, else without its exchange prefix."""
        key = ticker.strip().upper()
        if key in self.tickers:
            return self.tickers[key]
        _, sep, bare = key.rpartition(":")
        return self.tickers.get(bare) if sep else None


@dataclasses.dataclass(frozen=True)
class Refusal:
    status: int
    reason: str
    message: str

    def body(self) -> dict[str, str]:
        return {"error": self.reason, "message": self.message}


@dataclasses.dataclass(frozen=True)
class Alert:
    """A valid, authenticated alert, ready to be sent as a StrategySignal."""

    alert_id: str
    strategy_id: str
    ticker: str
    pair: str
    side: Side
    size_usd: Decimal
    signal_type: SignalType
    limit_price: Decimal | None
    #: The "percent" the size came from (None: the alert gave size_usd).
    percent: Decimal | None
    time: str
    #: sha256 of the strategy and the normalized JSON content: the content dedupe key.
    content_hash: str
    #: The alert carried its own "id".
    has_id: bool

    def describe(self) -> dict[str, Any]:
        """The signal as GET /alerts shows it."""
        out: dict[str, Any] = {
            "strategy_signal_id": self.alert_id, "ticker": self.ticker, "pair": self.pair, "side": self.side.value,
            "size_usd": fmt(self.size_usd), "signal_type": self.signal_type.value,
        }
        if self.limit_price is not None:
            out["limit_price"] = fmt(self.limit_price)
        if self.percent is not None:
            out["percent"] = fmt(self.percent)
        return out

    def to_proto(self, now: datetime) -> router_pb2.StrategySignal:
        timestamp = timestamp_pb2.Timestamp()
        timestamp.FromDatetime(now)
        metadata = {"source": "tradingview", "ticker": self.ticker}
        if self.time:
            metadata["tradingview_time"] = self.time
        return router_pb2.StrategySignal(
            strategy_signal_id=self.alert_id,
            strategy_id=self.strategy_id,
            pair=self.pair,
            side=SIDE_TO_PB[self.side],
            size_usd=fmt(self.size_usd),
            signal_type=SIGNAL_TYPE_TO_PB[self.signal_type],
            timestamp=timestamp,
            metadata=metadata,
            limit_price=fmt(self.limit_price) if self.limit_price is not None else "",
        )


def hash_passphrase(passphrase: str) -> str:
    """The hex sha256 a strategies file stores instead of the passphrase."""
    return hashlib.sha256(passphrase.encode()).hexdigest()


def sign(secret: bytes, body: bytes) -> str:
    """The X-Nija-Signature value for `body` (what a sender other than TradingView computes)."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def passphrase_ok(strategy: Strategy, given: object) -> bool:
    """Constant-time comparison of the sha256 of `given` with the strategy's."""
    if strategy.passphrase_sha256 is None:
        return True
    if type(given) is not str:
        return False
    try:
        digest = hashlib.sha256(given.encode()).digest()
    except UnicodeEncodeError:  # a lone surrogate (\ud800) is valid JSON but no text
        return False
    return hmac.compare_digest(digest, strategy.passphrase_sha256)


def signature_ok(strategy: Strategy, body: bytes, header: str | None) -> bool:
    if strategy.hmac_secret is None:
        return True
    if not header:
        return False
    return hmac.compare_digest(sign(strategy.hmac_secret, body).encode(), header.strip().lower().encode("utf-8", "replace"))


# ---- parsing ---------------------------------------------------------------------------------------


class _Number(str):
    """A JSON number, kept as its exact source text (so it never passes through a float)."""


class _BadJson(ValueError):
    pass


def _no_constants(name: str) -> Any:
    raise _BadJson(f"{name} is not a number JSON allows")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _BadJson(f"key {key[:40]!r} appears twice")
        out[key] = value
    return out


def _load(text: str) -> Any:
    return json.loads(
        text, parse_float=_Number, parse_int=_Number, parse_constant=_no_constants, object_pairs_hook=_no_duplicates
    )


def _bad(field: str, message: str) -> Refusal:
    return Refusal(400, "BAD_FIELD", f"{field}: {message}")


def _text(obj: Mapping[str, Any], field: str, max_len: int, required: bool) -> str | Refusal:
    """A JSON string field (not a number, object, ...), stripped; "" when absent and optional."""
    value = obj.get(field)
    if value is None and not required:
        return ""
    if type(value) is not str:
        return _bad(field, "is required and must be a string" if value is None else "must be a string")
    value = value.strip()
    try:
        value.encode()
    except UnicodeEncodeError:
        return _bad(field, "must be valid Unicode text")
    if required and not value:
        return _bad(field, "must not be empty")
    if len(value) > max_len:
        return _bad(field, f"must be at most {max_len} characters")
    return value


def _decimal(obj: Mapping[str, Any], field: str) -> Decimal | Refusal:
    """A positive decimal from a JSON string or number, parsed from its exact text."""
    value = obj.get(field)
    if not isinstance(value, str):  # JSON strings and numbers (_Number) only
        return _bad(field, "must be a decimal number or a string holding one")
    try:
        return parse_positive(value.strip(), field)
    except BadDecimal as exc:
        return _bad(field, str(exc))


def _alert_id(strategy_id: str, given: str, content: str, bucket: int) -> str:
    if given and ALERT_ID_RE.fullmatch(given):
        return given
    seed = f"id\n{strategy_id}\n{given}" if given else f"content\n{strategy_id}\n{bucket}\n{content}"
    return "tv-" + hashlib.sha256(seed.encode()).hexdigest()[:32]


def parse_alert(
    body: bytes, strategy: Strategy, signature: str | None, now_s: float, dedupe_window_s: float
) -> Alert | Refusal:
    """Authenticate and validate one alert body for `strategy`; `now_s` picks the time bucket of
    an alert without an id."""
    if not signature_ok(strategy, body, signature):
        return Refusal(401, "BAD_SIGNATURE", f"{SIGNATURE_HEADER} must be sha256=<hex HMAC-SHA256 of the body>")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return Refusal(415, "NOT_UTF8", "the body must be UTF-8 text holding a JSON object")
    try:
        obj = _load(text)
    except _BadJson as exc:
        return Refusal(400, "MALFORMED_JSON", f"the body is not valid JSON: {exc}")
    except (ValueError, RecursionError) as exc:
        detail = str(exc).split(":")[0] if isinstance(exc, ValueError) else "nested too deeply"
        return Refusal(400, "MALFORMED_JSON", f"the body is not valid JSON: {detail[:120]}")
    if not isinstance(obj, dict):
        return Refusal(400, "MALFORMED_JSON", "the body must be a JSON object (the alert template)")
    if not passphrase_ok(strategy, obj.get("passphrase")):
        return Refusal(401, "BAD_PASSPHRASE", "the passphrase is missing or wrong")
    unknown = sorted(k for k in obj if k not in FIELDS)
    if unknown:
        return _bad(unknown[0][:40], f"is not a field of the alert template ({', '.join(FIELDS)})")

    ticker = _text(obj, "ticker", MAX_TICKER, required=True)
    if isinstance(ticker, Refusal):
        return ticker
    action = _text(obj, "action", 16, required=True)
    if isinstance(action, Refusal):
        return action
    if action.lower() not in ("buy", "sell"):
        return _bad("action", "must be buy or sell")
    side = Side(action.lower())

    kind = _text(obj, "signal_type", 32, required=False)
    if isinstance(kind, Refusal):
        return kind
    kinds = {t.value: t for t in SignalType}
    if (kind or "entry").lower() not in kinds:
        return _bad("signal_type", f"must be one of {', '.join(kinds)}")
    signal_type = kinds[(kind or "entry").lower()]

    if ("size_usd" in obj) == ("percent" in obj):
        return _bad("size_usd", "give exactly one of size_usd or percent")
    percent: Decimal | None = None
    if "size_usd" in obj:
        size = _decimal(obj, "size_usd")
        if isinstance(size, Refusal):
            return size
    else:
        percent_or = _decimal(obj, "percent")
        if isinstance(percent_or, Refusal):
            return percent_or
        percent = percent_or
        if percent > 100:
            return _bad("percent", "must be at most 100")
        if strategy.reference_capital_usd is None:
            return _bad("percent", "this strategy has no reference_capital_usd: send size_usd")
        size = (strategy.reference_capital_usd * percent / 100).quantize(CENT, rounding=ROUND_DOWN)
        if size <= 0:
            return _bad("percent", f"{fmt(percent)}% of {fmt(strategy.reference_capital_usd)} USD is under a cent")
    if size > MAX_SIZE_USD:
        return _bad("size_usd", f"must be at most {MAX_SIZE_USD}")

    limit_price: Decimal | None = None
    if obj.get("limit_price") not in (None, ""):
        limit = _decimal(obj, "limit_price")
        if isinstance(limit, Refusal):
            return limit
        limit_price = limit

    time_text = _text(obj, "time", MAX_TIME, required=False)
    if isinstance(time_text, Refusal):
        return time_text
    given_id = _text(obj, "id", 1000, required=False)
    if isinstance(given_id, Refusal):
        return given_id

    pair = strategy.pair_for(ticker)
    if pair is None or not PAIR_RE.fullmatch(pair):
        return Refusal(422, "UNKNOWN_TICKER", f"ticker {ticker!r} is not one of strategy {strategy.strategy_id}'s tickers")

    # ASCII escapes: a lone surrogate elsewhere in the body must not break the hash.
    content = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    bucket = int(now_s // dedupe_window_s) if dedupe_window_s > 0 else 0
    return Alert(
        alert_id=_alert_id(strategy.strategy_id, given_id, content, bucket),
        strategy_id=strategy.strategy_id,
        ticker=ticker,
        pair=pair,
        side=side,
        size_usd=size,
        signal_type=signal_type,
        limit_price=limit_price,
        percent=percent,
        time=time_text,
        content_hash=hashlib.sha256(f"{strategy.strategy_id}\n{content}".encode()).hexdigest(),
        has_id=bool(given_id),
    )
