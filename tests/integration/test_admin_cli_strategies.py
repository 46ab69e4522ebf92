"""`nija strategies subscribe|unsubscribe|list`, run in-process against a real permission server.

The CLI calls asyncio.run itself, so the tests are plain functions and the server runs in a
child process.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from nija.permission.v1 import permission_pb2 as pb

from services import admin_cli

#: The permission service with the tests' fixed tokens, in a process of its own (grpc's asyncio
#: runtime serves one event loop per process, and the CLI runs its own with asyncio.run).
SERVER = """
import asyncio, sys
from services.permission.app import Config, build_app
from services.runtime.security import Security
from services.runtime.server import Listen, RunningServer
from tests.principals import authenticate

async def main():
    app = build_app(Config(database_path=sys.argv[1]), Security(), authenticate)
    server = await RunningServer(app, Listen(port=0)).start()
    print(server.target, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until stdin closes
    await server.stop(0)

asyncio.run(main())
"""


@pytest.fixture
def target(tmp_path: Path) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(tmp_path / "permission.db")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2],
    )
    try:
        assert process.stdout is not None
        yield process.stdout.readline().strip()
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def nija(target: str, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="nija")
    admin_cli.add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([*argv, "--permission", target, "--token", "tok-admin"])
    return args.func(args)


def table(target: str, capsys: pytest.CaptureFixture[str], *filters: str) -> list[list[str]]:
    capsys.readouterr()
    assert nija(target, "strategies", "list", *filters) == 0
    return [line.split() for line in capsys.readouterr().out.splitlines()]


def test_subscribe_with_each_rule_then_list_and_unsubscribe(target: str, capsys: pytest.CaptureFixture[str]):
    assert nija(target, "strategies", "subscribe", "--strategy", "momentum", "--user", "alice",
                "--fixed-usd", "250", "--max-order-usd", "200") == 0
    assert nija(target, "strategies", "subscribe", "--strategy", "momentum", "--user", "bob",
                "--percent", "2.5", "--capital", "10000", "--pairs", "ETH-USD,BTC-USD") == 0
    assert nija(target, "strategies", "subscribe", "--strategy", "carry", "--user", "bob", "--multiplier", "0.5") == 0
    # The existing form still works: no allocation flag trades the strategy's own size.
    assert nija(target, "strategies", "subscribe", "--strategy", "carry", "--user", "dave") == 0

    assert table(target, capsys) == [
        ["STRATEGY", "USER", "RULE", "MAX", "ORDER", "PAIRS"],
        ["carry", "bob", "x0.5", "-", "all"],
        ["carry", "dave", "x1", "-", "all"],
        ["momentum", "alice", "fixed", "$250", "$200", "all"],
        ["momentum", "bob", "2.5%", "of", "$10000", "-", "BTC-USD,ETH-USD"],
    ]
    by_user = table(target, capsys, "--user", "bob")[1:]
    assert [row[:2] for row in by_user] == [["carry", "bob"], ["momentum", "bob"]]
    by_strategy = table(target, capsys, "--strategy", "carry")[1:]
    assert [row[:2] for row in by_strategy] == [["carry", "bob"], ["carry", "dave"]]

    # Subscribing again replaces; unsubscribing removes.
    assert nija(target, "strategies", "subscribe", "--strategy", "carry", "--user", "bob", "--fixed-usd", "10") == 0
    assert nija(target, "strategies", "unsubscribe", "--strategy", "carry", "--user", "dave") == 0
    assert table(target, capsys, "--strategy", "carry") == [
        ["STRATEGY", "USER", "RULE", "MAX", "ORDER", "PAIRS"],
        ["carry", "bob", "fixed", "$10", "-", "all"],
    ]
    assert table(target, capsys, "--strategy", "nobody")[-1] == ["(no", "subscriptions)"]


def test_bad_values_are_the_services_to_refuse(target: str, capsys: pytest.CaptureFixture[str]):
    capsys.readouterr()
    code = nija(target, "strategies", "subscribe", "--strategy", "momentum", "--user", "alice", "--percent", "150",
                "--capital", "100")
    assert code == 1
    assert "INVALID_ARGUMENT BAD_PERCENT" in capsys.readouterr().err
    assert nija(target, "strategies", "subscribe", "--strategy", "momentum", "--user", "mallory") == 1
    assert "NOT_FOUND USER_NOT_FOUND" in capsys.readouterr().err
    assert table(target, capsys)[1:] == [["(no", "subscriptions)"]]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["subscribe", "--strategy", "s"], "needs --strategy and --user"),
        (["subscribe", "--strategy", "s", "--user", "u", "--percent", "5"], "--percent needs --capital"),
        (["subscribe", "--strategy", "s", "--user", "u", "--capital", "5"], "--capital goes with --percent"),
        (["unsubscribe", "--strategy", "s", "--user", "u", "--fixed-usd", "5"], "takes no allocation flags"),
    ],
)
def test_flag_mistakes_stop_before_any_call(argv: list[str], message: str):
    # No server: a call would fail differently.
    with pytest.raises(SystemExit, match=message):
        nija("127.0.0.1:1", "strategies", *argv)


def test_one_rule_at_a_time():
    with pytest.raises(SystemExit):  # argparse: mutually exclusive
        nija("127.0.0.1:1", "strategies", "subscribe", "--strategy", "s", "--user", "u",
             "--fixed-usd", "5", "--multiplier", "2")


def test_allocation_flags_make_the_message():
    def of(*flags: str) -> pb.Allocation | None:
        parser = argparse.ArgumentParser()
        admin_cli.add_commands(parser.add_subparsers(dest="command"))
        return admin_cli.allocation_of(parser.parse_args(["strategies", "subscribe", *flags]))

    assert of() is None
    assert of("--multiplier", "2") == pb.Allocation(multiplier="2")
    assert of("--max-order-usd", "50") == pb.Allocation(max_order_usd="50")
    assert of("--percent", "1", "--capital", "900", "--pairs", "BTC-USD, ETH-USD") == pb.Allocation(
        percent_of_capital=pb.PercentOfCapital(percent="1", capital_usd="900"), pairs=["BTC-USD", "ETH-USD"]
    )
