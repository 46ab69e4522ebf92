"""Rebuilding a gRPC method handler around its behaviour, for interceptors.

A `grpc.RpcMethodHandler` has one behaviour, under one of four names by its kind; an interceptor
that wraps it must rebuild the handler of the same kind with the same codecs. `rewrap` does that
once for all of them (the malformed-request check, authentication, per-principal limits).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

Behaviour = Callable[..., Any]
Wrap = Callable[[Behaviour], Behaviour]

_MAKERS = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


def rewrap(
    handler: grpc.RpcMethodHandler,
    *,
    request_deserializer: Callable[[bytes], Any] | None = None,
    unary_unary: Wrap | None = None,
    unary_stream: Wrap | None = None,
    stream_unary: Wrap | None = None,
    stream_stream: Wrap | None = None,
) -> grpc.RpcMethodHandler:
    """`handler` with its behaviour wrapped by the wrapper given for its kind (none given: the
    handler as it is), and its request deserializer replaced when one is given."""
    wrappers = {"unary_unary": unary_unary, "unary_stream": unary_stream,
                "stream_unary": stream_unary, "stream_stream": stream_stream}
    for kind, make in _MAKERS.items():
        behaviour = getattr(handler, kind)
        if behaviour is None:
            continue
        wrap = wrappers[kind]
        if wrap is None and request_deserializer is None:
            return handler
        return make(
            wrap(behaviour) if wrap is not None else behaviour,
            request_deserializer=request_deserializer or handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler
