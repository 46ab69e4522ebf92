"""`nija`: run one service, the whole local mesh, a trade, or a health check.

  nija up [--demo] [--tls]    every service as its own process (and the TradingView webhook gateway); Ctrl-C stops them all
  nija serve SERVICE          one service (what `up`, containers and Kubernetes run)
  nija trade --user U ...     submit a signal and print each update as it streams
  nija status [--watch|--json] every service's health, each broker's breaker, queue and flow
  nija bench [--quick]        the mesh's benchmark against the issue's targets (services.bench)
  nija chaos [--seed N]       the mesh under load while services are killed and exchanges fail; then a reconciliation
  nija users|tokens|keys|limits|kill-switch|strategies|positions|certs|ledger export
                              administration and accounting (services.admin_cli)
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import grpc
from nija.permission.v1 import permission_pb2, permission_pb2_grpc

from services import admin_cli, trace_view
from services.client import NijaClient, client_environ, make_signal, stream_trade
from services.domain.brokers import BROKERS, DEFAULT_PORTS, GATEWAY_HTTP_PORT
from services.domain.states import Status
from services.gateway.alerts import hash_passphrase
from services.permission.bootstrap import UP_MARK, Issued, issue_mesh_tokens
from services.permission.client import KIND_TO_PB
from services.permission.demo import DEMO_USERS
from services.runtime import tracing
from services.runtime.aio import wait_set
from services.runtime.auth import PrincipalKind
from services.runtime.certs import make_dev_certs
from services.runtime.channels import open_channel
from services.runtime.config import (
    ConfigError,
    env_values,
    load_config,
    parse_assignments,
)
from services.runtime.logging import configure_logging
from services.runtime.security import Security, load_security
from services.runtime.server import Listen, serve
from services.status.members import HEALTH_NAMES, read_manifest
from services.status.probe import Probe, follow, snapshot, wait_serving

if TYPE_CHECKING:
    from rich.console import Console

# Service kind -> module exposing `Config` and `build_app(config)`.
SERVICE_MODULES = {
    "simexchange": "services.simexchange.app",
    "aggregator": "services.aggregator.app",
    "permission": "services.permission.app",
    "executor": "services.executor.app",
    "router": "services.router.app",
    "gateway": "services.gateway.app",
}

#: Services that call others, and so need a service token of their own.
CALLERS = {"router", "aggregator", "executor"}


# ---- serve ---------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    module = importlib.import_module(SERVICE_MODULES[args.service])
    values = env_values(module.Config, f"NIJA_{args.service.upper()}")
    if os.environ.get("NIJA_DATABASE_URL") and "database_url" in {f.name for f in dataclasses.fields(module.Config)}:
        values.setdefault("database_url", os.environ["NIJA_DATABASE_URL"])
    values.update(parse_assignments(args.set))
    name = args.service if args.service != "executor" else f"executor-{values.get('broker', 'binance')}"
    configure_logging(name, args.log_level)
    tracing.configure(name)  # only if OTEL_* / NIJA_TRACE_DIR ask for it
    try:
        config = load_config(module.Config, values)
        security = load_security(os.environ)
        if args.service in CALLERS and not security.token:
            raise ConfigError(
                f"{name} calls other services and needs its own token: set NIJA_SERVICE_TOKEN or "
                f"NIJA_SERVICE_TOKEN_FILE (`nija tokens create --kind service --subject {name}`)"
            )
    except (ConfigError, TypeError) as exc:
        print(f"nija serve {args.service}: {exc}", file=sys.stderr)
        return 2
    port = args.port if args.port is not None else DEFAULT_PORTS.get(name, 0)
    metrics_port = args.metrics_port if args.metrics_port is not None else (port + 1000 if port else 0)
    listen = Listen(host=args.host, port=port, port_file=args.port_file, grace_s=args.grace,
                    metrics_port=None if metrics_port < 0 else metrics_port)
    try:
        asyncio.run(_serve(module, config, listen, security))
    except ConfigError as exc:
        print(f"nija serve {args.service}: {exc}", file=sys.stderr)
        return 2
    return 0


async def _serve(module: Any, config: Any, listen: Listen, security: Security) -> None:
    # Built inside the running loop: grpc.aio channels belong to the loop they are created in.
    await serve(module.build_app(config, security), listen, security)


# ---- up ------------------------------------------------------------------------------------------

#: The demo strategy `nija up` runs behind the webhook gateway: its passphrase (printed; only its
#: sha256 is in the strategies file), the TradingView tickers it takes, and how much of each alert
#: the demo users trade (the three allocation rules).
DEMO_STRATEGY = "tv-demo"
DEMO_PASSPHRASE = "demo-passphrase"
DEMO_TICKERS = {
    "BTCUSD": "BTC-USD", "BTCUSDT": "BTC-USD", "ETHUSD": "ETH-USD", "ETHUSDT": "ETH-USD",
    "SOLUSD": "SOL-USD", "SOLUSDT": "SOL-USD", "BNBUSD": "BNB-USD", "BNBUSDT": "BNB-USD",
}
DEMO_ALLOCATIONS = {
    "alice": permission_pb2.Allocation(fixed_usd="150"),
    "bob": permission_pb2.Allocation(multiplier="0.5"),
    "dave": permission_pb2.Allocation(
        percent_of_capital=permission_pb2.PercentOfCapital(percent="1", capital_usd="20000")
    ),
}


def _write_private(path: pathlib.Path, text: str) -> None:
    """A secret file only its owner can read (created 0600, never world-readable for a moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text + "\n")


