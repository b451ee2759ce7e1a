"""Price sources, the admin HTTP API and the ``python -m simulator`` entry point."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp

from simulator.markets import build_markets
from simulator.prices import CsvReplay, SyntheticPath, make_source
from simulator.server import PaperExchange
from tests.simulator.conftest import BTC
from tests.waiting import PATIENCE_S, until

MARKETS = build_markets()


def test_synthetic_paths_are_seeded_and_on_tick() -> None:
    for scenario in ("random_walk", "jumps", "flash_crash", "slow_grind"):
        a = SyntheticPath(MARKETS, seed=3, scenario=scenario, step_ms=100)
        b = SyntheticPath(MARKETS, seed=3, scenario=scenario, step_ms=100)
        ua, ub = a.updates_until(20_000), b.updates_until(20_000)
        assert ua == ub and len(ua) == 200 * len(MARKETS)
        for sym, price in ua:
            assert isinstance(price, Decimal) and price % MARKETS[sym].tick_size == 0
    crash = SyntheticPath(MARKETS, seed=1, scenario="flash_crash", step_ms=1000)
    btc = [p for s, p in crash.updates_until(100_000) if s == "BTCUSDT"]
    assert min(btc) < Decimal("95000") * Decimal("0.9")  # the crash happened
    assert btc[-1] > min(btc) * Decimal("1.1")  # and it recovered
    grind = SyntheticPath(MARKETS, seed=1, scenario="slow_grind", step_ms=1000)
    g = [p for s, p in grind.updates_until(300_000) if s == "BTCUSDT"]
    assert g[-1] < g[0]


def test_csv_replay_respects_speed(tmp_path: Path) -> None:
    f = tmp_path / "p.csv"
    f.write_text(
        "timestamp,symbol,price\n1000,BTCUSDT,95000.04\n3000,ETHUSDT,3000.123\n"
        "5000,BTCUSDT,94000\n6000,NOPEUSDT,1\n"
    )
    r = CsvReplay(f, MARKETS, speed=2.0)
    assert r.updates_until(0) == [("BTCUSDT", Decimal("95000.0"))]
    assert r.updates_until(1000) == [("ETHUSDT", Decimal("3000.12"))]
    assert r.updates_until(2000) == [("BTCUSDT", Decimal("94000.0"))]
    assert r.updates_until(10_000) == [] and r.exhausted
    assert isinstance(make_source(f"csv:{f}@10", MARKETS, 0, 1000), CsvReplay)


async def test_price_feed_drives_marks() -> None:
    src = SyntheticPath(MARKETS, seed=5, scenario="random_walk", step_ms=20)
    async with PaperExchange(price_source=src, tick_interval_ms=20, admin_port=None) as sim:
        await until(lambda: sim.engine.mark["BTCUSDT"] != Decimal("95000.00"), "a tick of BTC")


async def _post(s: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> Any:
    async with s.post(url, data=json.dumps(body)) as r:
        data = await r.json()
        assert r.status == 200, data
        return data


async def test_admin_api_round_trip(ex: Any, sim: PaperExchange) -> None:
    a = sim.admin_url
    async with aiohttp.ClientSession() as s:
        await _post(
            s, a + "/position/open", {"symbol": "BTCUSDT", "side": "buy", "quantity": "0.02"}
        )
        t0 = sim.clock.now_ms()
        await _post(s, a + "/clock/advance", {"ms": 60_000})
        assert sim.clock.now_ms() - t0 >= 60_000
        stop = await ex.create_order(
            BTC, "market", "sell", 0.02, None, {"stopLossPrice": 90000, "reduceOnly": True}
        )
        cancelled = await _post(s, a + "/order/cancel", {"order_id": int(stop["id"])})
        assert cancelled["algoStatus"] == "CANCELED"
        await _post(s, a + "/price", {"symbol": "BTCUSDT", "price": 96000.5})
        assert (await ex.fetch_mark_price(BTC))["markPrice"] == 96000.5
        rule = await _post(
            s,
            a + "/faults",
            {
                "kind": "error",
                "endpoint": "GET /fapi/v3/account",
                "code": -1001,
                "msg": "busy",
                "count": 2,
            },
        )
        async with s.get(a + "/faults") as r:
            assert [x["id"] for x in await r.json()] == [rule["id"]]
        async with s.delete(a + "/faults") as r:
            assert r.status == 200
        await _post(s, a + "/config", {"slippage_bps": "3"})
        closed = await _post(s, a + "/position/close", {"symbol": "BTCUSDT"})
        assert closed["status"] == "FILLED" and closed["reduceOnly"] is True
        async with s.get(a + "/state") as r:
            truth = await r.json()
        assert [o["source"] for o in truth["orders"]] == ["manual", "manual"]
        assert [x["source"] for x in truth["algoOrders"]] == ["api"]
        ep = truth["episodes"][0]
        assert ep["open"] is False and ep["unprotectedMs"] >= 60_000
        assert truth["unprotectedMs"]["BTCUSDT"] == ep["unprotectedMs"]
        assert len(truth["fills"]) == 2
        await _post(s, a + "/ws/drop", {"kind": "all"})
        await _post(s, a + "/reset", {})
        async with s.get(a + "/state") as r:
            assert (await r.json())["orders"] == []
        async with s.post(a + "/position/open", data='{"symbol":"BTCUSDT"}') as r:
            assert r.status == 400


async def test_main_runs_until_interrupted() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulator",
        "--port",
        "0",
        "--admin-port",
        "0",
        "--symbols",
        "ADAUSDT",
        "--price-path",
        "random_walk",
        "--tick-interval",
        "50",
        "--seed",
        "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        info: dict[str, Any] = {}
        while not info:
            line = (await asyncio.wait_for(proc.stdout.readline(), PATIENCE_S)).decode()
            if line.startswith("{"):
                info = json.loads(line)
        assert "ADAUSDT" in info["symbols"]
        async with aiohttp.ClientSession() as s:
            async with s.get(info["rest_url"] + "/fapi/v1/ping") as r:
                assert r.status == 200 and await r.json() == {}
            async with s.get(info["admin_url"] + "/health") as r:
                assert (await r.json()) == {"ok": True}
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), PATIENCE_S) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
