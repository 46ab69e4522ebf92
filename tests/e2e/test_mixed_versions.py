"""Mixed versions interoperate (issue 7): services roll out one at a time, so for a while the
current code runs beside the previous release's (the commit in `.ci/proto-baseline`, extracted with
`git archive` and run by this venv's interpreter). A mesh of real processes runs the binance
executor and a second router from the previous release, the rest from this tree: trades, replays,
health and the circuit breaker are checked current router -> previous executor and previous router
-> current executor; then both executors are replaced in place by the other version (a roll
forward and a rollback, journals kept) and trade again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import filecmp
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from nija.aggregator.v1 import aggregator_pb2, aggregator_pb2_grpc
from nija.common.v1 import common_pb2
from nija.executor.v1 import executor_pb2, executor_pb2_grpc
from nija.permission.v1 import permission_pb2, permission_pb2_grpc
from nija.router.v1 import router_pb2, router_pb2_grpc
from nija.simexchange.v1 import simexchange_pb2, simexchange_pb2_grpc

from services.permission.bootstrap import Issued, issue_mesh_tokens
from services.runtime.channels import open_channel
from services.runtime.errors import reason_of
from services.runtime.security import Security
from services.status.members import HEALTH_NAMES

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BASELINE_FILE = REPO / ".ci" / "proto-baseline"
#: Each user may trade on one broker only, so every signal of theirs goes to that executor.
BINANCE_USER, KRAKEN_USER = "rollout-binance", "rollout-kraken"
#: The breakers' open period: short (the seed's is 60 s), so recovery is seen within the test.
BREAKER_OPEN_S = 2.0

# Runs `nija serve` from whichever tree is first on PYTHONPATH, after recording where `services`
# and the generated `nija` package were imported from (the test checks them: the old code is
# what really runs, not the venv's editable install of the current tree).
BOOTSTRAP = """\
import json, runpy, sys
marker = sys.argv.pop(1)
import nija, services
with open(marker, "w") as fh:
    json.dump({"services": list(services.__path__), "nija": list(nija.__path__)}, fh)