def _tls_security(certs: pathlib.Path, name: str) -> Security:
    return Security(
        tls_cert_file=str(certs / f"{name}.pem"), tls_key_file=str(certs / f"{name}-key.pem"),
        tls_ca_file=str(certs / "ca.pem"),
    )


@dataclasses.dataclass
class Child:
    name: str  # "router", "executor-kraken", ...
    kind: str  # SERVICE_MODULES key
    settings: dict[str, str]
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    port: int = 0
    metrics_port: int = 0
    #: The HTTP listener of a service that has one (the gateway's webhooks).
    http_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log_path: pathlib.Path | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


class Mesh:
    """The local mesh as child processes, started in dependency order and stopped in reverse."""

    def __init__(
        self,
        data_dir: pathlib.Path,
        auto_ports: bool,
        extra: dict[str, dict[str, str]],
        tls: bool = False,
        routers: int = 1,
        live: Sequence[str] = (),
        emulate: bool = False,
    ) -> None:
        self.data_dir = data_dir
        self.routers = routers
        #: Brokers whose executors use the live ccxt venue: against the local exchange emulators
        #: with `emulate`, else against the real exchanges (real money).
        self.live = tuple(live)
        self.emulate = emulate
        self.auto_ports = auto_ports
        self.extra = extra
        self.tls = tls
        self.children: list[Child] = []
        self.tokens: Issued | None = None
        #: How this process (and tests) reach the services: TLS with the "client" certificate
        #: when the mesh runs TLS; no token (health needs none; callers add theirs).
        self.client_security = Security()

    def _port(self, name: str) -> int:
        if self.auto_ports:
            return 0
        if name.startswith("router-"):  # replicas 2, 3, ...: 50151, 50251, ...
            return DEFAULT_PORTS["router"] + 100 * (int(name.split("-")[1]) - 1)
        return DEFAULT_PORTS[name]

    async def start(self) -> None:
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        (self.data_dir / "run").mkdir(parents=True, exist_ok=True)
        await self._issue_tokens()
        if self.tls:
            certs = self.data_dir / "certs"
            make_dev_certs(certs, [*admin_cli.MESH_SERVICES, "gateway", "client"])
            self.client_security = _tls_security(certs, "client")
        emulated = self.live if self.emulate else ()
        ports_file = self.data_dir / "run" / "emulators.json"
        ports_file.unlink(missing_ok=True)
        sim = await self._spawn(
            Child("simexchange", "simexchange",
                  {"emulate": ",".join(emulated), "emulator_ports_file": str(ports_file)} if emulated else {})
        )
        exchange_urls = (
            {b: f"http://127.0.0.1:{port}" for b, port in json.loads(ports_file.read_text()).items()} if emulated else {}
        )
        # The permission service first: every other service checks its callers' tokens with it.
        permission = await self._spawn(
            Child("permission", "permission", {"database_path": str(self.data_dir / "permission.db")})
        )
        market_keys: dict[str, pathlib.Path] = {}
        if emulated:
            await wait_serving(permission.target, HEALTH_NAMES["permission"], 60.0, self.client_security)
            market_keys = await self._provision_emulator_keys(permission.target, exchange_urls)
        aggregator = await self._spawn(
            Child(
                "aggregator",
                "aggregator",
                {"database_path": str(self.data_dir / "aggregator.db"), "permission_target": permission.target},
            )
        )
        executors = [
            await self._spawn(
                Child(
                    f"executor-{broker}",
                    "executor",
                    {
                        "broker": broker,
                        "simexchange_target": sim.target,
                        "aggregator_target": aggregator.target,
                        "permission_target": permission.target,
                        "journal_path": str(self.data_dir / f"executor-{broker}.journal.db"),
                        **self._venue_settings(broker, exchange_urls, market_keys),
                    },
                )
            )
            for broker in BROKERS
        ]
        # Routers are stateless replicas: any number of them share the same upstreams.
        routers = []
        for replica in range(1, self.routers + 1):
            routers.append(await self._spawn(
                Child(
                    "router" if replica == 1 else f"router-{replica}",
                    "router",
                    {
                        "permission_target": permission.target,
                        "aggregator_target": aggregator.target,
                        "executor_targets": ",".join(f"{c.settings['broker']}={c.target}" for c in executors),
                    },
                )
            ))
        # The webhook gateway last: its demo strategy's token and subscriptions come from the
        # permission service (long up by now), and it calls the router.
        strategies = await self._provision_demo_strategy(permission.target)
        await self._spawn(
            Child(
                "gateway",
                "gateway",
                {
                    "router_target": routers[0].target,
                    "strategies_file": str(strategies),
                    "http_port": "0" if self.auto_ports else str(GATEWAY_HTTP_PORT),
                    "http_port_file": str(self.data_dir / "run" / "gateway.http.port"),
                },
            )
        )
        await asyncio.gather(
            *(wait_serving(c.target, HEALTH_NAMES[c.kind], 60.0, self._security_to(c)) for c in self.children)
        )
        self._write_manifest()

    def _venue_settings(
        self, broker: str, exchange_urls: dict[str, str], market_keys: dict[str, pathlib.Path]
    ) -> dict[str, str]:
        if broker not in self.live:
            return {}
        if broker in exchange_urls:
            return {"venue": "ccxt", "exchange_url": exchange_urls[broker], "market_keys_file": str(market_keys[broker])}
        return {"venue": "ccxt", "live": "true"}

    async def _provision_emulator_keys(self, permission: str, exchange_urls: dict[str, str]) -> dict[str, pathlib.Path]:
        """Each demo user gets an API key from each emulated exchange, stored (sealed) in the key
        store the way `nija keys set` stores a real one; each executor gets an operator key for
        market reads, in a 0600 file. Returns {broker: that file}."""
        import aiohttp  # only here: the emulators' admin path is plain HTTP

        assert self.tokens is not None
        security = dataclasses.replace(self.client_security, token=self.tokens.admin)
        files = {}
        async with aiohttp.ClientSession() as http, open_channel(permission, security) as channel:

            async def issue(url: str, account_id: str) -> dict[str, str]:
                async with http.post(f"{url}/emulator/keys", json={"account_id": account_id}) as resp:
                    resp.raise_for_status()
                    return await resp.json()  # type: ignore[no-any-return]

            admin = permission_pb2_grpc.AdminServiceStub(channel)
            for broker, url in exchange_urls.items():
                for user in DEMO_USERS:
                    key = await issue(url, user.user_id)
                    credentials = permission_pb2.ApiCredentials(api_key=key["api_key"], api_secret=key["secret"])
                    await admin.SetApiKeys(
                        permission_pb2.SetApiKeysRequest(user_id=user.user_id, broker=broker, credentials=credentials),
                        timeout=10,
                    )
                key = await issue(url, "nija-market-data")
                files[broker] = self.data_dir / "market-keys" / f"{broker}.json"
                _write_private(files[broker], json.dumps({"api_key": key["api_key"], "api_secret": key["secret"]}))
        return files

    async def _provision_demo_strategy(self, permission: str) -> pathlib.Path:
        """The demo strategy of the webhook gateway: a STRATEGY token minted through AdminService
        (written 0600), alice, bob and dave subscribed with different allocation rules, and the
        gateway's strategies file. Returns that file."""
        assert self.tokens is not None
        await wait_serving(permission, HEALTH_NAMES["permission"], 60.0, self.client_security)
        security = dataclasses.replace(self.client_security, token=self.tokens.admin)
        async with open_channel(permission, security) as channel:
            admin = permission_pb2_grpc.AdminServiceStub(channel)
            created = await admin.CreateToken(
                permission_pb2.CreateTokenRequest(
                    kind=KIND_TO_PB[PrincipalKind.STRATEGY], subject=DEMO_STRATEGY, description=UP_MARK
                ),
                timeout=10,
            )
            for user, allocation in DEMO_ALLOCATIONS.items():
                request = permission_pb2.SetSubscriptionRequest(
                    strategy_id=DEMO_STRATEGY, user_id=user, subscribed=True, allocation=allocation
                )
                try:
                    await admin.SetSubscription(request, timeout=10)
                except grpc.aio.AioRpcError as exc:  # the mesh still comes up; the demo strategy is short of a user
                    print(f"nija up: subscribing {user} to {DEMO_STRATEGY} failed: {exc.code().name} {exc.details()}",
                          file=sys.stderr)
        directory = self.data_dir / "gateway"
        _write_private(directory / f"{DEMO_STRATEGY}.token", created.token)
        strategies = {"strategies": [{
            "strategy_id": DEMO_STRATEGY,
            "passphrase_sha256": hash_passphrase(DEMO_PASSPHRASE),
            "token_file": f"{DEMO_STRATEGY}.token",
            "tickers": DEMO_TICKERS,
            "reference_capital_usd": "10000",
            "rate_per_minute": 60,
            "burst": 10,
        }]}
        path = directory / "strategies.json"
        _write_private(path, json.dumps(strategies, indent=2))
        return path

    def _security_to(self, child: Child) -> Security:
        # The simulated exchanges stand outside the mesh: plaintext on loopback, like before.
        return Security() if child.kind == "simexchange" else self.client_security

    async def _issue_tokens(self) -> None:
        """A token per calling service, an admin token and the demo users' tokens, minted into
        the permission database before it starts; the admin's and users' written 0600."""
        database = os.environ.get("NIJA_DATABASE_URL") or str(self.data_dir / "permission.db")
        callers = ["router", "aggregator", *(f"executor-{b}" for b in BROKERS)]
        self.tokens = await issue_mesh_tokens(database, callers, [u.user_id for u in DEMO_USERS])
        _write_private(self.data_dir / "admin.token", self.tokens.admin)
        for user, token in self.tokens.users.items():
            _write_private(self.data_dir / "tokens" / f"{user}.token", token)

    def _child_env(self, child: Child) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NIJA_SERVICE_TOKEN", "NIJA_TLS_"))}
        assert self.tokens is not None
        # Router replicas share the router's identity (its token and certificate).
        identity = "router" if child.kind == "router" else child.name
        if identity in self.tokens.services:
            env["NIJA_SERVICE_TOKEN"] = self.tokens.services[identity]
        if self.tls and child.kind != "simexchange":
            certs = self.data_dir / "certs"
            env.update(
                NIJA_TLS_CERT=str(certs / f"{identity}.pem"),
                NIJA_TLS_KEY=str(certs / f"{identity}-key.pem"),
                NIJA_TLS_CA=str(certs / "ca.pem"),
            )
        return env

    async def restart(self, name: str) -> Child:
        """kill -9 one service and start it again on the same ports, as a crashed process that
        its supervisor restarts: its peers' channels find it where it was. Returns once it
        listens; whether it serves is its own health's to say (an executor whose exchange is
        down starts with its breaker open)."""
        index, old = next((i, c) for i, c in enumerate(self.children) if c.name == name)
        assert old.process is not None
        old.process.kill()
        old.process.wait()
        del self.children[index]
        child = await self._spawn(Child(old.name, old.kind, old.settings, old.env), (old.port, old.metrics_port))
        self.children.insert(index, self.children.pop())  # back in its place in the start order
        self._write_manifest()
        return child

    async def _spawn(self, child: Child, ports: tuple[int, int] | None = None) -> Child:
        """Start `child` on its configured port (0: any), or on `ports` (gRPC, metrics) again."""
        child.settings.update(self.extra.get(child.name, {}))
        port_file = self.data_dir / "run" / f"{child.name}.port"
        port_file.unlink(missing_ok=True)
        pathlib.Path(f"{port_file}.metrics").unlink(missing_ok=True)
        child.log_path = self.data_dir / "logs" / f"{child.name}.log"
        port = self._port(child.name)
        port, metrics_port = ports or (port, port + 1000 if port else 0)
        cmd = [
            sys.executable, "-m", "services.cli", "serve", child.kind,
            "--port", str(port), "--port-file", str(port_file), "--metrics-port", str(metrics_port),
        ]
        for key, value in child.settings.items():
            cmd += ["--set", f"{key}={value}"]
        log_file = open(child.log_path, "ab")  # noqa: SIM115 - handed to the child
        child.process = subprocess.Popen(
            cmd, stdout=log_file, stderr=log_file, start_new_session=True, env=self._child_env(child)
        )
        log_file.close()
        self.children.append(child)
        deadline = time.monotonic() + 30.0
        while not port_file.exists():
            if child.process.poll() is not None:
                raise RuntimeError(f"{child.name} exited with {child.process.returncode}; see {child.log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{child.name} did not start within 30 s; see {child.log_path}")
            await asyncio.sleep(0.05)
        child.port = int(port_file.read_text())
        child.metrics_port = int(pathlib.Path(f"{port_file}.metrics").read_text())
        if child.settings.get("http_port_file"):  # written before the gRPC port file
            child.http_port = int(pathlib.Path(child.settings["http_port_file"]).read_text())
        return child

    def _write_manifest(self) -> None:
        manifest = {
            c.name: {
                "target": c.target,
                "metrics": f"127.0.0.1:{c.metrics_port}",
                "pid": c.process.pid if c.process else 0,
                "log": str(c.log_path),
                **({"http": f"127.0.0.1:{c.http_port}"} if c.http_port else {}),
            }
            for c in self.children
        }
        path = self.data_dir / "mesh.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest, indent=2))
        tmp.replace(path)

    def exited(self) -> Child | None:
        return next((c for c in self.children if c.process and c.process.poll() is not None), None)

    def stop(self, grace_s: float = 10.0) -> None:
        for child in reversed(self.children):
            if child.process and child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for child in reversed(self.children):
            if child.process is None:
                continue
            try:
                child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        (self.data_dir / "mesh.json").unlink(missing_ok=True)


