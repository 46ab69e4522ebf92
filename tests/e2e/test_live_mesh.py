"""The mesh as real processes with all four executors on the live ccxt venues, each against its
exchange's local emulator (`nija up --live all --emulate`): fills on every exchange, a TWAP, a
failover between exchanges, a wrong secret refused for one user without touching the breaker
the others depend on, and `nija keys check`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import grpc
import pytest
from nija.common.v1 import common_pb2
from nija.executor.v1 import executor_pb2, executor_pb2_grpc
from nija.permission.v1 import permission_pb2, permission_pb2_grpc
from nija.router.v1 import router_pb2, router_pb2_grpc
from nija.simexchange.v1 import simexchange_pb2, simexchange_pb2_grpc

from services.domain.brokers import BROKERS
from services.runtime.channels import open_channel
from services.runtime.wire import status_name
from tests.e2e.up import UpMesh, start_up
from tests.emulators import issue_key, venue_client_order_id

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UpMesh]:
    data = tmp_path_factory.mktemp("live")
    # TWAP slices 0.5 s apart, so the TWAP below takes a couple of seconds, not ten.
    fast = [arg for b in BROKERS for arg in ("--set", f"executor-{b}:twap_interval_s=0.5")]
    up = start_up(data, "--live", "all", "--emulate", *fast, timeout_s=120)
    yield up
    assert up.stop() == 0


def _emulator_urls(mesh: UpMesh) -> dict[str, str]:
    ports = json.loads((mesh.dir / "run" / "emulators.json").read_text())
    return {broker: f"http://127.0.0.1:{port}" for broker, port in ports.items()}


async def _user(
    admin: permission_pb2_grpc.AdminServiceStub, mesh: UpMesh, user: str, brokers: list[str],
    preferred: list[str] | None = None,
) -> None:
    """A user allowed on `brokers` only, with a key from each of their emulators, stored sealed."""
    await admin.PutUser(permission_pb2.PutUserRequest(user=permission_pb2.UserPermissions(
        user_id=user, enabled=True, allowed_brokers=brokers, max_order_size_usd="50000",
        preferences=permission_pb2.RoutingPreferences(preferred_brokers=preferred or []),
        limits=permission_pb2.RiskLimits(trades_per_second="100", trade_burst=100))), timeout=10)
    urls = _emulator_urls(mesh)
    for broker in brokers:
        key = await issue_key(urls[broker], user)
        await _store_key(admin, user, broker, key.api_key, key.secret)


async def _store_key(admin: permission_pb2_grpc.AdminServiceStub, user: str, broker: str, key: str, secret: str) -> None:
    credentials = permission_pb2.ApiCredentials(api_key=key, api_secret=secret)
    await admin.SetApiKeys(
        permission_pb2.SetApiKeysRequest(user_id=user, broker=broker, credentials=credentials), timeout=10
    )


def _signal(user: str, signal_id: str, usd: str = "100", pair: str = "BTC-USD") -> common_pb2.TradeSignal:
    pb = common_pb2.TradeSignal(signal_id=signal_id, user_id=user, pair=pair, side=common_pb2.SIDE_BUY,
                                size_usd=usd, strategy="e2e", signal_type=common_pb2.SIGNAL_TYPE_EXIT)
    pb.timestamp.GetCurrentTime()
    return pb


async def _submit(router: router_pb2_grpc.RouterServiceStub, pb: common_pb2.TradeSignal) -> list[common_pb2.ExecutionUpdate]:
    return [r.update async for r in router.SubmitSignal(router_pb2.SubmitSignalRequest(signal=pb), timeout=90)]


def _broker_of(updates: list[common_pb2.ExecutionUpdate]) -> str:
    return next(u.broker for u in reversed(updates) if u.broker)


async def _until_routed_elsewhere(router: router_pb2_grpc.RouterServiceStub, pb: common_pb2.TradeSignal) -> float:
    """Seconds until the router stops choosing binance (its breaker opened on failed reads)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while loop.time() - started < 60:
        quote = await router.QuoteRoute(router_pb2.QuoteRouteRequest(signal=pb), timeout=10)
        if quote.route.broker and quote.route.broker != "binance":
            return round(loop.time() - started, 2)
        await asyncio.sleep(0.2)
    raise AssertionError("binance was still chosen 60 s after its exchange went down")