runpy.run_module("services.cli", run_name="__main__", alter_sys=True)
"""


# ---- the previous release's tree -----------------------------------------------------------------


def _git(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    # Never a credentials prompt: a fetch that needs one fails (and the test says why).
    return subprocess.run(["git", "-C", str(REPO), *args], check=False, capture_output=True, timeout=timeout,
                          env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})


def _have(commit: str) -> bool:
    return _git("cat-file", "-e", f"{commit}^{{commit}}").returncode == 0


def previous_release(dest: Path) -> tuple[str, Path]:
    """The commit named by .ci/proto-baseline, its services/ and gen/ extracted into `dest`.

    Fetches history the way `make breaking` does when the clone is shallow. Without a git
    checkout at all (an sdist, an image without .git) there is no previous release to run: skip,
    loudly. With one, a commit that cannot be had is a failure, never a silent skip."""
    commit = BASELINE_FILE.read_text().split("\n", 1)[0].strip()
    assert re.fullmatch(r"[0-9a-f]{7,40}", commit), f"{BASELINE_FILE}: first line is not a commit: {commit!r}"
    if not (REPO / ".git").exists():
        pytest.skip(f"MIXED VERSIONS NOT TESTED: {REPO} is not a git checkout, so the previous "
                    f"release {commit} cannot be extracted")
    assert shutil.which("git"), f"{REPO} is a git checkout but there is no git to extract {commit} with"
    problems = []
    if not _have(commit):
        if _git("rev-parse", "--is-shallow-repository").stdout.strip() == b"true":
            problems.append(_git("fetch", "--quiet", "--unshallow").stderr.decode().strip())
        if not _have(commit):
            problems.append(_git("fetch", "--quiet", "origin", commit).stderr.decode().strip())
    if not _have(commit):
        detail = "\n".join(p for p in problems if p) or _git("cat-file", "-e", commit).stderr.decode()
        pytest.fail(f"the previous release {commit} (.ci/proto-baseline) is not in this clone and "
                    f"`git fetch --unshallow` / `git fetch origin {commit}` could not get it:\n{detail}")
    archive = _git("archive", "--format=tar", commit, "services", "gen")
    assert archive.returncode == 0, f"git archive {commit}: {archive.stderr.decode()}"
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    return commit, dest


def _differing(old: Path, new: Path) -> list[str]:
    """Python files of services/ and gen/ that differ between two trees (for the log: how far
    apart the two versions are)."""
    def files(tree: Path) -> set[Path]:
        return {p.relative_to(tree) for top in ("services", "gen") for p in (tree / top).rglob("*.py")
                if "__pycache__" not in p.parts}

    return sorted(str(rel) for rel in files(old) | files(new)
                  if not ((old / rel).exists() and (new / rel).exists()
                          and filecmp.cmp(old / rel, new / rel, shallow=False)))


# ---- processes -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Proc:
    name: str  # "executor-binance", "router-previous", ...
    kind: str  # the `nija serve` service
    tree: Path  # the source tree it runs
    dir: Path
    process: subprocess.Popen[bytes]
    settings: dict[str, str]
    token: str
    port: int = 0

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.dir / "service.log"

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else "(no log)"

    def imported_from(self) -> dict[str, list[str]]:
        return json.loads((self.dir / "imported.json").read_text())


def _spawn(base: Path, name: str, kind: str, tree: Path, settings: dict[str, str], token: str = "",
           port: int = 0) -> Proc:
    """`nija serve KIND` from `tree`'s code, on `port` (0: a free one), in a directory of its own."""
    workdir, again = base / name, 1
    while workdir.exists():  # the same service started again: executor-kraken.2, ...
        again += 1
        workdir = base / f"{name}.{again}"
    workdir.mkdir(parents=True)
    cmd = [sys.executable, "-c", BOOTSTRAP, str(workdir / "imported.json"), "serve", kind,
           "--port", str(port), "--port-file", str(workdir / "port"), "--grace", "1"]
    for key, value in settings.items():
        cmd += ["--set", f"{key}={value}"]
    # Nothing inherited may point the service elsewhere: no NIJA_* settings, no other PYTHONPATH.
    env = {k: v for k, v in os.environ.items() if not k.startswith("NIJA_") and k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(tree), str(tree / "gen")])
    if token:
        env["NIJA_SERVICE_TOKEN"] = token
    with open(workdir / "service.log", "wb") as log:
        process = subprocess.Popen(cmd, cwd=workdir, stdout=log, stderr=log, env=env, start_new_session=True)
    return Proc(name, kind, tree, workdir, process, settings, token)


def _await_ports(procs: list[Proc], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    for proc in procs:
        port_file = proc.dir / "port"
        while not port_file.exists():
            if proc.process.poll() is not None:
                pytest.fail(f"{proc.name} ({proc.tree}) exited with {proc.process.returncode}:\n{proc.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{proc.name} did not start within {timeout_s:g} s:\n{proc.log_tail()}")
            time.sleep(0.05)
        proc.port = int(port_file.read_text())


def _stop(procs: list[Proc]) -> None:
    """SIGTERM (drain, stop), in reverse order of start; kill what is still there after 10 s."""
    for proc in reversed(procs):
        if proc.process.poll() is None:
            proc.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for proc in reversed(procs):
        try:
            proc.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.process.kill()
            proc.process.wait()


# ---- the mixed mesh ------------------------------------------------------------------------------


@dataclasses.dataclass
class MixedMesh:
    procs: dict[str, Proc]
    tokens: Issued
    users: dict[str, str]  # user -> their token
    previous: str  # the previous release's commit
    previous_tree: Path
    #: Every process started, replaced ones included (all stopped at the end).
    started: list[Proc]
    #: user -> signal_id -> signed BTC quantity filled (buys positive): the positions to expect.
    filled: dict[str, dict[str, Decimal]] = dataclasses.field(default_factory=dict)

    def target(self, name: str) -> str:
        return self.procs[name].target

    def as_user(self, name: str, user: str) -> grpc.aio.Channel:
        return open_channel(self.target(name), Security(token=self.users[user]))


async def _health(target: str, service: str) -> str:
    async with grpc.aio.insecure_channel(target) as channel:
        try:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=1)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


