"""`nija` administration: users, tokens, API keys, limits, kill switches, subscriptions, certs.

Every command but `certs` (and `tokens create --offline`) calls the permission service's
AdminService with an admin token (`ledger export` reads the aggregator's ledger with it):
`--token`, else $NIJA_TOKEN (or $NIJA_TOKEN_FILE), else the file `nija up` wrote (<data-dir>/admin.token). API secrets are read from the environment or a prompt, never from
the command line (where `ps` would show them).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import dataclasses
import datetime
import getpass
import json
import os
import pathlib
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import IO, Any

import grpc
from google.protobuf import json_format, timestamp_pb2
from nija.aggregator.v1 import aggregator_pb2, aggregator_pb2_grpc
from nija.common.v1 import common_pb2
from nija.executor.v1 import executor_pb2, executor_pb2_grpc
from nija.permission.v1 import permission_pb2, permission_pb2_grpc

from services.client.config import client_security
from services.client.config import client_token as token_from_env
from services.domain.brokers import BROKERS, DEFAULT_PORTS
from services.domain.money import fmt
from services.permission.allocations import allocation_from_pb, describe
from services.permission.client import KIND_TO_PB
from services.runtime.auth import PrincipalKind
from services.runtime.channels import open_channel
from services.runtime.errors import reason_of
from services.runtime.wire import SIDE_FROM_PB, SIGNAL_TYPE_FROM_PB, status_name

MESH_SERVICES = ("simexchange", "aggregator", "permission", *(f"executor-{b}" for b in BROKERS), "router")


def client_token(args: argparse.Namespace) -> str:
    """The caller's bearer token: --token, $NIJA_TOKEN (or $NIJA_TOKEN_FILE), or <data-dir>/admin.token."""
    if getattr(args, "token", None):
        return args.token
    from_env = token_from_env()
    if from_env:
        return from_env
    # Beside the manifest when one was named, else in the data directory.
    mesh = getattr(args, "mesh", None)
    path = (pathlib.Path(mesh).parent if mesh else pathlib.Path(getattr(args, "data_dir", None) or "var")) / "admin.token"
    if path.exists():
        return path.read_text().strip()
    raise SystemExit(f"no token: pass --token, set NIJA_TOKEN, or run `nija up` (which writes {path})")


def target_of(args: argparse.Namespace, service: str) -> str:
    explicit = getattr(args, service.replace("-", "_"), None)
    if explicit:
        return explicit
    manifest = pathlib.Path(getattr(args, "mesh", None) or pathlib.Path(getattr(args, "data_dir", None) or "var") / "mesh.json")
    if manifest.exists():
        return json.loads(manifest.read_text())[service]["target"]
    return f"127.0.0.1:{DEFAULT_PORTS[service]}"


def client_channel(args: argparse.Namespace, service: str) -> grpc.aio.Channel:
    """A channel to `service` carrying the caller's token (and TLS from NIJA_TLS_* when set)."""
    # A CLI speaks for its user, never with a service token that happens to be in the environment.
    return open_channel(target_of(args, service), client_security(token=client_token(args)))


def _run(call: Callable[[permission_pb2_grpc.AdminServiceStub], Awaitable[Any]], args: argparse.Namespace) -> int:
    async def main() -> int:
        async with client_channel(args, "permission") as channel:
            try:
                result = await call(permission_pb2_grpc.AdminServiceStub(channel))
            except grpc.aio.AioRpcError as exc:
                print(f"nija: {exc.code().name} {reason_of(exc)}: {exc.details()}", file=sys.stderr)
                return 1
        if result is not None:
            print(json_format.MessageToJson(result, indent=2) if hasattr(result, "DESCRIPTOR") else result)
        return 0

    return asyncio.run(main())


# ---- users ---------------------------------------------------------------------------------------


