"""Who is calling, and may they: bearer tokens, principals, per-method access rules.

Every call except health and reflection carries `authorization: Bearer <token>`. The server's
`AuthInterceptor` turns the token into a `Principal` (through an injected `authenticate`, usually
a `CachingAuthenticator` in front of the permission service) and checks the method's `Rule`:
which kinds of principal may call it, which services, and for user-scoped methods whether the
caller may act for the user the request names. A method without a rule is refused (fail closed),
so a new RPC is unreachable until someone decides who may call it.

Refusals are `google.rpc.Status` errors with one ErrorInfo reason, logged once on the
"nija.security" logger. The token itself is never logged, never put in an error message, and
never kept as a cache key.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import enum
import functools
import hashlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, NoReturn

import grpc
from google.protobuf import descriptor_pool

from services.runtime.errors import ServiceError, to_status
from services.runtime.handlers import Behaviour, rewrap

security_log = logging.getLogger("nija.security")

EXEMPT_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class PrincipalKind(str, enum.Enum):
    USER = "user"
    STRATEGY = "strategy"
    ADMIN = "admin"
    SERVICE = "service"


@dataclasses.dataclass(frozen=True)
class Principal:
    kind: PrincipalKind
    #: user id, strategy id, admin name, or service name ("router", "executor-binance").
    subject: str
    #: for a strategy: the users subscribed to it.
    subscribers: frozenset[str] = frozenset()

    def may_act_for(self, user_id: str) -> bool:
        if self.kind is PrincipalKind.USER:
            return self.subject == user_id
        if self.kind is PrincipalKind.STRATEGY:
            return user_id in self.subscribers
        return self.kind in (PrincipalKind.ADMIN, PrincipalKind.SERVICE)

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.subject}"


Authenticate = Callable[[str], Awaitable[Principal | None]]

_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("nija_principal", default=None)


def current_principal() -> Principal | None:
    """The caller of the RPC being handled (None outside an authenticated call)."""
    return _current.get()


# ---- rules ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Rule:
    #: kinds of principal allowed to call the method.
    kinds: frozenset[PrincipalKind]
    #: when non-empty, a SERVICE principal must be one of these services.
    services: frozenset[str] = frozenset()
    #: user-scoped methods: the user the request acts for; the caller must `may_act_for` it.
    user_of: Callable[[Any], str] | None = None

    def __post_init__(self) -> None:
        if self.services and PrincipalKind.SERVICE not in self.kinds:
            raise ValueError("a rule naming services must allow the SERVICE kind")


_PEOPLE = (PrincipalKind.USER, PrincipalKind.STRATEGY, PrincipalKind.ADMIN)


def user_scoped(
    user_of: Callable[[Any], str],
    *,
    services: Sequence[str] = (),
    kinds: Sequence[PrincipalKind] = _PEOPLE,
) -> Rule:
    """Users (for themselves), strategies (for subscribers), admins, and the named services."""
    allowed = frozenset(kinds) | ({PrincipalKind.SERVICE} if services else set())
    return Rule(kinds=allowed, services=frozenset(services), user_of=user_of)


def services_only(*names: str) -> Rule:
    """Service-to-service methods; with no names, any authenticated service."""
    return Rule(kinds=frozenset({PrincipalKind.SERVICE}), services=frozenset(names))


def admin_only() -> Rule:
    return Rule(kinds=frozenset({PrincipalKind.ADMIN}))


# ---- server side ---------------------------------------------------------------------------------


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates every call and applies the method's `Rule` before the handler runs.

    The check lives inside the wrapped handler behavior, not in `intercept_service`, because a
    user-scoped rule needs the deserialized request and a refusal needs the call's context.
    """

    def __init__(self, rules: Mapping[str, Rule], authenticate: Authenticate) -> None:
        for method, rule in rules.items():
            if rule.user_of is not None and _streams_requests(method):
                raise ValueError(f"{method} streams requests: its rule cannot be user-scoped")
        self._rules = dict(rules)
        self._authenticate = authenticate

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method
        if handler is None or method.startswith(EXEMPT_PREFIXES):
            return handler
        return self._wrap(handler, method, tuple(details.invocation_metadata or ()))

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str, metadata: tuple) -> grpc.RpcMethodHandler:
        admit = self._admit

        # `streamed`: the behaviour reads a request stream, which cannot be user-scoped: its rule
        # is checked without a request.
        def unary(streamed: bool, inner: Behaviour) -> Behaviour:
            async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
                token = _current.set(await admit(method, metadata, context, None if streamed else request))
                try:
                    return await _maybe_await(inner(request, context))
                finally:
                    _reset(token)
            return call

        def streaming(streamed: bool, inner: Behaviour) -> Behaviour:
            async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
                token = _current.set(await admit(method, metadata, context, None if streamed else request))
                try:
                    async for item in _responses(inner(request, context)):
                        yield item
                finally:
                    _reset(token)
            return call

        return rewrap(handler, unary_unary=functools.partial(unary, False), stream_unary=functools.partial(unary, True),
                      unary_stream=functools.partial(streaming, False), stream_stream=functools.partial(streaming, True))

    async def _admit(
        self, method: str, metadata: tuple, context: grpc.aio.ServicerContext, request: Any
    ) -> Principal:
        """The caller's principal if they may make this call; otherwise the call is aborted.
        `request` is None for request-streaming methods (they cannot be user-scoped)."""
        values = [value for key, value in metadata if key == "authorization"]
        if not values:
            await _refuse(context, method, None, grpc.StatusCode.UNAUTHENTICATED, "MISSING_TOKEN",
                          "missing bearer token in 'authorization' metadata")
        scheme, _, bearer = str(values[0]).strip().partition(" ")
        bearer = bearer.strip()
        if len(values) > 1 or scheme.lower() != "bearer" or not bearer:
            await _refuse(context, method, None, grpc.StatusCode.UNAUTHENTICATED, "INVALID_TOKEN",
                          "malformed 'authorization' metadata: expected one 'Bearer <token>'")
        try:
            principal = await self._authenticate(bearer)
        except Exception as exc:  # the auth upstream is down: the caller may retry, we must not crash
            await _refuse(context, method, None, grpc.StatusCode.UNAVAILABLE, "AUTH_UNAVAILABLE",
                          "cannot verify the token now; retry later", error=f"{type(exc).__name__}: {exc}")
        if principal is None:
            await _refuse(context, method, None, grpc.StatusCode.UNAUTHENTICATED, "INVALID_TOKEN",
                          "invalid or unknown bearer token")

        rule = self._rules.get(method)
        if rule is None:
            await _refuse(context, method, principal, grpc.StatusCode.PERMISSION_DENIED, "NO_ACCESS_RULE",
                          f"no access rule for {method}")
        if principal.kind not in rule.kinds or (
            principal.kind is PrincipalKind.SERVICE and rule.services and principal.subject not in rule.services
        ):
            await _refuse(context, method, principal, grpc.StatusCode.PERMISSION_DENIED, "NOT_ALLOWED",
                          f"{principal} may not call {method}")
        if rule.user_of is not None:
            denied = refuse_acting_for(method, principal, rule.user_of(request) if request is not None else None)
            if denied is not None:
                await context.abort_with_status(to_status(denied))
        return principal


