"""What closed a position outside posguard, and the funding it paid: the gateway's
reads of the account's trade and income history, on each venue, over real ccxt."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import pytest_asyncio

from activities.exchange.gateway import ExchangeGateway
from domain.client_ids import OrderStep, client_order_id
from domain.orders import close_intent, entry_intent
from domain.types import OrderSide, Side
from simulator.server import PaperExchange

SYMBOL = "ETHUSDT"
QTY = Decimal("0.5")
WORKFLOW = "position/paper/test/ETHUSDT"


@pytest_asyncio.fixture(params=["binance", "bybit"])
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[PaperExchange]:
    async with PaperExchange(venue=request.param, mark_interval_ms=100, admin_port=None) as ex:
        if request.param == "bybit":
            ex.configure(rate_limit_per_s=10_000)
        ex.set_price(SYMBOL, "3000")
        yield ex


def ours(step: OrderStep, seq: int) -> str:
    return client_order_id(WORKFLOW, "main", step, seq)


@pytest.mark.parametrize("side", list(Side))
async def test_a_close_by_hand_is_told_from_our_own_orders(
    sim: PaperExchange, gateway: ExchangeGateway, side: Side
) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    await gateway.place(
        entry_intent(ours(OrderStep.ENTRY, 0), SYMBOL, side, QTY), look_up_first=False
    )
    # part of it closed by posguard's own close order, the rest by hand at a new price
    own = close_intent(ours(OrderStep.CLOSE, 1), SYMBOL, side, Decimal("0.2"))
    await gateway.place(own, look_up_first=False)
    sim.set_price(SYMBOL, "3030")
    by_hand = sim.close_position(SYMBOL)
    assert by_hand is not None
    found = await gateway.outside_exit(SYMBOL, side, since)
    [order] = found.orders
    assert order.client_order_id != own.client_order_id
    assert order.side is (OrderSide.SELL if side is Side.LONG else OrderSide.BUY)
    assert not order.liquidation and not found.liquidation
    [fill] = order.fills
    [truth] = [f for f in sim.engine.fills if f.order_id == by_hand.order_id]
    assert (fill.qty, fill.price, fill.fee) == (Decimal("0.3"), Decimal(3030), truth.commission)
    # nothing before `since` (an earlier lifecycle's close is not this one's)
    later = await gateway.outside_exit(SYMBOL, side, datetime.now(UTC) + timedelta(seconds=5))
    assert later.orders == ()


async def test_a_liquidation_is_named_as_one(sim: PaperExchange, gateway: ExchangeGateway) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    sim.engine.set_margin_type(SYMBOL, "ISOLATED")
    sim.harden(liquidation=True)
    await gateway.place(
        entry_intent(ours(OrderStep.ENTRY, 0), SYMBOL, Side.LONG, QTY), look_up_first=False
    )
    sim.set_price(SYMBOL, "2700")  # 10 % down at 20x: through the liquidation price
    assert (await gateway.position(SYMBOL)).qty == 0
    found = await gateway.outside_exit(SYMBOL, Side.LONG, since)
    [order] = found.orders
    assert order.liquidation and found.liquidation
    assert sum(f.qty for f in order.fills) == QTY
    if sim.venue == "binance":
        assert (order.client_order_id or "").startswith("autoclose-")


@pytest.mark.parametrize("side", list(Side))
async def test_funding_is_summed_as_the_account_saw_it(
    sim: PaperExchange, gateway: ExchangeGateway, side: Side
) -> None:
    since = datetime.now(UTC) - timedelta(seconds=1)
    await gateway.place(
        entry_intent(ours(OrderStep.ENTRY, 0), SYMBOL, side, QTY), look_up_first=False
    )
    sim.harden(funding=True, funding_interval_ms=1000, funding_rate=Decimal("0.0005"))
    sim.advance(3500)  # three or four settlements
    # none after this: the clock runs on with real time, and a fifth would otherwise
    # fall between counting the charges and the gateway's read
    sim.harden(funding=False)
    charged = [i.amount for i in sim.engine.incomes if i.income_type == "FUNDING_FEE"]
    assert len(charged) >= 3
    total = await gateway.funding(SYMBOL, since)
    assert total == sum(charged, Decimal(0))
    assert total < 0 if side is Side.LONG else total > 0  # a positive rate: longs pay
