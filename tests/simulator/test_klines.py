"""``GET /fapi/v1/klines`` through real ccxt: candles from recorded and loaded marks."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import aiohttp
import ccxt.async_support as ccxt
import pytest

from simulator.candles import INTERVALS, align
from simulator.errors import ApiError
from simulator.server import PaperExchange
from tests.simulator.conftest import BTC

MIN = 60_000

# (offset from B, price); B is the open of the candle 10 minutes before the current one.
HISTORY: list[tuple[int, str]] = [
    (-30_000, "94990"),  # candle -1: no earlier price, so it opens at its first mark
    (0, "95000"),  # exactly at candle 0's open: the price in force at its start
    (10_000, "95100.5"),
    (20_000, "94900"),
    (59_999, "95050"),  # the last ms of candle 0
    (90_000, "95200"),  # candle 1 opens at the carried 95050
    # candles 2 and 3: no marks, flat at 95200
    (4 * MIN + 5_000, "94800"),
    (4 * MIN + 6_000, "94850.3"),
    # candles 5..10 (10 is the forming one): flat at 94850.3
]

# (candle index, open, high, low, close), worked out by hand from HISTORY
EXPECTED: list[tuple[int, str, str, str, str]] = [
    (-1, "94990", "94990", "94990", "94990"),
    (0, "95000", "95100.5", "94900", "95050"),
    (1, "95050", "95200", "95050", "95200"),
    (2, "95200", "95200", "95200", "95200"),
    (3, "95200", "95200", "95200", "95200"),
    (4, "95200", "95200", "94800", "94850.3"),
    *[(k, "94850.3", "94850.3", "94850.3", "94850.3") for k in range(5, 11)],
]


def row(b: int, k: int, o: str, h: str, lo: str, c: str) -> list[Any]:
    """A Binance kline row for candle ``k`` with no trades in it."""
    return [b + k * MIN, o, h, lo, c, "0", b + (k + 1) * MIN - 1, "0", 0, "0", "0", "0"]


def pin_minute(sim: PaperExchange) -> int:
    """Jump the simulated clock 30 s into a fresh minute (so the current candle
    cannot roll over during the test); returns that candle's open time."""
    now = sim.clock.now_ms()
    current = (now // MIN + 1) * MIN
    sim.advance(current + 30_000 - now)
    return current


def load(sim: PaperExchange) -> int:
    """Load HISTORY for BTCUSDT and return B."""
    b = pin_minute(sim) - 10 * MIN
    sim.load_history("BTCUSDT", [(b + dt, p) for dt, p in HISTORY])
    return b


async def klines(ex: Any, **params: Any) -> list[list[Any]]:
    rows: list[list[Any]] = await ex.fapiPublicGetKlines(
        {"symbol": "BTCUSDT", "interval": "1m", **params}
    )
    return rows


async def test_klines_equal_hand_built_candles(ex: Any, sim: PaperExchange) -> None:
    b = load(sim)
    assert await klines(ex) == [row(b, *e) for e in EXPECTED]
    # no recorded price yet for ETH: no candle at all
    assert await ex.fapiPublicGetKlines({"symbol": "ETHUSDT", "interval": "1m"}) == []


async def test_start_end_and_limit(ex: Any, sim: PaperExchange) -> None:
    b = load(sim)

    async def opens(**params: Any) -> list[int]:
        return [(r[0] - b) // MIN for r in await klines(ex, **params)]

    assert await opens(limit=3) == [8, 9, 10]  # the most recent, forming one last
    assert await opens(startTime=b + 1, limit=3) == [1, 2, 3]  # openTime >= startTime
    assert await opens(startTime=b, endTime=b + 4 * MIN) == [0, 1, 2, 3, 4]
    assert await opens(endTime=b + 2 * MIN + 5, limit=2) == [1, 2]  # openTime <= endTime
    assert await opens(startTime=b - 3_600_000, limit=2) == [-1, 0]  # none before 1st price
    assert await opens(endTime=b - 2 * MIN) == []
    assert await opens(startTime=b + 20 * MIN) == []
    window = await klines(ex, startTime=b + MIN, endTime=b + 4 * MIN + 59_999)
    assert window == [row(b, *e) for e in EXPECTED[2:6]]


async def test_alignment_and_aggregation_across_intervals(ex: Any, sim: PaperExchange) -> None:
    load(sim)
    ones = await klines(ex, limit=1500)
    now = sim.clock.now_ms()
    for name, iv in INTERVALS.items():
        rows = await klines(ex, interval=name)
        for r in rows:
            assert r[0] == align(r[0], iv) and r[6] == r[0] + iv - 1
        if name == "1w":
            assert (rows[0][0] // 86_400_000 + 3) % 7 == 0  # a Monday (epoch was a Thursday)
        else:
            assert rows[0][0] % iv == 0
        assert rows[-1][0] <= now <= rows[-1][6]  # the last one is still forming
        # every bigger candle is the aggregate of the 1m candles inside it
        groups: dict[int, list[list[Any]]] = {}
        for r in ones:
            groups.setdefault(align(r[0], iv), []).append(r)
        want = [
            [
                Decimal(g[0][1]),
                max(Decimal(x[2]) for x in g),
                min(Decimal(x[3]) for x in g),
                Decimal(g[-1][4]),
            ]
            for g in groups.values()
        ]
        assert [[Decimal(x) for x in r[1:5]] for r in rows] == want, name


async def test_forming_candle_follows_set_price(ex: Any, sim: PaperExchange) -> None:
    b = load(sim)
    sim.set_price("BTCUSDT", Decimal("96000"))
    assert (await klines(ex, limit=2)) == [
        row(b, 9, "94850.3", "94850.3", "94850.3", "94850.3"),
        row(b, 10, "94850.3", "96000", "94850.3", "96000"),
    ]
    sim.set_price("BTCUSDT", "94000.1")
    sim.set_price("BTCUSDT", "94500")
    assert (await klines(ex, limit=1)) == [row(b, 10, "94850.3", "96000", "94000.1", "94500")]


async def test_fills_count_as_volume(ex: Any, sim: PaperExchange) -> None:
    b = load(sim)
    sim.set_price("BTCUSDT", Decimal("95000"))
    await ex.create_order(BTC, "market", "buy", 0.01)
    await ex.create_order(BTC, "market", "sell", 0.004)
    last = (await klines(ex, limit=1))[0]
    assert last[0] == b + 10 * MIN
    # volume, quote volume, trades, taker-buy base and quote
    assert last[5:6] + last[7:11] == ["0.014", "1330", 2, "0.01", "950"]


async def test_fetch_ohlcv_returns_the_same_numbers(ex: Any, sim: PaperExchange) -> None:
    b = load(sim)
    raw = await klines(ex)
    want = [[r[0], *(float(Decimal(x)) for x in r[1:6])] for r in raw]  # float ok: ccxt's
    assert await ex.fetch_ohlcv(BTC, "1m") == want
    assert await ex.fetch_ohlcv(BTC, "1m", since=b + MIN, limit=3) == want[2:5]


async def _raises(ex: Any, exc: type[Exception], code: int, **params: Any) -> None:
    with pytest.raises(exc) as info:
        await ex.fapiPublicGetKlines({"symbol": "BTCUSDT", "interval": "1m", **params})
    assert f'"code":{code}' in str(info.value)


async def test_errors_map_to_ccxt_classes(ex: Any, sim: PaperExchange) -> None:
    load(sim)
    await _raises(ex, ccxt.BadSymbol, -1121, symbol="NOPEUSDT")
    await _raises(ex, ccxt.BadRequest, -1130, limit=1501)
    await _raises(ex, ccxt.BadRequest, -1130, limit=0)
    await _raises(ex, ccxt.BadRequest, -1120, interval="7m")
    await _raises(ex, ccxt.BadRequest, -1102, interval="")
    await _raises(ex, ccxt.BadRequest, -1023, startTime=2, endTime=1)
    assert len(await klines(ex, limit=1500)) == 12  # the maximum itself is fine


async def test_weight_depends_on_limit(ex: Any, sim: PaperExchange) -> None:
    for limit, weight in [(1, 1), (99, 1), (100, 2), (499, 2), (500, 5), (1000, 5), (1001, 10)]:
        sim.limiter.reset()
        await klines(ex, limit=limit)
        assert ex.last_response_headers["X-MBX-USED-WEIGHT-1M"] == str(weight), limit
    sim.limiter.reset()
    await ex.fapiPublicGetKlines({"symbol": "BTCUSDT", "interval": "1m"})  # default 500
    assert ex.last_response_headers["X-MBX-USED-WEIGHT-1M"] == "5"


async def test_load_history_validation(sim: PaperExchange) -> None:
    now = sim.clock.now_ms()
    with pytest.raises(ValueError):
        sim.load_history("BTCUSDT", [(now - 1000, "1"), (now + 60_000, "2")])
    with pytest.raises(ValueError):
        sim.load_history("BTCUSDT", [(now - 1000, "0")])
    with pytest.raises(ApiError):
        sim.load_history("NOPEUSDT", [(now - 1000, "1")])
    assert sim.engine.history.points("BTCUSDT") == []
    # rounded to the tick, like set_price
    assert sim.load_history("btcusdt", [(now - 1000, "95000.04")]) == 1
    assert sim.engine.history.points("BTCUSDT") == [(now - 1000, Decimal("95000.0"))]


async def test_admin_price_history_route(ex: Any, sim: PaperExchange) -> None:
    b = pin_minute(sim) - 10 * MIN
    body = {"symbol": "BTCUSDT", "points": [[b + dt, p] for dt, p in HISTORY]}
    async with aiohttp.ClientSession() as s:
        async with s.post(sim.admin_url + "/price/history", data=json.dumps(body)) as r:
            assert r.status == 200
            assert await r.json() == {"symbol": "BTCUSDT", "loaded": 8, "points": 8}
        future = {"symbol": "BTCUSDT", "points": [[b + 20 * MIN, 1]]}
        async with s.post(sim.admin_url + "/price/history", data=json.dumps(future)) as r:
            assert r.status == 400
    assert await klines(ex) == [row(b, *e) for e in EXPECTED]
