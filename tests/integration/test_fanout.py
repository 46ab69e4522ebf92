"""A strategy's signal fanned out to its subscribers through the whole in-process mesh: each sized
by their own rule, each a separate order; refusals recorded as REJECTED for that user alone; a
repeat places nothing; only the strategy itself (or an admin) may submit."""

from __future__ import annotations

from decimal import Decimal

import grpc
import pytest
from nija.aggregator.v1 import aggregator_pb2, aggregator_pb2_grpc
from nija.common.v1 import common_pb2
from nija.permission.v1 import permission_pb2, permission_pb2_grpc
from nija.router.v1 import router_pb2, router_pb2_grpc

from services.runtime.errors import reason_of
from services.runtime.wire import status_name
from tests.harness import InProcessMesh, spent_about


async def _token(mesh: InProcessMesh, kind: int, subject: str) -> str:
    admin = permission_pb2_grpc.AdminServiceStub(mesh.channel("permission"))
    return (await admin.CreateToken(permission_pb2.CreateTokenRequest(kind=kind, subject=subject))).token


async def subscribe(mesh: InProcessMesh, strategy: str, user: str, **rule: object) -> None:
    admin = permission_pb2_grpc.AdminServiceStub(mesh.channel("permission"))
    await admin.SetSubscription(permission_pb2.SetSubscriptionRequest(
        strategy_id=strategy, user_id=user, subscribed=True, allocation=permission_pb2.Allocation(**rule)))


def strategy_signal(strategy: str, signal_id: str, usd: str = "400", pair: str = "BTC-USD") -> router_pb2.StrategySignal:
    return router_pb2.StrategySignal(
        strategy_signal_id=signal_id, strategy_id=strategy, pair=pair, side=common_pb2.SIDE_BUY, size_usd=usd,
        signal_type=common_pb2.SIGNAL_TYPE_EXIT,  # market orders: they fill at once
    )


async def submit(mesh: InProcessMesh, token: str, pb: router_pb2.StrategySignal) -> list[router_pb2.SubmitStrategySignalResponse]:
    router = router_pb2_grpc.RouterServiceStub(mesh.channel("router", token))
    call = router.SubmitStrategySignal(router_pb2.SubmitStrategySignalRequest(signal=pb), timeout=60)
    return [event async for event in call]


def stored_signal(mesh: InProcessMesh, user: str, signal_id: str) -> common_pb2.TradeSignal:
    [(blob,)] = mesh.ledger_rows("SELECT signal FROM orders WHERE user_id = ? AND signal_id = ?", user, signal_id)
    return common_pb2.TradeSignal.FromString(blob)


def by_user(events: list[router_pb2.SubmitStrategySignalResponse]) -> dict[str, list[common_pb2.ExecutionUpdate]]:
    out: dict[str, list[common_pb2.ExecutionUpdate]] = {}
    for event in events:
        if event.HasField("update"):
            out.setdefault(event.update.user_id, []).append(event.update)
    return out


async def test_each_subscriber_trades_their_own_size_and_refusals_are_theirs_alone(mesh: InProcessMesh) -> None:
    await subscribe(mesh, "apex", "alice", fixed_usd="150")
    await subscribe(mesh, "apex", "bob", multiplier="0.5")
    await subscribe(mesh, "apex", "dave", percent_of_capital=permission_pb2.PercentOfCapital(percent="1", capital_usd="20000"))
    await subscribe(mesh, "apex", "carol", fixed_usd="100")  # disabled: refused, recorded as REJECTED
    token = await _token(mesh, permission_pb2.PRINCIPAL_KIND_STRATEGY, "apex")

    events = await submit(mesh, token, strategy_signal("apex", "apex-1"))

    updates = by_user(events)
    final = {user: (status_name(u[-1].status), u[-1].signal_id) for user, u in updates.items()}
    assert final == {
        "alice": ("filled", "apex-1.alice"),
        "bob": ("filled", "apex-1.bob"),
        "dave": ("filled", "apex-1.dave"),
        "carol": ("rejected", "apex-1.carol"),
    }
    assert updates["carol"][-1].reason.startswith("USER_DISABLED")
    sizes = {u: Decimal(stored_signal(mesh, u, f"apex-1.{u}").size_usd) for u in final}
    assert sizes == {"alice": Decimal(150), "bob": Decimal(200), "dave": Decimal(200), "carol": Decimal(100)}
    summary = events[-1].summary
    assert (summary.subscribers, summary.orders, summary.skipped) == (4, 4, 0)
    assert dict(summary.outcomes) == {"filled": 3, "rejected": 1}
    # The ledger carries each user's own: alice's filled quantity is her $150, bought.
    assert spent_about(updates["alice"][-1].filled_notional, 150)
    # ... and each user sees their own child in their own stream, nobody else's.
    for user in ("alice", "carol"):
        ledger = aggregator_pb2_grpc.AggregatorServiceStub(mesh.channel("aggregator", mesh.tokens.users[user]))
        call = ledger.WatchUpdates(aggregator_pb2.WatchUpdatesRequest(user_id=user, signal_id=f"apex-1.{user}"), timeout=10)
        seen = [r.update async for r in call]
        assert {u.user_id for u in seen} == {user} and seen[-1].status == updates[user][-1].status