async def _until(what: str | Callable[[], str], check: Callable[[], Awaitable[object]], timeout_s: float = 15) -> None:
    """Poll `check` until it returns something true; `what` says what did not happen."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"not reached within {timeout_s:g} s: {what if isinstance(what, str) else what()}")
        await asyncio.sleep(0.05)


def _signal(user: str, signal_id: str, side: int = common_pb2.SIDE_BUY, usd: str = "200",
            kind: int = common_pb2.SIGNAL_TYPE_ENTRY) -> common_pb2.TradeSignal:
    pb = common_pb2.TradeSignal(signal_id=signal_id, user_id=user, pair="BTC-USD", side=side, size_usd=usd,
                                signal_type=kind, strategy="rollout")
    pb.timestamp.GetCurrentTime()
    return pb


async def _quote(mesh: MixedMesh, router: str, user: str) -> router_pb2.QuoteRouteResponse:
    async with mesh.as_user(router, user) as channel:
        return await router_pb2_grpc.RouterServiceStub(channel).QuoteRoute(
            router_pb2.QuoteRouteRequest(signal=_signal(user, "quote")), timeout=5)


async def _prepare(mesh: MixedMesh) -> None:
    """Every process SERVING, the two one-broker users, and both routers able to route both."""
    for proc in mesh.procs.values():
        await _until(lambda p=proc: f"{p.name} SERVING; its log:\n{p.log_tail()}",
                     lambda p=proc: _serving(p), timeout_s=30)
    async with open_channel(mesh.target("permission"), Security(token=mesh.tokens.admin)) as channel:
        admin = permission_pb2_grpc.AdminServiceStub(channel)
        for user, broker in ((BINANCE_USER, "binance"), (KRAKEN_USER, "kraken")):
            await admin.PutUser(permission_pb2.PutUserRequest(user=permission_pb2.UserPermissions(
                user_id=user, enabled=True, allowed_brokers=[broker], max_order_size_usd="5000",
                limits=permission_pb2.RiskLimits(trades_per_second="50", trade_burst=50))), timeout=5)
            mesh.users[user] = (await admin.CreateToken(permission_pb2.CreateTokenRequest(
                kind=permission_pb2.PRINCIPAL_KIND_USER, subject=user), timeout=5)).token
    await _all_routable(mesh)


async def _all_routable(mesh: MixedMesh, timeout_s: float = 30) -> None:
    for router in ("router", "router-previous"):
        for user in (BINANCE_USER, KRAKEN_USER):
            await _until(f"{router} can route {user}'s signals",
                         lambda r=router, u=user: _routable(mesh, r, u), timeout_s=timeout_s)


async def _serving(proc: Proc) -> bool:
    if proc.process.poll() is not None:
        pytest.fail(f"{proc.name} ({proc.tree}) exited with {proc.process.returncode}:\n{proc.log_tail()}")
    return (await _health(proc.target, HEALTH_NAMES[proc.kind])) == "SERVING"


async def _routable(mesh: MixedMesh, router: str, user: str) -> bool:
    return (await _quote(mesh, router, user)).routable


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MixedMesh]:
    base = tmp_path_factory.mktemp("mixed")
    commit, previous_tree = previous_release(tmp_path_factory.mktemp("previous-release"))
    tokens = asyncio.run(issue_mesh_tokens(
        str(base / "permission.db"), ["router", "aggregator", "executor-binance", "executor-kraken"]))
    procs: list[Proc] = []
    try:
        current = REPO
        # Calm, fast prices so marketable limit orders fill; the previous release is started
        # with settings it knows too (unknown keys are refused at start, and the log says so).
        sim = _spawn(base, "simexchange", "simexchange", current,
                     {"tick_interval_s": "0.05", "volatility_bps": "0.5", "seed": "7"})
        permission = _spawn(base, "permission", "permission", current, {"database_path": str(base / "permission.db")})
        procs += [sim, permission]
        _await_ports([sim, permission])
        aggregator = _spawn(base, "aggregator", "aggregator", current, {
            "database_path": str(base / "aggregator.db"), "permission_target": permission.target,
        }, tokens.services["aggregator"])
        procs.append(aggregator)
        _await_ports([aggregator])
        executors = {}
        for broker, tree in (("binance", previous_tree), ("kraken", current)):
            executors[broker] = _spawn(base, f"executor-{broker}", "executor", tree, {
                "broker": broker, "simexchange_target": sim.target, "aggregator_target": aggregator.target,
                "permission_target": permission.target, "journal_path": str(base / f"executor-{broker}.journal.db"),
                "info_refresh_s": "0.1", "limit_timeout_s": "5", "breaker_open_s": str(BREAKER_OPEN_S),
                # As in tests/harness.py: the exchanges' rate limits have tests of their own, and
                # Kraken's would hold the first full read of its books back for seconds.
                "rate_limits": "off",
            }, tokens.services[f"executor-{broker}"])
            procs.append(executors[broker])
        _await_ports(list(executors.values()))
        # Two router replicas over the same executors: the current one, and the previous release's.
        for name, tree in (("router", current), ("router-previous", previous_tree)):
            procs.append(_spawn(base, name, "router", tree, {
                "permission_target": permission.target, "aggregator_target": aggregator.target,
                "executor_targets": ",".join(f"{b}={e.target}" for b, e in executors.items()),
                "info_push_interval_ms": "200", "balancing": "best",
            }, tokens.services["router"]))
        _await_ports(procs[-2:])
        mesh = MixedMesh({p.name: p for p in procs}, tokens, {}, commit, previous_tree, procs)
        asyncio.run(_prepare(mesh))
        yield mesh
    finally:
        _stop(procs)


# ---- the tests -----------------------------------------------------------------------------------

PREVIOUS = ("executor-binance", "router-previous")


def test_the_previous_release_is_what_runs(mixed: MixedMesh) -> None:
    """The old processes imported services/ and gen/ from the extracted tree, the others from
    this checkout: not the venv's editable install of the current code."""
    for proc in mixed.procs.values():
        tree = mixed.previous_tree if proc.name in PREVIOUS else REPO
        assert proc.tree == tree
        expected = {"services": [str(tree / "services")], "nija": [str(tree / "gen" / "nija")]}
        assert proc.imported_from() == expected, proc.name
    changed = _differing(mixed.previous_tree, REPO)
    print(f"\nprevious release {mixed.previous[:12]}: {len(changed)} Python files differ from the current tree"
          + (f" ({', '.join(changed[:8])}{', ...' if len(changed) > 8 else ''})" if changed else ""))


