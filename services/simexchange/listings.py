"""What each simulated exchange lists and how its market looks. Static data, no behaviour.

The four brokers share one reference price per base asset but differ where the real exchanges
differ: which pairs they list, their precision and minimums, their fee schedule, how tight and how
deep their books are, and a small standing price offset between them (so routing has something
real to choose between). Values are close to the real venues' (see EXCHANGES.md) without
pretending to be exact.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from decimal import Decimal

QUOTE = "USD"
#: Quote currency a new account starts with, on every broker.
QUOTE_FUNDING = Decimal(1_000_000)


@dataclasses.dataclass(frozen=True)
class MarketSpec:
    pair: str  # "BASE-USD"
    base: str
    quote: str
    tick_size: Decimal
    lot_size: Decimal
    min_quantity: Decimal
    min_notional: Decimal
    #: What withdrawing the base asset off this broker costs, in base units (fixed per withdrawal).
    withdrawal_fee: Decimal


@dataclasses.dataclass(frozen=True)
class FeeSchedule:
    maker: Decimal
    taker: Decimal


@dataclasses.dataclass(frozen=True)
class Asset:
    symbol: str
    #: Starting reference price in USD.
    reference_price: Decimal
    #: USD resting per book side on a broker with depth_factor 1.
    depth_usd: Decimal
    #: Alts trade wider than BTC/ETH: multiplies every broker's spread and level spacing.
    spread_factor: Decimal
    #: Base quantity a new account starts with (roughly $250k worth).
    funding: Decimal


@dataclasses.dataclass(frozen=True)
class BrokerProfile:
    name: str
    fees: FeeSchedule
    #: Full top-of-book spread, in basis points of the mid, for spread_factor 1.
    spread_bps: Decimal
    #: Standing offset of this broker's mid from the shared reference, in basis points.
    offset_bps: Decimal
    #: Distance between successive book levels, in basis points, for spread_factor 1.
    level_step_bps: Decimal
    #: Share of an asset's depth_usd this broker's book holds per side.
    depth_factor: Decimal
    levels: int
    markets: Mapping[str, MarketSpec]


def _asset(symbol: str, price: str, depth: str, spread: str, funding: str) -> Asset:
    return Asset(symbol, Decimal(price), Decimal(depth), Decimal(spread), Decimal(funding))


ASSETS: dict[str, Asset] = {
    a.symbol: a
    for a in (
        _asset("BTC", "60000", "400000", "1", "4"),
        _asset("ETH", "3000", "250000", "1", "80"),
        _asset("SOL", "150", "120000", "1.5", "1600"),
        _asset("BNB", "550", "80000", "1.5", "450"),
        _asset("XMR", "160", "30000", "3", "1500"),
        _asset("XRP", "0.55", "80000", "2", "450000"),
        _asset("ADA", "0.45", "50000", "2", "550000"),
        _asset("DOGE", "0.15", "60000", "2", "1600000"),
        _asset("AVAX", "30", "50000", "2", "8000"),
        _asset("LINK", "15", "50000", "2", "16000"),
        _asset("LTC", "80", "50000", "2", "3000"),
        _asset("DOT", "7", "40000", "2", "35000"),
        _asset("UNI", "8", "30000", "2.5", "30000"),
        _asset("BCH", "400", "40000", "2", "600"),
    )
}


def _markets(rows: Mapping[str, tuple[str, str, str, str, str]]) -> dict[str, MarketSpec]:
    """{base: (tick_size, lot_size, min_quantity, min_notional, withdrawal_fee)} -> {pair: MarketSpec}."""
    out = {}
    for base, (tick, lot, min_qty, min_notional, withdrawal) in rows.items():
        pair = f"{base}-{QUOTE}"
        out[pair] = MarketSpec(
            pair,
            base,
            QUOTE,
            Decimal(tick),
            Decimal(lot),
            Decimal(min_qty),
            Decimal(min_notional),
            Decimal(withdrawal),
        )
    return out


# Each broker's listing: (tick_size, lot_size, min_quantity, min_notional, withdrawal_fee) per base
# asset. BNB only on binance, XMR only on kraken, no XRP/ADA on alpaca, no BCH on binance, no UNI on
# kraken. Withdrawal fees are each venue's flat fee on the asset's cheapest usual network: binance
# and kraken charge their own schedules, coinbase passes on the network fee only (so it is the
# cheapest to withdraw from though the dearest to trade on), alpaca sits between.
_BINANCE = _markets(
    {
        "BTC": ("0.01", "0.00001", "0.00001", "10", "0.0002"),
        "ETH": ("0.01", "0.0001", "0.0001", "10", "0.0012"),
        "SOL": ("0.01", "0.001", "0.001", "5", "0.008"),
        "BNB": ("0.01", "0.001", "0.001", "5", "0.0005"),
        "XRP": ("0.0001", "0.1", "0.1", "5", "0.2"),
        "ADA": ("0.0001", "0.1", "0.1", "5", "0.8"),
        "DOGE": ("0.00001", "1", "1", "5", "4"),
        "AVAX": ("0.01", "0.01", "0.01", "5", "0.008"),
        "LINK": ("0.001", "0.01", "0.01", "5", "0.3"),
        "LTC": ("0.01", "0.001", "0.001", "5", "0.001"),
        "DOT": ("0.001", "0.01", "0.01", "5", "0.08"),
        "UNI": ("0.001", "0.01", "0.01", "5", "0.4"),
    }
)

_KRAKEN = _markets(
    {
        "BTC": ("0.1", "0.00000001", "0.0001", "0.5", "0.00015"),
        "ETH": ("0.01", "0.00000001", "0.002", "0.5", "0.0025"),
        "SOL": ("0.01", "0.00000001", "0.02", "0.5", "0.01"),
        "XMR": ("0.01", "0.00000001", "0.03", "0.5", "0.0004"),
        "XRP": ("0.00001", "0.00000001", "10", "0.5", "0.02"),
        "ADA": ("0.000001", "0.00000001", "10", "0.5", "0.15"),
        "DOGE": ("0.000001", "0.00000001", "50", "0.5", "5"),
        "AVAX": ("0.01", "0.00000001", "0.1", "0.5", "0.01"),
        "LINK": ("0.00001", "0.00000001", "0.2", "0.5", "0.35"),
        "LTC": ("0.01", "0.00000001", "0.05", "0.5", "0.0001"),
        "DOT": ("0.0001", "0.00000001", "0.5", "0.5", "0.05"),
        "BCH": ("0.01", "0.00000001", "0.01", "0.5", "0.0001"),
    }
)

_COINBASE = _markets(
    {
        "BTC": ("0.01", "0.00000001", "0.00000001", "1", "0.00005"),
        "ETH": ("0.01", "0.00000001", "0.00000001", "1", "0.0004"),
        "SOL": ("0.01", "0.00000001", "0.00000001", "1", "0.00001"),
        "XRP": ("0.0001", "0.000001", "0.000001", "1", "0.00001"),
        "ADA": ("0.0001", "0.00000001", "0.00000001", "1", "0.2"),
        "DOGE": ("0.00001", "0.1", "0.1", "1", "1"),
        "AVAX": ("0.01", "0.00000001", "0.00000001", "1", "0.001"),
        "LINK": ("0.001", "0.01", "0.01", "1", "0.05"),
        "LTC": ("0.01", "0.00000001", "0.00000001", "1", "0.0002"),
        "DOT": ("0.001", "0.00000001", "0.00000001", "1", "0.02"),
        "UNI": ("0.001", "0.000001", "0.000001", "1", "0.05"),
        "BCH": ("0.01", "0.00000001", "0.00000001", "1", "0.00005"),
    }
)

_ALPACA = _markets(
    {
        "BTC": ("1", "0.000000001", "0.0001", "1", "0.0001"),
        "ETH": ("0.1", "0.000000001", "0.001", "1", "0.001"),
        "SOL": ("0.01", "0.000000001", "0.01", "1", "0.005"),
        "DOGE": ("0.00001", "1", "1", "1", "6"),
        "AVAX": ("0.01", "0.000000001", "0.1", "1", "0.012"),
        "LINK": ("0.001", "0.000000001", "0.1", "1", "0.2"),
        "LTC": ("0.01", "0.000000001", "0.01", "1", "0.002"),
        "DOT": ("0.001", "0.000000001", "0.1", "1", "0.1"),
        "UNI": ("0.001", "0.000000001", "0.1", "1", "0.3"),
        "BCH": ("0.01", "0.000000001", "0.001", "1", "0.0005"),
    }
)


def _profile(
    name: str,
    *,
    maker: str,
    taker: str,
    spread_bps: str,
    offset_bps: str,
    level_step_bps: str,
    depth_factor: str,
    markets: Mapping[str, MarketSpec],
) -> BrokerProfile:
    return BrokerProfile(
        name=name,
        fees=FeeSchedule(Decimal(maker), Decimal(taker)),
        spread_bps=Decimal(spread_bps),
        offset_bps=Decimal(offset_bps),
        level_step_bps=Decimal(level_step_bps),
        depth_factor=Decimal(depth_factor),
        levels=10,
        markets=markets,
    )


# Binance is the deepest and tightest, alpaca the thinnest and widest; coinbase is the dearest.
BROKER_PROFILES: dict[str, BrokerProfile] = {
    p.name: p
    for p in (
        _profile(
            "coinbase",
            maker="0.006",
            taker="0.012",
            spread_bps="2",
            offset_bps="1",
            level_step_bps="1.5",
            depth_factor="0.75",
            markets=_COINBASE,
        ),
        _profile(
            "kraken",
            maker="0.0016",
            taker="0.0026",
            spread_bps="3",
            offset_bps="-1.5",
            level_step_bps="2",
            depth_factor="0.5",
            markets=_KRAKEN,
        ),
        _profile(
            "binance",
            maker="0.001",
            taker="0.001",
            spread_bps="1",
            offset_bps="0",
            level_step_bps="1",
            depth_factor="1",
            markets=_BINANCE,
        ),
        _profile(
            "alpaca",
            maker="0.0015",
            taker="0.0025",
            spread_bps="8",
            offset_bps="2.5",
            level_step_bps="3",
            depth_factor="0.2",
            markets=_ALPACA,
        ),
    )
}