def refuse_acting_for(method: str, principal: Principal, user_id: str | None) -> ServiceError | None:
    """None when `principal` may act for `user_id`; otherwise the refusal, logged as a security
    event. The interceptor aborts the call with it; a request stream, whose messages it cannot
    see, refuses just the one message (RouterService/SubmitSignals)."""
    if user_id is not None and principal.may_act_for(user_id):
        return None
    return logged_refusal(method, principal, grpc.StatusCode.PERMISSION_DENIED, "ACTING_FOR_ANOTHER_USER",
                            # At most 40 characters of it: a huge id quoted whole would overflow
                            # the caller's limit on response metadata and hide this refusal.
                            f"{principal} may not act for user {(user_id or '')[:40]!r}")


def logged_refusal(
    method: str, principal: Principal | None, code: grpc.StatusCode, reason: str, message: str, **log_fields: str
) -> ServiceError:
    """Log a refusal once on the security logger; the error to refuse with."""
    security_log.warning(
        "rpc refused: %s", message,
        extra={"method": method, "principal": str(principal or ""), "reason": reason, **log_fields},
    )
    return ServiceError(code, reason, message)


async def _refuse(
    context: grpc.aio.ServicerContext,
    method: str,
    principal: Principal | None,
    code: grpc.StatusCode,
    reason: str,
    message: str,
    **log_fields: str,
) -> NoReturn:
    """Log the security event and abort the call (abort raises; this never returns)."""
    await context.abort_with_status(to_status(logged_refusal(method, principal, code, reason, message, **log_fields)))
    raise AssertionError("unreachable")  # abort_with_status raises


