"""Benchmark of the paper exchange; prints one JSON object on its last line.

* raw_http_rps: GET /fapi/v1/ping served per second (aiohttp client, 32 concurrent
  workers) with the server in its own process, so it gets one core to itself
* raw_signed_rps: same for a signed GET /fapi/v1/openOrders?symbol=BTCUSDT
* ccxt_rps: fetch_mark_price calls per second through ccxt (rate limiter off)
* engine_ticks_per_s: Engine.set_price calls per second with 100 symbols and
  1,000 resting stops none of which is crossed (the common case)

Bounded: every phase runs for a fixed short duration; only 127.0.0.1 is used.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp

from simulator.auth import sign
from simulator.client import binanceusdm_client
from simulator.clock import ManualClock
from simulator.engine import Engine, EngineConfig
from simulator.markets import build_markets

PHASE_S = 3.0  # float ok: seconds per HTTP phase
KEY, SECRET = "bench-key", "bench-secret"


async def _start_server() -> tuple[asyncio.subprocess.Process, dict[str, str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulator",
        "--port",
        "0",
        "--admin-port",
        "0",
        "--weight-limit",
        "1000000000",
        "--api-key",
        KEY,
        "--api-secret",
        SECRET,
        stdout=asyncio.subprocess.PIPE,
        cwd=str(Path(__file__).resolve().parents[1]),
    )
    assert proc.stdout is not None
    while True:
        line = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode()
        if not line:
            raise RuntimeError("simulator exited early")
        if line.startswith("{"):
            return proc, json.loads(line)


async def _hammer(url: str, signed: bool, workers: int = 32) -> float:  # float ok: a rate
    count = 0
    deadline = time.perf_counter() + PHASE_S
    conn = aiohttp.TCPConnector(limit=workers)
    async with aiohttp.ClientSession(connector=conn) as s:

        async def worker() -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                target = url
                headers = {}
                if signed:
                    q = urlencode({"symbol": "BTCUSDT", "timestamp": int(time.time() * 1000)})
                    target = f"{url}?{q}&signature={sign(SECRET, q)}"
                    headers["X-MBX-APIKEY"] = KEY
                async with s.get(target, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"status {r.status}")
                count += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(workers)))
        return count / (time.perf_counter() - t0)


async def _ccxt_rate(rest_url: str) -> float:  # float ok: a rate
    ex = binanceusdm_client(rest_url, api_key=KEY, secret=SECRET, enableRateLimit=False)
    try:
        await ex.load_markets()
        count = 0
        deadline = time.perf_counter() + PHASE_S

        async def worker() -> None:
            nonlocal count
            while time.perf_counter() < deadline:
                await ex.fetch_mark_price("BTC/USDT:USDT")
                count += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(8)))
        return count / (time.perf_counter() - t0)
    finally:
        await ex.close()


def _engine_ticks(n_ticks: int = 400_000) -> dict[str, float]:  # float ok: rates
    extra = [f"SYM{i:03d}USDT" for i in range(94)]
    markets = build_markets(extra)
    assert len(markets) == 100
    engine = Engine(markets, ManualClock(), EngineConfig(check_margin=False))
    stops = 0
    for sym, m in markets.items():
        mark = engine.mark[sym]
        for k in range(5):  # far away so the benchmark measures non-crossing ticks
            below = m.round_price(mark * (Decimal("0.70") - Decimal(k) / 100))
            above = m.round_price(mark * (Decimal("1.30") + Decimal(k) / 100))
            q = m.floor_qty(Decimal(200) / mark) + m.step_size * 10
            engine.place_algo(sym, "SELL", "STOP_MARKET", q, below, working_type="MARK_PRICE")
            engine.place_algo(sym, "BUY", "STOP_MARKET", q, above, working_type="MARK_PRICE")
            stops += 2
    rng = random.Random(42)
    symbols = list(markets)
    ticks: list[tuple[str, Decimal]] = []
    prices = dict(engine.mark)
    for i in range(n_ticks):
        sym = symbols[i % len(symbols)]
        m = markets[sym]
        step = m.tick_size * rng.randint(-3, 3)
        prices[sym] = max(prices[sym] + step, m.tick_size)
        ticks.append((sym, prices[sym]))
    set_price = engine.set_price
    t0 = time.perf_counter()
    for sym, price in ticks:
        set_price(sym, price)
    elapsed = time.perf_counter() - t0
    return {"ticks_per_s": n_ticks / elapsed, "stops": stops, "open": len(engine.open_algos())}


async def main() -> dict[str, object]:
    eng = _engine_ticks()
    proc, info = await _start_server()
    try:
        base = info["rest_url"]
        raw = await _hammer(base + "/fapi/v1/ping", signed=False)
        raw_signed = await _hammer(base + "/fapi/v1/openOrders", signed=True)
        via_ccxt = await _ccxt_rate(base)
    finally:
        proc.terminate()
        await proc.wait()
    return {
        "raw_http_rps": round(raw),
        "raw_signed_rps": round(raw_signed),
        "ccxt_rps": round(via_ccxt),
        "engine_ticks_per_s": round(eng["ticks_per_s"]),
        "symbols": 100,
        "resting_stops": int(eng["stops"]),
        "goals": {"raw_http_rps": 2000, "engine_ticks_per_s": 100_000},
    }


if __name__ == "__main__":
    result = asyncio.run(main())
    print(json.dumps(result))
