"""Fuzzing the webhook gateway (hypothesis): thousands of malformed alerts and headers, posted to a
running gateway over real HTTP. Every answer is a 4xx with a JSON reason (never a 2xx, never a
5xx), the router is never called, and the gateway still takes a valid alert afterwards.

The generators cannot produce a valid alert: bodies without the passphrase cannot authenticate,
and bodies with it always carry one field broken in a way the template refuses.

Examples per run: NIJA_FUZZ_EXAMPLES (default 2000, about ten seconds); e.g. 20000 for a long run.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import threading
import time
import urllib.parse
from collections.abc import Iterator
from decimal import Decimal

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from nija.router.v1 import router_pb2, router_pb2_grpc

from services.gateway.alerts import FIELDS, Strategy, hash_passphrase
from services.gateway.app import SERVICE_NAME, Config, GatewayApp
from services.runtime.security import Security
from services.runtime.server import Listen, RunningServer
from services.status.probe import wait_serving

EXAMPLES = int(os.environ.get("NIJA_FUZZ_EXAMPLES", "2000"))
PASS = "fuzz-passphrase-7f3a9c0e51b24d86"
MAX_BODY = 16 * 1024
TICKERS = {"BTCUSD": "BTC-USD", "BINANCE:ETHUSDT": "ETH-USD"}
STRATEGIES = {
    "fz": Strategy("fz", passphrase_sha256=bytes.fromhex(hash_passphrase(PASS)), token="t",
                   tickers=TICKERS, reference_capital_usd=Decimal(1000), rate_per_minute=1_000_000, burst=1_000_000),
}


class CountingRouter(router_pb2_grpc.RouterServiceServicer):
    def __init__(self) -> None:
        self.calls = 0

    async def SubmitStrategySignal(self, request, context):
        self.calls += 1
        yield router_pb2.SubmitStrategySignalResponse(summary=router_pb2.FanOutSummary(
            strategy_signal_id=request.signal.strategy_signal_id))


class Running:
    """The fake router and the gateway on a loop of their own thread (hypothesis drives a sync test)."""

    def __init__(self) -> None:
        self.router = CountingRouter()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self._stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._main(),), daemon=True)

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        server = grpc.aio.server()
        router_pb2_grpc.add_RouterServiceServicer_to_server(self.router, server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        await health_servicer.set("nija.router.v1.RouterService", health_pb2.HealthCheckResponse.SERVING)
        router_port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        config = Config(router_target=f"127.0.0.1:{router_port}", http_port=0, max_body_bytes=MAX_BODY,
                        router_check_interval_s=0.1)
        app = GatewayApp(config, Security(), strategies=STRATEGIES)
        running = await RunningServer(app, Listen(port=0)).start()
        await wait_serving(running.target, SERVICE_NAME, 5.0)
        self.port = app.http.port
        self.ready.set()
        await self._stop.wait()
        await running.stop(0.5)
        await server.stop(0)

    def start(self) -> Running:
        self.thread.start()
        assert self.ready.wait(10), "the gateway did not start"
        return self

    def stop(self) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(10)


class Client:
    """One keep-alive HTTP/1.1 connection, reopened when the server closes it (e.g. after a 413)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        for attempt in (1, 2):
            try:
                self.conn.request("POST", path, body=body, headers=headers)
                resp = self.conn.getresponse()
                data = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                return resp.status, data
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def gateway() -> Iterator[Running]:
    running = Running().start()
    try:
        yield running
    finally:
        running.stop()


# ---- generators: never a valid alert -------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**60), max_value=10**60),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=10), inner, max_size=5)), max_leaves=20)


def good_template() -> dict[str, object]:
    return {"passphrase": PASS, "ticker": "BTCUSD", "action": "buy", "size_usd": "100"}


def not_a_decimal_string(text: str) -> bool:
    return any(c not in "0123456789." for c in text.strip()) or text.strip() in ("", ".")


