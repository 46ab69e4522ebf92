"""The one exception a client sees: a refused or failed call, with its code and reason.

The mesh answers every refusal with a canonical gRPC code and a `google.rpc.Status` carrying one
`ErrorInfo` (an UPPER_SNAKE reason such as `USER_DISABLED`, and metadata such as a watcher's
`last_sequence`). `NijaError` carries both, so a strategy branches on `err.reason`, never on
message text.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2
from grpc_status import rpc_status


class NijaError(Exception):
    """A call the mesh refused or that failed: `code` (grpc.StatusCode), `reason` (the ErrorInfo
    reason, "" when the failure came from the transport and not from a service), `details`
    (the human-readable message) and the ErrorInfo `metadata`."""

    def __init__(
        self, code: grpc.StatusCode, reason: str, details: str, metadata: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{code.name} {reason or '-'}: {details}")
        self.code = code
        self.reason = reason
        self.details = details
        self.metadata: Mapping[str, str] = dict(metadata or {})

    @property
    def transport(self) -> bool:
        """The call broke on the way (no service gave a reason): safe to re-attach by signal id."""
        return not self.reason and self.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN)

    def __repr__(self) -> str:
        return f"NijaError({self.code.name}, {self.reason!r}, {self.details!r})"


def from_rpc_error(exc: grpc.aio.AioRpcError) -> NijaError:
    """The typed error for a failed call.

    A call that failed because our own task is being cancelled (grpc reports that as CANCELLED)
    raises CancelledError instead: whoever cancels the task must see it end."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
    reason, metadata = error_info(exc)
    return NijaError(exc.code(), reason, exc.details() or "", metadata)


def error_info(exc: grpc.aio.AioRpcError) -> tuple[str, dict[str, str]]:
    """(reason, metadata) of the ErrorInfo in a failed call's status; ("", {}) when it has none."""
    try:
        status = rpc_status.from_call(exc)
    except (ValueError, DecodeError):  # a peer's corrupt or mismatched trailer: no reason, no crash
        return "", {}
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason, dict(info.metadata)
    return "", {}
