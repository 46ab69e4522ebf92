"""Live mode is explicit: the config refuses a real-exchange venue nobody confirmed, and the
exchange emulators' settings are checked before anything starts."""

from __future__ import annotations

import json

import pytest

from services.executor.app import Config as ExecutorConfig
from services.executor.app import make_venue
from services.runtime.config import ConfigError
from services.simexchange.app import Config as SimConfig


def test_the_default_stays_simulated() -> None:
    config = ExecutorConfig()
    assert config.venue == "sim" and not config.real_money


def test_a_real_exchange_needs_live_confirmed() -> None:
    with pytest.raises(ConfigError, match="set live=true to confirm"):
        ExecutorConfig(broker="kraken", venue="ccxt")
    assert ExecutorConfig(broker="kraken", venue="ccxt", live=True).real_money
    emulated = ExecutorConfig(broker="kraken", venue="ccxt", exchange_url="http://127.0.0.1:9")
    assert not emulated.real_money


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"venue": "paper"}, "venue must be 'sim' or 'ccxt'"),
        ({"venue": "ccxt", "exchange_url": "127.0.0.1:9"}, "exchange_url must be an http"),
    ],
)
def test_bad_venue_settings_are_refused(fields: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ExecutorConfig(**fields)  # type: ignore[arg-type]


def test_an_exchange_with_signed_market_reads_needs_an_operator_key(tmp_path) -> None:
    config = ExecutorConfig(broker="alpaca", venue="ccxt", exchange_url="http://127.0.0.1:9")
    with pytest.raises(ConfigError, match="alpaca answers market reads only signed"):
        make_venue(config)
    bad = tmp_path / "market.json"
    bad.write_text("{}")
    with pytest.raises(ConfigError, match="expected JSON with api_key and api_secret"):
        make_venue(ExecutorConfig(broker="alpaca", venue="ccxt", exchange_url="http://127.0.0.1:9",
                                  market_keys_file=str(bad)))
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"api_key": "PKTEST", "api_secret": "s"}))
    venue = make_venue(ExecutorConfig(broker="alpaca", venue="ccxt", exchange_url="http://127.0.0.1:9",
                                      market_keys_file=str(good)))
    assert venue.broker == "alpaca"


def test_emulate_settings() -> None:
    assert SimConfig(emulate="binance, kraken=8123").emulator_ports() == {"binance": 0, "kraken": 8123}
    assert SimConfig().emulator_ports() == {}
    for bad, message in [("mtgox", "unknown broker"), ("binance,binance", "given twice"), ("kraken=http", "port")]:
        with pytest.raises(ConfigError, match=message):
            SimConfig(emulate=bad)