def cmd_users(args: argparse.Namespace) -> int:
    if args.action == "list":
        return _run(lambda s: s.ListUsers(permission_pb2.ListUsersRequest(), timeout=10), args)
    if args.action in ("disable", "enable"):
        request = permission_pb2.SetUserEnabledRequest(user_id=args.user, enabled=args.action == "enable")
        return _run(lambda s: s.SetUserEnabled(request, timeout=10), args)
    user = permission_pb2.UserPermissions(
        user_id=args.user,
        enabled=not args.disabled,
        allowed_brokers=_csv(args.brokers) or list(BROKERS),
        allowed_pairs=_csv(args.pairs),
        max_order_size_usd=args.max_order_usd,
    )
    return _run(lambda s: s.PutUser(permission_pb2.PutUserRequest(user=user), timeout=10), args)


# ---- tokens --------------------------------------------------------------------------------------


def cmd_tokens(args: argparse.Namespace) -> int:
    if args.action == "list":
        return _run(lambda s: s.ListTokens(permission_pb2.ListTokensRequest(subject=args.subject or ""), timeout=10), args)
    if args.action == "revoke":
        return _run(lambda s: s.RevokeToken(permission_pb2.RevokeTokenRequest(token_id=args.token_id), timeout=10), args)
    kind = PrincipalKind(args.kind)
    if args.offline:
        from services.permission.bootstrap import create_token_offline

        database = os.environ.get("NIJA_DATABASE_URL") or args.database
        print(asyncio.run(create_token_offline(database, kind, args.subject, args.description)))
        return 0

    async def create(stub: permission_pb2_grpc.AdminServiceStub) -> str:
        response = await stub.CreateToken(
            permission_pb2.CreateTokenRequest(kind=KIND_TO_PB[kind], subject=args.subject, description=args.description),
            timeout=10,
        )
        print(f"token id {response.info.token_id} for {kind.value} {response.info.subject} (shown once):", file=sys.stderr)
        return response.token

    return _run(create, args)


# ---- keys ----------------------------------------------------------------------------------------


def cmd_keys(args: argparse.Namespace) -> int:
    if args.action in ("set", "delete", "check") and not (args.user and args.broker):
        raise SystemExit(f"keys {args.action} needs --user and --broker")
    if args.action == "check":
        return asyncio.run(_check_keys(args))
    if args.action == "list":
        return _run(lambda s: s.ListApiKeys(permission_pb2.ListApiKeysRequest(user_id=args.user), timeout=10), args)
    if args.action == "delete":
        request = permission_pb2.DeleteApiKeysRequest(user_id=args.user, broker=args.broker)
        return _run(lambda s: s.DeleteApiKeys(request, timeout=10), args)
    if args.action == "rotate":
        if args.add_key_to:
            from services.permission.keyring import add_master_key

            print(f"new active master key {add_master_key(args.add_key_to)} in {args.add_key_to}", file=sys.stderr)
        return _run(lambda s: s.RotateMasterKey(permission_pb2.RotateMasterKeyRequest(), timeout=120), args)
    credentials = permission_pb2.ApiCredentials(
        api_key=_secret("NIJA_API_KEY", f"{args.broker} API key for {args.user}: "),
        api_secret=_secret("NIJA_API_SECRET", f"{args.broker} API secret: "),
        passphrase=os.environ.get("NIJA_API_PASSPHRASE", ""),
    )
    request = permission_pb2.SetApiKeysRequest(user_id=args.user, broker=args.broker, credentials=credentials)
    return _run(lambda s: s.SetApiKeys(request, timeout=10), args)


async def _check_keys(args: argparse.Namespace) -> int:
    """A balance read on the broker with the user's stored keys, made by that broker's executor
    (the only service that ever holds the keys in clear); the secret never reaches this process."""
    async with client_channel(args, f"executor-{args.broker}") as channel:
        try:
            result = await executor_pb2_grpc.ExecutorServiceStub(channel).CheckAccount(
                executor_pb2.CheckAccountRequest(user_id=args.user), timeout=30
            )
        except grpc.aio.AioRpcError as exc:
            print(f"nija: {args.broker} keys of {args.user}: {exc.code().name} {reason_of(exc)}: {exc.details()}",
                  file=sys.stderr)
            return 1
    print(f"{args.broker} keys of {args.user}: OK, the exchange answered with {len(result.balances)} balances")
    for balance in result.balances:
        print(f"  {balance.asset:<6} free {balance.free:>24}  locked {balance.locked:>24}")
    return 0


