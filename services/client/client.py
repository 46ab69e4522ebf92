"""`NijaClient`: a strategy's connection to the mesh.

    async with NijaClient() as nija:                       # NIJA_ROUTER, NIJA_TOKEN, NIJA_TLS_*
        result = await nija.place_order_async("alice", "BTC-USD", "buy", Decimal("250"))
        if not result.filled:
            log.warning("not filled: %s %s", result.state, result.reason)

Every call has a deadline (the call's `timeout`, else the client's default). Order placement is
never retried as a new order: a stream that breaks after the mesh accepted the signal is
re-attached by submitting the same signal id with the last sequence seen, which replays only what
was missed; the mesh never places a second order for one signal id. Refusals raise `NijaError`
with the status code and the ErrorInfo reason.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar

import grpc
from nija.aggregator.v1 import aggregator_pb2, aggregator_pb2_grpc
from nija.common.v1 import common_pb2
from nija.permission.v1 import permission_pb2, permission_pb2_grpc
from nija.router.v1 import router_pb2, router_pb2_grpc

from services.client.config import TARGET_VARIABLES, client_security, client_target
from services.client.errors import NijaError, from_rpc_error
from services.client.models import Positions, Quote, SignalRefusal, TradeResult, Update
from services.client.signals import Amount, make_signal
from services.domain.signal import Side, SignalType
from services.runtime.channels import open_channel
from services.runtime.config import ConfigError
from services.runtime.security import Security

T = TypeVar("T")

#: Seconds for a unary call (quote, cancel, positions) unless the call says otherwise.
DEFAULT_TIMEOUT_S = 10.0
#: Seconds a signal may take from submission to its terminal update unless the call says otherwise.
DEFAULT_STREAM_TIMEOUT_S = 120.0
#: Pause before re-attaching a broken stream, doubling up to the cap.
REATTACH_BACKOFF_S = (0.1, 1.0)


class NijaClient:
    """An async context manager holding one channel per service it talks to.

    `router` (and the optional `aggregator` for `watch`, `permission` for `positions`): "host:port";
    default $NIJA_ROUTER / $NIJA_AGGREGATOR / $NIJA_PERMISSION, the router defaulting to the
    local mesh's port. `token`: the bearer token (default $NIJA_TOKEN or $NIJA_TOKEN_FILE).
    `security`: TLS settings (default from NIJA_TLS_*, as the services read them).
    `clock` and `sleep` are for tests.
    """

    def __init__(
        self,
        router: str | None = None,
        *,
        aggregator: str | None = None,
        permission: str | None = None,
        token: str | None = None,
        security: Security | None = None,
        environ: Mapping[str, str] | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        stream_timeout: float = DEFAULT_STREAM_TIMEOUT_S,
        strategy: str = "nija-client",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.targets: dict[str, str | None] = {
            "router": client_target("router", router, environ),
            "aggregator": client_target("aggregator", aggregator, environ),
            "permission": client_target("permission", permission, environ),
        }
        if security is None:
            security = client_security(environ, token)
        elif token is not None:
            security = dataclasses.replace(security, token=token)
        self._security = security
        self.timeout = _positive(timeout, "timeout")
        self.stream_timeout = _positive(stream_timeout, "stream_timeout")
        self.strategy = strategy
        self._clock = clock
        self._sleep = sleep
        self._channels: dict[str, grpc.aio.Channel] = {}

    # ---- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> NijaClient:
        self._channel("router")  # a bad target or a plaintext remote fails here, not mid-trade
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close()

    def _channel(self, service: str) -> grpc.aio.Channel:
        if service not in self._channels:
            target = self.targets[service]
            if not target:
                raise ConfigError(f"no {service} target: pass {service}=... or set {TARGET_VARIABLES[service]}")
            self._channels[service] = open_channel(target, self._security)
        return self._channels[service]

    # ---- trading -------------------------------------------------------------------------------

    async def submit(
        self,
        signal: common_pb2.TradeSignal,
        *,
        after_sequence: int = 0,
        timeout: float | None = None,
        reattach: bool = True,
    ) -> AsyncIterator[Update]:
        """The signal's updates as the mesh persists them, through its terminal update.

        Submitting a signal id again (with `after_sequence`, the last sequence seen) re-attaches
        to the first submission's order. With `reattach`, a stream that breaks or ends early
        after the mesh accepted the signal (a router restarting, a connection lost) is
        re-attached the same way until `timeout` runs out; a call refused outright raises
        `NijaError` at once."""
        stub = router_pb2_grpc.RouterServiceStub(self._channel("router"))
        deadline = self._clock() + _positive(self.stream_timeout if timeout is None else timeout, "timeout")
        last = after_sequence
        backoff = REATTACH_BACKOFF_S[0]
        while True:
            remaining = self._remaining(deadline, f"signal {signal.signal_id}")
            request = router_pb2.SubmitSignalRequest(signal=signal, after_sequence=last)
            call = stub.SubmitSignal(request, timeout=remaining)
            delivered = finished = False
            try:
                async for response in call:
                    update = Update.from_pb(response.update)
                    delivered = True
                    last = max(last, update.sequence)
                    finished = finished or (update.signal_id == signal.signal_id and update.terminal)
                    yield update
            except grpc.aio.AioRpcError as exc:
                err = from_rpc_error(exc)
                # Broken on the way once the order exists: it goes on in the mesh; come back.
                if not (reattach and err.transport and last > after_sequence):
                    raise err from None
            else:
                # Ended without the terminal update: a draining router's stream does that. One
                # that ends with nothing new has nothing more to give (e.g. already finished).
                if finished or not (reattach and delivered):
                    return
            finally:
                call.cancel()  # a caller that stopped listening: the order goes on without it
            if delivered:
                backoff = REATTACH_BACKOFF_S[0]
            await self._sleep(min(backoff, max(0.0, deadline - self._clock())))
            backoff = min(backoff * 2, REATTACH_BACKOFF_S[1])

    async def submit_many(
        self,
        signals: Iterable[common_pb2.TradeSignal] | AsyncIterable[common_pb2.TradeSignal],
        *,
        timeout: float | None = None,
    ) -> AsyncIterator[Update | SignalRefusal]:
        """Many signals over one stream, for a strategy sending more than a few at a time: every
        signal's updates as the mesh persists them (each signal's in order, the signals
        interleaved), and a `SignalRefusal` for each one the mesh refused while the others go
        on. Ends once every signal sent has its terminal update or refusal. The router takes a
        bounded number in flight per stream; one more is refused (STREAM_IN_FLIGHT_LIMIT).

        `signals` may be an async iterable that produces signals as the strategy makes them. A
        stream that breaks raises `NijaError`; the orders go on, and `submit` with the same
        signal id and the last sequence seen re-attaches to one."""
        stub = router_pb2_grpc.RouterServiceStub(self._channel("router"))
        call = stub.SubmitSignals(
            _requests(signals), timeout=_positive(self.stream_timeout if timeout is None else timeout, "timeout")
        )
        try:
            async for response in call:
                if response.HasField("refusal"):
                    yield SignalRefusal.from_pb(response.refusal)
                else:
                    yield Update.from_pb(response.update)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()  # a caller that stopped listening: the orders go on without it

    async def submit_and_wait(
        self,
        signal: common_pb2.TradeSignal,
        *,
        timeout: float | None = None,
        on_update: Callable[[Update], None] | None = None,
    ) -> TradeResult:
        """Submit (or re-attach to) `signal` and wait for its terminal update."""
        updates: list[Update] = []
        final: Update | None = None
        async for update in self.submit(signal, timeout=timeout):
            updates.append(update)
            if on_update is not None:
                on_update(update)
            if update.signal_id == signal.signal_id and update.terminal:
                final = update
        if final is None:  # reattach=True returns only after the terminal update
            raise NijaError(grpc.StatusCode.INTERNAL, "NO_TERMINAL_UPDATE",
                            f"signal {signal.signal_id} ended without a final state")
        return TradeResult.from_updates(updates, final)

    async def place_order_async(
        self,
        user: str,
        pair: str,
        side: Side | str,
        usd: Amount,
        kind: SignalType | str = SignalType.ENTRY,
        signal_id: str | None = None,
        timeout: float | None = None,
        *,
        on_update: Callable[[Update], None] | None = None,
        **options: Any,
    ) -> TradeResult:
        """Trade `usd` (Decimal or decimal string) of `pair` for `user` and return how it ended.

        Pass your own `signal_id` to make a retry after a crash safe: the same id is the same
        order. `options`: `limit_price`, `limit_expiry_s`, `convert_on_expiry`, `routing`,
        `metadata` (see `make_signal`)."""
        signal = make_signal(user, pair, side, usd, kind, signal_id, strategy=self.strategy, **options)
        return await self.submit_and_wait(signal, timeout=timeout, on_update=on_update)

    async def cancel(
        self, user: str, signal_id: str, reason: str = "", *, timeout: float | None = None
    ) -> tuple[str, ...]:
        """Cancel the signal's open order; returns the brokers that accepted the request. The
        signal's stream shows the outcome (CANCELLED, with whatever had filled)."""
        stub = router_pb2_grpc.RouterServiceStub(self._channel("router"))
        request = router_pb2.CancelSignalRequest(user_id=user, signal_id=signal_id, reason=reason)
        response = await self._unary(stub.CancelSignal, request, timeout)
        return tuple(response.brokers)

    async def quote(self, signal: common_pb2.TradeSignal, *, timeout: float | None = None) -> Quote:
        """What the router would do with `signal` now, for every broker; nothing is traded."""
        stub = router_pb2_grpc.RouterServiceStub(self._channel("router"))
        return Quote.from_pb(await self._unary(stub.QuoteRoute, router_pb2.QuoteRouteRequest(signal=signal), timeout))

    # ---- following -----------------------------------------------------------------------------

    async def watch(
        self, user: str, *, signal_id: str = "", after_sequence: int = 0, timeout: float | None = None
    ) -> AsyncIterator[Update]:
        """A user's updates from the ledger (the aggregator): those after `after_sequence`, then
        new ones as they are persisted, with no gap and no duplicate. With `signal_id`, only that
        signal's, ending after its terminal update.

        Without `timeout` it follows until the caller stops iterating: each underlying call
        still has a deadline (the client's `stream_timeout`) and is renewed from the last
        sequence seen, as is a stream that breaks after delivering, or that the ledger ends for
        falling behind (WATCHER_TOO_SLOW)."""
        stub = aggregator_pb2_grpc.AggregatorServiceStub(self._channel("aggregator"))
        deadline = None if timeout is None else self._clock() + _positive(timeout, "timeout")
        last = after_sequence
        backoff = REATTACH_BACKOFF_S[0]
        while True:
            budget = self.stream_timeout
            if deadline is not None:
                budget = min(budget, self._remaining(deadline, f"watching {user}"))
            request = aggregator_pb2.WatchUpdatesRequest(user_id=user, after_sequence=last, signal_id=signal_id)
            call = stub.WatchUpdates(request, timeout=budget)
            delivered = renewed = False
            try:
                async for response in call:
                    update = Update.from_pb(response.update)
                    delivered = True
                    last = max(last, update.sequence)
                    yield update
            except grpc.aio.AioRpcError as exc:
                err = from_rpc_error(exc)
                # Our own per-call deadline, not the caller's: renew at once.
                renewed = err.code is grpc.StatusCode.DEADLINE_EXCEEDED and (
                    deadline is None or deadline - self._clock() > 0
                )
                if not (renewed or err.reason == "WATCHER_TOO_SLOW" or (err.transport and delivered)):
                    raise err from None
            else:
                if signal_id:  # the ledger ends a signal's stream after its terminal update
                    return
            finally:
                call.cancel()
            if delivered or renewed:
                backoff = REATTACH_BACKOFF_S[0]
                continue
            await self._sleep(backoff)
            backoff = min(backoff * 2, REATTACH_BACKOFF_S[1])

    async def positions(self, user: str, *, timeout: float | None = None) -> Positions:
        """The user's positions and today's figures (from the permission service)."""
        stub = permission_pb2_grpc.PermissionServiceStub(self._channel("permission"))
        response = await self._unary(stub.GetPositions, permission_pb2.GetPositionsRequest(user_id=user), timeout)
        return Positions.from_pb(response)

    # ---- plumbing ------------------------------------------------------------------------------

    async def _unary(self, method: Callable[..., Awaitable[T]], request: object, timeout: float | None) -> T:
        try:
            return await method(request, timeout=_positive(self.timeout if timeout is None else timeout, "timeout"))
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    def _remaining(self, deadline: float, what: str) -> float:
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise NijaError(grpc.StatusCode.DEADLINE_EXCEEDED, "", f"deadline exceeded {what}")
        return remaining


async def _requests(
    signals: Iterable[common_pb2.TradeSignal] | AsyncIterable[common_pb2.TradeSignal],
) -> AsyncIterator[router_pb2.SubmitSignalsRequest]:
    if isinstance(signals, AsyncIterable):
        async for signal in signals:
            yield router_pb2.SubmitSignalsRequest(signal=signal)
    else:
        for signal in signals:
            yield router_pb2.SubmitSignalsRequest(signal=signal)


def _positive(value: float, name: str) -> float:
    if not value > 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)
