"""`NijaClient` against the whole mesh in this process (issue 7): trading, quoting, cancelling,
re-attaching and the typed errors, with user tokens as a strategy would hold them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
from nija.common.v1 import common_pb2
from nija.router.v1 import router_pb2, router_pb2_grpc

from services.client import NijaClient, NijaError, Status, make_signal
from services.runtime.errors import ServiceError, to_status
from tests.harness import InProcessMesh, start_mesh


def client(mesh: InProcessMesh, user: str = "alice", **kwargs: object) -> NijaClient:
    return NijaClient(
        mesh.servers["router"].target, aggregator=mesh.servers["aggregator"].target,
        permission=mesh.servers["permission"].target, token=kwargs.pop("token", None) or mesh.tokens.users[user],
        environ={}, **kwargs,  # type: ignore[arg-type]
    )


async def test_submit_streams_typed_updates_to_filled_and_place_order_waits_for_the_outcome(mesh: InProcessMesh) -> None:
    async with client(mesh) as nija:
        updates = [u async for u in nija.submit(make_signal("alice", "BTC-USD", "buy", Decimal("250"), signal_id="c-1"))]
        statuses = [u.status for u in updates]
        assert statuses[:2] == [Status.PENDING, Status.ROUTING] and statuses[-1] is Status.FILLED
        assert updates[1].route is not None and updates[1].route.broker == updates[-1].broker
        fills = [f for u in updates for f in u.fills]
        assert fills and all(isinstance(f.price, Decimal) and f.quantity > 0 for f in fills)
        assert updates[-1].filled_quantity == sum((f.quantity for f in fills), Decimal(0))

        result = await nija.place_order_async("alice", "ETH-USD", "sell", "150", kind="exit", signal_id="c-2")
        assert result.filled and result.state is Status.FILLED and result.signal_id == "c-2"
        assert result.fills and result.filled_quantity > 0 and result.average_price and result.average_price > 0
        assert result.filled_notional == sum((f.price * f.quantity for f in result.fills), Decimal(0))
        # The same signal id again is the same order: its stream replayed, nothing placed twice.
        again = await nija.place_order_async("alice", "ETH-USD", "sell", "150", kind="exit", signal_id="c-2")
        assert [u.sequence for u in again.updates] == [u.sequence for u in result.updates]
    assert mesh.ledger_rows("SELECT count(*) FROM orders WHERE signal_id = 'c-2'")[0][0] == 1


async def test_quote_shows_every_broker_with_decimal_costs(mesh: InProcessMesh) -> None:
    async with client(mesh) as nija:
        quote = await nija.quote(make_signal("alice", "BTC-USD", "buy", "1000"))
    assert quote.routable and quote.route is not None
    assert quote.route.broker == quote.brokers[0].broker
    assert {b.broker for b in quote.brokers} == {"coinbase", "kraken", "binance", "alpaca"}
    eligible = [b for b in quote.brokers if b.eligible]
    assert eligible and all(isinstance(b.total_cost_usd, Decimal) and b.total_cost_usd > 0 for b in eligible)


async def test_a_stream_left_early_is_re_attached_by_signal_id_and_followed_on_the_ledger(mesh: InProcessMesh) -> None:
    signal = make_signal("bob", "ETH-USD", "buy", "200", signal_id="c-reattach")
    async with client(mesh, "bob") as nija:
        first = []
        async for update in nija.submit(signal):
            first.append(update)
            break  # the strategy stops listening; the order goes on
        rest = [u async for u in nija.submit(signal, after_sequence=first[-1].sequence)]
        updates = first + rest
        assert [u.sequence for u in updates] == list(range(updates[0].sequence, updates[0].sequence + len(updates)))
        assert updates[-1].status is Status.FILLED
        # The ledger's stream replays the same updates and ends after the terminal one.
        watched = [u async for u in nija.watch("bob", signal_id="c-reattach", timeout=10)]
        assert [u.sequence for u in watched] == [u.sequence for u in updates]


async def test_refusals_are_typed_errors_with_code_and_reason(mesh: InProcessMesh) -> None:
    async with client(mesh, token="nija_000000000000_" + "x" * 43) as nija:
        with pytest.raises(NijaError) as info:
            await nija.place_order_async("alice", "BTC-USD", "buy", "100")
    assert info.value.code is grpc.StatusCode.UNAUTHENTICATED and info.value.reason == "INVALID_TOKEN"

    async with client(mesh, "bob") as nija:
        with pytest.raises(NijaError) as info:
            await nija.place_order_async("alice", "BTC-USD", "buy", "100")
        assert (info.value.code, info.value.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ACTING_FOR_ANOTHER_USER")
        with pytest.raises(NijaError) as info:
            await nija.quote(make_signal("bob", "NOPE-USD", "buy", "100"))
        assert (info.value.code, info.value.reason) == (grpc.StatusCode.NOT_FOUND, "UNKNOWN_PAIR")
        with pytest.raises(TypeError):
            make_signal("bob", "ETH-USD", "buy", 100.5)  # type: ignore[arg-type]


async def test_a_deadline_ends_the_wait_and_cancel_ends_the_resting_order(tmp_path: Path) -> None:
    # Limit orders priced well under the touch rest on the book until cancelled.
    m = await start_mesh(tmp_path, executor={"limit_offset_bps": "-200", "limit_timeout_s": "60"})
    try:
        async with client(m) as nija:
            with pytest.raises(NijaError) as info:
                await nija.place_order_async("alice", "ETH-USD", "buy", "300", signal_id="c-rest", timeout=1.0)
            assert info.value.code is grpc.StatusCode.DEADLINE_EXCEEDED
            # The order outlived the caller's deadline: it rests until cancelled.
            brokers = await nija.cancel("alice", "c-rest", "strategy changed its mind")
            assert len(brokers) == 1
            ended = [u async for u in nija.watch("alice", signal_id="c-rest", timeout=10)]
            assert ended[-1].status is Status.CANCELLED and ended[-1].filled_quantity == 0
            with pytest.raises(NijaError) as info:
                await nija.cancel("alice", "c-rest")
            assert (info.value.code, info.value.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ORDER_FINISHED")
    finally:
        await m.stop()


async def test_positions_come_back_as_decimals(mesh: InProcessMesh) -> None:
    async with client(mesh) as nija:
        await nija.place_order_async("alice", "BTC-USD", "buy", "250", signal_id="c-pos")
        for _ in range(100):  # the ledger hands the fill to the position manager just after storing it
            held = await nija.positions("alice")
            if held.traded_usd > 0:
                break
            await asyncio.sleep(0.05)
    assert held.traded_usd > 0
    assert any(p.pair == "BTC-USD" and p.quantity > 0 for p in held.positions)


# ---- re-attaching after a broken stream, against a router that breaks on purpose -----------------


class BreakingRouter(router_pb2_grpc.RouterServiceServicer):
    """Streams PENDING..FILLED (sequences 1..5); `plan[n]` says how call n ends early: after
    which sequence, and how ("end": the stream just ends, as a draining router's does;
    "reset": UNAVAILABLE with no reason, as a lost connection; "refuse": a reasoned refusal)."""

    STATUSES = (common_pb2.EXECUTION_STATUS_PENDING, common_pb2.EXECUTION_STATUS_ROUTING,
                common_pb2.EXECUTION_STATUS_QUEUED, common_pb2.EXECUTION_STATUS_EXECUTING,
                common_pb2.EXECUTION_STATUS_FILLED)

    def __init__(self, plan: list[tuple[int, str]]) -> None:
        self.plan = plan
        self.after: list[int] = []

    async def SubmitSignal(self, request, context):  # type: ignore[no-untyped-def]
        self.after.append(request.after_sequence)
        stop_after, how = self.plan[len(self.after) - 1] if len(self.after) <= len(self.plan) else (99, "")
        if how == "refuse":
            await context.abort_with_status(to_status(ServiceError(grpc.StatusCode.UNAVAILABLE, "NO_EXECUTORS", "none yet")))
        for sequence, status in enumerate(self.STATUSES, 1):
            if sequence <= request.after_sequence:
                continue
            yield router_pb2.SubmitSignalResponse(update=common_pb2.ExecutionUpdate(
                signal_id=request.signal.signal_id, user_id="alice", sequence=sequence, status=status))
            if sequence == stop_after:
                if how == "reset":
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset by peer")
                return


@pytest.fixture
async def breaking() -> AsyncIterator[tuple[BreakingRouter, str]]:
    router = BreakingRouter([])
    server = grpc.aio.server()
    router_pb2_grpc.add_RouterServiceServicer_to_server(router, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield router, f"127.0.0.1:{port}"
    await server.stop(0)


async def test_a_broken_stream_is_re_attached_from_the_last_sequence(breaking: tuple[BreakingRouter, str]) -> None:
    router, target = breaking
    router.plan = [(2, "end"), (3, "reset")]
    async with NijaClient(target, token="t", environ={}, sleep=_no_wait) as nija:
        result = await nija.place_order_async("alice", "BTC-USD", "buy", "100", signal_id="b-1")
    assert router.after == [0, 2, 3]  # each time from the last sequence seen: no gap, no duplicate
    assert [u.sequence for u in result.updates] == [1, 2, 3, 4, 5] and result.state is Status.FILLED


async def test_a_refusal_is_not_retried_and_a_stream_that_keeps_breaking_meets_its_deadline(
    breaking: tuple[BreakingRouter, str]
) -> None:
    router, target = breaking
    router.plan = [(0, "refuse")]
    async with NijaClient(target, token="t", environ={}) as nija:
        with pytest.raises(NijaError) as info:
            await nija.place_order_async("alice", "BTC-USD", "buy", "100", signal_id="b-2")
    assert (info.value.code, info.value.reason, router.after) == (grpc.StatusCode.UNAVAILABLE, "NO_EXECUTORS", [0])

    now = [0.0]

    async def slow_sleep(seconds: float) -> None:  # every pause before a re-attach costs 10 s
        now[0] += 10

    router.after, router.plan = [], [(1, "reset"), (2, "reset"), (3, "reset")]
    async with NijaClient(target, token="t", environ={}, clock=lambda: now[0], sleep=slow_sleep) as nija:
        with pytest.raises(NijaError) as info:
            await nija.place_order_async("alice", "BTC-USD", "buy", "100", signal_id="b-3", timeout=15)
    assert info.value.code is grpc.StatusCode.DEADLINE_EXCEEDED and router.after == [0, 1]


async def _no_wait(seconds: float) -> None:
    return None
