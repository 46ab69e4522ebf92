"""Many signals on one stream (RouterService/SubmitSignals).

Each signal the client sends is submitted exactly as SubmitSignal submits it (`submit` is
`RouterEngine.submit`: the same validation, idempotency and re-attaching), and followed by a task
of its own, so a slow order never holds up the others. Every update goes out on the one response
stream, each signal's in its own order. A signal that cannot go ahead gets one refusal, with the
code and reason SubmitSignal would have ended with, and the stream goes on: a signal the caller
may not submit, one beyond the stream's in-flight limit, or one the engine refuses.

The stream ends once the client has half-closed and every signal it sent has reached its terminal
update or a refusal. A client that goes away (cancels, or its deadline passes) stops the tasks
following the signals, never the orders: once an order exists the engine drives it by a task of
its own, and the client comes back for it by signal_id and after_sequence.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable

import grpc
from nija.common.v1 import common_pb2
from nija.router.v1 import router_pb2

from services.runtime.errors import ServiceError, refusal_pb, relay

log = logging.getLogger(__name__)

#: `RouterEngine.submit`: (signal, seconds left or None, after_sequence) -> the signal's updates.
Submit = Callable[[common_pb2.TradeSignal, float | None, int], AsyncIterator[common_pb2.ExecutionUpdate]]
#: None when the caller may submit the signal; otherwise the refusal (already logged).
Admit = Callable[[common_pb2.TradeSignal], ServiceError | None]

_Item = router_pb2.SubmitSignalsResponse | BaseException | None

#: Followers left running after their stream went away, until the order they were starting exists
#: (asyncio keeps only weak references to tasks).
_finishing: set[asyncio.Task[None]] = set()


async def multiplex(
    requests: AsyncIterator[router_pb2.SubmitSignalsRequest],
    submit: Submit,
    admit: Admit,
    time_remaining: Callable[[], float | None],
    max_in_flight: int,
) -> AsyncIterator[router_pb2.SubmitSignalsResponse]:
    """The responses for the signals read from `requests`, until they are all done."""
    stream = _Stream(submit, admit, time_remaining, max_in_flight)
    reader = asyncio.create_task(stream.read(requests), name="submit-signals-reader")
    try:
        while (item := await stream.out.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        reader.cancel()
        stream.stop()


@dataclasses.dataclass(eq=False)
class _Follower:
    """One signal in flight: the task reading its updates from the engine."""

    signal_id: str
    task: asyncio.Task[None] | None = None
    #: The signal's first update came: its order exists and is driven without us (or, re-attaching,
    #: we are only reading the ledger), so the task may be cancelled at any point from here on.
    started: bool = False
    #: The stream went away before the order existed: stop as soon as it does.
    detached: bool = False


class _Stream:
    def __init__(self, submit: Submit, admit: Admit, time_remaining: Callable[[], float | None], max_in_flight: int) -> None:
        self._submit = submit
        self._admit = admit
        self._time_remaining = time_remaining
        self._max_in_flight = max_in_flight
        # Unbounded, but never long: at most `max_in_flight` signals write to it, each its own order's updates.
        self.out: asyncio.Queue[_Item] = asyncio.Queue()
        self._in_flight: set[_Follower] = set()
        self._reading = True

    async def read(self, requests: AsyncIterator[router_pb2.SubmitSignalsRequest]) -> None:
        try:
            async for request in requests:
                self._accept(request)
        except Exception as exc:  # the request side broke: so has the call
            self.out.put_nowait(exc)
        finally:
            self._reading = False
            self._end_if_done()

    def _accept(self, request: router_pb2.SubmitSignalsRequest) -> None:
        pb = request.signal
        refused = self._admission(request)
        if refused is not None:
            self._refuse(pb, refused)
            return
        follower = _Follower(pb.signal_id)
        # The budget is what the stream has left when the signal arrives, as SubmitSignal's is its call's.
        follower.task = asyncio.create_task(
            self._follow(follower, pb, self._time_remaining(), request.after_sequence),
            name=f"submit-signals-{pb.signal_id}",
        )
        self._in_flight.add(follower)

    def _admission(self, request: router_pb2.SubmitSignalsRequest) -> ServiceError | None:
        """Why the signal may not start here, checked in SubmitSignal's order: who may act for the
        user (the interceptor, for SubmitSignal), the request's shape, then this stream's room."""
        denied = self._admit(request.signal)
        if denied is not None:
            return denied
        if not request.HasField("signal"):
            return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, "MISSING_SIGNAL", "signal is required", field="signal")
        if len(self._in_flight) >= self._max_in_flight:
            return ServiceError(
                grpc.StatusCode.RESOURCE_EXHAUSTED, "STREAM_IN_FLIGHT_LIMIT",
                f"{len(self._in_flight)} signals are in flight on this stream (the limit): "
                "send it again once one has ended, or on another stream",
            )
        return None

    async def _follow(
        self, follower: _Follower, pb: common_pb2.TradeSignal, budget: float | None, after_sequence: int
    ) -> None:
        try:
            async for update in self._submit(pb, budget, after_sequence):
                self.out.put_nowait(router_pb2.SubmitSignalsResponse(update=update))
                follower.started = True
                if follower.detached:
                    # Cancelled at the next await, which is past the point where the engine hands
                    # the new order to its own task (RouterEngine.submit, after its first update).
                    asyncio.current_task().cancel()  # type: ignore[union-attr]
        except ServiceError as err:
            self._refuse(pb, err)
        except grpc.aio.AioRpcError as exc:
            self._refuse(pb, relay(exc))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("a signal on a SubmitSignals stream failed", extra={"signal_id": pb.signal_id})
            self._refuse(pb, ServiceError(grpc.StatusCode.INTERNAL, "INTERNAL", "internal error"))
        finally:
            self._in_flight.discard(follower)
            self._end_if_done()

    def _refuse(self, pb: common_pb2.TradeSignal, err: ServiceError) -> None:
        log.info("signal refused", extra={"signal_id": pb.signal_id, "code": err.code.name, "reason": err.reason})
        self.out.put_nowait(router_pb2.SubmitSignalsResponse(refusal=router_pb2.SignalRefusal(
            signal_id=pb.signal_id,
            user_id=pb.user_id,
            refusal=refusal_pb(err),
        )))

    def _end_if_done(self) -> None:
        if not self._reading and not self._in_flight:
            self.out.put_nowait(None)

    def stop(self) -> None:
        """The client went away: stop following. A signal whose order is being created (its
        reservation made, the ledger asked) is left to finish that first, or it would leave a
        reservation, or a PENDING order, that nobody drives."""
        for follower in list(self._in_flight):
            assert follower.task is not None
            if follower.started:
                follower.task.cancel()
            else:
                follower.detached = True
                _finishing.add(follower.task)
                follower.task.add_done_callback(_finishing.discard)