async def _up(args: argparse.Namespace) -> int:
    extra: dict[str, dict[str, str]] = {}
    for item in args.set or []:
        name, sep, assignment = item.partition(":")
        if not sep:
            print(f"--set expects SERVICE:key=value, got {item!r}", file=sys.stderr)
            return 2
        extra.setdefault(name, {}).update(parse_assignments([assignment]))
    if args.trace:  # every child writes its spans to the local store that `nija trace` reads
        os.environ[tracing.TRACE_DIR_ENV] = str(pathlib.Path(args.data_dir).resolve() / "traces")
        os.environ.setdefault("OTEL_BSP_SCHEDULE_DELAY", "500")
    live = _live_brokers(args.live)
    if live and not args.emulate:
        print(
            f"WARNING: LIVE TRADING on {', '.join(live)}: orders go to the real exchanges and move real money on the "
            "users' accounts, with the API keys stored for them (`nija keys set`). Ctrl-C now if that is not meant.",
            file=sys.stderr, flush=True,
        )
    elif live:
        print(f"live ccxt venues for {', '.join(live)} against local exchange emulators (no real exchange is called)")
    mesh = Mesh(pathlib.Path(args.data_dir).resolve(), args.auto_ports, extra, tls=args.tls, routers=args.routers,
                live=live, emulate=args.emulate)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        print("starting the mesh ...", flush=True)
        await mesh.start()
        print(f"{'service':<20} {'listening on':<18} {'pid':>7}  log")
        for c in mesh.children:
            print(f"{c.name:<20} {c.target:<18} {c.process.pid if c.process else 0:>7}  {c.log_path}")
        print(f"all {len(mesh.children)} services SERVING; manifest {mesh.data_dir / 'mesh.json'}", flush=True)
        print(f"admin token in {mesh.data_dir / 'admin.token'}; demo users' tokens in {mesh.data_dir / 'tokens'}/")
        gateway = next(c for c in mesh.children if c.kind == "gateway")
        print(f"TradingView webhooks: POST http://127.0.0.1:{gateway.http_port}/webhook/{DEMO_STRATEGY} "
              f"(passphrase {DEMO_PASSPHRASE!r}; alice, bob and dave subscribed)")
        if args.tls:
            certs = mesh.data_dir / "certs"
            print(f"TLS + mTLS on; a client certificate for you: export NIJA_TLS_CA={certs / 'ca.pem'} "
                  f"NIJA_TLS_CERT={certs / 'client.pem'} NIJA_TLS_KEY={certs / 'client-key.pem'}")
        if args.demo:
            targets = {c.name: c.target for c in mesh.children}
            assert mesh.tokens is not None
            await run_demo(targets["router"], targets["permission"], mesh.tokens.users, mesh.client_security)
        print("Ctrl-C stops the mesh.", flush=True)
        while not stop.is_set():
            crashed = mesh.exited()
            if crashed:
                print(f"{crashed.name} exited with {crashed.process.returncode}; see {crashed.log_path}", file=sys.stderr)
                return 1
            await wait_set(stop, 0.5)
        return 0
    except RuntimeError as exc:
        print(f"nija up: {exc}", file=sys.stderr)
        return 1
    finally:
        print("stopping the mesh ...", flush=True)
        mesh.stop()
        print("stopped.", flush=True)


