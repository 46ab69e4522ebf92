"""The aggregator as its clients (router, executors) use it: one channel, deadlines, safe retries.

RecordUpdate is idempotent by update_id, so retrying it after a timeout or an unavailable
aggregator can never record an update twice.

Records go over one long-lived RecordUpdates stream per client (a message on an open stream costs
the aggregator about half what a unary call does): a writer task sends each request with its own
request id, a reader task hands each answer to the record waiting for that id. What the caller of
`record` sees is what the unary call gave: the same answer, the same ServiceError code and
reason for a refusal, the same retries. Two cases still go unary: a record made inside a recorded
trace (a stream message carries no trace context, and one signal must stay one trace), and every
record of a client whose aggregator does not know RecordUpdates (an older release: UNIMPLEMENTED).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import grpc
from nija.aggregator.v1 import aggregator_pb2, aggregator_pb2_grpc
from nija.common.v1 import common_pb2
from opentelemetry import trace

from services.domain.retry import backoff
from services.runtime import tracing
from services.runtime.channels import bounded, open_channel
from services.runtime.errors import ServiceError, from_refusal, relay
from services.runtime.retrying import retrying
from services.runtime.security import Security

log = logging.getLogger(__name__)

#: A stream ended with these was refused to us (the access rule), not cut.
_STREAM_REFUSED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
#: How long closing the client waits for the stream's last answers before cutting it.
_CLOSE_GRACE_S = 5.0


def _stream_error(exc: BaseException) -> ServiceError:
    """Why a stream ended, as the error of each record that was waiting on it. The stream refused
    to us (no access) is that refusal, as each unary call would have been refused. Anything else
    that ended it (a restart cancels it, a network drops it, core reports an internal error on a
    cut connection) says nothing about the records themselves: UNAVAILABLE, so they are retried
    on a new stream."""
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, grpc.aio.AioRpcError):
        if exc.code() in _STREAM_REFUSED:
            return relay(exc)
        return ServiceError(
            grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE", f"ledger stream broke: {exc.code().name} {exc.details() or ''}"
        )
    return ServiceError(grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE", f"ledger stream broke: {exc!r}")


def _in_a_trace() -> bool:
    return tracing.enabled() and trace.get_current_span().is_recording()


class _Unimplemented(Exception):
    """The aggregator does not serve RecordUpdates."""


class _RecordStream:
    """One RecordUpdates call: its writer and reader tasks and the records waiting for an answer.
    Once broken (`failure` set) it stays broken: the client opens another."""

    def __init__(self, stub: aggregator_pb2_grpc.AggregatorServiceStub) -> None:
        self.failure: Exception | None = None
        self._waiting: dict[int, asyncio.Future[aggregator_pb2.RecordUpdatesResponse]] = {}
        self._outbox: asyncio.Queue[aggregator_pb2.RecordUpdatesRequest | None] = asyncio.Queue()
        self._ids = itertools.count(1)
        self._loop = asyncio.get_running_loop()
        # The stream outlives every signal that uses it: it belongs to no signal's trace.
        with tracing.untraced():
            self._call = stub.RecordUpdates()
            self._writer = asyncio.create_task(self._write(), name="ledger-stream-writer")
            self._reader = asyncio.create_task(self._read(), name="ledger-stream-reader")

    async def send(self, update: common_pb2.ExecutionUpdate, timeout_s: float) -> aggregator_pb2.RecordUpdatesResponse:
        """The answer to `update`; ServiceError when the stream broke or no answer came in
        `timeout_s` (DEADLINE_EXCEEDED, like a unary call's deadline); _Unimplemented."""
        if self.failure is not None:
            raise _copy(self.failure)
        request_id = next(self._ids)
        answer = self._loop.create_future()
        self._waiting[request_id] = answer
        self._outbox.put_nowait(aggregator_pb2.RecordUpdatesRequest(request_id=request_id, update=update))
        expiry = self._loop.call_later(timeout_s, _expire, answer)
        try:
            return await answer  # cancelling the caller cancels `answer` only: the stream goes on
        finally:
            expiry.cancel()
            self._waiting.pop(request_id, None)

    async def close(self) -> None:
        """Half-close, let the aggregator answer what it has, then end the call."""
        if self.failure is None:
            self._outbox.put_nowait(None)
            with contextlib.suppress(Exception):  # late or broken: cut below either way
                async with asyncio.timeout(_CLOSE_GRACE_S):  # not wait_for: see services.runtime.aio
                    await asyncio.shield(self._reader)
        self._fail(ServiceError(grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE", "the ledger client is closed"))
        for task in (self._writer, self._reader):
            task.cancel()
        await asyncio.gather(self._writer, self._reader, return_exceptions=True)

    async def _write(self) -> None:
        try:
            while True:
                request = await self._outbox.get()
                if request is None:
                    await self._call.done_writing()
                    return
                if request.request_id in self._waiting:  # its caller may have gone (cancelled)
                    await self._call.write(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the call ended under us
            self._fail(exc)

    async def _read(self) -> None:
        try:
            while True:
                response = await self._call.read()
                if response is grpc.aio.EOF:
                    break
                answer = self._waiting.get(response.request_id)
                if answer is not None and not answer.done():
                    answer.set_result(response)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._fail(exc)
            return
        self._fail(ServiceError(grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE", "the ledger stream ended"))

    def _fail(self, exc: BaseException) -> None:
        """Break the stream for good: every waiting record gets the error (the first one wins)."""
        if isinstance(exc, grpc.aio.AioRpcError) and exc.code() is grpc.StatusCode.UNIMPLEMENTED:
            error: Exception = _Unimplemented()
        else:
            error = _stream_error(exc)
        if self.failure is None:
            self.failure = error
        waiting, self._waiting = self._waiting, {}
        for answer in waiting.values():
            if not answer.done():
                answer.set_exception(_copy(self.failure))  # one instance per waiter: raised in each
        if not self._call.done():
            self._call.cancel()


def _copy(error: Exception) -> Exception:
    if isinstance(error, ServiceError):
        return ServiceError(error.code, error.reason, error.message, **error.metadata)
    return type(error)()


def _expire(answer: asyncio.Future[aggregator_pb2.RecordUpdatesResponse]) -> None:
    if not answer.done():
        answer.set_exception(ServiceError(grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED", "Deadline Exceeded"))


class LedgerClient:
    def __init__(
        self,
        target: str,
        security: Security | None = None,
        timeout_s: float = 5.0,
        retry_for_s: float = 30.0,
        multiplex: bool = True,
    ) -> None:
        """`multiplex`: records over one RecordUpdates stream (False: one unary call each)."""
        self._channel = open_channel(target, security)
        self._stub = aggregator_pb2_grpc.AggregatorServiceStub(self._channel)
        self._timeout_s = timeout_s
        self._retry_for_s = retry_for_s
        self._multiplex = multiplex
        self._stream: _RecordStream | None = None

    async def close(self) -> None:
        self._multiplex = False  # nothing reopens the stream
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.close()
        await self._channel.close()

    async def create_order(
        self, signal: common_pb2.TradeSignal, timeout_s: float | None = None
    ) -> aggregator_pb2.CreateOrderResponse:
        """Waits for a connection (an aggregator restarting) rather than failing at once, and
        retries an attempt whose answer was lost under the same submission id, so the ledger
        tells us whether that attempt created the order: never two orders, never an order that
        nobody drives."""
        request = aggregator_pb2.CreateOrderRequest(signal=signal, submission_id=uuid.uuid4().hex)
        budget = timeout_s if timeout_s is not None else self._retry_for_s
        give_up_at = time.monotonic() + budget

        async def attempt() -> aggregator_pb2.CreateOrderResponse:
            try:
                return await self._stub.CreateOrder(
                    request, timeout=bounded(self._timeout_s, give_up_at - time.monotonic()), wait_for_ready=True
                )
            except grpc.aio.AioRpcError as exc:
                raise relay(exc) from None

        def on_retry(exc: ServiceError, delay: float) -> None:
            log.warning("ledger unavailable, retrying the order's creation", extra={"signal_id": signal.signal_id})

        return await retrying(attempt, for_s=budget, delays=_delays(), on_retry=on_retry)

    async def get_order(self, user_id: str, signal_id: str, timeout_s: float | None = None) -> aggregator_pb2.Order:
        try:
            response = await self._stub.GetOrder(
                aggregator_pb2.GetOrderRequest(user_id=user_id, signal_id=signal_id),
                timeout=bounded(self._timeout_s, timeout_s),
            )
        except grpc.aio.AioRpcError as exc:
            raise relay(exc) from None
        return response.order

    async def record(self, update: common_pb2.ExecutionUpdate) -> common_pb2.ExecutionUpdate:
        """The update as persisted. An unavailable aggregator, a broken stream or an answer not
        come within the timeout is retried (the same update_id: never recorded twice) until
        `retry_for_s`; a refusal raises its ServiceError at once."""
        def on_retry(exc: ServiceError, delay: float) -> None:
            log.warning("ledger unavailable, retrying", extra={"update_id": update.update_id})

        return await retrying(lambda: self._record_once(update), for_s=self._retry_for_s, delays=_delays(),
                              on_retry=on_retry)

    async def _record_once(self, update: common_pb2.ExecutionUpdate) -> common_pb2.ExecutionUpdate:
        if self._multiplex and not _in_a_trace():
            try:
                response = await self._open_stream().send(update, self._timeout_s)
            except _Unimplemented:
                if self._multiplex:
                    log.info("the aggregator has no RecordUpdates stream; recording with unary calls")
                self._multiplex = False
            else:
                if response.HasField("refusal"):
                    raise from_refusal(response.refusal)
                return response.recorded.update
        try:
            unary = await self._stub.RecordUpdate(aggregator_pb2.RecordUpdateRequest(update=update), timeout=self._timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise relay(exc) from None
        return unary.update

    def _open_stream(self) -> _RecordStream:
        if self._stream is None or self._stream.failure is not None:
            self._stream = _RecordStream(self._stub)
        return self._stream

    async def watch_signal(
        self, user_id: str, signal_id: str, after_sequence: int, timeout_s: float
    ) -> AsyncIterator[common_pb2.ExecutionUpdate]:
        """A signal's persisted updates after `after_sequence`, ending with its terminal update."""
        call = self._stub.WatchUpdates(
            aggregator_pb2.WatchUpdatesRequest(
                user_id=user_id, signal_id=signal_id, after_sequence=after_sequence
            ),
            timeout=timeout_s,
        )
        try:
            async for response in call:
                yield response.update
        except grpc.aio.AioRpcError as exc:
            raise relay(exc) from None


def _delays() -> Iterator[float]:
    """Between attempts while the ledger is away: from 50 ms, doubling to 1 s (jittered)."""
    return backoff(0.1, 1.0, random.Random())