def _secret(env: str, prompt: str) -> str:
    value = os.environ.get(env)
    if value:
        return value
    if not sys.stdin.isatty():
        raise SystemExit(f"set {env} (secrets are never taken from the command line)")
    return getpass.getpass(prompt)


# ---- limits, kill switch, strategies -------------------------------------------------------------


def cmd_limits(args: argparse.Namespace) -> int:
    limits = permission_pb2.RiskLimits(
        max_position_usd=args.max_position_usd or "",
        max_open_positions=args.max_open_positions or 0,
        max_daily_notional_usd=args.max_daily_notional_usd or "",
        max_daily_loss_usd=args.max_daily_loss_usd or "",
        trades_per_second=args.trades_per_second or "",
        trade_burst=args.burst or 0,
    )
    request = permission_pb2.SetLimitsRequest(user_id=args.user, limits=limits, max_order_size_usd=args.max_order_usd or "")
    return _run(lambda s: s.SetLimits(request, timeout=10), args)


def cmd_kill_switch(args: argparse.Namespace) -> int:
    request = permission_pb2.SetKillSwitchRequest(user_id=args.user or "", on=args.state == "on", reason=args.reason)
    return _run(lambda s: s.SetKillSwitch(request, timeout=10), args)


def cmd_strategies(args: argparse.Namespace) -> int:
    if args.action == "list":
        return asyncio.run(_list_subscriptions(args))
    if not (args.strategy and args.user):
        raise SystemExit(f"strategies {args.action} needs --strategy and --user")
    request = permission_pb2.SetSubscriptionRequest(
        strategy_id=args.strategy, user_id=args.user, subscribed=args.action == "subscribe"
    )
    if args.action == "subscribe":
        allocation = allocation_of(args)
        if allocation is not None:
            request.allocation.CopyFrom(allocation)
    elif allocation_of(args) is not None:
        raise SystemExit("strategies unsubscribe takes no allocation flags")
    return _run(lambda s: s.SetSubscription(request, timeout=10), args)


def allocation_of(args: argparse.Namespace) -> permission_pb2.Allocation | None:
    """The allocation the flags describe (None: no flag, the strategy's own size). The values
    are checked by the service, the one place that decides what is valid."""
    if args.capital is not None and args.percent is None:
        raise SystemExit("--capital goes with --percent")
    if args.percent is not None and args.capital is None:
        raise SystemExit("--percent needs --capital (the USD the percent is of)")
    if all(v is None for v in (args.fixed_usd, args.percent, args.multiplier, args.max_order_usd, args.pairs)):
        return None
    pb = permission_pb2.Allocation(max_order_usd=args.max_order_usd or "", pairs=_csv(args.pairs))
    if args.fixed_usd is not None:
        pb.fixed_usd = args.fixed_usd
    elif args.percent is not None:
        pb.percent_of_capital.CopyFrom(permission_pb2.PercentOfCapital(percent=args.percent, capital_usd=args.capital))
    elif args.multiplier is not None:
        pb.multiplier = args.multiplier
    return pb


async def _list_subscriptions(args: argparse.Namespace) -> int:
    request = permission_pb2.ListSubscriptionsRequest(strategy_id=args.strategy or "", user_id=args.user or "")
    async with client_channel(args, "permission") as channel:
        try:
            response = await permission_pb2_grpc.PermissionServiceStub(channel).ListSubscriptions(request, timeout=30)
        except grpc.aio.AioRpcError as exc:
            print(f"nija: {exc.code().name} {reason_of(exc)}: {exc.details()}", file=sys.stderr)
            return 1
    print(subscriptions_table(response.subscriptions))
    return 0