async def _scenario(mesh: UpMesh) -> dict[str, object]:
    out: dict[str, object] = {}
    admin_security = mesh.security()
    async with (
        open_channel(mesh.targets["permission"], admin_security) as pch,
        open_channel(mesh.targets["router"], admin_security) as rch,
        grpc.aio.insecure_channel(mesh.targets["simexchange"]) as sch,
    ):
        admin = permission_pb2_grpc.AdminServiceStub(pch)
        router = router_pb2_grpc.RouterServiceStub(rch)
        sim = simexchange_pb2_grpc.SimulatedExchangeServiceStub(sch)

        # One user per exchange, allowed there only: every exchange trades through ccxt.
        for broker in BROKERS:
            await _user(admin, mesh, f"live-{broker}", [broker])
        fills = await asyncio.gather(*(_submit(router, _signal(f"live-{b}", f"one-{b}")) for b in BROKERS))
        out["per_broker"] = {b: (_broker_of(u), status_name(u[-1].status), sum(len(x.fills) for x in u))
                             for b, u in zip(BROKERS, fills)}
        # The exchange's own record: the order is there, on the user's account, filled.
        for broker in BROKERS:
            user = f"live-{broker}"
            held = await sim.GetOrder(simexchange_pb2.GetOrderRequest(
                broker=broker, account_id=user, client_order_id=venue_client_order_id(broker, user, f"one-{broker}")))
            out.setdefault("exchange_orders", {})[broker] = simexchange_pb2.OrderState.Name(held.order.state)  # type: ignore[union-attr]

        # A TWAP: $12,000 in slices of at most $5,000 (the executor's default), on binance.
        twap = await _submit(router, _signal("live-binance", "twap-1", usd="12000"))
        out["twap"] = (_broker_of(twap), status_name(twap[-1].status), sum(len(u.fills) for u in twap),
                       [status_name(u.status) for u in twap])

        # Failover: binance preferred, its exchange down; the order fills on kraken.
        await _user(admin, mesh, "live-failover", ["binance", "kraken"], preferred=["binance"])
        await sim.SetFault(simexchange_pb2.SetFaultRequest(broker="binance", mode=simexchange_pb2.FAULT_MODE_UNAVAILABLE))
        try:
            out["binance_excluded_after_s"] = await _until_routed_elsewhere(router, _signal("live-failover", "probe"))
            moved = await _submit(router, _signal("live-failover", "failover-1"))
        finally:
            await sim.SetFault(simexchange_pb2.SetFaultRequest(broker="binance", mode=simexchange_pb2.FAULT_MODE_NONE))
        out["failover"] = (_broker_of(moved), status_name(moved[-1].status),
                           sum(1 for u in moved if status_name(u.status) == "routing"))

        # A wrong secret: that user's order is refused as an authentication failure; the breaker
        # stays closed and another user's order on the same exchange fills.
        await _user(admin, mesh, "live-badkey", ["coinbase"])
        other = await issue_key(_emulator_urls(mesh)["coinbase"], "someone-else")
        good = await issue_key(_emulator_urls(mesh)["coinbase"], "live-badkey")
        await _store_key(admin, "live-badkey", "coinbase", good.api_key, other.secret)
        # More refusals than the breaker's failure threshold (5): none of them is the exchange's fault.
        refused = await asyncio.gather(*(_submit(router, _signal("live-badkey", f"bad-{i}")) for i in range(8)))
        out["badkey"] = sorted({(status_name(r[-1].status), r[-1].reason.split(" GET ")[0]) for r in refused})
        async with open_channel(mesh.targets["executor-coinbase"], admin_security) as ech:
            info = await executor_pb2_grpc.ExecutorServiceStub(ech).GetExecutorInfo(
                executor_pb2.GetExecutorInfoRequest(), timeout=10)
        out["coinbase_breaker"] = common_pb2.BreakerState.Name(info.info.breaker_state)
        after = await _submit(router, _signal("live-coinbase", "after-badkey"))
        out["after_badkey"] = status_name(after[-1].status)
    return out


def test_all_four_exchanges_trade_through_ccxt_against_their_emulators(mesh: UpMesh) -> None:
    out = asyncio.run(_scenario(mesh))
    print(f"\nlive mesh: {json.dumps(out, indent=1, default=str)}")
    for broker in BROKERS:
        routed, status, fills = out["per_broker"][broker]  # type: ignore[index]
        assert (routed, status) == (broker, "filled") and fills >= 1
        assert out["exchange_orders"][broker] == "ORDER_STATE_FILLED"  # type: ignore[index]
    routed, status, fills, statuses = out["twap"]  # type: ignore[misc]
    assert (routed, status) == ("binance", "filled") and fills >= 3, statuses
    assert out["failover"][:2] == ("kraken", "filled")  # type: ignore[index]
    [(status, reason)] = out["badkey"]  # type: ignore[misc]
    assert status == "rejected" and "authentication failed" in reason, reason
    assert out["coinbase_breaker"] == "BREAKER_STATE_CLOSED"
    assert out["after_badkey"] == "filled"


def test_keys_check_reads_balances_with_the_stored_keys(mesh: UpMesh) -> None:
    ok = mesh.nija("keys", "check", "--user", "alice", "--broker", "kraken")
    assert ok.returncode == 0, ok.stderr
    assert "kraken keys of alice: OK" in ok.stdout and "USD" in ok.stdout

    removed = mesh.nija("keys", "delete", "--user", "bob", "--broker", "alpaca")
    assert removed.returncode == 0, removed.stderr
    missing = mesh.nija("keys", "check", "--user", "bob", "--broker", "alpaca")
    assert missing.returncode == 1 and "FAILED_PRECONDITION NO_API_KEYS" in missing.stderr, missing.stderr