async def _submit(mesh: MixedMesh, router: str, pb: common_pb2.TradeSignal) -> list[common_pb2.ExecutionUpdate]:
    async with mesh.as_user(router, pb.user_id) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        return [r.update async for r in stub.SubmitSignal(router_pb2.SubmitSignalRequest(signal=pb), timeout=30)]


def _view(updates: list[common_pb2.ExecutionUpdate]) -> list[tuple[object, ...]]:
    """What every version of the router must stream alike (fields both versions know)."""
    return [(u.sequence, u.status, u.broker, u.filled_quantity, u.average_price,
             tuple(f.venue_trade_id for f in u.fills)) for u in updates]


async def _assert_filled_and_recorded(mesh: MixedMesh, updates: list[common_pb2.ExecutionUpdate], broker: str) -> None:
    """FILLED on `broker`, and the ledger and the exchange agree with the stream fill for fill."""
    final = updates[-1]
    assert final.status == common_pb2.EXECUTION_STATUS_FILLED, [(u.status, u.reason) for u in updates]
    assert final.broker == broker
    sequences = [u.sequence for u in updates]
    assert sequences == sorted(set(sequences)) and sequences[0] > 0
    streamed = {f.venue_trade_id: f for u in updates for f in u.fills}
    assert streamed and sum(Decimal(f.quantity) for f in streamed.values()) == Decimal(final.filled_quantity) > 0
    async with open_channel(mesh.target("aggregator"), Security(token=mesh.users[final.user_id])) as channel:
        ledger = aggregator_pb2_grpc.AggregatorServiceStub(channel)
        order = (await ledger.GetOrder(aggregator_pb2.GetOrderRequest(
            user_id=final.user_id, signal_id=final.signal_id), timeout=5)).order
        fills = (await ledger.ListFills(aggregator_pb2.ListFillsRequest(
            user_id=final.user_id, signal_id=final.signal_id), timeout=5)).fills
    assert (order.status, order.broker, order.last_sequence) == (final.status, broker, final.sequence)
    assert Decimal(order.filled_quantity) == Decimal(final.filled_quantity)
    assert {f.fill.venue_trade_id: f.fill for f in fills} == streamed
    assert {f.broker for f in fills} == {broker}
    async with grpc.aio.insecure_channel(mesh.target("simexchange")) as channel:
        venue_order = (await simexchange_pb2_grpc.SimulatedExchangeServiceStub(channel).GetOrder(
            simexchange_pb2.GetOrderRequest(broker=broker, account_id=final.user_id,
                                            client_order_id=final.client_order_id), timeout=5)).order
    assert Decimal(venue_order.filled_quantity) == Decimal(final.filled_quantity)
    assert len(venue_order.fills) == len(streamed)
    sign = 1 if final.side == common_pb2.SIDE_BUY else -1
    mesh.filled.setdefault(final.user_id, {})[final.signal_id] = sign * Decimal(final.filled_quantity)


