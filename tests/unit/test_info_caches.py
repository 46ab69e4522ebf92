"""The executor's info pushes and the router's parsing of them reuse each pair's encoding until
that pair's book changes, and never serve a stale book after it did."""

from __future__ import annotations

from decimal import Decimal

from nija.executor.v1 import executor_pb2

from services.executor.engine import PairQuote
from services.executor.servicer import PairInfos
from services.executor.venues.base import BookLevel
from services.router.directory import PairCache, pair_liquidity


def _quote(ask: str) -> PairQuote:
    return PairQuote(
        best_bid=Decimal("99"), best_ask=Decimal(ask), bid_liquidity_usd=Decimal("990"),
        ask_liquidity_usd=Decimal(ask) * 10, bids=(BookLevel(Decimal("99"), Decimal("10")),),
        asks=(BookLevel(Decimal(ask), Decimal("10")),), at=1.0,
    )


def test_a_pair_is_encoded_again_only_when_its_quote_or_fee_changes() -> None:
    infos = PairInfos()
    quote = _quote("101")
    first = infos.get("BTC-USD", quote, Decimal("0.0001"))
    assert infos.get("BTC-USD", quote, Decimal("0.0001")) is first
    assert first.best_ask == "101" and first.asks[0].price == "101"

    moved = infos.get("BTC-USD", _quote("102"), Decimal("0.0001"))
    assert moved is not first and moved.best_ask == "102" and moved.asks[0].price == "102"
    refeed = infos.get("BTC-USD", _quote("102"), Decimal("0.0002"))
    assert refeed.withdrawal_fee == "0.0002"


def test_the_router_parses_a_pair_again_only_when_its_encoding_changes() -> None:
    cache = PairCache()
    pair = PairInfos().get("BTC-USD", _quote("101"), Decimal(0))
    parsed = cache(pair)
    assert parsed == pair_liquidity(pair)
    assert cache(executor_pb2.PairInfo.FromString(pair.SerializeToString())) is parsed

    changed = PairInfos().get("BTC-USD", _quote("105"), Decimal(0))
    reparsed = cache(changed)
    assert reparsed is not parsed
    assert reparsed.asks == ((Decimal("105"), Decimal("10")),)
