"""The I/O of `nija status`: gRPC health checks and /metrics scrapes, timed by an injectable clock.

Health needs no token; with TLS it needs the CA (and, for mTLS, a client certificate). The
simulated exchanges stand outside the mesh and are always reached in plaintext on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.runtime.aio import wait_set
from services.runtime.channels import open_channel
from services.runtime.security import Security
from services.status.members import Member
from services.status.promtext import Samples, parse_metrics
from services.status.view import MeshStatus, Scrape, build_view

#: Seconds a single health check or scrape may take.
PROBE_TIMEOUT_S = 2.0


async def _check(channel: grpc.aio.Channel, service: str, timeout: float) -> str:
    try:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout
        )
    except grpc.aio.AioRpcError as exc:
        return exc.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


async def health_status(
    target: str, service: str, timeout: float = PROBE_TIMEOUT_S, security: Security | None = None
) -> str:
    """"SERVING", "NOT_SERVING", ..., or the failed call's status code name ("UNAVAILABLE")."""
    async with open_channel(target, security) as channel:
        return await _check(channel, service, timeout)


async def wait_serving(target: str, service: str, timeout_s: float, security: Security | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        status = await health_status(target, service, timeout=1.0, security=security)
        if status == "SERVING":
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{target} ({service}) is {status} after {timeout_s:g} s")
        await asyncio.sleep(0.1)


async def fetch_metrics(address: str, timeout: float = PROBE_TIMEOUT_S) -> Samples | None:
    """`GET http://address/metrics`, parsed; None when it does not answer 200 with metrics."""
    host, _, port = address.rpartition(":")
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
            try:
                writer.write(f"GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n".encode())
                await writer.drain()
                raw = await reader.read()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (OSError, TimeoutError, ValueError):
        return None
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
        return None
    try:
        return parse_metrics(body.decode())
    except (ValueError, UnicodeDecodeError):
        return None


class Probe:
    """Health and /metrics of every member at one moment (`scrape`), over channels kept open
    between scrapes. `clock` (monotonic seconds) and `now` (wall clock) are for tests."""

    def __init__(
        self,
        members: Sequence[Member],
        security: Security,
        timeout: float = PROBE_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        fetch: Callable[[str, float], Awaitable[Samples | None]] = fetch_metrics,
    ) -> None:
        self.members = tuple(members)
        self._security = security
        self._timeout = timeout
        self._clock = clock
        self._now = now
        self._fetch = fetch
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def __aenter__(self) -> Probe:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close()

    def _channel(self, member: Member) -> grpc.aio.Channel:
        if member.name not in self._channels:
            security = None if member.kind == "simexchange" else self._security
            self._channels[member.name] = open_channel(member.target, security)
        return self._channels[member.name]

    async def scrape(self) -> Scrape:
        at, taken_at = self._clock(), self._now()
        health, metrics = await asyncio.gather(
            asyncio.gather(*(_check(self._channel(m), m.health_name, self._timeout) for m in self.members)),
            asyncio.gather(*(self._fetch(m.metrics, self._timeout) for m in self.members)),
        )
        names = [m.name for m in self.members]
        return Scrape(at=at, taken_at=taken_at, health=dict(zip(names, health)), metrics=dict(zip(names, metrics)))


async def snapshot(
    probe: Probe, interval: float, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
) -> MeshStatus:
    """The mesh now, with rates over `interval` seconds (two scrapes that far apart)."""
    first = await probe.scrape()
    await sleep(interval)
    return build_view(probe.members, first, await probe.scrape())


async def follow(
    probe: Probe, interval: float, show: Callable[[MeshStatus], None], stop: asyncio.Event
) -> MeshStatus:
    """Show the mesh every `interval` seconds (rates over the last interval) until `stop` is
    set; returns the last view. The first view, from one scrape, has no rates yet."""
    previous = await probe.scrape()
    view = build_view(probe.members, None, previous)
    show(view)
    while True:
        await wait_set(stop, interval)
        if stop.is_set():
            return view
        current = await probe.scrape()
        view = build_view(probe.members, previous, current)
        show(view)
        previous = current
