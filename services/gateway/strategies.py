"""The gateway's strategies file: which strategies may post alerts, and how each is checked.

JSON, read once at start; any problem stops the gateway with a ConfigError naming it:

    {"strategies": [{
        "strategy_id": "tv-demo",                       the URL is POST /webhook/tv-demo
        "passphrase_sha256": "<hex sha256 of the passphrase>",   and/or:
        "hmac_secret_file": "tv-demo.hmac",             then X-Nija-Signature is required
        "token_file": "tv-demo.token",                  the strategy principal's router token
        "tickers": {"BTCUSD": "BTC-USD", "BINANCE:BTCUSDT": "BTC-USD"},
        "reference_capital_usd": "10000",               optional: what "percent" alerts size from
        "rate_per_minute": 30,                          optional (default 60)
        "burst": 5                                      optional (default 10)
    }]}

Relative file names are resolved against the strategies file's directory (a mounted Secret holds
them all). The token and HMAC secret are read here and never logged.
"""

from __future__ import annotations

import json
import pathlib
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from services.domain.money import BadDecimal, parse_positive
from services.domain.signal import PAIR_RE
from services.gateway.alerts import Strategy
from services.runtime.config import ConfigError
from services.runtime.security import read_file

STRATEGY_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
TICKER_RE = re.compile(r"^[A-Z0-9][A-Z0-9._!:/-]{0,63}$")
HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
KEYS = {"strategy_id", "passphrase_sha256", "hmac_secret_file", "token_file", "tickers",
        "reference_capital_usd", "rate_per_minute", "burst"}


def load_strategies(path: str, read: Callable[[str], bytes] = read_file) -> dict[str, Strategy]:
    """strategy_id -> Strategy, from the file at `path` (and the files it names)."""
    if not path:
        raise ConfigError("strategies_file is required: the JSON file of the strategies that may post alerts")
    try:
        doc = json.loads(read(path).decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"strategies_file {path}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("strategies"), list) or not doc["strategies"]:
        raise ConfigError(f'strategies_file {path}: expected {{"strategies": [ ... ]}} with at least one strategy')
    base = pathlib.Path(path).parent
    out: dict[str, Strategy] = {}
    for index, entry in enumerate(doc["strategies"]):
        where = f"strategies_file {path}: strategies[{index}]"
        strategy = _strategy(entry, where, lambda name: read(str(base / name)))
        if strategy.strategy_id in out:
            raise ConfigError(f"{where}: strategy_id {strategy.strategy_id} is given twice")
        out[strategy.strategy_id] = strategy
    return out


def _strategy(entry: Any, where: str, read: Callable[[str], bytes]) -> Strategy:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be an object")
    unknown = sorted(set(entry) - KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; known: {sorted(KEYS)}")
    strategy_id = entry.get("strategy_id")
    if not isinstance(strategy_id, str) or not STRATEGY_ID_RE.fullmatch(strategy_id):
        raise ConfigError(f"{where}: strategy_id must be 1-64 letters, digits and . _ @ -")
    where = f"{where} ({strategy_id})"

    passphrase = entry.get("passphrase_sha256")
    if passphrase is not None and (not isinstance(passphrase, str) or not HEX64_RE.fullmatch(passphrase.lower())):
        raise ConfigError(f"{where}: passphrase_sha256 must be 64 hex digits (sha256 of the passphrase)")
    hmac_file = entry.get("hmac_secret_file")
    if hmac_file is not None and (not isinstance(hmac_file, str) or not hmac_file):
        raise ConfigError(f"{where}: hmac_secret_file must be a file name")
    if passphrase is None and hmac_file is None:
        raise ConfigError(f"{where}: give passphrase_sha256 or hmac_secret_file (or both): alerts must be authenticated")
    hmac_secret = read(hmac_file).strip() if hmac_file else None
    if hmac_file and not hmac_secret:
        raise ConfigError(f"{where}: hmac_secret_file {hmac_file} is empty")

    token_file = entry.get("token_file")
    if not isinstance(token_file, str) or not token_file:
        raise ConfigError(f"{where}: token_file is required (the strategy's token for the router)")
    try:
        token = read(token_file).decode().strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: token_file {token_file} is not text") from None
    if not token:
        raise ConfigError(f"{where}: token_file {token_file} is empty")

    tickers = entry.get("tickers")
    if not isinstance(tickers, dict) or not tickers:
        raise ConfigError(f'{where}: tickers must map TradingView tickers to pairs, e.g. {{"BTCUSD": "BTC-USD"}}')
    mapped: dict[str, str] = {}
    for ticker, pair in tickers.items():
        key = ticker.strip().upper()
        if not TICKER_RE.fullmatch(key):
            raise ConfigError(f"{where}: ticker {ticker!r} is not a TradingView ticker (BTCUSD, BINANCE:BTCUSDT)")
        if not isinstance(pair, str) or not PAIR_RE.fullmatch(pair):
            raise ConfigError(f"{where}: tickers[{ticker!r}] must be a pair like BTC-USD, got {pair!r}")
        if key in mapped:
            raise ConfigError(f"{where}: ticker {key} is given twice")
        mapped[key] = pair

    capital: Decimal | None = None
    if entry.get("reference_capital_usd") is not None:
        try:
            capital = parse_positive(str(entry["reference_capital_usd"]), "reference_capital_usd")
        except BadDecimal as exc:
            raise ConfigError(f"{where}: {exc}") from None

    rate = entry.get("rate_per_minute", 60)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 100_000:
        raise ConfigError(f"{where}: rate_per_minute must be a number > 0")
    burst = entry.get("burst", 10)
    if isinstance(burst, bool) or not isinstance(burst, int) or not 1 <= burst <= 100_000:
        raise ConfigError(f"{where}: burst must be a whole number >= 1")

    return Strategy(
        strategy_id=strategy_id,
        passphrase_sha256=bytes.fromhex(passphrase) if passphrase else None,
        hmac_secret=hmac_secret,
        token=token,
        tickers=mapped,
        reference_capital_usd=capital,
        rate_per_minute=float(rate),
        burst=burst,
    )
