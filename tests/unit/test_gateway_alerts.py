"""The webhook gateway's pure parts: alert parsing and validation, the strategies file, the dedupe
window and the per-strategy rate limit (clocks moved by hand)."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from nija.common.v1 import common_pb2

from services.domain.signal import Side, SignalType
from services.gateway.alerts import (
    Alert,
    Refusal,
    Strategy,
    hash_passphrase,
    parse_alert,
    sign,
)
from services.gateway.limits import Deduper, RateLimiter, retry_after_header
from services.gateway.results import AlertRecord, ResultStore
from services.gateway.strategies import load_strategies
from services.runtime.config import ConfigError

PASS = "correct horse"
STRATEGY = Strategy(
    strategy_id="tv1",
    passphrase_sha256=bytes.fromhex(hash_passphrase(PASS)),
    token="tok",
    tickers={"BTCUSD": "BTC-USD", "BTCUSDT": "BTC-USD", "BINANCE:ETHUSDT": "ETH-USD", "SOLUSD": "SOL-USD"},
    reference_capital_usd=Decimal("12345.67"),
)
SIGNED = Strategy(strategy_id="signer", hmac_secret=b"s3cret", token="tok", tickers={"BTCUSD": "BTC-USD"})
WINDOW = 300.0


def body(**fields: object) -> bytes:
    alert = {"passphrase": PASS, "ticker": "BTCUSD", "action": "buy", "size_usd": "100"}
    alert.update(fields)
    return json.dumps({k: v for k, v in alert.items() if v is not None}).encode()


def parse(raw: bytes, strategy: Strategy = STRATEGY, signature: str | None = None, now: float = 1000.0):
    return parse_alert(raw, strategy, signature, now, WINDOW)


def ok(raw: bytes, **kw: object) -> Alert:
    result = parse(raw, **kw)  # type: ignore[arg-type]
    assert isinstance(result, Alert), result
    return result


def refused(raw: bytes, **kw: object) -> Refusal:
    result = parse(raw, **kw)  # type: ignore[arg-type]
    assert isinstance(result, Refusal), result
    return result


# ---- a valid alert -----------------------------------------------------------------------------------


def test_a_tradingview_alert_becomes_a_strategy_signal() -> None:
    alert = ok(body(id="ord-1.a:b@c_d", signal_type="stop_loss", limit_price="61000.25", time="2026-01-01T00:00:00Z"))
    assert (alert.alert_id, alert.pair, alert.side, alert.size_usd) == ("ord-1.a:b@c_d", "BTC-USD", Side.BUY, Decimal(100))
    assert alert.signal_type is SignalType.STOP_LOSS and alert.limit_price == Decimal("61000.25")
    pb = alert.to_proto(datetime(2026, 1, 1, tzinfo=UTC))
    assert pb.strategy_signal_id == "ord-1.a:b@c_d" and pb.strategy_id == "tv1" and pb.pair == "BTC-USD"
    assert pb.side == common_pb2.SIDE_BUY and pb.signal_type == common_pb2.SIGNAL_TYPE_STOP_LOSS
    assert pb.size_usd == "100" and pb.limit_price == "61000.25"
    assert pb.metadata["tradingview_time"] == "2026-01-01T00:00:00Z" and pb.metadata["ticker"] == "BTCUSD"


def test_text_plain_bodies_and_case_are_fine_and_the_default_type_is_entry() -> None:
    alert = ok(body(action="SELL", ticker=" btcusdt "))
    assert alert.side is Side.SELL and alert.signal_type is SignalType.ENTRY and alert.pair == "BTC-USD"


@pytest.mark.parametrize("raw, exact", [('"0.1"', "0.1"), ("0.1", "0.1"), ("100", "100"),
                                        ("12.000000000000000001", "12.000000000000000001")])
def test_sizes_are_exact_decimals_from_the_json_text(raw: str, exact: str) -> None:
    text = '{"passphrase": "%s", "ticker": "BTCUSD", "action": "buy", "size_usd": %s}' % (PASS, raw)
    alert = ok(text.encode())
    assert alert.size_usd == Decimal(exact) and str(alert.size_usd) == exact


def test_percent_is_sized_from_the_reference_capital_rounded_down_to_the_cent() -> None:
    alert = ok(body(size_usd=None, percent="2.5"))
    # 12345.67 * 2.5 / 100 = 308.64175 -> 308.64
    assert alert.size_usd == Decimal("308.64") and alert.percent == Decimal("2.5")
    assert alert.describe()["percent"] == "2.5" and alert.describe()["size_usd"] == "308.64"


def test_ticker_mapping_with_and_without_exchange_prefix() -> None:
    assert ok(body(ticker="COINBASE:BTCUSD")).pair == "BTC-USD"  # prefix falls back to the bare key
    assert ok(body(ticker="BINANCE:ETHUSDT")).pair == "ETH-USD"  # an exact prefixed key
    assert refused(body(ticker="ETHUSDT")).reason == "UNKNOWN_TICKER"  # only the prefixed key is configured
    unknown = refused(body(ticker="DOGEUSD"))
    assert (unknown.status, unknown.reason) == (422, "UNKNOWN_TICKER") and "DOGEUSD" in unknown.message


# ---- ids ----------------------------------------------------------------------------------------------


def test_an_invalid_alert_id_is_hashed_into_a_valid_deterministic_one() -> None:
    a = ok(body(id="Long Entry #1"))
    b = ok(body(id="Long Entry #1"), now=999_999.0)
    assert a.alert_id == b.alert_id and a.alert_id.startswith("tv-") and len(a.alert_id) == 35
    assert ok(body(id="x" * 100)).alert_id == "x" * 100
    assert ok(body(id="x" * 101)).alert_id.startswith("tv-")
    other = Strategy(**{**STRATEGY.__dict__, "strategy_id": "tv2"})
    assert ok(body(id="Long Entry #1"), strategy=other).alert_id != a.alert_id


def test_without_an_id_the_id_is_the_content_in_its_window_bucket() -> None:
    first = ok(body(), now=600.0)
    assert first.alert_id == ok(body(), now=899.0).alert_id  # same bucket [600, 900)
    assert first.alert_id != ok(body(), now=900.0).alert_id  # next bucket
    assert first.alert_id != ok(body(size_usd="101"), now=600.0).alert_id
    # Key order and spacing are not content; the passphrase and time are.
    reordered = json.dumps({"size_usd": "100", "action": "buy", "ticker": "BTCUSD", "passphrase": PASS}, indent=2)
    assert ok(reordered.encode(), now=600.0).alert_id == first.alert_id
    assert ok(body(time="t1"), now=600.0).content_hash != ok(body(time="t2"), now=600.0).content_hash


# ---- refusals -----------------------------------------------------------------------------------------


def test_a_wrong_or_missing_passphrase_is_401() -> None:
    for raw in (body(passphrase="wrong"), body(passphrase=None), body(passphrase=123), body(passphrase="\ud800")):
        r = refused(raw)
        assert (r.status, r.reason) == (401, "BAD_PASSPHRASE")


def test_hmac_signature_over_the_raw_body() -> None:
    raw = body(passphrase=None)
    assert ok(raw, strategy=SIGNED, signature=sign(b"s3cret", raw)).pair == "BTC-USD"
    assert ok(raw, strategy=SIGNED, signature=sign(b"s3cret", raw).upper().replace("SHA256=", "sha256=")).pair
    for bad in (None, "", sign(b"other", raw), sign(b"s3cret", raw + b" "), "sha256=zz"):
        r = refused(raw, strategy=SIGNED, signature=bad)
        assert (r.status, r.reason) == (401, "BAD_SIGNATURE")
    # The signature is checked before the body is even decoded.
    assert refused(b"\xff\xfe", strategy=SIGNED).reason == "BAD_SIGNATURE"


@pytest.mark.parametrize("raw, status, reason", [
    (b"\xff\xfe{}", 415, "NOT_UTF8"),
    (b"", 400, "MALFORMED_JSON"),
    (b"{", 400, "MALFORMED_JSON"),
    (b"[1, 2]", 400, "MALFORMED_JSON"),
    (b'"text"', 400, "MALFORMED_JSON"),
    (b'{"a": NaN}', 400, "MALFORMED_JSON"),
    (b'{"a": Infinity}', 400, "MALFORMED_JSON"),
    (b'{"a": 1, "a": 2}', 400, "MALFORMED_JSON"),
    (b"[" * 100_000 + b"]" * 100_000, 400, "MALFORMED_JSON"),
])
def test_malformed_bodies_are_4xx_with_a_reason(raw: bytes, status: int, reason: str) -> None:
    r = refused(raw)
    assert (r.status, r.reason) == (status, reason) and r.message


@pytest.mark.parametrize("fields, field", [
    ({"ticker": None}, "ticker"),
    ({"ticker": 5}, "ticker"),
    ({"ticker": ""}, "ticker"),
    ({"ticker": "X" * 65}, "ticker"),
    ({"action": "hold"}, "action"),
    ({"action": None}, "action"),
    ({"action": ["buy"]}, "action"),
    ({"size_usd": None}, "size_usd"),  # neither size nor percent
    ({"percent": "1"}, "size_usd"),  # both
    ({"size_usd": "0"}, "size_usd"),
    ({"size_usd": "-5"}, "size_usd"),
    ({"size_usd": "1e3"}, "size_usd"),
    ({"size_usd": True}, "size_usd"),
    ({"size_usd": {"v": 1}}, "size_usd"),
    ({"size_usd": "1000000001"}, "size_usd"),
    ({"size_usd": "9" * 40}, "size_usd"),
    ({"size_usd": "１００"}, "size_usd"),  # full-width digits: Decimal reads them, the wire must not
    ({"size_usd": None, "percent": "101"}, "percent"),
    ({"size_usd": None, "percent": "0.0000001"}, "percent"),  # under a cent
    ({"signal_type": "scalp"}, "signal_type"),
    ({"limit_price": "abc"}, "limit_price"),
    ({"limit_price": "0"}, "limit_price"),
    ({"time": 12}, "time"),
    ({"id": 12}, "id"),
    ({"id": "x" * 1001}, "id"),
    ({"sizeusd": "5"}, "sizeusd"),  # a typo is refused, not ignored
])
def test_each_field_rule_refuses_with_bad_field_naming_the_field(fields: dict, field: str) -> None:
    r = refused(body(**fields))
    assert (r.status, r.reason) == (400, "BAD_FIELD") and r.message.startswith(f"{field}:"), r


def test_percent_needs_a_reference_capital() -> None:
    strategy = Strategy(**{**STRATEGY.__dict__, "reference_capital_usd": None})
    r = refused(body(size_usd=None, percent="1"), strategy=strategy)
    assert r.reason == "BAD_FIELD" and "reference_capital_usd" in r.message


def test_the_passphrase_is_checked_before_the_fields() -> None:
    assert refused(body(passphrase="nope", ticker="UNKNOWN", action="hold")).reason == "BAD_PASSPHRASE"


# ---- the strategies file --------------------------------------------------------------------------------


def write_strategies(tmp_path, **overrides: object):
    (tmp_path / "s1.token").write_text("the-token\n")
    (tmp_path / "s1.hmac").write_text("hmac-secret\n")
    entry = {"strategy_id": "s1", "passphrase_sha256": hash_passphrase("pw"), "token_file": "s1.token",
             "tickers": {"btcusd": "BTC-USD", "BINANCE:ETHUSDT": "ETH-USD"}, "reference_capital_usd": "5000",
             "rate_per_minute": 30, "burst": 3}
    entry.update(overrides)
    path = tmp_path / "strategies.json"
    path.write_text(json.dumps({"strategies": [{k: v for k, v in entry.items() if v is not None}]}))
    return str(path)


def test_the_strategies_file_loads_relative_files_and_keeps_secrets_out_of_repr(tmp_path) -> None:
    (s1,) = load_strategies(write_strategies(tmp_path, hmac_secret_file="s1.hmac")).values()
    assert s1.token == "the-token" and s1.hmac_secret == b"hmac-secret"
    assert s1.passphrase_sha256 == hashlib.sha256(b"pw").digest()
    assert s1.tickers == {"BTCUSD": "BTC-USD", "BINANCE:ETHUSDT": "ETH-USD"}
    assert (s1.reference_capital_usd, s1.rate_per_minute, s1.burst) == (Decimal(5000), 30.0, 3)
    assert "the-token" not in repr(s1) and "hmac-secret" not in repr(s1)


@pytest.mark.parametrize("overrides, problem", [
    ({"strategy_id": "bad id"}, "strategy_id"),
    ({"passphrase_sha256": "abc"}, "passphrase_sha256"),
    ({"passphrase_sha256": None}, "passphrase_sha256 or hmac_secret_file"),
    ({"token_file": None}, "token_file is required"),
    ({"token_file": "missing.token"}, "cannot read"),
    ({"tickers": {}}, "tickers"),
    ({"tickers": {"BTCUSD": "BTCUSD"}}, "must be a pair"),
    ({"reference_capital_usd": "-1"}, "reference_capital_usd"),
    ({"rate_per_minute": 0}, "rate_per_minute"),
    ({"burst": 0}, "burst"),
    ({"burst": 1.5}, "burst"),
    ({"colour": "red"}, "unknown keys"),
])
def test_a_bad_strategies_file_is_a_config_error_naming_the_problem(tmp_path, overrides, problem) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_strategies(write_strategies(tmp_path, **overrides))


def test_an_empty_or_missing_strategies_file_is_a_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="strategies_file is required"):
        load_strategies("")
    (tmp_path / "empty.json").write_text('{"strategies": []}')
    with pytest.raises(ConfigError, match="at least one strategy"):
        load_strategies(str(tmp_path / "empty.json"))
    (entry,) = json.loads(Path(write_strategies(tmp_path)).read_text())["strategies"]
    (tmp_path / "twice.json").write_text(json.dumps({"strategies": [entry, entry]}))
    with pytest.raises(ConfigError, match="given twice"):
        load_strategies(str(tmp_path / "twice.json"))


# ---- dedupe, rate limit, results ---------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_dedupe_remembers_for_the_window_only() -> None:
    clock = Clock()
    dedupe = Deduper(300.0, clock)
    assert dedupe.seen(["id:a", "content:x"]) is None
    dedupe.remember(["id:a", "content:x"], "a")
    clock.now += 299.9
    assert dedupe.seen(["content:x"]) == "a" and dedupe.seen(["id:a", "content:other"]) == "a"
    assert dedupe.seen(["id:b", "content:y"]) is None
    clock.now += 0.1
    assert dedupe.seen(["id:a", "content:x"]) is None and len(dedupe) == 0


def test_dedupe_is_bounded() -> None:
    clock = Clock()
    dedupe = Deduper(300.0, clock, max_entries=3)
    for i in range(5):
        dedupe.remember([f"k{i}"], str(i))
    assert len(dedupe) == 3 and dedupe.seen(["k0"]) is None and dedupe.seen(["k4"]) == "4"


def test_rate_limit_is_a_token_bucket_per_strategy() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    assert [limiter.take("s", 60.0, 3) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.take("s", 60.0, 3)
    assert wait == pytest.approx(1.0) and retry_after_header(wait) == "1"
    assert limiter.take("other", 60.0, 3) == 0.0  # each strategy its own bucket
    clock.now += 0.5
    assert limiter.take("s", 60.0, 3) == pytest.approx(0.5)
    clock.now += 0.5
    assert limiter.take("s", 60.0, 3) == 0.0 and limiter.take("s", 60.0, 3) > 0
    clock.now += 3600
    assert [limiter.take("s", 60.0, 3) for _ in range(4)][-1] > 0  # refills to the burst, no more
    assert retry_after_header(0.01) == "1" and retry_after_header(61.2) == "62"


def test_results_are_an_lru_by_strategy_and_id() -> None:
    store = ResultStore(max_alerts=2)
    a, b, c = (ok(body(id=i)) for i in ("a", "b", "c"))
    store.add(AlertRecord(a))
    store.add(AlertRecord(b))
    assert store.get("tv1", "a") is not None  # a used: b is now the oldest
    store.add(AlertRecord(c))
    assert store.get("tv1", "b") is None and store.get("tv1", "a") and store.strategies_with("c") == ["tv1"]