async def _maybe_await(result: Any) -> Any:
    return await result if inspect.isawaitable(result) else result


async def _responses(result: Any) -> Any:
    """A streaming behavior's responses, whether it yields them or writes them with context.write."""
    if hasattr(result, "__aiter__"):
        async for item in result:
            yield item
    else:
        await _maybe_await(result)


def _reset(token: contextvars.Token) -> None:
    # An abandoned response stream may be closed from another context; there is nothing to undo there.
    with contextlib.suppress(ValueError):
        _current.reset(token)


def _streams_requests(method: str) -> bool:
    """Whether "/pkg.Service/Method" takes a request stream, per the loaded proto descriptors."""
    service, _, name = method.strip("/").partition("/")
    try:
        return descriptor_pool.Default().FindMethodByName(f"{service}.{name}").client_streaming
    except KeyError:
        return False


class CachingAuthenticator:
    """`authenticate` with a short-lived cache in front of a remote lookup.

    The TTL is short (seconds) because a revoked token must stop working within seconds; the
    cache exists for bursts, where one signal can mean several calls with the same token.
    Concurrent lookups of one token share a single fetch. Keys are sha256 digests, so the cache
    never holds a usable token. Fetch errors are not cached.
    """

    def __init__(
        self,
        fetch: Authenticate,
        ttl_s: float = 2.0,
        negative_ttl_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 10_000,
    ) -> None:
        self._fetch = fetch
        self._ttl_s = ttl_s
        self._negative_ttl_s = negative_ttl_s
        self._clock = clock
        self._max_entries = max_entries
        self._entries: dict[bytes, tuple[float, Principal | None]] = {}  # digest -> (expires, principal)
        self._inflight: dict[bytes, asyncio.Future[Principal | None]] = {}

    async def __call__(self, token: str) -> Principal | None:
        key = hashlib.sha256(token.encode()).digest()
        cached = self._entries.get(key)
        if cached is not None and cached[0] > self._clock():
            return cached[1]
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.ensure_future(self._fetch_and_store(key, token))
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._forget_inflight(key, done))
        # One caller giving up (deadline, cancel) must not cancel the fetch the others wait for.
        return await asyncio.shield(task)

    def clear(self) -> None:
        """Forget every checked token (one was revoked): the next call of each is checked again."""
        self._entries.clear()

    def _forget_inflight(self, key: bytes, done: asyncio.Future[Principal | None]) -> None:
        if self._inflight.get(key) is done:
            del self._inflight[key]

    async def _fetch_and_store(self, key: bytes, token: str) -> Principal | None:
        principal = await self._fetch(token)
        ttl = self._ttl_s if principal is not None else self._negative_ttl_s
        self._entries.pop(key, None)
        while len(self._entries) >= self._max_entries:  # evict the oldest insertion
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (self._clock() + ttl, principal)
        return principal


# ---- client side ---------------------------------------------------------------------------------


class _BearerToken:
    """Adds our token to a call's metadata unless the caller set an `authorization` of its own.

    Interceptors rather than call credentials: gRPC refuses call credentials on plaintext
    channels, and loopback channels are plaintext.
    """

    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        metadata = grpc.aio.Metadata.from_tuple(tuple(details.metadata or ()))
        if "authorization" in metadata:
            return details
        metadata.add("authorization", self._header)
        return details._replace(metadata=metadata)


class _UnaryUnary(_BearerToken, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return await continuation(self._details(details), request)


class _UnaryStream(_BearerToken, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, details, request):  # type: ignore[no-untyped-def]
        return await continuation(self._details(details), request)


class _StreamUnary(_BearerToken, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, details, request_iterator):  # type: ignore[no-untyped-def]
        return await continuation(self._details(details), request_iterator)


class _StreamStream(_BearerToken, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, details, request_iterator):  # type: ignore[no-untyped-def]
        return await continuation(self._details(details), request_iterator)


def token_interceptors(token: str) -> list[grpc.aio.ClientInterceptor]:
    """Client interceptors (one per call kind: grpc.aio files each under one kind only) that
    send `authorization: Bearer <token>` on every call."""
    if not token:
        raise ValueError("token_interceptors needs a token")
    return [_UnaryUnary(token), _UnaryStream(token), _StreamUnary(token), _StreamStream(token)]