def _live_brokers(text: str) -> tuple[str, ...]:
    names = [b.strip() for b in (text or "").split(",") if b.strip()]
    if names == ["all"]:
        return BROKERS
    unknown = [b for b in names if b not in BROKERS]
    if unknown:
        raise SystemExit(f"--live: unknown broker(s) {', '.join(unknown)}; known: {', '.join(BROKERS)} or all")
    return tuple(dict.fromkeys(names))


def cmd_up(args: argparse.Namespace) -> int:
    return asyncio.run(_up(args))


DEMO_TRADES = (
    ("alice", "BTC-USD", "buy", "250", "entry"),
    ("bob", "ETH-USD", "buy", "1000", "entry"),
    ("alice", "SOL-USD", "sell", "400", "stop_loss"),
    ("dave", "DOGE-USD", "buy", "100", "entry"),
    ("carol", "BTC-USD", "buy", "100", "entry"),
)


async def run_demo(router: str, permission: str, tokens: dict[str, str], security: Security) -> None:
    """Each demo user trades with their own token, as a strategy client would; then the
    positions the permission service built from the fills."""
    print("\ndemo: five signals, updates as they stream")
    for user, pair, side, usd, kind in DEMO_TRADES:
        print(f"\n> {user}: {side} ${usd} {pair} ({kind})")
        async with NijaClient(router, security=security, token=tokens[user], strategy="demo") as nija:
            await stream_trade(nija, make_signal(user, pair, side, usd, kind, strategy="demo"), timeout=60.0)
    await asyncio.sleep(0.5)  # the ledger hands fills to the position manager right after it stores them
    print("\npositions")
    for user in ("alice", "bob"):
        async with NijaClient(router, permission=permission, security=security, token=tokens[user]) as nija:
            held = await nija.positions(user)
        for p in held.positions:
            print(f"  {user:<6} {p.pair:<9} {p.quantity:>14} @ {p.average_entry_price:<12} "
                  f"realized {p.realized_pnl} fees {p.fees}")
        print(f"  {user:<6} today: traded ${held.traded_usd}, open reservations {held.open_reservations}")
    print()


