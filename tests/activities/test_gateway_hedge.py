"""The gateway of a hedge-mode account, on each venue, over real ccxt.

Every order carries its position side (ccxt `hedged`: Binance positionSide, Bybit
positionIdx); positions are keyed by symbol and side; a reduce-only stop reduces
its own side only; the account's mode is checked against the exchange's before the
first order of a symbol.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
import pytest_asyncio

from activities.exchange.gateway import ExchangeGateway, PositionModeMismatch
from domain.errors import ErrorType, classify_exception
from domain.orders import OrderStatus, entry_intent, stop_intent
from domain.position import book_key
from domain.types import Side
from simulator.client import venue_client
from simulator.server import PaperExchange
from tests.activities.conftest import ACCOUNT

SYMBOL = "BTCUSDT"
PRICE = Decimal(60000)
QTY = Decimal("0.010")


@pytest_asyncio.fixture(params=["binance", "bybit"])
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[PaperExchange]:
    async with PaperExchange(
        venue=request.param, hedge_mode=True, mark_interval_ms=100, admin_port=None
    ) as exchange:
        if request.param == "bybit":
            exchange.configure(rate_limit_per_s=10_000)
        exchange.set_price(SYMBOL, PRICE)
        yield exchange


def _gateway(sim: PaperExchange, hedge_mode: bool) -> ExchangeGateway:
    client = venue_client(
        sim.venue, sim, api_key=sim.api_key, secret=sim.api_secret, enableRateLimit=False
    )
    return ExchangeGateway(client, account=ACCOUNT, hedge_mode=hedge_mode)


@pytest_asyncio.fixture
async def hedged(sim: PaperExchange) -> AsyncIterator[ExchangeGateway]:
    gw = _gateway(sim, True)
    try:
        yield gw
    finally:
        await gw.close()


def cid(tag: str) -> str:
    return f"{tag}{uuid.uuid4().hex[:20]}"


async def test_both_sides_are_held_and_read_apart(hedged: ExchangeGateway) -> None:
    for side in Side:
        entry = await hedged.place(entry_intent(cid("e"), SYMBOL, side, QTY), look_up_first=False)
        assert entry.status is OrderStatus.FILLED and entry.position_side is side
    positions = await hedged.positions()
    assert set(positions) == {book_key(SYMBOL, Side.LONG), book_key(SYMBOL, Side.SHORT)}
    for side in Side:
        pos = await hedged.position(SYMBOL, side)
        assert (pos.side, pos.qty, pos.hedged) == (side, QTY, True)
    snapshot = await hedged.account_snapshot()
    assert sorted(p.side.value for p in snapshot.positions if p.side) == ["long", "short"]


@pytest.mark.parametrize("side", list(Side))
async def test_a_stop_belongs_to_its_side_and_reduces_only_it(
    hedged: ExchangeGateway, sim: PaperExchange, side: Side
) -> None:
    for each in Side:
        await hedged.place(entry_intent(cid("e"), SYMBOL, each, QTY), look_up_first=False)
    level = PRICE * (Decimal("0.95") if side is Side.LONG else Decimal("1.05"))
    stop = await hedged.place(stop_intent(cid("s"), SYMBOL, side, QTY, level), look_up_first=False)
    assert stop.position_side is side and stop.reduce_only is not False
    [listed] = [o for o in await hedged.account_orders() if o.is_conditional]
    assert listed.position_side is side
    sim.set_price(SYMBOL, level * (Decimal("0.99") if side is Side.LONG else Decimal("1.01")))

    async def fired() -> bool:
        return (await hedged.position(SYMBOL, side)).qty == 0

    from tests.waiting import until

    await until(fired, f"the {side.value} stop fired")
    other = Side.SHORT if side is Side.LONG else Side.LONG
    assert (await hedged.position(SYMBOL, other)).qty == QTY  # the other side untouched


@pytest.mark.parametrize("settings_say_hedge", [False])
async def test_a_one_way_account_on_a_hedge_exchange_sends_nothing(
    sim: PaperExchange, settings_say_hedge: bool
) -> None:
    gw = _gateway(sim, settings_say_hedge)
    try:
        with pytest.raises(PositionModeMismatch, match="holds BTCUSDT in hedge mode") as exc:
            await gw.place(entry_intent(cid("e"), SYMBOL, Side.LONG, QTY), look_up_first=False)
        assert classify_exception(exc.value).type is ErrorType.POSITION_MODE_MISMATCH
        assert not ErrorType.POSITION_MODE_MISMATCH.retryable
        assert sim.ground_truth()["orders"] == []
    finally:
        await gw.close()


async def test_the_mode_is_read_once_for_what_it_covers(
    hedged: ExchangeGateway, sim: PaperExchange
) -> None:
    """Binance holds one mode for the whole account (its read costs weight 30): read
    once; Bybit one per symbol: read once for each symbol, before its first order."""
    sim.set_price("ETHUSDT", "3000")
    endpoint = {"binance": "GET /fapi/v1/positionSide/dual", "bybit": "GET /v5/position/list"}
    reads = sim.add_fault("latency", endpoint=endpoint[sim.venue], latency_ms=0)
    for symbol, qty in (("BTCUSDT", QTY), ("ETHUSDT", Decimal("0.1")), ("BTCUSDT", QTY)):
        await hedged.place(entry_intent(cid("e"), symbol, Side.LONG, qty), look_up_first=False)
    assert reads.hits == (1 if sim.venue == "binance" else 2)
