"""CPU per PermissionService/ReserveTrade in the permission server, in one run.

    .venv/bin/python tools/bench_permission.py [--reserves 2000] [--concurrency 100] [--users 20]
                                               [--rounds 2] [--database-url postgresql://...]

Starts a real permission server on port 0 in this process (SQLite in a temporary directory unless
--database-url names a PostgreSQL database; JSON logs at INFO, written to /dev/null, as
`nija serve` formats them), creates `--users` users with every risk limit set (so every check
runs) and the rate limit out of the way, and drives it from a client in a child process: the
server's CPU (time.process_time of this process) is then the permission service's alone.

Each round sends `--reserves` ReserveTrade calls ($100 BTC-USD buys, users in turn) at
`--concurrency`. Nothing ever fills, so every reservation stays open: round after round, each user
has more open reservations, which is what shows a per-call cost that grows with them. For scale, a
last round sends as many grpc.health.v1.Health/Check calls through the same server (the per-RPC
floor of grpc.aio here). Prints server CPU per call, client CPU per call and wall time per round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import pathlib
import sys
import tempfile
import time
from decimal import Decimal

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nija.common.v1 import common_pb2
from nija.permission.v1 import permission_pb2, permission_pb2_grpc

from services.permission import app as permission_app
from services.permission.bootstrap import issue_mesh_tokens
from services.permission.permissions import RiskLimits, UserPermissions
from services.permission.store import UserStore
from services.runtime.config import load_config
from services.runtime.logging import JsonFormatter
from services.runtime.security import Security
from services.runtime.server import Listen, RunningServer

#: Limits far above what the bench reserves, so every reserve is allowed after every check ran.
LIMITS = RiskLimits(
    max_position_usd=Decimal("1e12"), max_open_positions=100, max_daily_notional_usd=Decimal("1e12"),
    max_daily_loss_usd=Decimal("1e12"), trades_per_second=Decimal("1000000"), trade_burst=1000000,
)


def _users(count: int) -> list[str]:
    return [f"bench-{i:03d}" for i in range(count)]


# The client: a child process, so that the server's process_time is the server's own.


async def client(target: str, token: str, users: list[str], concurrency: int) -> None:
    """Reads "<kind> <first> <count>" lines from stdin, runs them, answers each with one JSON line."""
    options = [("grpc.primary_user_agent", "bench-permission")]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        metadata = (("authorization", f"Bearer {token}"),)
        permission = permission_pb2_grpc.PermissionServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            kind, first, count = line.split()
            numbers = iter(range(int(first), int(first) + int(count)))
            refused: dict[str, int] = {}

            async def worker() -> None:
                for i in numbers:
                    try:
                        if kind == "reserve":
                            response = await permission.ReserveTrade(permission_pb2.ReserveTradeRequest(
                                user_id=users[i % len(users)], pair="BTC-USD", side=common_pb2.SIDE_BUY,
                                size_usd="100", signal_id=f"bench-{i}"), metadata=metadata, timeout=30)
                            if not response.allowed:
                                refused[response.reason[:60]] = refused.get(response.reason[:60], 0) + 1
                        else:
                            await health.Check(health_pb2.HealthCheckRequest(), timeout=30)
                    except grpc.aio.AioRpcError as exc:
                        refused[exc.code().name] = refused.get(exc.code().name, 0) + 1

            cpu, wall = time.process_time(), time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            print(json.dumps({"client_cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall,
                              "refused": refused}), flush=True)


# The server, and the rounds.


async def bench(reserves: int, concurrency: int, users: int, rounds: int, database_url: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        database = database_url or str(pathlib.Path(tmp) / "permission.db")
        names = _users(users)
        tokens = await issue_mesh_tokens(database, ["router"], seed_demo_users=False)
        store = UserStore(database)
        await store.open()
        for name in names:
            await store.upsert(UserPermissions(
                user_id=name, enabled=True, allowed_brokers=("binance", "coinbase", "kraken", "alpaca"),
                allowed_pairs=(), max_order_size_usd=Decimal("100000"), limits=LIMITS))
        await store.close()
        config = load_config(permission_app.Config, {"database_path": database, "database_url": database_url,
                                                      "seed_demo_users": "false"})
        server = await RunningServer(permission_app.build_app(config, Security()), Listen(port=0)).start()
        child = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--client", server.target, "--token", tokens.services["router"],
            "--users", str(users), "--concurrency", str(concurrency),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        assert child.stdin is not None and child.stdout is not None
        sent = 0

        async def run(kind: str, count: int) -> dict:
            nonlocal sent
            cpu = time.process_time()
            child.stdin.write(f"{kind} {sent} {count}\n".encode())
            await child.stdin.drain()
            result = json.loads(await child.stdout.readline())
            result["server_cpu_s"] = time.process_time() - cpu
            sent += count
            return result

        try:
            await run("reserve", min(reserves, 200))  # warm up (imports, first connections, caches)
            print(f"permission server: {database_url and 'postgresql' or 'sqlite'}, {users} users, "
                  f"concurrency {concurrency}, JSON logs at INFO")
            print(f"{'round':<28}{'server CPU/call':>17}{'client CPU/call':>17}{'wall/call':>12}  refused")
            for number in range(1, rounds + 2):
                kind = "reserve" if number <= rounds else "health"
                open_before = sent // users if kind == "reserve" else 0
                label = (f"reserve {number} ({open_before}+ open/user)" if kind == "reserve"
                         else "Health/Check (floor)")
                r = await run(kind, reserves)
                print(f"{label:<28}{r['server_cpu_s'] / reserves * 1e3:>14.3f} ms"
                      f"{r['client_cpu_s'] / reserves * 1e3:>14.3f} ms{r['wall_s'] / reserves * 1e3:>9.3f} ms"
                      f"  {r['refused'] or ''}")
        finally:
            child.stdin.close()
            await child.wait()
            await server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reserves", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        asyncio.run(client(args.client, args.token, _users(args.users), args.concurrency))
        return
    # As `nija serve` logs (services.runtime.logging), to /dev/null: the formatting is what costs.
    handler = logging.StreamHandler(open(os.devnull, "w"))
    handler.setFormatter(JsonFormatter("permission"))
    logging.getLogger().handlers[:] = [handler]
    logging.getLogger().setLevel(logging.INFO)
    asyncio.run(bench(args.reserves, args.concurrency, args.users, args.rounds, args.database_url))


if __name__ == "__main__":
    main()