# ---- trade ---------------------------------------------------------------------------------------


def _manifest_path(args: argparse.Namespace) -> str | None:
    """--mesh, else <data-dir>/mesh.json when `nija up` wrote one there."""
    in_data_dir = pathlib.Path(getattr(args, "data_dir", None) or "var") / "mesh.json"
    return args.mesh or (str(in_data_dir) if in_data_dir.exists() else None)


async def _trade(args: argparse.Namespace) -> int:
    manifest = _manifest_path(args)
    # --router, else the manifest's, else $NIJA_ROUTER or the default port (the client's own default).
    router = args.router or (read_manifest(manifest)["router"].target if manifest else None)
    async with NijaClient(router, token=admin_cli.client_token(args), strategy="cli") as nija:
        signal_pb = make_signal(args.user, args.pair, args.side, args.usd, args.type, args.signal_id, strategy="cli")
        outcome = await stream_trade(nija, signal_pb, args.timeout)
    # A final state (even rejected) is a completed trade; a refusal by status code is not.
    return 0 if outcome in {s.value for s in Status if s.terminal} else 1


def cmd_trade(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_trade(args))
    except ConfigError as exc:  # e.g. plaintext to a remote router without NIJA_TLS_CA
        print(f"nija trade: {exc}", file=sys.stderr)
        return 2