async def _position(mesh: MixedMesh, user: str) -> Decimal:
    async with mesh.as_user("permission", user) as channel:
        response = await permission_pb2_grpc.PermissionServiceStub(channel).GetPositions(
            permission_pb2.GetPositionsRequest(user_id=user), timeout=5)
    return sum((Decimal(p.quantity) for p in response.positions if p.pair == "BTC-USD"), Decimal(0))


async def _trade_and_replay(mesh: MixedMesh, router: str, other_router: str, user: str, broker: str) -> None:
    """A limit buy and a market sell through `router`, executed by `broker`'s executor (of the
    other version): filled, in the ledger, on the exchange and in the user's position. Then the
    buy submitted again through the router of the other version streams the same updates and
    places nothing new (routers of two versions share one ledger during a rollout)."""
    prefix = f"{router}-{user}-{mesh.procs[f'executor-{broker}'].dir.name}"
    buy = _signal(user, f"{prefix}-buy")
    bought = await _submit(mesh, router, buy)
    await _assert_filled_and_recorded(mesh, bought, broker)
    sold = await _submit(mesh, router, _signal(user, f"{prefix}-sell", side=common_pb2.SIDE_SELL, usd="100",
                                               kind=common_pb2.SIGNAL_TYPE_EXIT))
    await _assert_filled_and_recorded(mesh, sold, broker)
    # The permission service's position: every fill the ledger handed on, by either version.
    expected = sum(mesh.filled[user].values(), Decimal(0))

    async def position_matches() -> bool:
        return await _position(mesh, user) == expected

    await _until(f"{user}'s position is {expected} BTC", position_matches, timeout_s=10)

    replayed = await _submit(mesh, other_router, buy)
    assert _view(replayed) == _view(bought)
    await _assert_filled_and_recorded(mesh, replayed, broker)  # still one order, the same fills


async def test_current_router_trades_through_the_previous_releases_executor(mixed: MixedMesh) -> None:
    await _trade_and_replay(mixed, "router", "router-previous", BINANCE_USER, "binance")


async def test_previous_releases_router_trades_through_a_current_executor(mixed: MixedMesh) -> None:
    await _trade_and_replay(mixed, "router-previous", "router", KRAKEN_USER, "kraken")


async def _set_fault(mesh: MixedMesh, mode: int) -> None:
    async with grpc.aio.insecure_channel(mesh.target("simexchange")) as channel:
        stub = simexchange_pb2_grpc.SimulatedExchangeServiceStub(channel)
        for broker in ("binance", "kraken"):
            await stub.SetFault(simexchange_pb2.SetFaultRequest(broker=broker, mode=mode), timeout=5)


async def _breaker_state(mesh: MixedMesh, broker: str) -> int:
    # Executors answer routers only: ask as the router does.
    as_router = Security(token=mesh.tokens.services["router"])
    async with open_channel(mesh.target(f"executor-{broker}"), as_router) as channel:
        info = (await executor_pb2_grpc.ExecutorServiceStub(channel).GetExecutorInfo(
            executor_pb2.GetExecutorInfoRequest(), timeout=5)).info
    return info.breaker_state