async def test_the_same_strategy_signal_again_places_nothing_new(mesh: InProcessMesh) -> None:
    await subscribe(mesh, "apex", "alice", fixed_usd="120")
    await subscribe(mesh, "apex", "carol", fixed_usd="120")
    token = await _token(mesh, permission_pb2.PRINCIPAL_KIND_STRATEGY, "apex")
    first = await submit(mesh, token, strategy_signal("apex", "apex-dup"))
    again = [await submit(mesh, token, strategy_signal("apex", "apex-dup")) for _ in range(2)]

    count = mesh.ledger_rows("SELECT count(*) FROM orders WHERE signal_id LIKE 'apex-dup.%'")[0][0]
    assert count == 2
    for events in again:
        assert dict(events[-1].summary.outcomes) == dict(first[-1].summary.outcomes) == {"filled": 1, "rejected": 1}
        assert {u: status_name(x[-1].status) for u, x in by_user(events).items()} == {"alice": "filled", "carol": "rejected"}


async def test_a_pair_filter_or_a_tiny_size_skips_the_subscriber(mesh: InProcessMesh) -> None:
    await subscribe(mesh, "apex", "alice", fixed_usd="120", pairs=["ETH-USD"])
    await subscribe(mesh, "apex", "bob", multiplier="0.001")  # $0.40 of $400: under the minimum
    await subscribe(mesh, "apex", "dave", fixed_usd="120")
    token = await _token(mesh, permission_pb2.PRINCIPAL_KIND_STRATEGY, "apex")
    events = await submit(mesh, token, strategy_signal("apex", "apex-skip"))

    skipped = {e.skipped.user_id: e.skipped.reason for e in events if e.HasField("skipped")}
    assert set(skipped) == {"alice", "bob"}
    assert skipped["alice"].startswith("PAIR_FILTERED") and skipped["bob"].startswith("SIZE_TOO_SMALL")
    assert set(by_user(events)) == {"dave"}
    assert mesh.ledger_rows("SELECT count(*) FROM orders WHERE signal_id LIKE 'apex-skip.%'")[0][0] == 1
    assert (events[-1].summary.orders, events[-1].summary.skipped) == (1, 2)


async def test_only_the_strategy_itself_or_an_admin_may_fan_out(mesh: InProcessMesh) -> None:
    await subscribe(mesh, "apex", "alice", fixed_usd="120")
    other = await _token(mesh, permission_pb2.PRINCIPAL_KIND_STRATEGY, "copycat")
    user = mesh.tokens.users["alice"]
    for token, code, reason in [
        (other, grpc.StatusCode.PERMISSION_DENIED, "NOT_THIS_STRATEGY"),
        (user, grpc.StatusCode.PERMISSION_DENIED, "PERMISSION_DENIED"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await submit(mesh, token, strategy_signal("apex", "apex-steal"))
        assert err.value.code() == code
        assert reason in (reason_of(err.value), "PERMISSION_DENIED")
    assert mesh.ledger_rows("SELECT count(*) FROM orders WHERE signal_id LIKE 'apex-steal.%'")[0][0] == 0
    # An admin may (operators replaying a strategy's signal by hand).
    events = await submit(mesh, mesh.tokens.admin, strategy_signal("apex", "apex-admin"))
    assert dict(events[-1].summary.outcomes) == {"filled": 1}


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("strategy_signal_id", {"strategy_signal_id": ""}),
        ("strategy_id", {"strategy_id": ""}),
        ("pair", {"pair": "BTCUSD"}),
        ("size_usd", {"size_usd": "-5"}),
        ("size_usd", {"size_usd": "NaN"}),
    ],
)
async def test_a_malformed_strategy_signal_is_refused_whole(mesh: InProcessMesh, field: str, change: dict) -> None:
    await subscribe(mesh, "apex", "alice", fixed_usd="120")
    pb = strategy_signal("apex", "apex-bad")
    for key, value in change.items():
        setattr(pb, key, value)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await submit(mesh, mesh.tokens.admin, pb)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
    assert mesh.ledger_rows("SELECT count(*) FROM orders")[0][0] == 0
