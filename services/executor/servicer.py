"""ExecutorService: proto in -> engine -> proto out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import grpc
from nija.common.v1 import common_pb2
from nija.executor.v1 import executor_pb2, executor_pb2_grpc

from services.domain.breaker import BreakerState
from services.domain.money import fmt
from services.domain.signal import execution_method, priority
from services.executor.engine import ExecutorEngine, ExecutorSnapshot, PairQuote
from services.executor.venues.base import AuthenticationFailed, ExchangeUnavailable, RateLimited, VenueError
from services.runtime.errors import ServiceError, invalid, precondition, stream, unary
from services.runtime.wire import METHOD_FROM_PB, checked_id, order_key, signal_from_pb

BREAKER_TO_PB = {
    BreakerState.CLOSED: common_pb2.BREAKER_STATE_CLOSED,
    BreakerState.OPEN: common_pb2.BREAKER_STATE_OPEN,
    BreakerState.HALF_OPEN: common_pb2.BREAKER_STATE_HALF_OPEN,
}


class ExecutorServicer(executor_pb2_grpc.ExecutorServiceServicer):
    def __init__(self, engine: ExecutorEngine, min_push_s: float = 0.05, max_push_interval_ms: int = 1000) -> None:
        self._engine = engine
        self._min_push_s = min_push_s
        self._pair_infos = PairInfos()
        self._max_push_interval_ms = max_push_interval_ms
        # Info requests served (GetExecutorInfo calls and WatchExecutorInfo streams opened).
        self.info_calls = 0

    @stream
    async def Execute(
        self, request: executor_pb2.ExecuteRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[executor_pb2.ExecuteResponse]:
        signal = signal_from_pb(request.signal)
        route = request.route
        if route.broker and route.broker != self._engine.broker:
            raise invalid("WRONG_BROKER", f"this executor serves {self._engine.broker}, not {route.broker}")
        method = METHOD_FROM_PB.get(route.execution_method) or execution_method(
            signal.size_usd, signal.signal_type, signal.limit_price
        )
        prio = route.priority if 1 <= route.priority <= 5 else priority(signal.signal_type)
        async for update in self._engine.execute(signal, method, prio):
            yield executor_pb2.ExecuteResponse(update=update)

    @unary
    async def CancelOrder(
        self, request: executor_pb2.CancelOrderRequest, context: grpc.aio.ServicerContext
    ) -> executor_pb2.CancelOrderResponse:
        user_id, signal_id = order_key(request.user_id, request.signal_id)
        await self._engine.cancel(user_id, signal_id, request.reason[:200])
        return executor_pb2.CancelOrderResponse()

    @unary
    async def CheckAccount(
        self, request: executor_pb2.CheckAccountRequest, context: grpc.aio.ServicerContext
    ) -> executor_pb2.CheckAccountResponse:
        user_id = checked_id(request.user_id, "user_id")
        try:
            balances = await self._engine.check_account(user_id)
        except AuthenticationFailed as exc:
            if not (await self._engine.account_of(user_id)).api_key:
                raise precondition("NO_API_KEYS", f"no {self._engine.broker} API keys are stored for {user_id}") from None
            raise precondition("EXCHANGE_AUTH_FAILED", f"{self._engine.broker} refused the keys: {exc}") from None
        except ExchangeUnavailable as exc:
            raise ServiceError(grpc.StatusCode.UNAVAILABLE, "EXCHANGE_UNAVAILABLE", str(exc)) from None
        except RateLimited as exc:
            raise ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED", str(exc)) from None
        except VenueError as exc:
            raise precondition("EXCHANGE_REFUSED", f"{self._engine.broker}: {exc}") from None
        return executor_pb2.CheckAccountResponse(
            broker=self._engine.broker,
            balances=[
                executor_pb2.AccountBalance(asset=b.asset, free=fmt(b.free), locked=fmt(b.locked))
                for b in sorted(balances.values(), key=lambda b: b.asset)
            ],
        )

    @unary
    async def GetExecutorInfo(
        self, request: executor_pb2.GetExecutorInfoRequest, context: grpc.aio.ServicerContext
    ) -> executor_pb2.GetExecutorInfoResponse:
        self.info_calls += 1
        return executor_pb2.GetExecutorInfoResponse(info=info_pb(self._engine.snapshot(), self._pair_infos))

    @stream
    async def WatchExecutorInfo(
        self, request: executor_pb2.WatchExecutorInfoRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[executor_pb2.WatchExecutorInfoResponse]:
        """Push the info when it changes, at most every `min_push_s`, at least every max interval."""
        self.info_calls += 1
        max_interval_s = (request.max_interval_ms or self._max_push_interval_ms) / 1000.0
        while True:
            snap = self._engine.snapshot()
            yield executor_pb2.WatchExecutorInfoResponse(info=info_pb(snap, self._pair_infos))
            # Coalesce bursts (every admission changes the queue depth) into one push per interval.
            await asyncio.sleep(self._min_push_s)
            await self._engine.wait_changed(snap.version, max_interval_s)


class PairInfos:
    """Each pair's PairInfo, encoded again only when its quote changes: every push carries every
    pair's book, up to twenty times a second, while a quote changes about once a second."""

    def __init__(self) -> None:
        self._encoded: dict[str, tuple[PairQuote, Decimal, executor_pb2.PairInfo]] = {}

    def get(self, pair: str, quote: PairQuote, withdrawal_fee: Decimal) -> executor_pb2.PairInfo:
        hit = self._encoded.get(pair)
        if hit is not None and hit[0] is quote and hit[1] == withdrawal_fee:
            return hit[2]
        encoded = executor_pb2.PairInfo(
            pair=pair,
            best_bid=fmt(quote.best_bid),
            best_ask=fmt(quote.best_ask),
            bid_liquidity_usd=fmt(quote.bid_liquidity_usd),
            ask_liquidity_usd=fmt(quote.ask_liquidity_usd),
            bids=[common_pb2.BookLevel(price=fmt(lvl.price), quantity=fmt(lvl.quantity)) for lvl in quote.bids],
            asks=[common_pb2.BookLevel(price=fmt(lvl.price), quantity=fmt(lvl.quantity)) for lvl in quote.asks],
            withdrawal_fee=fmt(withdrawal_fee),
        )
        self._encoded[pair] = (quote, withdrawal_fee, encoded)
        return encoded


def info_pb(snap: ExecutorSnapshot, pair_infos: PairInfos | None = None) -> executor_pb2.ExecutorInfo:
    encoder = pair_infos or PairInfos()
    return executor_pb2.ExecutorInfo(
        broker=snap.broker,
        maker_fee=fmt(snap.fees.maker),
        taker_fee=fmt(snap.fees.taker),
        pairs=[
            encoder.get(pair, q, snap.withdrawal_fees.get(pair, Decimal(0)))
            for pair, q in sorted(snap.pairs.items())
        ],
        queue_depth=snap.queue_depth,
        max_queue_size=snap.max_queue_size,
        active_executions=snap.active_executions,
        total_executions=snap.total_executions,
        successful_executions=snap.successful_executions,
        success_rate=snap.success_rate,
        avg_latency_ms=snap.avg_latency_ms,
        breaker_state=BREAKER_TO_PB[snap.breaker_state],
        requires_api_keys=snap.requires_api_keys,
        version=snap.version,
    )
