"""Unit tests of the price gate core with a fake waker (no Temporal, no network)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from domain.position_messages import BandView, PriceTick
from signals_ingest.price_gate import PriceGate, tick_time

D = Decimal
Answer = Callable[[str, PriceTick], BandView | None]


class FakeWaker:
    """Records every call; answers with `answer(wid, tick)`; can be held or made to fail."""

    def __init__(self, answer: Answer | None = None) -> None:
        self.calls: list[tuple[str, Decimal]] = []
        self.answer = answer or (lambda wid, tick: None)
        self.gate_open = asyncio.Event()
        self.gate_open.set()
        self.fail_next = 0

    async def __call__(self, wid: str, tick: PriceTick) -> BandView | None:
        self.calls.append((wid, tick.price))
        await self.gate_open.wait()
        if self.fail_next:
            self.fail_next -= 1
            raise RuntimeError("transient")
        return self.answer(wid, tick)

    def prices(self, wid: str) -> list[Decimal]:
        return [p for w, p in self.calls if w == wid]


def view(
    wid: str, symbol: str, below: str | None, above: str | None, open_: bool = True
) -> BandView:
    return BandView(
        workflow_id=wid,
        symbol=symbol,
        wake_below=None if below is None else D(below),
        wake_above=None if above is None else D(above),
        open=open_,
    )


def recentre(width: str) -> Answer:
    """A band of ±width around the tick (what a trailing workflow roughly answers)."""

    def answer(wid: str, tick: PriceTick) -> BandView:
        w = D(width)
        return view(wid, "BTCUSDT", str(tick.price - w), str(tick.price + w))

    return answer


async def settle(gate: PriceGate) -> None:
    assert await gate.wait_idle(5)


async def test_inside_band_ticks_make_no_call() -> None:
    waker = FakeWaker()
    gate = PriceGate(waker)
    gate.upsert("p1", "BTCUSDT", D(90), D(110))
    gate.upsert("p2", "BTCUSDT", D(80), D(120))
    for p in ("90.01", "100", "109.99", "95", "105"):
        assert gate.on_tick("BTCUSDT", D(p)) == 0
    await settle(gate)
    assert waker.calls == []
    assert gate.counters.ticks == 5 and gate.counters.ticks_quiet == 5
    assert gate.counters.wakeups_sent == 0


@pytest.mark.parametrize(
    ("side", "band", "quiet", "wakes"),
    [
        # long: stop below, trailing threshold above
        ("long", ("95", "105"), ["95.01", "104.99", "100"], ["95", "94", "105", "200"]),
        # short: trailing threshold below, stop above
        ("short", ("90", "100"), ["90.01", "99.99"], ["90", "1", "100", "101"]),
        # long before activation, no profit-side bound
        ("long", ("95", None), ["95.01", "1000000"], ["95", "50"]),
        # short with only its stop
        ("short", (None, "100"), ["0.01", "99.99"], ["100", "150"]),
        # empty band (first tick activates): every tick wakes
        ("long", ("100", "100"), [], ["99", "100", "101"]),
    ],
)
async def test_crossing_makes_exactly_one_call(
    side: str, band: tuple[str | None, str | None], quiet: list[str], wakes: list[str]
) -> None:
    below, above = (None if b is None else D(b) for b in band)
    for price in quiet:
        waker = FakeWaker(lambda wid, tick: view(wid, "X", *band))
        gate = PriceGate(waker)
        gate.upsert("p", "BTCUSDT", below, above)
        assert gate.on_tick("BTCUSDT", D(price)) == 0, (side, price)
        await settle(gate)
        assert waker.calls == []
    for price in wakes:
        waker = FakeWaker(lambda wid, tick: view(wid, "X", *band))
        gate = PriceGate(waker)
        gate.upsert("p", "BTCUSDT", below, above)
        assert gate.on_tick("BTCUSDT", D(price)) == 1, (side, price)
        await settle(gate)
        assert waker.calls == [("p", D(price))]
        assert gate.counters.wakeups_answered == 1


async def test_answer_replaces_band() -> None:
    waker = FakeWaker(recentre("5"))
    gate = PriceGate(waker)
    gate.upsert("p", "BTCUSDT", D(95), D(105))
    gate.on_tick("BTCUSDT", D(106))
    await settle(gate)
    assert gate.band("p") == (D(101), D(111))
    assert gate.on_tick("BTCUSDT", D(110)) == 0  # inside the new band
    assert gate.on_tick("BTCUSDT", D(101)) == 1  # at the new floor
    await settle(gate)
    assert waker.prices("p") == [D(106), D(101)]


async def test_ticks_coalesce_while_in_flight() -> None:
    waker = FakeWaker(recentre("5"))
    waker.gate_open.clear()  # hold the first call
    gate = PriceGate(waker)
    gate.upsert("p", "BTCUSDT", D(95), D(105))
    assert gate.on_tick("BTCUSDT", D(106)) == 1
    await asyncio.sleep(0)
    for p in ("107", "120", "130", "125"):  # all outside the old band: no new call
        assert gate.on_tick("BTCUSDT", D(p)) == 0
    assert gate.in_flight == 1 and len(waker.calls) == 1
    waker.gate_open.set()
    await settle(gate)
    # The answer to 106 is (101, 111); the latest price 125 is outside it: sent once.
    assert waker.prices("p") == [D(106), D(125)]
    assert gate.counters.coalesced == 4 and gate.counters.resends == 1
    assert gate.band("p") == (D(120), D(130))
    assert gate.in_flight == 0


async def test_coalesced_price_inside_new_band_is_not_sent() -> None:
    waker = FakeWaker(recentre("5"))
    waker.gate_open.clear()
    gate = PriceGate(waker)
    gate.upsert("p", "BTCUSDT", D(95), D(105))
    gate.on_tick("BTCUSDT", D(106))
    await asyncio.sleep(0)
    gate.on_tick("BTCUSDT", D(130))
    gate.on_tick("BTCUSDT", D(108))  # latest, inside the answer (101, 111)
    waker.gate_open.set()
    await settle(gate)
    assert waker.prices("p") == [D(106)]
    assert gate.counters.coalesced == 2 and gate.counters.resends == 0
    assert gate.on_tick("BTCUSDT", D(109)) == 0


async def test_open_false_and_none_remove_the_position() -> None:
    waker = FakeWaker(lambda wid, tick: view(wid, "BTCUSDT", None, None, open_=False))
    gate = PriceGate(waker)
    changes: list[frozenset[str]] = []
    gate.add_listener(lambda: changes.append(gate.symbols()))
    gate.upsert("closed", "BTCUSDT", D(95), D(105))
    gate.upsert("gone", "ETHUSDT", D(95), D(105))
    gate.on_tick("BTCUSDT", D(90))
    await settle(gate)
    assert "closed" not in gate and gate.symbols() == {"ETHUSDT"}
    waker.answer = lambda wid, tick: None
    gate.on_tick("ETHUSDT", D(200))
    await settle(gate)
    assert len(gate) == 0 and gate.symbols() == frozenset()
    assert gate.counters.wakeups_gone == 2
    assert changes[-1] == frozenset()
    assert gate.on_tick("BTCUSDT", D(1)) == 0 and gate.counters.ticks_unwatched == 1


async def test_per_symbol_isolation() -> None:
    waker = FakeWaker(recentre("5"))
    gate = PriceGate(waker)
    gate.upsert("btc", "BTCUSDT", D(95), D(105))
    gate.upsert("eth", "ETHUSDT", D(5), D(15))
    # A BTC price that would cross ETH's band (and the reverse) wakes nobody else.
    assert gate.on_tick("BTCUSDT", D(100)) == 0
    assert gate.on_tick("ETHUSDT", D(10)) == 0
    assert gate.on_tick("ETHUSDT", D(16)) == 1
    await settle(gate)
    assert waker.calls == [("eth", D(16))]
    assert gate.band("btc") == (D(95), D(105))


async def test_only_crossed_positions_of_a_symbol_wake() -> None:
    waker = FakeWaker(recentre("50"))
    gate = PriceGate(waker)
    for i in range(10):  # bands (90-i, 110+i)
        gate.upsert(f"p{i}", "BTCUSDT", D(90 - i), D(110 + i))
    assert gate.on_tick("BTCUSDT", D(112)) == 3  # p0, p1, p2
    await settle(gate)
    assert sorted(w for w, _ in waker.calls) == ["p0", "p1", "p2"]
    waker.calls.clear()
    assert gate.on_tick("BTCUSDT", D(85)) == 3  # p5..p3 floors 85,86,87 (p0-2 recentred)
    await settle(gate)
    assert sorted(w for w, _ in waker.calls) == ["p3", "p4", "p5"]


async def test_errors_back_off_and_retry_then_latest_price() -> None:
    waker = FakeWaker(recentre("5"))
    waker.fail_next = 2
    gate = PriceGate(waker, backoff_initial_s=0.01, backoff_max_s=0.02)
    gate.upsert("p", "BTCUSDT", D(95), D(105))
    gate.on_tick("BTCUSDT", D(106))
    await asyncio.sleep(0)
    gate.on_tick("BTCUSDT", D(103))  # back inside the old band: the failed tick is resent
    await settle(gate)
    assert waker.prices("p") == [D(106), D(106), D(106)]
    assert gate.counters.wake_errors == 2 and gate.counters.retries == 2
    assert gate.band("p") == (D(101), D(111))
    assert "p" in gate


async def test_retry_sends_latest_price_when_outside() -> None:
    waker = FakeWaker(recentre("5"))
    waker.fail_next = 1
    gate = PriceGate(waker, backoff_initial_s=0.05)
    gate.upsert("p", "BTCUSDT", D(95), D(105))
    gate.on_tick("BTCUSDT", D(106))
    await asyncio.sleep(0.01)
    gate.on_tick("BTCUSDT", D(109))
    await settle(gate)
    assert waker.prices("p") == [D(106), D(109)]


async def test_prime_wakes_every_position_once_regardless_of_band() -> None:
    waker = FakeWaker(recentre("5"))
    gate = PriceGate(waker)
    gate.load(
        [
            view("a", "BTCUSDT", "90", "110"),
            view("b", "BTCUSDT", "80", "120"),
            view("c", "ETHUSDT", "90", "110"),
            view("z", "ETHUSDT", None, None, open_=False),
        ],
        prime=True,
    )
    assert len(gate) == 3
    assert gate.on_tick("BTCUSDT", D(100)) == 2  # inside both bands, but primed
    await settle(gate)
    assert sorted(waker.calls) == [("a", D(100)), ("b", D(100))]
    assert gate.on_tick("BTCUSDT", D(101)) == 0  # priming happens once
    assert gate.on_tick("ETHUSDT", D(100)) == 1
    await settle(gate)
    assert gate.counters.primed == 3
    assert gate.prime("BTCUSDT") == 2
    assert gate.on_tick("BTCUSDT", D(101)) == 2


async def test_remove_while_in_flight_ignores_answer() -> None:
    waker = FakeWaker(recentre("5"))
    waker.gate_open.clear()
    gate = PriceGate(waker)
    gate.upsert("p", "BTCUSDT", D(95), D(105))
    gate.on_tick("BTCUSDT", D(106))
    await asyncio.sleep(0)
    assert gate.remove("p")
    waker.gate_open.set()
    await settle(gate)
    assert "p" not in gate and gate.symbols() == frozenset()


async def test_upsert_while_in_flight_keeps_the_answer() -> None:
    waker = FakeWaker(recentre("5"))
    waker.gate_open.clear()
    gate = PriceGate(waker)
    gate.upsert("p", "BTCUSDT", D(95), D(105))
    gate.on_tick("BTCUSDT", D(106))
    await asyncio.sleep(0)
    gate.upsert("p", "BTCUSDT", D(1), D(1000))  # a stale read from a resync
    waker.gate_open.set()
    await settle(gate)
    assert gate.band("p") == (D(101), D(111))


async def test_max_concurrent_bounds_calls_in_flight() -> None:
    active = 0
    peak = 0

    async def wake(wid: str, tick: PriceTick) -> BandView:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1
        return view(wid, "BTCUSDT", str(tick.price - 5), str(tick.price + 5))

    gate = PriceGate(wake, max_concurrent=3)
    for i in range(10):
        gate.upsert(f"p{i}", "BTCUSDT", D(95), D(105))
    assert gate.on_tick("BTCUSDT", D(110)) == 10
    assert gate.in_flight == 10
    await settle(gate)
    assert peak == 3 and gate.counters.wakeups_answered == 10


def test_tick_time_is_exact() -> None:
    assert tick_time(1_700_000_000_123) == datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)
    assert tick_time(None).tzinfo is UTC


def test_stats_are_json_ready() -> None:
    gate = PriceGate(FakeWaker())
    gate.upsert("p", "BTCUSDT", D(95), D(105))
    gate.on_tick("BTCUSDT", D(100))
    stats = gate.stats()
    assert stats["ticks"] == 1 and stats["positions"] == 1 and stats["in_flight"] == 0