# ---- status --------------------------------------------------------------------------------------


async def _status(args: argparse.Namespace, console: Console) -> int:
    from rich.live import Live

    from services.status.render import render

    members = read_manifest(_manifest_path(args)).values()
    security = load_security(client_environ())
    wide = console.width >= 120  # room for each service's target and the counters' totals
    async with Probe(members, security) as probe:
        if not args.watch:
            view = await snapshot(probe, args.interval)
            if args.json:
                print(json.dumps(view.to_dict(), indent=2))
            else:
                console.print(render(view, wide))
            return 0 if view.serving else 1
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if args.json:  # one JSON line per refresh, for scripts that follow the mesh
            view = await follow(probe, args.interval, lambda v: print(json.dumps(v.to_dict()), flush=True), stop)
        elif console.is_terminal:  # redrawn in place
            with Live(console=console, auto_refresh=False) as live:
                view = await follow(probe, args.interval, lambda v: live.update(render(v, wide), refresh=True), stop)
        else:  # piped into a file or a pager: one table after the other
            view = await follow(probe, args.interval, lambda v: console.print(render(v, wide)), stop)
        return 0 if view.serving else 1


def cmd_status(args: argparse.Namespace) -> int:
    # rich only here: every service process starts through this module and needs none of it.
    from rich.console import Console

    if args.interval <= 0:
        print("nija status: --interval must be positive", file=sys.stderr)
        return 2
    # Wide enough when piped that a row is never wrapped or cut; a terminal keeps its own width.
    console = Console(width=None if sys.stdout.isatty() else 160)
    try:
        return asyncio.run(_status(args, console))
    except ConfigError as exc:  # e.g. plaintext to a remote mesh without NIJA_TLS_CA
        print(f"nija status: {exc}", file=sys.stderr)
        return 2