async def test_health_and_breaker_across_versions(mixed: MixedMesh) -> None:
    """Both venues go down: each executor's breaker opens and its health turns NOT_SERVING, and
    the router of the other version stops routing to it (a signal is refused, not sent). The
    venues come back: the breakers close and both routers route to them again."""
    for proc in mixed.procs.values():
        for service in ("", HEALTH_NAMES[proc.kind]):
            assert await _health(proc.target, service) == "SERVING", (proc.name, service)
    pairs = (("router", BINANCE_USER, "binance"), ("router-previous", KRAKEN_USER, "kraken"))
    await _set_fault(mixed, simexchange_pb2.FAULT_MODE_UNAVAILABLE)
    try:
        for _, _, broker in pairs:
            async def not_serving(b: str = broker) -> bool:
                return (await _health(mixed.target(f"executor-{b}"), HEALTH_NAMES["executor"])) == "NOT_SERVING"
            await _until(f"executor-{broker} NOT_SERVING", not_serving, timeout_s=10)
        for router, user, broker in pairs:
            assert await _breaker_state(mixed, broker) == common_pb2.BREAKER_STATE_OPEN, broker

            async def excluded(r: str = router, u: str = user) -> bool:
                return not (await _quote(mixed, r, u)).routable
            await _until(f"{router} excludes {broker}", excluded, timeout_s=5)
            quote = await _quote(mixed, router, user)
            entry = next(q for q in quote.brokers if q.broker == broker)
            assert not entry.eligible and entry.exclusion, quote
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _submit(mixed, router, _signal(user, f"{router}-during-outage"))
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION, refused.value
            print(f"\n{router} -> executor-{broker} while its breaker is open: "
                  f"{refused.value.code().name}/{reason_of(refused.value)}; quote: {entry.exclusion}")
    finally:
        await _set_fault(mixed, simexchange_pb2.FAULT_MODE_NONE)
    for router, user, broker in pairs:
        await _until(f"{router} routes to {broker} again",
                     lambda r=router, u=user: _routable(mixed, r, u), timeout_s=BREAKER_OPEN_S + 10)
        assert await _breaker_state(mixed, broker) == common_pb2.BREAKER_STATE_CLOSED
        updates = await _submit(mixed, router, _signal(user, f"{router}-after-outage",
                                                       kind=common_pb2.SIGNAL_TYPE_EXIT))
        await _assert_filled_and_recorded(mixed, updates, broker)


async def _replace(mesh: MixedMesh, name: str, tree: Path) -> Proc:
    """Stop `name` (SIGTERM: drain, stop) and start `tree`'s code in its place: the same port,
    settings, identity and journal, as a rolling update of one Deployment does."""
    old = mesh.procs[name]
    old.process.send_signal(signal.SIGTERM)
    await asyncio.to_thread(old.process.wait, 15)
    new = _spawn(old.dir.parent, name, old.kind, tree, old.settings, old.token, port=old.port)
    mesh.started.append(new)
    mesh.procs[name] = new
    return new


async def test_executors_roll_forward_and_back_in_place(mixed: MixedMesh) -> None:
    """While both routers run on, the previous release's binance executor is replaced by the
    current code and the current kraken executor by the previous release, each on its port and
    with the journal the other version kept. Both routers readmit them, and the crossings not
    tried yet trade: current router -> previous kraken, previous router -> current binance."""
    replaced = [await _replace(mixed, "executor-binance", REPO),
                await _replace(mixed, "executor-kraken", mixed.previous_tree)]
    await asyncio.to_thread(_await_ports, replaced)
    for proc in replaced:
        assert proc.imported_from()["services"] == [str(proc.tree / "services")], proc.name
        await _until(lambda p=proc: f"{p.name} SERVING; its log:\n{p.log_tail()}",
                     lambda p=proc: _serving(p), timeout_s=30)
    await _all_routable(mixed)
    await _trade_and_replay(mixed, "router", "router-previous", KRAKEN_USER, "kraken")
    await _trade_and_replay(mixed, "router-previous", "router", BINANCE_USER, "binance")
