"""The client library's pure parts (issue 7): signals, typed values, errors, configuration."""

from __future__ import annotations

from decimal import Decimal

import grpc
import pytest
from nija.common.v1 import common_pb2

from services.client import (
    NijaClient,
    NijaError,
    Status,
    TradeResult,
    Update,
    client_security,
    describe,
    make_signal,
)
from services.client.errors import from_rpc_error
from services.runtime.config import ConfigError
from services.runtime.errors import ServiceError, to_status


def test_make_signal_puts_plain_decimal_strings_on_the_wire_and_refuses_floats() -> None:
    pb = make_signal("alice", "BTC-USD", "sell", Decimal("1E+3"), "stop_loss", limit_price=Decimal("61234.50"))
    assert (pb.size_usd, pb.limit_price) == ("1000", "61234.50")
    assert pb.side == common_pb2.SIDE_SELL and pb.signal_type == common_pb2.SIGNAL_TYPE_STOP_LOSS
    assert pb.signal_id.startswith("sig-") and pb.timestamp.seconds > 0
    assert make_signal("alice", "BTC-USD", "buy", 250).size_usd == "250"
    assert make_signal("alice", "BTC-USD", "buy", "250", signal_id="mine").signal_id == "mine"
    assert make_signal("a", "BTC-USD", "buy", "1").signal_id != make_signal("a", "BTC-USD", "buy", "1").signal_id
    for bad in (250.0, True, None):
        with pytest.raises(TypeError):
            make_signal("alice", "BTC-USD", "buy", bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        make_signal("alice", "BTC-USD", "hold", "1")


def _update(sequence: int, status: int, **fields: object) -> common_pb2.ExecutionUpdate:
    return common_pb2.ExecutionUpdate(signal_id="s1", user_id="alice", sequence=sequence, status=status,
                                      pair="BTC-USD", side=common_pb2.SIDE_BUY, **fields)  # type: ignore[arg-type]


def test_updates_become_typed_values_and_a_result_keeps_each_fill_once() -> None:
    fill = common_pb2.Fill(venue_trade_id="t1", price="50000", quantity="0.002", fee="0.1", fee_currency="USD",
                           liquidity=common_pb2.LIQUIDITY_TAKER)
    partial = Update.from_pb(_update(7, common_pb2.EXECUTION_STATUS_PARTIAL_FILL, broker="binance", fills=[fill],
                                     filled_quantity="0.002", filled_notional="100", fees_total="0.1",
                                     average_price="50000"))
    assert partial.status is Status.PARTIAL_FILL and not partial.terminal
    assert partial.fills[0].price == Decimal("50000") and partial.fills[0].liquidity == "taker"
    assert partial.filled_quantity == Decimal("0.002") and partial.order_quantity is None
    pending = Update.from_pb(_update(5, common_pb2.EXECUTION_STATUS_PENDING))
    assert pending.filled_quantity == 0 and pending.average_price is None and pending.broker == ""

    # A replayed update carries the same fill again: the result counts it once.
    final = Update.from_pb(_update(8, common_pb2.EXECUTION_STATUS_FILLED, broker="binance", fills=[fill],
                                   filled_quantity="0.002", filled_notional="100", fees_total="0.1", average_price="50000"))
    result = TradeResult.from_updates([pending, partial, final], final)
    assert result.filled and len(result.fills) == 1 and result.average_price == Decimal("50000")
    assert [u.sequence for u in result.updates] == [5, 7, 8]

    assert describe(partial) == (
        "#7    partial_fill  binance  fill 0.002 @ 50000 fee 0.1 USD (taker)  filled 0.002 avg 50000 fees 0.1"
    )
    assert describe(Update.from_pb(_update(9, common_pb2.EXECUTION_STATUS_REJECTED, reason="kill switch on"))) == (
        "#9    rejected      -  kill switch on"
    )


def _rpc_error(code: grpc.StatusCode, reason: str, message: str, **metadata: str) -> grpc.aio.AioRpcError:
    status = to_status(ServiceError(code, reason, message, **metadata))
    return grpc.aio.AioRpcError(status.code, grpc.aio.Metadata(), grpc.aio.Metadata(*status.trailing_metadata),
                                details=status.details)


async def test_a_failed_call_becomes_a_typed_error_with_its_reason_and_metadata() -> None:
    err = from_rpc_error(_rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "WATCHER_TOO_SLOW", "behind", last_sequence="41"))
    assert isinstance(err, NijaError)
    assert (err.code, err.reason, err.details, dict(err.metadata)) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED, "WATCHER_TOO_SLOW", "behind", {"last_sequence": "41"})
    assert str(err) == "RESOURCE_EXHAUSTED WATCHER_TOO_SLOW: behind" and not err.transport
    # No ErrorInfo: the transport broke, not a service refusing.
    lost = from_rpc_error(grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                               details="connection reset"))
    assert lost.reason == "" and lost.transport


def test_configuration_comes_from_arguments_or_the_environment_never_a_service_token(tmp_path) -> None:
    token_file = tmp_path / "alice.token"
    token_file.write_text("tok-from-file\n")
    env = {"NIJA_SERVICE_TOKEN": "service-secret", "NIJA_TOKEN_FILE": str(token_file),
           "NIJA_ROUTER": "10.0.0.5:50051", "NIJA_AGGREGATOR": "10.0.0.6:50053", "NIJA_ALLOW_PLAINTEXT_REMOTE": "true"}
    assert client_security(env).token == "tok-from-file"
    assert client_security(env, token="explicit").token == "explicit"
    assert client_security({"NIJA_SERVICE_TOKEN": "service-secret"}).token == ""
    with pytest.raises(ConfigError):
        client_security({"NIJA_TOKEN": "a", "NIJA_TOKEN_FILE": str(token_file)})

    from_env = NijaClient(environ=env)
    assert from_env.targets == {"router": "10.0.0.5:50051", "aggregator": "10.0.0.6:50053", "permission": None}
    explicit = NijaClient("127.0.0.1:1", token="t", environ=env)
    assert explicit.targets["router"] == "127.0.0.1:1"
    assert NijaClient(environ={}).targets["router"] == "127.0.0.1:50051"
    with pytest.raises(ValueError):
        NijaClient(environ={}, timeout=0)


async def test_a_plaintext_remote_target_and_a_missing_aggregator_fail_before_any_call() -> None:
    with pytest.raises(ConfigError, match="NIJA_TLS_CA"):
        async with NijaClient("203.0.113.7:50051", token="t", environ={}):
            pass
    async with NijaClient("127.0.0.1:1", token="t", environ={}) as nija:
        with pytest.raises(ConfigError, match="NIJA_AGGREGATOR"):
            async for _ in nija.watch("alice"):
                pass
