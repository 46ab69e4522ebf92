"""The webhook gateway in this process (HTTP and gRPC on port 0) against a fake router that
implements SubmitStrategySignal: records what it got, streams canned per-user updates, then a
summary (or refuses, as the router would)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from nija.common.v1 import common_pb2
from nija.router.v1 import router_pb2, router_pb2_grpc

from services.gateway.alerts import Strategy, hash_passphrase, sign
from services.gateway.app import SERVICE_NAME, Config, GatewayApp
from services.runtime.errors import ServiceError, stream
from services.runtime.security import Security
from services.runtime.server import Listen, RunningServer
from services.status.probe import health_status, wait_serving

PASS = "tv-pass"
ROUTER_HEALTH = "nija.router.v1.RouterService"


def _update(signal_id: str, user: str, status: int, filled: str, reason: str = "") -> router_pb2.SubmitStrategySignalResponse:
    return router_pb2.SubmitStrategySignalResponse(update=common_pb2.ExecutionUpdate(
        signal_id=signal_id, user_id=user, status=status, filled_quantity=filled, reason=reason))


class FakeRouter(router_pb2_grpc.RouterServiceServicer):
    def __init__(self) -> None:
        self.signals: list[router_pb2.StrategySignal] = []
        self.tokens: list[str] = []
        #: Set to refuse every call with this error, as the router refuses.
        self.refusal: ServiceError | None = None
        #: Each call waits for this before streaming (a slow fan-out).
        self.release = asyncio.Event()
        self.release.set()

    @stream
    async def SubmitStrategySignal(self, request, context) -> AsyncIterator[router_pb2.SubmitStrategySignalResponse]:
        self.signals.append(request.signal)
        self.tokens.append(dict(context.invocation_metadata()).get("authorization", ""))
        if self.refusal is not None:
            raise self.refusal
        await self.release.wait()
        sid = request.signal.strategy_signal_id
        yield _update(f"{sid}.alice", "alice", common_pb2.EXECUTION_STATUS_ROUTING, "0")
        yield _update(f"{sid}.alice", "alice", common_pb2.EXECUTION_STATUS_FILLED, "0.0025")
        yield _update(f"{sid}.bob", "bob", common_pb2.EXECUTION_STATUS_REJECTED, "0", "daily limit reached")
        # A split leg of alice's order: its own figures must not replace hers.
        leg = _update(f"{sid}.alice~1", "alice", common_pb2.EXECUTION_STATUS_EXECUTING, "0.001")
        leg.update.parent_signal_id = f"{sid}.alice"
        yield leg
        yield router_pb2.SubmitStrategySignalResponse(skipped=router_pb2.SkippedSubscriber(user_id="carol", reason="pair filtered out"))
        yield router_pb2.SubmitStrategySignalResponse(summary=router_pb2.FanOutSummary(
            strategy_signal_id=sid, subscribers=3, orders=2, skipped=1, outcomes={"filled": 1, "rejected": 1}))


@dataclasses.dataclass
class Gateway:
    router: FakeRouter
    app: GatewayApp
    running: RunningServer
    http: aiohttp.ClientSession
    url: str

    async def post(self, strategy: str, body: bytes | str | dict, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
        data = json.dumps(body) if isinstance(body, dict) else body
        async with self.http.post(f"{self.url}/webhook/{strategy}", data=data,
                                  headers={"Content-Type": "text/plain", **(headers or {})}) as resp:
            return resp.status, await resp.json(), resp.headers

    async def result(self, alert_id: str, passphrase: str | None = PASS) -> tuple[int, Any]:
        headers = {"X-Nija-Passphrase": passphrase} if passphrase is not None else {}
        async with self.http.get(f"{self.url}/alerts/{alert_id}", headers=headers) as resp:
            return resp.status, await resp.json()

    async def until_final(self, alert_id: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status, body = await self.result(alert_id)
            assert status == 200, body
            if body["status"] != "processing" or time.monotonic() > deadline:
                return body
            await asyncio.sleep(0.02)


STRATEGIES = {
    "tv1": Strategy("tv1", passphrase_sha256=bytes.fromhex(hash_passphrase(PASS)), token="token-tv1",
                    tickers={"BTCUSD": "BTC-USD", "ETHUSD": "ETH-USD"}, reference_capital_usd=Decimal(10000),
                    rate_per_minute=6000, burst=100),
    "signer": Strategy("signer", hmac_secret=b"hmac-key", token="token-signer", tickers={"BTCUSD": "BTC-USD"}),
    "slow": Strategy("slow", passphrase_sha256=bytes.fromhex(hash_passphrase(PASS)), token="token-slow",
                     tickers={"BTCUSD": "BTC-USD"}, rate_per_minute=1, burst=2),
}


@pytest.fixture
async def gw() -> AsyncIterator[Gateway]:
    router = FakeRouter()
    server = grpc.aio.server()
    router_pb2_grpc.add_RouterServiceServicer_to_server(router, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    await health_servicer.set(ROUTER_HEALTH, health_pb2.HealthCheckResponse.SERVING)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    config = Config(router_target=f"127.0.0.1:{port}", http_port=0, router_check_interval_s=0.1, max_body_bytes=4096)
    app = GatewayApp(config, security=Security(), strategies=STRATEGIES)
    running = await RunningServer(app, Listen(port=0)).start()
    await wait_serving(running.target, SERVICE_NAME, 5.0)  # once it has seen the router's health
    http = aiohttp.ClientSession()
    try:
        yield Gateway(router, app, running, http, f"http://127.0.0.1:{app.http.port}")
    finally:
        await http.close()
        await running.stop(0.5)
        await server.stop(0)


async def until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def alert(**fields: object) -> dict[str, object]:
    out = {"passphrase": PASS, "ticker": "BTCUSD", "action": "buy", "size_usd": "100"}
    out.update(fields)
    return {k: v for k, v in out.items() if v is not None}


async def test_health_follows_the_router_and_an_alert_is_202_at_once_then_done(gw: Gateway) -> None:
    assert await health_status(gw.running.target, SERVICE_NAME) == "SERVING"
    gw.router.release.clear()  # the fan-out cannot finish: the answer must not wait for it
    started = time.monotonic()
    status, body, _ = await gw.post("tv1", alert(id="a-1", signal_type="exit", limit_price="61000.5"))
    assert time.monotonic() - started < 0.5
    assert (status, body) == (202, {"alert_id": "a-1", "status": "accepted", "result": "/alerts/a-1"})
    assert (await gw.result("a-1"))[1]["status"] == "processing"
    gw.router.release.set()
    result = await gw.until_final("a-1")
    assert result["status"] == "done" and result["strategy_id"] == "tv1"
    assert result["users"] == {
        "alice": {"status": "filled", "reason": "", "filled_quantity": "0.0025", "signal_id": "a-1.alice"},
        "bob": {"status": "rejected", "reason": "daily limit reached", "filled_quantity": "0", "signal_id": "a-1.bob"},
    }
    assert result["skipped"] == {"carol": "pair filtered out"}
    assert result["summary"]["outcomes"] == {"filled": 1, "rejected": 1} and result["summary"]["orders"] == 2
    assert result["signal"]["pair"] == "BTC-USD" and result["signal"]["limit_price"] == "61000.5"
    (signal,) = gw.router.signals
    assert (signal.strategy_signal_id, signal.strategy_id, signal.pair, signal.size_usd) == ("a-1", "tv1", "BTC-USD", "100")
    assert signal.side == common_pb2.SIDE_BUY and signal.signal_type == common_pb2.SIGNAL_TYPE_EXIT
    assert gw.router.tokens == ["Bearer token-tv1"]  # the strategy's own token


async def test_the_same_alert_three_times_trades_once(gw: Gateway) -> None:
    answers = [await gw.post("tv1", alert(id="dup-1")) for _ in range(3)]
    assert [a[0] for a in answers] == [202, 200, 200]
    assert answers[1][1] == {"status": "duplicate", "alert_id": "dup-1", "result": "/alerts/dup-1"}
    # Without an id: the same content is the same alert.
    no_id = [await gw.post("tv1", alert(size_usd="77")) for _ in range(3)]
    assert [a[0] for a in no_id] == [202, 200, 200] and no_id[2][1]["alert_id"] == no_id[0][1]["alert_id"]
    await gw.until_final("dup-1")
    await gw.until_final(no_id[0][1]["alert_id"])
    assert sorted(s.strategy_signal_id for s in gw.router.signals) == sorted(["dup-1", no_id[0][1]["alert_id"]])


async def test_a_wrong_passphrase_is_401_and_nothing_happens(gw: Gateway) -> None:
    status, body, _ = await gw.post("tv1", alert(passphrase="guess", id="w-1"))
    assert (status, body["error"]) == (401, "BAD_PASSPHRASE")
    await asyncio.sleep(0.1)
    assert gw.router.signals == []
    assert (await gw.result("w-1"))[0] == 404
    # Not a duplicate of anything either: the right passphrase goes through afterwards.
    assert (await gw.post("tv1", alert(id="w-1")))[0] == 202


async def test_hmac_signed_alerts_and_a_tampered_one(gw: Gateway) -> None:
    raw = json.dumps(alert(passphrase=None, id="h-1")).encode()
    status, _, _ = await gw.post("signer", raw, {"X-Nija-Signature": sign(b"hmac-key", raw)})
    assert status == 202
    tampered = raw.replace(b'"100"', b'"900"')
    status, body, _ = await gw.post("signer", tampered, {"X-Nija-Signature": sign(b"hmac-key", raw)})
    assert (status, body["error"]) == (401, "BAD_SIGNATURE")
    status, body, _ = await gw.post("signer", raw)  # unsigned
    assert (status, body["error"]) == (401, "BAD_SIGNATURE")
    # Its result is read with a signature over the alert id.
    async with gw.http.get(f"{gw.url}/alerts/h-1", headers={"X-Nija-Signature": sign(b"hmac-key", b"h-1")}) as resp:
        assert resp.status == 200 and (await resp.json())["strategy_id"] == "signer"
    async with gw.http.get(f"{gw.url}/alerts/h-1", headers={"X-Nija-Signature": sign(b"wrong", b"h-1")}) as resp:
        assert resp.status == 401
    await until(lambda: gw.router.signals)
    await asyncio.sleep(0.05)
    assert [s.size_usd for s in gw.router.signals] == ["100"]


async def test_refusals_of_bad_input(gw: Gateway) -> None:
    status, body, _ = await gw.post("tv1", alert(ticker="DOGEUSD"))
    assert (status, body["error"]) == (422, "UNKNOWN_TICKER") and body["message"]
    status, body, _ = await gw.post("tv1", "{not json")
    assert (status, body["error"]) == (400, "MALFORMED_JSON")
    status, body, _ = await gw.post("tv1", alert(action="hodl"))
    assert (status, body["error"]) == (400, "BAD_FIELD") and body["message"].startswith("action:")
    status, body, _ = await gw.post("nobody", alert())
    assert (status, body["error"]) == (404, "UNKNOWN_STRATEGY")
    status, body, _ = await gw.post("tv1", b"\xff\xfe\x00")
    assert (status, body["error"]) == (415, "NOT_UTF8")
    status, body, _ = await gw.post("tv1", alert(id="x" * 5000))  # over max_body_bytes (4096)
    assert (status, body["error"]) == (413, "BODY_TOO_LARGE")

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: refused while reading
        for _ in range(10):
            yield b" " * 1000

    async with gw.http.post(f"{gw.url}/webhook/tv1", data=chunked()) as resp:
        assert resp.status == 413 and (await resp.json())["error"] == "BODY_TOO_LARGE"
    async with gw.http.get(f"{gw.url}/webhook/tv1") as resp:
        assert resp.status == 405 and (await resp.json())["error"] == "METHOD_NOT_ALLOWED"
    async with gw.http.get(f"{gw.url}/alerts/none-such", headers={"X-Nija-Passphrase": PASS}) as resp:
        assert resp.status == 404 and (await resp.json())["error"] == "UNKNOWN_ALERT"
    await asyncio.sleep(0.05)
    assert gw.router.signals == []


async def test_over_the_rate_is_429_with_retry_after(gw: Gateway) -> None:
    assert (await gw.post("slow", alert(id="r-1")))[0] == 202
    assert (await gw.post("slow", alert(id="r-2")))[0] == 202
    status, body, headers = await gw.post("slow", alert(id="r-3"))
    assert (status, body["error"]) == (429, "RATE_LIMITED")
    assert 1 <= int(headers["Retry-After"]) <= 60
    # A duplicate is still answered as one, not counted against the rate.
    assert (await gw.post("slow", alert(id="r-1")))[0] == 200
    assert (await gw.post("tv1", alert(id="r-3")))[0] == 202  # other strategies are not limited by it


async def test_a_router_refusal_makes_the_alert_failed_with_the_reason(gw: Gateway) -> None:
    gw.router.refusal = ServiceError(grpc.StatusCode.PERMISSION_DENIED, "NOT_SUBSCRIBED", "strategy tv1 has no subscribers")
    assert (await gw.post("tv1", alert(id="f-1")))[0] == 202
    result = await gw.until_final("f-1")
    assert result["status"] == "failed"
    assert (result["code"], result["error"]) == ("PERMISSION_DENIED", "NOT_SUBSCRIBED")
    assert "no subscribers" in result["message"]


async def test_results_need_the_strategys_passphrase(gw: Gateway) -> None:
    assert (await gw.post("tv1", alert(id="p-1")))[0] == 202
    assert (await gw.result("p-1", passphrase="wrong"))[0] == 401
    assert (await gw.result("p-1", passphrase=None))[0] == 401
    assert (await gw.result("p-1"))[0] == 200


async def test_an_unreachable_router_makes_the_gateway_not_ready(gw: Gateway) -> None:
    assert await health_status(gw.running.target, SERVICE_NAME) == "SERVING"
    # Point the watcher at a closed port: readiness follows within a few checks.
    channel = gw.app._health_channel
    gw.app._health_channel = grpc.aio.insecure_channel("127.0.0.1:1")
    await gw.app._stop_watcher()
    gw.app._watcher = asyncio.create_task(gw.app._watch_router())
    deadline = time.monotonic() + 5
    while await health_status(gw.running.target, SERVICE_NAME) == "SERVING":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    await gw.app._health_channel.close()
    gw.app._health_channel = channel


async def test_a_bug_in_a_handler_is_a_logged_500_and_the_gateway_goes_on(gw: Gateway, monkeypatch, caplog) -> None:
    original = gw.app.receive
    monkeypatch.setattr(gw.app, "receive", lambda *a: 1 / 0)
    status, body, _ = await gw.post("tv1", alert(id="b-1"))
    assert (status, body["error"]) == (500, "INTERNAL")
    assert any("webhook handler failed" in r.message and r.exc_info for r in caplog.records)
    assert PASS not in caplog.text  # the body (and its passphrase) is not logged
    monkeypatch.setattr(gw.app, "receive", original)
    assert (await gw.post("tv1", alert(id="b-1")))[0] == 202
