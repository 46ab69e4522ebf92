"""RouterService: proto in -> engine -> proto out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import grpc
from nija.common.v1 import common_pb2
from nija.router.v1 import router_pb2, router_pb2_grpc

from services.domain.money import fmt
from services.domain.routing import BrokerQuote
from services.router.engine import POLICY_TO_PB, RouterEngine, route_pb
from services.router.fanout import FanOut
from services.router.multiplex import multiplex
from services.runtime.auth import PrincipalKind, current_principal, refuse_acting_for
from services.runtime.errors import ServiceError, invalid, stream, unary
from services.runtime.wire import order_key

_SUBMIT_SIGNALS = "/nija.router.v1.RouterService/SubmitSignals"


class RouterServicer(router_pb2_grpc.RouterServiceServicer):
    def __init__(self, engine: RouterEngine, fanout: FanOut | None = None, max_stream_in_flight: int = 1000) -> None:
        self._engine = engine
        self._fanout = fanout
        self._max_stream_in_flight = max_stream_in_flight

    @stream
    async def SubmitStrategySignal(
        self, request: router_pb2.SubmitStrategySignalRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[router_pb2.SubmitStrategySignalResponse]:
        if not request.HasField("signal"):
            raise invalid("MISSING_SIGNAL", "signal is required", field="signal")
        caller = current_principal()
        strategy_id = request.signal.strategy_id
        if caller is not None and caller.kind is PrincipalKind.STRATEGY and caller.subject != strategy_id:
            raise ServiceError(
                grpc.StatusCode.PERMISSION_DENIED, "NOT_THIS_STRATEGY",
                # Quoted cut short: a whole one (any size, unchecked yet) could overflow the reply.
                f"strategy {caller.subject} may submit only its own signals, not {strategy_id[:40]!r}'s",
            )
        assert self._fanout is not None
        async for event in self._fanout.run(request.signal, context.time_remaining()):
            yield event

    @stream
    async def SubmitSignal(
        self, request: router_pb2.SubmitSignalRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[router_pb2.SubmitSignalResponse]:
        if not request.HasField("signal"):
            raise invalid("MISSING_SIGNAL", "signal is required", field="signal")
        async for update in self._engine.submit(request.signal, context.time_remaining(), request.after_sequence):
            yield router_pb2.SubmitSignalResponse(update=update)

    async def SubmitSignals(
        self, request_iterator: AsyncIterator[router_pb2.SubmitSignalsRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[router_pb2.SubmitSignalsResponse]:
        # The interceptor admitted the caller but cannot see a request stream's users: each
        # signal's is checked here, as the interceptor checks SubmitSignal's.
        caller = current_principal()

        def admit(signal: common_pb2.TradeSignal) -> ServiceError | None:
            return refuse_acting_for(_SUBMIT_SIGNALS, caller, signal.user_id) if caller is not None else None

        async for response in multiplex(
            request_iterator, self._engine.submit, admit, context.time_remaining, self._max_stream_in_flight
        ):
            yield response

    @unary
    async def CancelSignal(
        self, request: router_pb2.CancelSignalRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.CancelSignalResponse:
        user_id, signal_id = order_key(request.user_id, request.signal_id)
        brokers = await self._engine.cancel(
            user_id, signal_id, request.reason[:200] or "cancelled by the client", context.time_remaining()
        )
        return router_pb2.CancelSignalResponse(brokers=brokers)

    @unary
    async def QuoteRoute(
        self, request: router_pb2.QuoteRouteRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.QuoteRouteResponse:
        if not request.HasField("signal"):
            raise invalid("MISSING_SIGNAL", "signal is required", field="signal")
        prepared = await self._engine.prepare(request.signal, context.time_remaining())
        plan = prepared.plan
        response = router_pb2.QuoteRouteResponse(
            routable=plan.routable, brokers=[_quote_pb(q) for q in plan.quotes]
        )
        if plan.split is not None:
            split = plan.split
            response.route.broker = "split"
            response.route.policy = POLICY_TO_PB[prepared.choices.policy]
            response.route.estimated_cost = fmt(split.total_cost_usd)
            response.route.estimated_fees = fmt(sum((c.fee_usd for c in split.costs.values()), Decimal(0)))
            for broker, usd in sorted(split.legs.items()):
                response.route.legs.add(broker=broker, size_usd=fmt(usd))
            response.route.reason = f"split across {', '.join(sorted(split.legs))}"
        elif plan.routes:
            response.route.CopyFrom(route_pb(plan.routes[0]))
        else:
            response.reason = f"no broker can take {prepared.signal.pair} now ({plan.why_not()})"
        return response


def _quote_pb(quote: BrokerQuote) -> router_pb2.BrokerQuote:
    pb = router_pb2.BrokerQuote(
        broker=quote.broker,
        eligible=quote.eligible,
        exclusion=quote.exclusion,
        liquidity_usd=fmt(quote.liquidity_usd.quantize(Decimal("0.01"))),
    )
    if quote.score is not None:
        s = quote.score
        pb.score.CopyFrom(router_pb2.ScoreBreakdown(
            fee=s.fee_score, latency=s.latency_score, success=s.success_score,
            load=s.load_score, pair=s.pair_score, total=s.total,
        ))
    if quote.cost is not None:
        c = quote.cost
        pb.cost.CopyFrom(router_pb2.CostEstimate(
            fee_usd=fmt(c.fee_usd), slippage_usd=fmt(c.slippage_usd), withdrawal_usd=fmt(c.withdrawal_usd),
            total_usd=fmt(c.total_usd), expected_price=fmt(c.expected_price), slippage_bps=c.slippage_bps,
        ))
    return pb


