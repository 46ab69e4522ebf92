"""`nija chaos`: the whole mesh as real processes under sustained load, while a seeded fault
schedule kills services with SIGKILL (and starts them again), and makes the simulated exchanges
misbehave. At the end, after a quiet period for recovery, the three records are reconciled
(services.chaos.reconcile).

The clients behave as a careful strategy client does: a call that fails for a reason that may
pass (the service was killed, a deadline, an outage) is sent again with the same signal id,
re-attaching after the last update it saw, on the other router replica; only a refusal before
the mesh took the signal is final.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import pathlib
import random
import time
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import grpc
from nija.aggregator.v1 import aggregator_pb2, aggregator_pb2_grpc
from nija.common.v1 import common_pb2
from nija.permission.v1 import permission_pb2, permission_pb2_grpc
from nija.router.v1 import router_pb2, router_pb2_grpc
from nija.simexchange.v1 import simexchange_pb2, simexchange_pb2_grpc

from services.bench import load
from services.chaos.reconcile import LedgerOrder, Report, Told, VenueOrder, reconcile
from services.chaos.schedule import EXCHANGE_FAULTS, Event, Kind, Plan, schedule, signals_due
from services.cli import Mesh
from services.domain.brokers import BROKERS
from services.domain.retry import backoff
from services.runtime.channels import open_channel
from services.runtime.errors import reason_of
from services.runtime.security import Security
from services.runtime.wire import side_from_pb, status_name

#: Refusals that are the mesh's answer, not an accident of the moment: sent again, the same
#: signal would get the same one.
FINAL = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.UNAUTHENTICATED,
})
PAIRS = ("BTC-USD", "ETH-USD", "SOL-USD")
CALL_TIMEOUT_S = 30.0


@dataclasses.dataclass(frozen=True)
class ChaosConfig:
    data_dir: pathlib.Path
    seed: int = 1
    duration_s: float = 600.0
    users: int = 300
    #: Signals per second over all users.
    rate_per_s: float = 15.0
    routers: int = 2
    kill_every_s: float = 15.0
    exchange_fault_every_s: float = 10.0
    #: No faults in the last part of the run; then each client has this long to reach an end.
    quiet_s: float = 30.0
    settle_s: float = 120.0
    #: PostgreSQL for the permission service and the ledger (NIJA_DATABASE_URL), whose every
    #: connection is then dropped now and then; empty: SQLite files.
    database_url: str = ""
    db_disconnect_every_s: float = 30.0

    def __post_init__(self) -> None:
        if self.users < 1 or self.rate_per_s <= 0 or self.routers < 1 or self.settle_s < 0:
            raise ValueError("users, rate and routers must be positive; settle_s at least 0")

    def plan(self, kill_targets: list[str]) -> Plan:
        return Plan(seed=self.seed, duration_s=self.duration_s, kill_targets=kill_targets, brokers=BROKERS,
                    kill_every_s=self.kill_every_s, exchange_fault_every_s=self.exchange_fault_every_s,
                    quiet_s=self.quiet_s, db_disconnect_every_s=self.db_disconnect_every_s if self.database_url else 0.0)


def kill_targets(routers: int) -> list[str]:
    """Every service a fault run kills: each router replica, each executor, the aggregator and the
    permission service (the simulated exchange stands for the outside world: it is faulted, not killed)."""
    replicas = ["router", *(f"router-{k}" for k in range(2, routers + 1))]
    return [*replicas, "aggregator", "permission", *(f"executor-{b}" for b in BROKERS)]


# ---- the clients ---------------------------------------------------------------------------------


class Clients:
    """Every user's signals, each followed to its end as a careful client would; what each was
    told is kept for the reconciliation."""

    def __init__(self, routers: list[str], aggregator: str, security: Security, rng: random.Random) -> None:
        self._routers = routers
        self._aggregator = aggregator
        self._security = security
        self._rng = rng
        self._channels: dict[str, grpc.aio.Channel] = {}
        self.told: dict[tuple[str, str], Told] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.attempts = 0

    async def __aenter__(self) -> Clients:
        for target in [*self._routers, self._aggregator]:
            self._channels[target] = open_channel(target, self._security)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for channel in self._channels.values():
            await channel.close()

    def send(self, pb: common_pb2.TradeSignal, give_up_at: float) -> None:
        task = asyncio.create_task(self._follow(pb, give_up_at))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait(self) -> None:
        await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _follow(self, pb: common_pb2.TradeSignal, give_up_at: float) -> None:
        key = (pb.user_id, pb.signal_id)
        last_sequence, accepted, filled, final = 0, False, Decimal(0), ""
        delays = backoff(0.1, 2.0, self._rng)
        for attempt in itertools.count():
            self.attempts += 1
            stub = router_pb2_grpc.RouterServiceStub(self._channels[self._routers[attempt % len(self._routers)]])
            try:
                request = router_pb2.SubmitSignalRequest(signal=pb, after_sequence=last_sequence)
                async for response in stub.SubmitSignal(request, timeout=CALL_TIMEOUT_S):
                    update = response.update
                    accepted, last_sequence = True, max(last_sequence, update.sequence)
                    filled = Decimal(update.filled_quantity or "0")
                    if update.status in load.TERMINAL_PB:
                        final = status_name(update.status)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in FINAL and not accepted:
                    self.told[key] = Told(*key, accepted=False, refused=reason_of(exc) or exc.code().name)
                    return
                if exc.code() in FINAL:  # taken before, refused now: read the ledger instead
                    final, filled, last_sequence = await self._watch(pb, last_sequence, final, filled)
            if final or time.monotonic() > give_up_at:
                break
            await asyncio.sleep(next(delays))
        self.told[key] = Told(*key, accepted=accepted, final=final, filled_quantity=filled)

    async def _watch(self, pb: common_pb2.TradeSignal, after: int, final: str, filled: Decimal
                     ) -> tuple[str, Decimal, int]:
        stub = aggregator_pb2_grpc.AggregatorServiceStub(self._channels[self._aggregator])
        request = aggregator_pb2.WatchUpdatesRequest(user_id=pb.user_id, signal_id=pb.signal_id, after_sequence=after)
        with contextlib.suppress(grpc.aio.AioRpcError):
            async for response in stub.WatchUpdates(request, timeout=5):
                update = response.update
                after, filled = max(after, update.sequence), Decimal(update.filled_quantity or "0")
                if update.status in load.TERMINAL_PB:
                    final = status_name(update.status)
        return final, filled, after


# ---- the faults ----------------------------------------------------------------------------------


async def apply(event: Event, mesh: Mesh, sim: simexchange_pb2_grpc.SimulatedExchangeServiceStub,
                say: Callable[[str], None]) -> None:
    """One scheduled fault: a kill and restart, or an exchange fault for its duration."""
    say(event.describe())
    if event.kind is Kind.DB_DISCONNECT:
        dropped = await asyncio.to_thread(drop_connections, os.environ["NIJA_DATABASE_URL"])
        say(f"          {dropped} database connections dropped")
        return
    if event.kind is Kind.KILL:
        started = time.monotonic()
        await mesh.restart(event.target)
        say(f"          {event.target} listening again after {time.monotonic() - started:.1f} s")
        return
    params = dict(event.params)
    fault = simexchange_pb2.SetFaultRequest(
        broker=event.target,
        mode=simexchange_pb2.FAULT_MODE_UNAVAILABLE if event.kind is Kind.BLACKHOLE else simexchange_pb2.FAULT_MODE_NONE,
        latency_ms=int(params.get("latency_ms", 0)), error_rate=params.get("error_rate", 0.0),
        rate_limit_rate=params.get("rate_limit_rate", 0.0), retry_after_ms=int(params.get("retry_after_ms", 0)),
        lose_response_rate=params.get("lose_response_rate", 0.0), seed=event_seed(event),
    )
    await _set_fault(sim, fault)
    await asyncio.sleep(event.duration_s)
    await _set_fault(sim, simexchange_pb2.SetFaultRequest(broker=event.target, mode=simexchange_pb2.FAULT_MODE_NONE))


async def _set_fault(sim: simexchange_pb2_grpc.SimulatedExchangeServiceStub, fault: simexchange_pb2.SetFaultRequest,
                     attempts: int = 5) -> None:
    """The run's own control call: a machine busy with the run may answer it late; try again."""
    for attempt in range(1, attempts + 1):
        try:
            await sim.SetFault(fault, timeout=30)
            return
        except grpc.aio.AioRpcError as exc:
            if attempt == attempts or exc.code() not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
                raise
            await asyncio.sleep(1.0)


