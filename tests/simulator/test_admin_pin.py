"""A price set through the admin API holds until released, whatever the price path does."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import aiohttp

from simulator.markets import build_markets
from simulator.prices import SyntheticPath
from simulator.server import PaperExchange
from tests.waiting import until


class Ticking:
    """The random walk, counting the ticks that moved something."""

    def __init__(self, inner: SyntheticPath) -> None:
        self.inner = inner
        self.ticks = 0

    def updates_until(self, elapsed_ms: int) -> list[tuple[str, Decimal]]:
        out = self.inner.updates_until(elapsed_ms)
        self.ticks += bool(out)
        return out

    def rebase(self, symbol: str, price: Decimal) -> None:
        self.inner.rebase(symbol, price)


async def _call(s: aiohttp.ClientSession, method: str, url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body)
    async with s.request(method, url, data=data) as r:
        answer = await r.json()
        assert r.status == 200, answer
        return answer


async def test_an_admin_price_is_pinned_until_released_and_the_walk_pauses() -> None:
    walk = Ticking(SyntheticPath(build_markets(), seed=7, step_ms=10, start_prices=None))
    async with PaperExchange(price_source=walk, tick_interval_ms=10, mark_interval_ms=50) as sim:
        a, mark = sim.admin_url, sim.engine.mark

        async def ticks(n: int) -> None:
            """Let the walk tick `n` more times."""
            target = walk.ticks + n
            await until(lambda: walk.ticks >= target, f"{n} ticks of the walk")

        async with aiohttp.ClientSession() as s:
            pinned = await _call(s, "POST", a + "/price", {"symbol": "btcusdt", "price": "90000"})
            assert pinned == {"symbol": "BTCUSDT", "markPrice": "90000", "pinned": True}
            eth = mark["ETHUSDT"]
            await ticks(20)
            assert mark["BTCUSDT"] == Decimal(90000)  # held, tick after tick
            assert mark["ETHUSDT"] != eth  # while the walk moves the others
            assert await _call(s, "GET", a + "/walk") == {
                "pinned": {"BTCUSDT": "90000"},
                "walk": "running",
            }

            released = await _call(s, "POST", a + "/price/release", {"symbol": "BTCUSDT"})
            assert released == {"released": ["BTCUSDT"], "pinned": {}, "walk": "running"}
            await until(lambda: mark["BTCUSDT"] != Decimal(90000), "BTC moving again")
            # On from the pinned price, not back to where the walk had got (~95000).
            assert abs(mark["BTCUSDT"] - Decimal(90000)) < 900

            # `"pin": false` sets a price once: the walk moves it on.
            once = await _call(
                s, "POST", a + "/price", {"symbol": "SOLUSDT", "price": 150, "pin": False}
            )
            assert once["pinned"] is False
            await until(lambda: mark["SOLUSDT"] != Decimal(150), "SOL moved by the walk")

            paused = await _call(s, "POST", a + "/walk/pause")
            assert paused == {"pinned": {}, "walk": "paused"}
            held = dict(mark)
            await ticks(20)
            assert mark == held  # every price holds
            await _call(s, "POST", a + "/price", {"symbol": "ETHUSDT", "price": "3000"})
            resumed = await _call(s, "POST", a + "/walk/resume")
            assert resumed == {"pinned": {"ETHUSDT": "3000"}, "walk": "running"}
            await until(lambda: mark["BTCUSDT"] != held["BTCUSDT"], "BTC moving after resume")
            assert abs(mark["BTCUSDT"] - held["BTCUSDT"]) < 900  # on from where it held
            assert mark["ETHUSDT"] == Decimal(3000)

            everything = await _call(s, "POST", a + "/price/release", {})
            assert everything["released"] == ["ETHUSDT"] and everything["pinned"] == {}
            async with s.post(a + "/price/release", data='{"symbol": "NOPEUSDT"}') as r:
                assert r.status == 400
            async with s.post(
                a + "/price", data='{"symbol": "BTCUSDT", "price": 1, "pin": 1}'
            ) as r:
                assert r.status == 400

            # A reset lets go of every pin and resumes the walk.
            await _call(s, "POST", a + "/walk/pause")
            await _call(s, "POST", a + "/price", {"symbol": "BTCUSDT", "price": "91000"})
            await _call(s, "POST", a + "/reset")
            assert await _call(s, "GET", a + "/walk") == {"pinned": {}, "walk": "running"}
