"""The metrics endpoint's HTTP answers, over a real socket."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

from services.runtime.metrics import EXPORTED, TRADES_ROUTED, MetricsServer


async def _get(port: int, path: str, method: str = "GET") -> tuple[int, str]:
    def call() -> tuple[int, str]:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    return await asyncio.get_running_loop().run_in_executor(None, call)


async def test_metrics_health_and_readiness() -> None:
    ready = False
    server = await MetricsServer("127.0.0.1", 0, lambda: ready).start()
    try:
        TRADES_ROUTED.labels("kraken", "BTC-USD").inc()
        status, text = await _get(server.port, "/metrics")
        assert status == 200 and 'nija_trades_routed_total{broker="kraken",pair="BTC-USD"}' in text
        assert await _get(server.port, "/health") == (200, "ok\n")
        assert await _get(server.port, "/ready") == (503, "not ready\n")
        ready = True
        assert await _get(server.port, "/ready") == (200, "ready\n")
        assert (await _get(server.port, "/other"))[0] == 404
        assert (await _get(server.port, "/metrics", "POST"))[0] == 405
    finally:
        await server.stop()
    assert len(set(EXPORTED)) == len(EXPORTED) and all(name.startswith("nija_") for name in EXPORTED)
