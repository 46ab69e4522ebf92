"""Canonical gRPC errors with a machine-readable reason.

Engines raise `ServiceError(code, reason, message)`; servicer methods wrapped with `unary` or
`stream` turn it into a `google.rpc.Status` carrying one `ErrorInfo` (UPPER_SNAKE reason, domain
"nija"). Anything else is a bug: logged with its traceback and answered INTERNAL.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from nija.common.v1 import common_pb2

from services.runtime import tracing

log = logging.getLogger(__name__)

DOMAIN = "nija"
_DETAILS_KEY = "grpc-status-details-bin"


#: Bytes (UTF-8) of a refusal's message, and of each ErrorInfo metadata value. A status travels
#: in the response's trailers, twice (grpc-message, percent-encoded: up to 3x; and inside
#: grpc-status-details-bin, base64), and a client refuses trailers over 8 KiB: a message quoting a
#: caller's huge value whole arrived as RESOURCE_EXHAUSTED with no reason at all (found by the
#: fuzz: a 5,000-character broker name in an Execute route). Cut, such a message still says what
#: was wrong.
MAX_MESSAGE_BYTES = 1024
MAX_METADATA_BYTES = 256


def _bounded(text: str, limit: int) -> str:
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return text
    return raw[: limit - 3].decode("utf-8", "ignore") + "…"


class ServiceError(Exception):
    def __init__(self, code: grpc.StatusCode, reason: str, message: str, **metadata: str) -> None:
        message = _bounded(message, MAX_MESSAGE_BYTES)
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.metadata = {k: _bounded(str(v), MAX_METADATA_BYTES) for k, v in metadata.items()}

    def __repr__(self) -> str:
        return f"ServiceError({self.code.name}, {self.reason}, {self.message!r})"


def invalid(reason: str, message: str, **md: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, reason, message, **md)


def not_found(reason: str, message: str, **md: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, reason, message, **md)


def precondition(reason: str, message: str, **md: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.FAILED_PRECONDITION, reason, message, **md)


def to_status(err: ServiceError) -> grpc.Status:
    info = error_details_pb2.ErrorInfo(reason=err.reason, domain=DOMAIN, metadata=err.metadata)
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(
        code=getattr(code_pb2, err.code.name), message=err.message, details=[detail]
    )
    return rpc_status.to_status(status)


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def refusal_pb(err: ServiceError) -> common_pb2.Refusal:
    """A request refused inside a stream that goes on: what its call's status would have been."""
    return common_pb2.Refusal(code=err.code.value[0], reason=err.reason, message=err.message)


def status_code(number: int) -> grpc.StatusCode:
    """The status code with this number on the wire (UNKNOWN for one this grpc does not know)."""
    return _CODES.get(number, grpc.StatusCode.UNKNOWN)


def from_refusal(refusal: common_pb2.Refusal) -> ServiceError:
    """A refusal read from a stream, as `relay` turns the same call's status into an error."""
    code = status_code(refusal.code)
    return ServiceError(code, refusal.reason or code.name, refusal.message)


def reason_of(exc: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason carried by a failed call ('' when there is none)."""
    for key, value in exc.trailing_metadata() or ():
        if key == _DETAILS_KEY:
            try:
                status = status_pb2.Status.FromString(value)
            except DecodeError:  # a peer's corrupt trailer is no reason to crash the caller
                return ""
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    return info.reason
    return ""


def relay(exc: grpc.aio.AioRpcError) -> ServiceError:
    """An upstream's error, passed on to our caller with its code and reason.

    A call that failed because our own task is being cancelled (grpc reports that as CANCELLED)
    raises CancelledError instead: turned into an error, the cancellation could be retried or
    skipped over by the caller, and whoever is stopping the task would wait forever."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop
        task = None
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
    return ServiceError(exc.code(), reason_of(exc) or exc.code().name, exc.details() or "")


async def _abort(context: grpc.aio.ServicerContext, err: ServiceError) -> None:
    log.info("rpc refused", extra={"code": err.code.name, "reason": err.reason, "detail": err.message})
    await context.abort_with_status(to_status(err))


Req = TypeVar("Req")
Resp = TypeVar("Resp")


def unary(
    fn: Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]],
) -> Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]:
    @functools.wraps(fn)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        tracing.annotate_message(request)
        try:
            return await fn(self, request, context)
        except ServiceError as err:
            await _abort(context, err)
            raise AssertionError("unreachable")  # abort raises
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception:
            log.exception("unexpected error in %s", fn.__qualname__)
            await _abort(context, ServiceError(grpc.StatusCode.INTERNAL, "INTERNAL", "internal error"))
            raise AssertionError("unreachable")

    return wrapper


def stream(
    fn: Callable[[Any, Req, grpc.aio.ServicerContext], AsyncIterator[Resp]],
) -> Callable[[Any, Req, grpc.aio.ServicerContext], AsyncIterator[Resp]]:
    # Streaming handlers stay `async def ... yield` (the OpenTelemetry aio interceptor needs it).
    @functools.wraps(fn)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> AsyncIterator[Resp]:
        tracing.annotate_message(request)
        try:
            async for item in fn(self, request, context):
                tracing.annotate_message(item)  # the stream's span ends with its last status
                yield item
        except ServiceError as err:
            await _abort(context, err)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception:
            log.exception("unexpected error in %s", fn.__qualname__)
            await _abort(context, ServiceError(grpc.StatusCode.INTERNAL, "INTERNAL", "internal error"))

    return wrapper
