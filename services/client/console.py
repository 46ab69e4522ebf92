"""Updates as terminal lines, for command-line tools built on the client (`nija trade`)."""

from __future__ import annotations

from collections.abc import Callable

from nija.common.v1 import common_pb2

from services.client.client import NijaClient
from services.client.errors import NijaError
from services.client.models import Update
from services.domain.money import fmt


def describe(update: Update) -> str:
    """`#12   filled        binance  fill 0.004 @ 61234.5 fee 0.1 USD (taker)  filled ... avg ...`"""
    parts = [f"#{update.sequence:<4} {update.status.value:<12}", update.broker or "-"]
    for fill in update.fills:
        role = f" ({fill.liquidity})" if fill.liquidity else ""
        parts.append(f"fill {fmt(fill.quantity)} @ {fmt(fill.price)} fee {fmt(fill.fee)} {fill.fee_currency}{role}")
    if update.filled_quantity:
        average = fmt(update.average_price) if update.average_price is not None else "-"
        parts.append(f"filled {fmt(update.filled_quantity)} avg {average} fees {fmt(update.fees_total)}")
    if update.reason:
        parts.append(update.reason)
    return "  ".join(parts)


async def stream_trade(
    client: NijaClient,
    signal: common_pb2.TradeSignal,
    timeout: float,
    echo: Callable[[str], None] = lambda line: print(line, flush=True),
) -> str:
    """Submit `signal` and echo each update as it streams; returns the final state's name
    ("filled", ...), or the status code's name when the mesh refused the signal."""
    echo(f"  signal {signal.signal_id}")
    try:
        result = await client.submit_and_wait(signal, timeout=timeout, on_update=lambda u: echo("  " + describe(u)))
    except NijaError as err:
        echo(f"  refused: {err.code.name} {err.reason}: {err.details}")
        return err.code.name
    return result.state.value