def event_seed(event: Event) -> int:
    """The exchange's fault dice for one event, from the event itself: a rerun throws the same."""
    return random.Random(f"{event.at_s}/{event.kind.value}/{event.target}").randrange(1, 2**63)


def drop_connections(url: str) -> int:
    """What the mesh sees when PostgreSQL restarts: every other connection to the database is
    terminated (run chaos against a database of its own)."""
    import psycopg  # PostgreSQL mode only

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return sum(1 for (done,) in rows if done)


# ---- the records ---------------------------------------------------------------------------------


async def ledger_orders(channel: grpc.aio.Channel, users: list[str]) -> list[LedgerOrder]:
    stub = aggregator_pb2_grpc.AggregatorServiceStub(channel)
    out: list[LedgerOrder] = []
    for user in users:
        token = ""
        while True:
            page = await stub.ListOrders(aggregator_pb2.ListOrdersRequest(user_id=user, page_size=1000, page_token=token),
                                         timeout=CALL_TIMEOUT_S)
            for order in page.orders:
                fills = await stub.ListFills(aggregator_pb2.ListFillsRequest(user_id=user, signal_id=order.signal_id),
                                             timeout=CALL_TIMEOUT_S)
                out.append(LedgerOrder(
                    user, order.signal_id, order.signal.pair, side_from_pb(order.signal.side).value,
                    status_name(order.status), order.broker, Decimal(order.filled_quantity or "0"),
                    frozenset(f.fill.venue_trade_id for f in fills.fills),
                ))
            if not (token := page.next_page_token):
                break
    return out


