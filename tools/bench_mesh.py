"""Sustained throughput of the whole mesh against the bare gRPC limit of this machine, in one run.

    .venv/bin/python tools/bench_mesh.py [--signals 3000] [--concurrency 200] [--users 100]

Starts `nija up --auto-ports` (real processes, simulated exchanges, no added latency), creates
`--users` users with limits out of the way, and sends `--signals` market orders ($100, four
brokers list the pair) through RouterService/SubmitSignal at `--concurrency`, each read to its
terminal update. Then, on the same machine and at the same concurrency, a bare grpc.aio echo
server: unary, and server-streaming with as many messages as a signal's stream had, each the size
of a TradeSignal. Prints throughput, the mesh's ratio to each echo, and latency percentiles. A first
step of issue 10's `nija bench` (its targets: >= 0.25x the echo; terminal p99 < 250 ms at 200).
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import signal
import tempfile
import time

import grpc
from bench_routing import percentiles, start_mesh, token
from nija.common.v1 import common_pb2
from nija.permission.v1 import permission_pb2, permission_pb2_grpc
from nija.router.v1 import router_pb2, router_pb2_grpc

from services.runtime.channels import open_channel


async def make_users(permission: str, admin, count: int) -> list[str]:
    users = [f"bench-{i:04d}" for i in range(count)]
    async with open_channel(permission, admin) as channel:
        stub = permission_pb2_grpc.AdminServiceStub(channel)
        await asyncio.gather(*(stub.PutUser(permission_pb2.PutUserRequest(user=permission_pb2.UserPermissions(
            user_id=u, enabled=True, allowed_brokers=["binance", "coinbase", "kraken", "alpaca"],
            max_order_size_usd="100000",
            limits=permission_pb2.RiskLimits(trades_per_second="100000", trade_burst=100000)))) for u in users))
    return users


def _signal(i: int, user: str) -> common_pb2.TradeSignal:
    pb = common_pb2.TradeSignal(signal_id=f"bench-{i}", user_id=user, pair="BTC-USD", side=common_pb2.SIDE_BUY,
                                size_usd="100", signal_type=common_pb2.SIGNAL_TYPE_EXIT, strategy="bench")
    pb.timestamp.GetCurrentTime()
    return pb


async def bench_mesh(
    router: str, admin, users: list[str], count: int, concurrency: int, timeout_s: float = 60.0
) -> dict:
    first: list[int] = []
    terminal: list[int] = []
    messages: list[int] = []
    statuses: dict[str, int] = {}
    async with open_channel(router, admin) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        counter = iter(range(count))

        async def worker() -> None:
            for i in counter:
                started = time.perf_counter_ns()
                seen = 0
                last = None
                try:
                    async for response in stub.SubmitSignal(
                        router_pb2.SubmitSignalRequest(signal=_signal(i, users[i % len(users)])), timeout=timeout_s
                    ):
                        if seen == 0:
                            first.append(time.perf_counter_ns() - started)
                        seen += 1
                        last = response.update
                except grpc.aio.AioRpcError as exc:
                    statuses[exc.code().name] = statuses.get(exc.code().name, 0) + 1
                    continue
                terminal.append(time.perf_counter_ns() - started)
                messages.append(seen)
                name = common_pb2.ExecutionStatus.Name(last.status) if last is not None else "none"
                statuses[name] = statuses.get(name, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"elapsed": elapsed, "first": first, "terminal": terminal, "statuses": statuses,
            "messages": sum(messages) / max(1, len(messages))}


class _Echo:
    """A bare service: unary echo, and an echo streamed back `n` times."""

    async def unary(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    async def stream(self, request: bytes, context: grpc.aio.ServicerContext):
        for _ in range(int(dict(context.invocation_metadata()).get("n", "5"))):
            yield request


async def bench_echo(count: int, concurrency: int, payload: bytes, streamed: int) -> tuple[float, float]:
    server = grpc.aio.server()
    echo = _Echo()
    handler = grpc.method_handlers_generic_handler("bench.Echo", {
        "Unary": grpc.unary_unary_rpc_method_handler(echo.unary),
        "Stream": grpc.unary_stream_rpc_method_handler(echo.stream),
    })
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            unary = channel.unary_unary("/bench.Echo/Unary")
            stream = channel.unary_stream("/bench.Echo/Stream")

            async def run(call) -> float:
                counter = iter(range(count))

                async def worker() -> None:
                    for _ in counter:
                        await call()

                started = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(concurrency)))
                return count / (time.perf_counter() - started)

            async def one_stream() -> None:
                async for _ in stream(payload, metadata=(("n", str(streamed)),)):
                    pass

            unary_rate = await run(lambda: unary(payload))
            stream_rate = await run(one_stream)
        return unary_rate, stream_rate
    finally:
        await server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signals", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--users", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = pathlib.Path(tmp)
        up, targets = start_mesh(data)
        admin = token(data, "admin")
        try:
            users = asyncio.run(make_users(targets["permission"], admin, args.users))
            asyncio.run(bench_mesh(targets["router"], admin, users, 200, 50))  # warm-up
            mesh = asyncio.run(bench_mesh(targets["router"], admin, users, args.signals, args.concurrency))
        finally:
            up.send_signal(signal.SIGTERM)
            up.wait(timeout=60)
    payload = _signal(0, "bench-0000").SerializeToString()
    streamed = round(mesh["messages"])
    unary_rate, stream_rate = asyncio.run(bench_echo(max(args.signals * 4, 10000), args.concurrency, payload, streamed))
    rate = args.signals / mesh["elapsed"]
    print(f"mesh: {args.signals} signals at concurrency {args.concurrency} in {mesh['elapsed']:.2f} s = "
          f"{rate:.0f} signals/s; outcomes {mesh['statuses']}; {mesh['messages']:.1f} updates per signal")
    print(f"  submit -> first update: {percentiles(mesh['first'])}")
    print(f"  submit -> terminal:     {percentiles(mesh['terminal'])}")
    print(f"bare grpc.aio echo, same machine, concurrency and message size ({len(payload)} bytes): "
          f"unary {unary_rate:.0f}/s, streaming x{streamed} {stream_rate:.0f}/s")
    print(f"mesh / echo: {rate / unary_rate:.3f} of unary, {rate / stream_rate:.3f} of streaming "
          f"(issue 10 target: >= 0.25)")


if __name__ == "__main__":
    main()
