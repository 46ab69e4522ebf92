"""An abusive client, as a process of its own: `python -m tests.integration.abuser TARGET SCENARIO N`.

It does its abuse against the aggregator at TARGET as alice, prints one JSON line saying how it
was answered while it holds what it got (streams, connections), and lets go when its stdin
closes. A process of its own, as a real abuser would be: its client-side work (thousands of calls
to build, send and read) does not run on the event loop of the server under test, and its memory
is not counted as the server's.

Scenarios:
- `streams N`: N idle WatchUpdates streams of alice over 4 connections;
- `connections N`: N connections, a watch stream and a GetOrder on each;
- `oversized N`: N rounds of a 5 MiB id in GetOrder and WatchUpdates, and a ListOrders page of 150
  orders of ~33 KiB each (the ledger cuts it to fit).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter

import grpc
from nija.aggregator.v1 import aggregator_pb2 as a
from nija.aggregator.v1 import aggregator_pb2_grpc

from services.runtime.channels import CHANNEL_OPTIONS
from services.runtime.errors import reason_of

WAIT_S = 30.0  # generous: an upper bound for what should happen promptly, never slept
#: Calls started at once: gRPC core sheds requests (CANCELLED) once 1,000 wait to be accepted.
WAVE = 200


def bearer(who: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer tok-{who}"),)


def connection(target: str, **overrides: int) -> grpc.aio.Channel:
    """Our clients' channel options, some overridden ("grpc." + name, "__" for "."), on a TCP
    connection of its own: channels with equal arguments in one process share a connection, and
    HTTP/2 flow control is per connection."""
    options = dict(CHANNEL_OPTIONS) | {"grpc.use_local_subchannel_pool": 1} | {
        "grpc." + name.replace("__", "."): value for name, value in overrides.items()
    }
    return grpc.aio.insecure_channel(target, options=tuple(options.items()))


async def connections(target: str, count: int) -> list[grpc.aio.Channel]:
    """`count` connected channels, connected 50 at a time: a client connecting hundreds at once
    overflows the listen backlog and sees its own connects fail (UNAVAILABLE)."""
    channels = [connection(target) for _ in range(count)]
    for start in range(0, count, 50):
        await asyncio.wait_for(asyncio.gather(*(ch.channel_ready() for ch in channels[start:start + 50])), WAIT_S)
    return channels


def ledger_stub(channel: grpc.aio.Channel) -> aggregator_pb2_grpc.AggregatorServiceStub:
    return aggregator_pb2_grpc.AggregatorServiceStub(channel)


def watch(channel: grpc.aio.Channel, user: str) -> grpc.aio.UnaryStreamCall:
    return ledger_stub(channel).WatchUpdates(a.WatchUpdatesRequest(user_id=user), metadata=bearer(user))


async def first(call: grpc.aio.UnaryStreamCall) -> a.WatchUpdatesResponse | grpc.aio.AioRpcError:
    """The stream's first message, or how it was refused."""
    try:
        return await asyncio.wait_for(call.read(), WAIT_S)
    except grpc.aio.AioRpcError as exc:
        return exc


def answer(exc: grpc.aio.AioRpcError) -> str:
    return f"{exc.code().name} {reason_of(exc)}".strip()


async def open_in_waves(
    channels: list[grpc.aio.Channel], count: int, user: str
) -> tuple[list[grpc.aio.UnaryStreamCall], Counter[str]]:
    """`count` watch streams of `user` round-robin over `channels`: the admitted calls, and the
    refusals counted by code and reason. A refusal's error is not kept: its traceback holds the
    whole call."""
    admitted: list[grpc.aio.UnaryStreamCall] = []
    refused: Counter[str] = Counter()
    for start in range(0, count, WAVE):
        calls = [watch(channels[i % len(channels)], user) for i in range(start, min(count, start + WAVE))]
        for call, result in zip(calls, await asyncio.gather(*(first(call) for call in calls))):
            if isinstance(result, grpc.aio.AioRpcError):
                refused[answer(result)] += 1
            else:
                admitted.append(call)
    return admitted, refused


async def streams(target: str, count: int) -> tuple[dict[str, object], list[grpc.aio.Channel]]:
    channels = [connection(target) for _ in range(4)]
    admitted, refused = await open_in_waves(channels, count, "alice")
    return {"admitted": len(admitted), "refused": refused}, channels


async def flood(target: str, count: int) -> tuple[dict[str, object], list[grpc.aio.Channel]]:
    channels = await connections(target, count)
    admitted, refused = await open_in_waves(channels, count, "alice")
    unary: Counter[str] = Counter()
    for start in range(0, count, WAVE):
        for result in await asyncio.gather(*(
            ledger_stub(ch).GetOrder(a.GetOrderRequest(user_id="alice", signal_id="a-0"), metadata=bearer("alice"), timeout=WAIT_S)
            for ch in channels[start:start + WAVE]
        ), return_exceptions=True):
            unary["OK" if isinstance(result, a.GetOrderResponse) else answer(result)] += 1
    return {"admitted": len(admitted), "refused": refused, "unary": unary}, channels


async def oversized(target: str, rounds: int) -> tuple[dict[str, object], list[grpc.aio.Channel]]:
    channel = connection(target)
    alice = ledger_stub(channel)
    huge = "x" * (5 * 1024 * 1024)
    answers: Counter[str] = Counter()
    for _ in range(rounds):
        for call in (
            alice.GetOrder(a.GetOrderRequest(user_id="alice", signal_id=huge), metadata=bearer("alice"), timeout=WAIT_S),
            first(alice.WatchUpdates(a.WatchUpdatesRequest(user_id=huge), metadata=bearer("alice"))),
            alice.ListOrders(a.ListOrdersRequest(user_id="alice", page_size=150), metadata=bearer("alice"), timeout=WAIT_S),
        ):
            try:
                result = await call
            except grpc.aio.AioRpcError as exc:
                result = exc
            answers[answer(result) if isinstance(result, grpc.aio.AioRpcError) else "OK"] += 1
    return {"answers": answers}, [channel]


SCENARIOS = {"streams": streams, "connections": flood, "oversized": oversized}


async def main(target: str, scenario: str, count: int) -> None:
    result, channels = await SCENARIOS[scenario](target, count)
    print(json.dumps(result), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # held until stdin closes
    for channel in channels:
        await channel.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