# ---- bench ---------------------------------------------------------------------------------------


def cmd_bench(args: argparse.Namespace) -> int:
    # Imported here: every service process starts through this module and needs none of it.
    from services.bench.report import render_services, render_table
    from services.bench.run import MODES, BenchConfig, run_bench
    from services.bench.targets import failed

    figures = BenchConfig.quick_figures() if args.quick else {}
    for name in ("users", "signals", "concurrency", "burst"):
        if getattr(args, name) is not None:
            figures[name] = getattr(args, name)
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip()) if args.modes else MODES
    try:
        config = BenchConfig(venue_latency_ms=args.venue_latency_ms, modes=modes, quick=args.quick,
                             venue_rate_limits=not args.no_venue_rate_limits, **figures)
    except ValueError as exc:
        print(f"nija bench: {exc}", file=sys.stderr)
        return 2
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = pathlib.Path(args.out or pathlib.Path("bench-results") / stamp)
    progress = not args.no_progress and sys.stderr.isatty()
    result, checks = run_bench(config, out, progress)
    print(render_table(checks))
    print(f"\n{render_services(result)}")
    for note in result.get("notes", []):
        print(f"note: {note}")
    print(f"\nresult.json, report.md and charts in {out}/")
    bad = failed(checks)
    if bad:
        print(f"{len(bad)} target(s) not met: " + "; ".join(c.name for c in bad))
    if result.get("error"):  # figures up to the failure were written; the run itself did not complete
        return 1
    return 1 if args.strict and bad else 0


# ---- chaos ---------------------------------------------------------------------------------------


def cmd_chaos(args: argparse.Namespace) -> int:
    from services.chaos.run import ChaosConfig, run

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    data_dir = pathlib.Path(args.data_dir or pathlib.Path("chaos-runs") / stamp).resolve()
    try:
        config = ChaosConfig(data_dir=data_dir, seed=args.seed, duration_s=args.duration, users=args.users,
                             rate_per_s=args.rate, routers=args.routers, quiet_s=args.quiet, settle_s=args.settle,
                             kill_every_s=args.kill_every, database_url=args.database_url or "")
        config.plan(["router"])  # the schedule's own checks, before anything starts
    except ValueError as exc:
        print(f"nija chaos: {exc}", file=sys.stderr)
        return 2
    try:
        report, extra = asyncio.run(run(config, lambda line: print(line, flush=True)))
    except (RuntimeError, grpc.aio.AioRpcError) as exc:  # the mesh did not come back: that is the finding
        print(f"nija chaos: the run could not finish: {exc}", file=sys.stderr)
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "chaos.json").write_text(json.dumps({"error": str(exc)}, indent=2))
        return 1
    figures = report.figures()
    width = max(len(k) for k in figures)
    print()
    for name, value in figures.items():
        must = "  (must be 0)" if name in report.MUST_BE_ZERO else ""
        print(f"{name:<{width}}  {value:>7}{must}")
    print(f"{'signals sent':<{width}}  {extra['signals']:>7}\n{'calls made':<{width}}  {extra['attempts']:>7}")
    for name in report.MUST_BE_ZERO:
        for finding in getattr(report, name)[:20]:
            print(f"{name}: {finding}")
    (data_dir / "chaos.json").write_text(json.dumps({"figures": figures, **extra, **{
        name: getattr(report, name) for name in report.MUST_BE_ZERO}}, indent=2))
    print(f"\nlogs and chaos.json in {data_dir}/")
    return 0 if report.clean else 1