async def venue_orders(sim: simexchange_pb2_grpc.SimulatedExchangeServiceStub) -> list[VenueOrder]:
    out: list[VenueOrder] = []
    for broker in BROKERS:
        token = ""
        while True:
            page = await sim.ListOrders(simexchange_pb2.ListOrdersRequest(broker=broker, page_size=5000, page_token=token),
                                        timeout=CALL_TIMEOUT_S)
            out += [VenueOrder(broker, o.account_id, o.client_order_id, Decimal(o.filled_quantity or "0"),
                               frozenset(f.venue_trade_id for f in o.fills)) for o in page.orders]
            if not (token := page.next_page_token):
                break
    return out


async def positions(channel: grpc.aio.Channel, users: list[str]) -> dict[tuple[str, str], Decimal]:
    stub = permission_pb2_grpc.PermissionServiceStub(channel)
    out: dict[tuple[str, str], Decimal] = {}
    for user in users:
        held = await stub.GetPositions(permission_pb2.GetPositionsRequest(user_id=user), timeout=CALL_TIMEOUT_S)
        out.update({(user, p.pair): Decimal(p.quantity) for p in held.positions if Decimal(p.quantity)})
    return out


# ---- the run -------------------------------------------------------------------------------------


async def run(config: ChaosConfig, say: Callable[[str], None] = print) -> tuple[Report, dict[str, Any]]:
    rng = random.Random(config.seed)
    if config.database_url:  # the services take it from their environment
        os.environ["NIJA_DATABASE_URL"] = config.database_url
    mesh = Mesh(config.data_dir, auto_ports=True, extra={}, routers=config.routers)
    backend = "PostgreSQL" if config.database_url else "SQLite"
    say(f"chaos: seed {config.seed}, {config.duration_s:g} s, {config.users} users, {config.rate_per_s:g} signals/s, {backend}")
    await mesh.start()
    try:
        targets = {c.name: c.target for c in mesh.children}
        assert mesh.tokens is not None
        admin = dataclasses.replace(mesh.client_security, token=mesh.tokens.admin)
        users = [f"chaos-{k:04d}" for k in range(config.users)]
        await load.make_users(targets["permission"], admin, users, load.limits(trades_per_second="50", trade_burst=50))
        events = schedule(config.plan(kill_targets(config.routers)))
        say(f"chaos: {len(events)} faults scheduled, {sum(e.kind is Kind.KILL for e in events)} of them kills")
        routers = [c.target for c in mesh.children if c.kind == "router"]
        signals = load.Signals(run_id=f"chaos{config.seed}-{rng.randrange(16**6):06x}")
        async with open_channel(targets["simexchange"], Security()) as sim_channel, \
                Clients(routers, targets["aggregator"], admin, rng) as clients:
            sim = simexchange_pb2_grpc.SimulatedExchangeServiceStub(sim_channel)
            started = time.monotonic()
            give_up_at = started + config.duration_s + config.settle_s
            faults = asyncio.create_task(_faults(events, mesh, sim, started, say))
            total, sent = signals_due(config.duration_s, config.duration_s, config.rate_per_s), 0
            while sent < total:
                due = signals_due(time.monotonic() - started, config.duration_s, config.rate_per_s)
                for _ in range(due - sent):
                    pb = signals.make("chaos", rng.choice(users))
                    pb.pair = rng.choice(PAIRS)
                    clients.send(pb, give_up_at)
                sent = max(sent, due)
                if sent < total:
                    await asyncio.sleep(1.0 / config.rate_per_s)
            await faults
            say(f"chaos: load over ({sent} signals); waiting up to {config.settle_s:g} s for every client to reach an end")
            await clients.wait()
            say("chaos: reading the ledger, the exchanges and the positions")
            async with open_channel(targets["aggregator"], admin) as agg, open_channel(targets["permission"], admin) as perm:
                report = reconcile(
                    clients.told.values(), await ledger_orders(agg, users), await venue_orders(sim),
                    await positions(perm, users), brokers=BROKERS,
                )
        kills = Counter(e.target for e in events if e.kind is Kind.KILL)
        extra = {"signals": sent, "attempts": clients.attempts, "kills": dict(sorted(kills.items())),
                 "exchange_faults": dict(Counter(e.kind.value for e in events if e.kind in EXCHANGE_FAULTS)),
                 "db_disconnects": sum(e.kind is Kind.DB_DISCONNECT for e in events),
                 "faults": [e.describe() for e in events]}
        return report, extra
    finally:
        mesh.stop()


async def _faults(events: list[Event], mesh: Mesh, sim: simexchange_pb2_grpc.SimulatedExchangeServiceStub,
                  started: float, say: Callable[[str], None]) -> None:
    """Each fault at its time; an exchange fault runs alongside the next ones (it lasts a while)."""
    running: list[asyncio.Task[None]] = []
    for event in events:
        await asyncio.sleep(max(0.0, started + event.at_s - time.monotonic()))
        task = asyncio.create_task(apply(event, mesh, sim, say))
        if event.kind is Kind.KILL:
            await task  # one kill at a time: the next waits for this service to serve again
        else:
            running.append(task)
    await asyncio.gather(*running)
