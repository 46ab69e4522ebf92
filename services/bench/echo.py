"""The bare grpc.aio baseline: an echo server with nothing behind it, as its own process.

    python -m services.bench.echo --port-file FILE

What the mesh's throughput is measured against: the most this machine's grpc.aio stack moves at
the same concurrency and message size, one server process and one client process, as the mesh's
router and the load generator are. Bytes in, the same bytes out, no (de)serialization.
`Unary` answers once; `Stream` (bidirectional) answers each request `n` times (metadata `n`,
default 1), as the mesh answers a signal with its updates.
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import signal
from collections.abc import AsyncIterator

import grpc

SERVICE = "nija.bench.Echo"
UNARY = f"/{SERVICE}/Unary"
STREAM = f"/{SERVICE}/Stream"


async def _unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def _stream(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    n = int(dict(context.invocation_metadata() or ()).get("n", "1"))
    async for request in requests:
        for _ in range(n):
            yield request


async def serve(port_file: pathlib.Path) -> None:
    server = grpc.aio.server(options=(("grpc.so_reuseport", 0),))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
        "Unary": grpc.unary_unary_rpc_method_handler(_unary),
        "Stream": grpc.stream_stream_rpc_method_handler(_stream),
    }),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(port))
    tmp.replace(port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port-file", required=True, type=pathlib.Path)
    asyncio.run(serve(parser.parse_args().port_file))


if __name__ == "__main__":
    main()
