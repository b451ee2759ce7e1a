"""The gateway of a hedge-mode account, on each venue, over real ccxt.

Every order carries its position side (ccxt `hedged`: Binance positionSide, Bybit
positionIdx); positions are keyed by symbol and side; a reduce-only stop reduces
its own side only; the account's mode is checked against the exchange's before the
first order of a symbol. Funding is booked per side: a long and a short both pay or
receive at every settlement, and the venues' funding rows do not name the position
(Binance income has no positionSide), so the gateway gives each payment to a side by
the sign of its settlement's market rate; the exchange's ground truth
(`sim.engine.incomes`, one record per position side) says what each side paid.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import pytest_asyncio
from temporalio.testing import ActivityEnvironment

from activities.exchange.activities import ExchangeActivities
from activities.exchange.gateway import (
    FUNDING_MATCH_MS,
    ExchangeGateway,
    FundingUnattributed,
    PositionModeMismatch,
)
from domain.errors import ErrorType, classify_exception
from domain.orders import OrderStatus, entry_intent, stop_intent
from domain.position import book_key
from domain.requests import FundingRequest
from domain.types import Side
from simulator.client import venue_client
from simulator.server import PaperExchange
from tests.activities.conftest import ACCOUNT

SYMBOL = "BTCUSDT"
PRICE = Decimal(60000)
QTY = Decimal("0.010")
# Funding: unequal sides, so a payment given to the wrong side changes both sums.
FUNDING_QTY = {Side.LONG: QTY, Side.SHORT: 3 * QTY}
INTERVAL_MS = 1000  # compressed funding: one settlement a second of simulated time
TRUTH_SIDE = {"LONG": Side.LONG, "SHORT": Side.SHORT}


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


# --- funding, per side ------------------------------------------------------------


async def _open_both(gw: ExchangeGateway) -> datetime:
    """Open the long and the short; returns a `since` before both."""
    since = datetime.now(UTC) - timedelta(seconds=1)
    for side, qty in FUNDING_QTY.items():
        await gw.place(entry_intent(cid("e"), SYMBOL, side, qty), look_up_first=False)
    return since


def _stop_settling(sim: PaperExchange) -> None:
    """No settlement after this: the simulated clock runs on with real time, and one
    a second would otherwise fall between reading the truth and reading the gateway."""
    sim.harden(funding=False)


def _truth(sim: PaperExchange) -> dict[Side, Decimal]:
    """What each side paid (-) or received (+), from the exchange's own records."""
    paid = {Side.LONG: Decimal(0), Side.SHORT: Decimal(0)}
    for income in sim.engine.incomes:
        if income.income_type == "FUNDING_FEE" and income.symbol == SYMBOL:
            paid[TRUTH_SIDE[income.position_side]] += income.amount
    return paid


async def _assert_each_side_books_its_own(
    gw: ExchangeGateway, sim: PaperExchange, since: datetime
) -> None:
    truth = _truth(sim)
    long = await gw.funding(SYMBOL, since, side=Side.LONG)
    short = await gw.funding(SYMBOL, since, side=Side.SHORT)
    assert (long, short) == (truth[Side.LONG], truth[Side.SHORT])
    # the old one-way total is the two sides together, and side None still gives it
    assert long + short == await gw.funding(SYMBOL, since)


@pytest.mark.parametrize("rate", ["0.0005", "-0.0005"])
async def test_each_side_books_only_its_own_funding(
    hedged: ExchangeGateway, sim: PaperExchange, rate: str
) -> None:
    since = await _open_both(hedged)
    sim.harden(funding=True, funding_interval_ms=INTERVAL_MS, funding_rate=rate)
    sim.advance(3 * INTERVAL_MS + INTERVAL_MS // 2)  # three or four settlements
    _stop_settling(sim)
    truth = _truth(sim)
    assert all(amount != 0 for amount in truth.values())
    # a positive rate: the long pays and the short receives; a negative one the reverse
    payer = Side.LONG if Decimal(rate) > 0 else Side.SHORT
    assert truth[payer] < 0 < truth[Side.SHORT if payer is Side.LONG else Side.LONG]
    await _assert_each_side_books_its_own(hedged, sim, since)


async def test_each_settlement_is_told_by_its_own_rate(
    hedged: ExchangeGateway, sim: PaperExchange
) -> None:
    """The rate turns negative half-way and the long is closed before the end: each
    payment is matched to its own settlement's rate, and the short's later payments
    (with no long beside them) are still the short's."""
    since = await _open_both(hedged)
    sim.harden(funding=True, funding_interval_ms=INTERVAL_MS, funding_rate="0.0004")
    sim.advance(2 * INTERVAL_MS)
    sim.harden(funding_rate="-0.0002")
    sim.advance(2 * INTERVAL_MS)
    assert sim.close_position(SYMBOL, "LONG") is not None
    sim.advance(2 * INTERVAL_MS)
    _stop_settling(sim)
    incomes = [i for i in sim.engine.incomes if i.income_type == "FUNDING_FEE"]
    assert {i.rate > 0 for i in incomes} == {True, False}  # both signs were settled
    last_long = max(i.time for i in incomes if i.position_side == "LONG")
    assert any(i.position_side == "SHORT" and i.time > last_long for i in incomes)
    await _assert_each_side_books_its_own(hedged, sim, since)


async def test_the_activity_passes_the_position_side(
    hedged: ExchangeGateway, sim: PaperExchange
) -> None:
    since = await _open_both(hedged)
    sim.harden(funding=True, funding_interval_ms=INTERVAL_MS, funding_rate="0.0003")
    sim.advance(2 * INTERVAL_MS + INTERVAL_MS // 2)
    _stop_settling(sim)
    truth = _truth(sim)
    acts = ExchangeActivities({ACCOUNT: hedged})
    env = ActivityEnvironment()
    for side in Side:
        request = FundingRequest(account=ACCOUNT, symbol=SYMBOL, since=since, position_side=side)
        assert await env.run(acts.funding, request) == truth[side]
    one_way = FundingRequest(account=ACCOUNT, symbol=SYMBOL, since=since)
    assert await env.run(acts.funding, one_way) == truth[Side.LONG] + truth[Side.SHORT]


async def test_a_payment_whose_rate_is_missing_is_not_guessed(
    hedged: ExchangeGateway, sim: PaperExchange
) -> None:
    """A settlement missing from the rate history (a lagging history): the read fails,
    retryably, rather than give the payment to either side; one-way still sums.
    Settlements two minutes apart here, as on a real venue (an hour or more): a
    neighbour's rate is then too far from the payment to be taken for its own."""
    since = await _open_both(hedged)
    interval = 4 * FUNDING_MATCH_MS
    sim.harden(funding=True, funding_interval_ms=interval, funding_rate="0.0005")
    sim.advance(2 * interval + interval // 2)
    sim.engine.settlements.pop()  # the exchange has not published the last rate yet
    with pytest.raises(FundingUnattributed, match="its side cannot be told") as failed:
        await hedged.funding(SYMBOL, since, side=Side.LONG)
    assert classify_exception(failed.value).type.retryable
    truth = _truth(sim)
    assert await hedged.funding(SYMBOL, since) == truth[Side.LONG] + truth[Side.SHORT]