# ---- entry ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nija", description="Execution routing mesh for crypto trading.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run one service in the foreground")
    p.add_argument("service", choices=sorted(SERVICE_MODULES))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default: the service's standard port; 0 picks one")
    p.add_argument("--port-file", default=None, help="write the bound port here once serving")
    p.add_argument("--grace", type=float, default=5.0, help="seconds in-flight calls get on SIGTERM")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="/metrics, /health, /ready over HTTP (default: the service port + 1000; -1: off)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="config value (repeatable)")
    p.add_argument("--log-level", default=os.environ.get("NIJA_LOG_LEVEL", "INFO"))
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("up", help="run the whole local mesh as separate processes")
    p.add_argument("--data-dir", default="var", help="SQLite files, logs and the mesh manifest")
    p.add_argument("--auto-ports", action="store_true", help="let every service pick a free port")
    p.add_argument("--demo", action="store_true", help="submit a few demo trades once everything is up")
    p.add_argument("--tls", action="store_true", help="TLS + mTLS between all services (certificates from a local CA)")
    p.add_argument("--routers", type=int, default=1, help="router replicas (router, router-2, ...)")
    p.add_argument("--set", action="append", metavar="SERVICE:KEY=VALUE", help="config for one service (repeatable)")
    p.add_argument("--trace", action="store_true", help="write every span to DATA_DIR/traces for `nija trace`")
    p.add_argument("--live", default="", metavar="BROKERS",
                   help="these brokers' executors trade through ccxt with the users' stored keys: "
                        "binance,kraken,... or all. Without --emulate that is REAL MONEY on the real exchanges")
    p.add_argument("--emulate", action="store_true",
                   help="with --live: run local emulators of those exchanges' APIs and give the demo users keys on them")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("trade", help="submit a signal and print each update")
    p.add_argument("--user", required=True)
    p.add_argument("--pair", required=True)
    p.add_argument("--side", required=True, choices=["buy", "sell"])
    p.add_argument("--usd", required=True, help="size in USD (decimal)")
    p.add_argument("--type", default="entry", choices=["entry", "exit", "profit_take", "stop_loss"])
    p.add_argument("--signal-id", default=None, help="default: a fresh id")
    p.add_argument("--router", default=None, help="host:port (default: from the mesh manifest)")
    p.add_argument("--mesh", default=None, help="mesh manifest written by `nija up` (default var/mesh.json)")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--token", default=None, help="bearer token (default $NIJA_TOKEN or <data-dir>/admin.token)")
    p.add_argument("--data-dir", default="var", help="where `nija up` keeps its admin token")
    p.set_defaults(func=cmd_trade)

    p = sub.add_parser("status", help="every service's health; each broker's breaker, queue and flow")
    p.add_argument("--mesh", default=None, help="mesh manifest written by `nija up` (default <data-dir>/mesh.json)")
    p.add_argument("--data-dir", default="var", help="where `nija up` keeps its manifest")
    p.add_argument("--interval", type=float, default=1.0,
                   help="seconds between the two scrapes rates come from (with --watch: between refreshes)")
    p.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    p.add_argument("--json", action="store_true", help="the view as JSON (with --watch: one line per refresh)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("bench", help="start the mesh, load it, and report against issue 10's targets")
    p.add_argument("--users", type=int, default=None, help="users seeded (default 1000; --quick 100)")
    p.add_argument("--signals", type=int, default=None, help="sustained signals, unary and streaming (default 5000; the scale run sends 10x)")
    p.add_argument("--concurrency", type=int, default=None, help="signals in flight when sustained (default 200)")
    p.add_argument("--burst", type=int, default=None, help="users sending one signal each, at once (default 1000)")
    p.add_argument("--venue-latency-ms", type=float, default=0.0,
                   help="added to every simulated exchange call (default 0)")
    p.add_argument("--modes", default=None, help="comma list of burst,sustained,stream,routing,noisy,scale (default all)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: 100 users, 300 signals, burst 200, noisy 5 s, scale 3x")
    p.add_argument("--no-venue-rate-limits", action="store_true",
                   help="the executors ignore the exchanges' published request budgets")
    p.add_argument("--out", default=None, help="where result.json, report.md and the PNGs go "
                                               "(default ./bench-results/<UTC timestamp>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (none either when stderr is no TTY)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is not met")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("chaos", help="load the mesh while a seeded schedule kills services and faults exchanges; "
                                     "then reconcile clients, ledger and exchanges (exit 1 on any loss)")
    p.add_argument("--seed", type=int, default=1, help="the fault schedule's seed (same seed, same schedule)")
    p.add_argument("--duration", type=float, default=600.0, help="seconds of load and faults (default 600)")
    p.add_argument("--users", type=int, default=300)
    p.add_argument("--rate", type=float, default=15.0, help="signals per second over all users (default 15)")
    p.add_argument("--routers", type=int, default=2, help="router replicas (default 2)")
    p.add_argument("--kill-every", type=float, default=15.0, help="mean seconds between kills (default 15)")
    p.add_argument("--quiet", type=float, default=30.0, help="seconds without faults at the end (default 30)")
    p.add_argument("--settle", type=float, default=120.0, help="then at most this long for every client to end")
    p.add_argument("--database-url", default=None,
                   help="postgresql://... for the permission service and the ledger, whose connections the run "
                        "then drops every ~30 s as a PostgreSQL restart does (use a database of its own; default SQLite)")
    p.add_argument("--data-dir", default=None, help="the mesh's data and logs (default ./chaos-runs/<UTC timestamp>)")
    p.set_defaults(func=cmd_chaos)

    admin_cli.add_commands(sub)
    trace_view.add_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