bad_size = st.one_of(
    st.booleans(), st.lists(json_scalars, max_size=3), st.dictionaries(st.text(max_size=5), json_scalars, max_size=2),
    st.integers(max_value=0), st.decimals(max_value=0, allow_nan=False).map(str),
    st.integers(min_value=10**31, max_value=10**400),  # too many digits
    st.text(max_size=30).filter(not_a_decimal_string),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e3", "0x10", " ", "1,000", "１００"]),
)
#: One field broken: (field, bad value); None removes a required field.
broken_field = st.one_of(
    st.tuples(st.just("ticker"), st.one_of(
        st.none(), json_scalars.filter(lambda v: not isinstance(v, str)),
        st.text(max_size=70).filter(lambda t: t.strip().upper() not in TICKERS
                                    and t.strip().upper().rpartition(":")[2] not in TICKERS))),
    st.tuples(st.just("action"), st.one_of(st.none(), json_values.filter(
        lambda v: not (isinstance(v, str) and v.strip().lower() in ("buy", "sell"))))),
    st.tuples(st.just("size_usd"), bad_size),
    st.tuples(st.just("percent"), json_values),  # size_usd and percent together
    st.tuples(st.just("signal_type"), json_values.filter(
        # Absent, empty or blank: the default (entry), so not broken.
        lambda v: not (v is None or (isinstance(v, str) and v.strip().lower() in
                                     ("", "entry", "exit", "profit_take", "stop_loss"))))),
    st.tuples(st.just("limit_price"), bad_size.filter(lambda v: v != "")),
    st.tuples(st.just("id"), json_values.filter(lambda v: v is not None and not isinstance(v, str))),
    st.tuples(st.just("time"), json_values.filter(lambda v: v is not None and not isinstance(v, str))),
    st.tuples(st.text(min_size=1, max_size=20).filter(lambda k: k not in FIELDS), json_values),
    st.tuples(st.just("passphrase"), json_values.filter(lambda v: v != PASS)),
)


@st.composite
def one_field_broken(draw: st.DrawFn) -> bytes:
    alert = good_template()
    field, value = draw(broken_field)
    if value is None and field in alert:
        del alert[field]
    else:
        alert[field] = value
    return json.dumps(alert).encode()  # NaN/Infinity floats come out as NaN/Infinity: not JSON


@st.composite
def nested(draw: st.DrawFn) -> bytes:
    depth = draw(st.integers(min_value=1, max_value=7000))
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    body = opener * depth + b"1" + closer * depth
    return body if len(body) <= MAX_BODY else body[:MAX_BODY]


without_passphrase = st.one_of(
    st.binary(max_size=600),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=9).map(
        lambda d: json.dumps({k: v for k, v in d.items() if k != "passphrase"}).encode()),
    nested(),
    st.integers(min_value=MAX_BODY + 1, max_value=3 * MAX_BODY).map(lambda n: b"x" * n),
).filter(lambda b: PASS.encode() not in b)

bodies = st.one_of(without_passphrase, one_field_broken())
header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)
headers = st.fixed_dictionaries({}, optional={
    "Content-Type": st.one_of(st.sampled_from(["text/plain", "application/json", "application/x-www-form-urlencoded",
                                               "multipart/form-data; boundary=x", "application/json; charset=latin-1"]),
                              header_text),
    "X-Nija-Signature": header_text,
    "Content-Encoding": st.sampled_from(["identity", "br", "x-made-up"]),
})
paths = st.one_of(
    st.just("/webhook/fz"), st.just("/webhook/fz"), st.just("/webhook/fz"),
    st.text(min_size=1, max_size=30).filter(lambda s: s != "fz").map(
        lambda s: "/webhook/" + urllib.parse.quote(s.encode("utf-8", "surrogatepass"), safe="")),
)


def test_malformed_alerts_are_always_a_4xx_with_a_reason(gateway: Running) -> None:
    client = Client(gateway.port)
    answers: dict[int, int] = {}
    started = time.monotonic()

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=False,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
    @given(path=paths, body=bodies, header=headers)
    def post(path: str, body: bytes, header: dict[str, str]) -> None:
        assume("Content-Encoding" not in header or header["Content-Encoding"] == "identity" or body)
        status, raw = client.post(path, body, header)
        answers[status] = answers.get(status, 0) + 1
        assert 400 <= status < 500, (status, raw[:200], body[:200], header)
        answer = json.loads(raw)
        assert isinstance(answer["error"], str) and answer["error"].isupper() and answer["message"], answer

    post()
    total = sum(answers.values())
    print(f"\nfuzz: {total} bodies in {time.monotonic() - started:.1f} s; answers {dict(sorted(answers.items()))}")
    assert total >= EXAMPLES // 2
    assert gateway.router.calls == 0
    # Still serving, and a valid alert still goes through to the router.
    status, raw = client.post("/webhook/fz", json.dumps(good_template()).encode(), {"Content-Type": "text/plain"})
    assert status == 202, raw
    deadline = time.monotonic() + 5
    while gateway.router.calls == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