def subscriptions_table(subscriptions: Sequence[permission_pb2.Subscription]) -> str:
    """One row per subscription, columns aligned."""
    rows = [("STRATEGY", "USER", "RULE", "MAX ORDER", "PAIRS")]
    for sub in subscriptions:
        allocation = allocation_from_pb(sub.allocation)
        rows.append((
            sub.strategy_id,
            sub.user_id,
            describe(dataclasses.replace(allocation, max_order_usd=None, pairs=frozenset())),
            f"${fmt(allocation.max_order_usd)}" if allocation.max_order_usd is not None else "-",
            ",".join(sorted(allocation.pairs)) or "all",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    if not subscriptions:
        lines.append("(no subscriptions)")
    return "\n".join(lines)


def cmd_positions(args: argparse.Namespace) -> int:
    """A user's positions and today's figures (any token that may act for the user)."""

    async def main() -> int:
        async with client_channel(args, "permission") as channel:
            try:
                response = await permission_pb2_grpc.PermissionServiceStub(channel).GetPositions(
                    permission_pb2.GetPositionsRequest(user_id=args.user), timeout=10
                )
            except grpc.aio.AioRpcError as exc:
                print(f"nija: {exc.code().name} {reason_of(exc)}: {exc.details()}", file=sys.stderr)
                return 1
        print(json_format.MessageToJson(response, indent=2))
        return 0

    return asyncio.run(main())


def cmd_certs(args: argparse.Namespace) -> int:
    from services.runtime.certs import make_dev_certs

    written = make_dev_certs(pathlib.Path(args.out), args.services or [*MESH_SERVICES, "client"])
    for name, (cert, key) in written.items():
        print(f"{name:<20} {cert}  {key}")
    print(f"CA: {pathlib.Path(args.out) / 'ca.pem'}")
    return 0


# ---- ledger export -------------------------------------------------------------------------------

#: One row per fill, the order's columns repeated; an order without fills is one row of its own.
EXPORT_CSV_COLUMNS = (
    "user_id", "signal_id", "created_at", "pair", "side", "status", "broker",
    "filled_quantity", "average_price", "fees_total",
    "venue_trade_id", "price", "quantity", "fee", "fee_currency", "liquidity", "fill_time",
)
_LIQUIDITY = {common_pb2.LIQUIDITY_MAKER: "maker", common_pb2.LIQUIDITY_TAKER: "taker"}
#: ListFills calls in flight at once during an export.
_EXPORT_CONCURRENCY = 8


def cmd_ledger(args: argparse.Namespace) -> int:
    """`ledger export`: a user's orders (newest first) with their fills, for accounting."""
    request = aggregator_pb2.ListOrdersRequest(user_id=args.user, page_size=1000)
    if args.from_day:
        request.created_from.CopyFrom(_midnight(args.from_day))
    if args.to_day:
        if args.from_day and args.to_day < args.from_day:
            raise SystemExit("nija: --to is before --from")
        if args.to_day < datetime.date.max:  # --to is inclusive: up to the next midnight
            request.created_before.CopyFrom(_midnight(args.to_day + datetime.timedelta(days=1)))
    write = _write_jsonl if args.format == "jsonl" else _csv_writer
    # Into FILE.partial, renamed to FILE once complete: a failed export leaves no half a file.
    partial = pathlib.Path(f"{args.out}.partial") if args.out else None
    out: IO[str] = partial.open("w", newline="", encoding="utf-8") if partial else sys.stdout

    async def main() -> int:
        async with client_channel(args, "aggregator") as channel:
            stub = aggregator_pb2_grpc.AggregatorServiceStub(channel)
            emit = write(out)
            limit = asyncio.Semaphore(_EXPORT_CONCURRENCY)

            async def fills_of(order: aggregator_pb2.Order) -> list[aggregator_pb2.RecordedFill]:
                async with limit:
                    wanted = aggregator_pb2.ListFillsRequest(user_id=order.user_id, signal_id=order.signal_id)
                    return list((await stub.ListFills(wanted, timeout=30)).fills)

            try:
                while True:
                    page = await stub.ListOrders(request, timeout=30)
                    fills = await asyncio.gather(*(fills_of(o) for o in page.orders))
                    for order, its_fills in zip(page.orders, fills):
                        emit(order, its_fills)
                    if not page.next_page_token:
                        return 0
                    request.page_token = page.next_page_token
            except grpc.aio.AioRpcError as exc:
                print(f"nija: {exc.code().name} {reason_of(exc)}: {exc.details()}", file=sys.stderr)
                return 1

    code = 1
    try:
        code = asyncio.run(main())
    finally:
        if partial is not None:
            out.close()
            if code == 0:
                os.replace(partial, args.out)
            else:
                partial.unlink(missing_ok=True)
    return code


def _day(text: str) -> datetime.date:
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            raise ValueError(text)
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date YYYY-MM-DD: {text!r}") from None


def _midnight(day: datetime.date) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromJsonString(f"{day.isoformat()}T00:00:00Z")
    return ts


def _time(ts: timestamp_pb2.Timestamp) -> str:
    return ts.ToJsonString() if ts.seconds or ts.nanos else ""


def _order_fields(order: aggregator_pb2.Order) -> dict[str, str]:
    side = SIDE_FROM_PB.get(order.signal.side)
    return {
        "user_id": order.user_id,
        "signal_id": order.signal_id,
        "created_at": _time(order.created_at),
        "pair": order.signal.pair,
        "side": side.value if side else "",
        "status": status_name(order.status),
        "broker": order.broker,
        "filled_quantity": order.filled_quantity,
        "average_price": order.average_price,
        "fees_total": order.fees_total,
    }


def _fill_fields(recorded: aggregator_pb2.RecordedFill) -> dict[str, Any]:
    fill = recorded.fill
    return {
        "venue_trade_id": fill.venue_trade_id,
        "price": fill.price,
        "quantity": fill.quantity,
        "fee": fill.fee,
        "fee_currency": fill.fee_currency,
        "liquidity": _LIQUIDITY.get(fill.liquidity, ""),
        "fill_time": _time(fill.time),
    }


def _csv_writer(out: IO[str]) -> Callable[[aggregator_pb2.Order, list[aggregator_pb2.RecordedFill]], None]:
    writer = csv.DictWriter(out, fieldnames=EXPORT_CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()

    def emit(order: aggregator_pb2.Order, fills: list[aggregator_pb2.RecordedFill]) -> None:
        head = _order_fields(order)
        if not fills:
            writer.writerow(head)
        for recorded in fills:
            writer.writerow({**head, **_fill_fields(recorded)})

    return emit


def _write_jsonl(out: IO[str]) -> Callable[[aggregator_pb2.Order, list[aggregator_pb2.RecordedFill]], None]:
    def emit(order: aggregator_pb2.Order, fills: list[aggregator_pb2.RecordedFill]) -> None:
        signal_type = SIGNAL_TYPE_FROM_PB.get(order.signal.signal_type)
        row = {
            **_order_fields(order),
            "updated_at": _time(order.updated_at),
            "signal_type": signal_type.value if signal_type else "",
            "size_usd": order.signal.size_usd,
            "order_quantity": order.order_quantity,
            "filled_notional": order.filled_notional,
            "last_sequence": order.last_sequence,
            "fills": [
                {**_fill_fields(f), "broker": f.broker, "sequence": f.sequence} for f in fills
            ],
        }
        out.write(json.dumps(row, separators=(",", ":")) + "\n")

    return emit


def _csv(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


# ---- parser --------------------------------------------------------------------------------------


def _client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--token", default=None, help="admin token (default $NIJA_TOKEN or <data-dir>/admin.token)")
    p.add_argument("--permission", default=None, help="permission service host:port (default: from the manifest)")
    p.add_argument("--data-dir", default="var", help="where `nija up` keeps its manifest and admin token")
    p.add_argument("--mesh", default=None, help="mesh manifest (default <data-dir>/mesh.json)")


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("users", help="add, list, enable or disable users")
    p.add_argument("action", choices=["add", "list", "disable", "enable"])
    p.add_argument("user", nargs="?")
    p.add_argument("--brokers", help="comma-separated (default: all)")
    p.add_argument("--pairs", help="comma-separated (default: every pair)")
    p.add_argument("--max-order-usd", default="10000")
    p.add_argument("--disabled", action="store_true")
    _client_options(p)
    p.set_defaults(func=cmd_users)

    p = sub.add_parser("tokens", help="create, list or revoke bearer tokens")
    p.add_argument("action", choices=["create", "list", "revoke"])
    p.add_argument("token_id", nargs="?", help="for revoke")
    p.add_argument("--kind", choices=[k.value for k in PrincipalKind], default="user")
    p.add_argument("--subject", help="user id, strategy id, admin name or service name")
    p.add_argument("--description", default="")
    p.add_argument("--offline", action="store_true", help="write straight into the database (first admin token)")
    p.add_argument("--database", default="var/permission.db", help="with --offline ($NIJA_DATABASE_URL wins)")
    _client_options(p)
    p.set_defaults(func=cmd_tokens)

    p = sub.add_parser("keys", help="users' exchange API keys (encrypted at rest)")
    p.add_argument("action", choices=["set", "list", "delete", "rotate", "check"],
                   help="check: the broker's executor reads the user's balances with the stored keys")
    p.add_argument("--user")
    p.add_argument("--broker", choices=list(BROKERS))
    p.add_argument("--add-key-to", default=None, metavar="KEY_FILE",
                   help="rotate: first add a fresh master key to this key file as the active one")
    _client_options(p)
    p.set_defaults(func=cmd_keys)

    p = sub.add_parser("limits", help="set a user's risk limits")
    p.add_argument("action", choices=["set"])
    p.add_argument("--user", required=True)
    p.add_argument("--max-order-usd")
    p.add_argument("--max-position-usd")
    p.add_argument("--max-open-positions", type=int)
    p.add_argument("--max-daily-notional-usd")
    p.add_argument("--max-daily-loss-usd")
    p.add_argument("--trades-per-second")
    p.add_argument("--burst", type=int)
    _client_options(p)
    p.set_defaults(func=cmd_limits)

    p = sub.add_parser("kill-switch", help="stop all new trades of a user (or everyone) and cancel open orders")
    p.add_argument("state", choices=["on", "off"])
    p.add_argument("--user", default=None, help="default: the global switch")
    p.add_argument("--reason", default="")
    _client_options(p)
    p.set_defaults(func=cmd_kill_switch)

    p = sub.add_parser("strategies", help="subscribe users to strategies, with how much of each signal they trade")
    p.add_argument("action", choices=["subscribe", "unsubscribe", "list"])
    p.add_argument("--strategy", help="required to subscribe or unsubscribe; list: only this strategy")
    p.add_argument("--user", help="required to subscribe or unsubscribe; list: only this user")
    rule = p.add_mutually_exclusive_group()
    rule.add_argument("--fixed-usd", metavar="USD", help="every signal trades this many USD")
    rule.add_argument("--percent", metavar="P", help="every signal trades P percent of --capital")
    rule.add_argument("--multiplier", metavar="M", help="every signal trades the strategy's size times M (default 1)")
    p.add_argument("--capital", metavar="USD", help="with --percent: the capital the user puts on this strategy")
    p.add_argument("--max-order-usd", metavar="USD", help="cap on one order")
    p.add_argument("--pairs", help="comma-separated: only these pairs (default: every pair)")
    _client_options(p)
    p.set_defaults(func=cmd_strategies)

    p = sub.add_parser("positions", help="a user's positions, realized P&L and today's usage")
    p.add_argument("--user", required=True)
    _client_options(p)
    p.set_defaults(func=cmd_positions)

    p = sub.add_parser("ledger", help="export a user's orders and fills from the aggregator's ledger")
    p.add_argument("action", choices=["export"])
    p.add_argument("--user", required=True)
    p.add_argument("--from", dest="from_day", type=_day, default=None, metavar="YYYY-MM-DD",
                   help="orders created on or after this day (UTC)")
    p.add_argument("--to", dest="to_day", type=_day, default=None, metavar="YYYY-MM-DD",
                   help="orders created on or before this day (UTC, inclusive)")
    p.add_argument("--format", choices=["csv", "jsonl"], default="csv",
                   help="csv: a row per fill (and per order without fills); jsonl: an order per line, fills nested")
    p.add_argument("--out", default=None, metavar="FILE", help="default: stdout")
    p.add_argument("--aggregator", default=None, help="aggregator host:port (default: from the manifest)")
    _client_options(p)
    p.set_defaults(func=cmd_ledger)

    p = sub.add_parser("certs", help="a local CA and per-service certificates for TLS/mTLS in development")
    p.add_argument("--out", default="var/certs")
    p.add_argument("--services", nargs="*", default=None)
    p.set_defaults(func=cmd_certs)
