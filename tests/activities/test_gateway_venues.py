"""The gateway on each venue: the same domain answers from Binance USD-M and Bybit v5.

Real ccxt (`binanceusdm` / `bybit`) against the paper exchange serving that venue;
what the gateway reports is checked against the exchange's own ground truth. The
venue-specific paths (Binance's algo orders, Bybit's one paged list and its
orderLinkId look-ups, Bybit's "Created" status and position lag) are all crossed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from temporalio.testing import ActivityEnvironment

from activities.exchange.activities import ExchangeActivities
from activities.exchange.bybit_venue import PAGE
from activities.exchange.gateway import ExchangeGateway
from domain.errors import ErrorType, classify_exception
from domain.orders import OrderStatus, entry_intent, stop_intent
from domain.requests import EntryWithStopRequest, EntryWithStopResult
from domain.sizing import StopRule
from domain.types import Side
from simulator.client import bybit_client
from simulator.server import PaperExchange
from tests.activities.conftest import ACCOUNT

SYMBOL = "BTCUSDT"
PRICE = Decimal(60000)
QTY = Decimal("0.010")

CREATE = {"binance": "POST /fapi/v1/order", "bybit": "POST /v5/order/create"}
"""The endpoint a market entry is sent to, per venue (for faults)."""


@pytest_asyncio.fixture(params=["binance", "bybit"])
async def sim(request: pytest.FixtureRequest) -> AsyncIterator[PaperExchange]:
    async with PaperExchange(
        venue=request.param, mark_interval_ms=100, admin_port=None
    ) as exchange:
        if request.param == "bybit":
            exchange.configure(rate_limit_per_s=10_000)  # the tests burst; limits are tested apart
        exchange.set_price(SYMBOL, PRICE)
        exchange.set_price("ETHUSDT", "3000")
        yield exchange


def cid(tag: str = "t") -> str:
    return f"{tag}{uuid.uuid4().hex[:20]}"


def stop_price(side: Side, distance: Decimal = Decimal("0.05")) -> Decimal:
    """A stop `distance` away from PRICE on the losing side."""
    return PRICE * (1 - distance) if side is Side.LONG else PRICE * (1 + distance)


def open_stops(sim: PaperExchange) -> int:
    return sum(1 for a in sim.ground_truth()["algoOrders"] if a["algoStatus"] == "NEW")


def signed(sim: PaperExchange, symbol: str = SYMBOL) -> Decimal:
    for p in sim.ground_truth()["positions"]:
        if p["symbol"] == symbol:
            return Decimal(p["positionAmt"])
    return Decimal(0)


async def test_venue_is_chosen_from_the_exchange(
    gateway: ExchangeGateway, sim: PaperExchange
) -> None:
    assert (
        type(gateway.venue).__name__
        == {"binance": "BinanceVenue", "bybit": "BybitVenue"}[sim.venue]
    )


async def test_filters_mark_price_and_candles(gateway: ExchangeGateway) -> None:
    filters = await gateway.filters(SYMBOL)
    assert filters.symbol == SYMBOL
    assert filters.tick_size > 0 and filters.step_size > 0 and filters.min_qty > 0
    assert await gateway.mark_price(SYMBOL) == PRICE
    candles = await gateway.candles(SYMBOL, "1m", 5)
    assert candles, "no candles"
    assert [c.open_time_ms for c in candles] == sorted(c.open_time_ms for c in candles)
    assert all(c.low <= c.open <= c.high and c.low <= c.close <= c.high for c in candles)
    readiness = await gateway.entry_readiness()
    assert SYMBOL in readiness.listed and (readiness.free_balance or 0) > 0


@pytest.mark.parametrize("side", [Side.LONG, Side.SHORT])
async def test_an_entry_fills_and_its_fills_and_position_are_read(
    gateway: ExchangeGateway, sim: PaperExchange, side: Side
) -> None:
    intent = entry_intent(cid("e"), SYMBOL, side, QTY)
    view = await gateway.place(intent, look_up_first=False)
    assert view.status is OrderStatus.FILLED and view.filled_qty == QTY
    assert view.client_order_id == intent.client_order_id
    found = await gateway.find(SYMBOL, intent.client_order_id, conditional=False)
    assert found is not None and found.exchange_order_id == view.exchange_order_id
    fills = await gateway.order_fills(SYMBOL, intent.client_order_id, conditional=False)
    assert sum(f.qty for f in fills) == QTY and all(f.price > 0 for f in fills)
    position = await gateway.position(SYMBOL)
    assert (position.side, position.qty) == (side, QTY)
    assert signed(sim) == (QTY if side is Side.LONG else -QTY)


@pytest.mark.parametrize("side", [Side.LONG, Side.SHORT])
async def test_a_stop_rests_is_listed_and_is_cancelled(
    gateway: ExchangeGateway, sim: PaperExchange, side: Side
) -> None:
    await gateway.place(entry_intent(cid("e"), SYMBOL, side, QTY), look_up_first=False)
    stop = stop_intent(cid("sl"), SYMBOL, side, QTY, stop_price(side))
    placed = await gateway.place(stop, look_up_first=False)
    assert placed.status is OrderStatus.OPEN and placed.is_conditional
    assert placed.trigger_price == stop_price(side) and placed.reduce_only
    assert open_stops(sim) == 1
    listed = await gateway.all_open_orders(SYMBOL)
    assert [(v.client_order_id, v.is_conditional) for v in listed] == [(stop.client_order_id, True)]
    account = await gateway.account_orders()
    assert [v.exchange_order_id for v in account] == [placed.exchange_order_id]
    final = await gateway.cancel(
        SYMBOL, client_order_id=stop.client_order_id, exchange_order_id=None, conditional=True
    )
    assert final is not None and final.status is OrderStatus.CANCELED
    assert open_stops(sim) == 0
    # a second cancel finds nothing to cancel: done, not an error
    again = await gateway.cancel(
        SYMBOL,
        client_order_id=stop.client_order_id,
        exchange_order_id=placed.exchange_order_id,
        conditional=True,
    )
    assert again is None or again.status is OrderStatus.CANCELED


@pytest.mark.parametrize("side", [Side.LONG, Side.SHORT])
async def test_a_triggered_stop_closes_the_position_and_has_its_fills(
    gateway: ExchangeGateway, sim: PaperExchange, side: Side
) -> None:
    await gateway.place(entry_intent(cid("e"), SYMBOL, side, QTY), look_up_first=False)
    stop = stop_intent(cid("sl"), SYMBOL, side, QTY, stop_price(side))
    await gateway.place(stop, look_up_first=False)
    sim.set_price(SYMBOL, stop_price(side, Decimal("0.06")))  # through the stop
    sim.publish_marks([SYMBOL])
    view = await gateway.find(SYMBOL, stop.client_order_id, conditional=True)
    assert view is not None and view.status is OrderStatus.FILLED
    fills = await gateway.order_fills(SYMBOL, stop.client_order_id, conditional=True)
    assert sum(f.qty for f in fills) == QTY
    assert (await gateway.position(SYMBOL)).qty == 0 and signed(sim) == 0


@pytest.mark.parametrize("side", [Side.LONG, Side.SHORT])
async def test_a_stop_is_moved_in_place_where_the_venue_amends(
    gateway: ExchangeGateway, sim: PaperExchange, side: Side
) -> None:
    """Bybit amends a stop's trigger (one order throughout); Binance cannot (algo
    orders), so its filters say a move is a new stop then a cancel."""
    filters = await gateway.filters(SYMBOL)
    assert filters.stop_moves_in_place is (sim.venue == "bybit")
    if not filters.stop_moves_in_place:
        return
    await gateway.place(entry_intent(cid("e"), SYMBOL, side, QTY), look_up_first=False)
    stop = stop_intent(cid("sl"), SYMBOL, side, QTY, stop_price(side))
    placed = await gateway.place(stop, look_up_first=False)
    tighter = stop_price(side, Decimal("0.02"))
    moved = await gateway.amend_stop(
        SYMBOL,
        client_order_id=stop.client_order_id,
        exchange_order_id=placed.exchange_order_id,
        trigger_price=tighter,
    )
    assert moved.exchange_order_id == placed.exchange_order_id
    assert moved.client_order_id == stop.client_order_id
    assert moved.status is OrderStatus.OPEN and moved.trigger_price == tighter
    assert open_stops(sim) == 1
    # a retry whose first answer was lost: the price is already set, and that is success
    again = await gateway.amend_stop(
        SYMBOL, client_order_id=stop.client_order_id, exchange_order_id=None, trigger_price=tighter
    )
    assert again.trigger_price == tighter and open_stops(sim) == 1
    # a move beyond the mark would trigger at once: refused, the stop stays
    beyond = PRICE * Decimal("1.01") if side is Side.LONG else PRICE * Decimal("0.99")
    with pytest.raises(Exception) as refused:
        await gateway.amend_stop(
            SYMBOL,
            client_order_id=stop.client_order_id,
            exchange_order_id=placed.exchange_order_id,
            trigger_price=beyond,
        )
    assert classify_exception(refused.value).type is ErrorType.ORDER_IMMEDIATELY_FILLABLE
    assert open_stops(sim) == 1
    # a stop gone (cancelled) cannot be moved: not found, for the caller to look
    await gateway.cancel(
        SYMBOL, client_order_id=stop.client_order_id, exchange_order_id=None, conditional=True
    )
    with pytest.raises(Exception) as gone:
        await gateway.amend_stop(
            SYMBOL,
            client_order_id=stop.client_order_id,
            exchange_order_id=placed.exchange_order_id,
            trigger_price=stop_price(side, Decimal("0.03")),
        )
    assert classify_exception(gone.value).type is ErrorType.ORDER_NOT_FOUND


async def test_more_open_orders_than_one_page_are_all_listed(
    gateway: ExchangeGateway, sim: PaperExchange
) -> None:
    await gateway.place(entry_intent(cid("e"), SYMBOL, Side.LONG, QTY), look_up_first=False)
    n = PAGE + 5
    placed = set()
    for k in range(n):
        trigger = PRICE * Decimal("0.9") - k
        view = await gateway.place(
            stop_intent(cid("sl"), SYMBOL, Side.LONG, QTY, trigger), look_up_first=False
        )
        placed.add(view.exchange_order_id)
    assert {v.exchange_order_id for v in await gateway.all_open_orders(SYMBOL)} == placed
    assert {v.exchange_order_id for v in await gateway.account_orders()} == placed


async def test_an_answer_lost_after_the_order_landed_is_found_not_placed_twice(
    gateway: ExchangeGateway, sim: PaperExchange
) -> None:
    intent = entry_intent(cid("e"), SYMBOL, Side.LONG, QTY)
    sim.add_fault("drop_response", endpoint=CREATE[sim.venue], count=1)
    with pytest.raises(Exception) as lost:
        await gateway.place(intent, look_up_first=False)
    assert classify_exception(lost.value, placement=True).ambiguous
    # the retry looks up first: the order that landed is the answer
    view = await gateway.place(intent, look_up_first=True)
    assert view.client_order_id == intent.client_order_id and view.filled_qty == QTY
    assert signed(sim) == QTY  # one entry, not two


def entries_placed(sim: PaperExchange, client_order_id: str) -> int:
    """How many orders the exchange ever booked under `client_order_id`."""
    return sum(1 for o in sim.ground_truth()["orders"] if o["clientOrderId"] == client_order_id)


async def held_then_retried(
    gateway: ExchangeGateway, sim: PaperExchange, held_ms: int
) -> tuple[asyncio.Task[object], object]:
    """Send an entry the exchange holds `held_ms` before it handles it; while it is
    held, retry the same entry as a restarted worker would (look up first)."""
    gateway.exchange.options["recvWindow"] = 1000  # a send window of 2.5 s
    intent = entry_intent(cid("e"), SYMBOL, Side.LONG, QTY)
    held = sim.add_fault("latency", endpoint=CREATE[sim.venue], latency_ms=held_ms, count=1)
    first = asyncio.create_task(gateway.place(intent, look_up_first=False))
    while held.hits == 0:
        await asyncio.sleep(0.01)
    retried = await gateway.place(intent, look_up_first=True)
    return first, retried


async def test_a_retry_waits_out_an_entry_still_on_its_way_and_finds_it(
    gateway: ExchangeGateway, sim: PaperExchange
) -> None:
    """The worker that sent the entry died while the exchange held the request: the
    retry finds nothing at first, and must not send until the held one can no longer
    land (the CI failure of stop 20: two BTCUSDT entries after a worker kill)."""
    first, retried = await held_then_retried(gateway, sim, held_ms=800)
    landed = await first
    assert retried == landed or retried.exchange_order_id == landed.exchange_order_id  # type: ignore[attr-defined]
    assert entries_placed(sim, landed.client_order_id) == 1  # type: ignore[attr-defined]
    assert signed(sim) == QTY


async def test_an_entry_held_past_its_recv_window_is_refused_and_the_retry_places_one(
    gateway: ExchangeGateway, sim: PaperExchange
) -> None:
    """A request that reaches the exchange after its recvWindow is refused (Binance
    -1021, Bybit 10002), so waiting out the window makes "not found" final."""
    first, retried = await held_then_retried(gateway, sim, held_ms=3000)
    with pytest.raises(Exception) as late:
        await first
    assert "recv" in str(late.value).lower()
    assert retried.filled_qty == QTY  # type: ignore[attr-defined]
    assert entries_placed(sim, retried.client_order_id) == 1  # type: ignore[attr-defined]
    assert signed(sim) == QTY


async def test_errors_are_classified_on_every_venue(gateway: ExchangeGateway) -> None:
    huge = entry_intent(cid("e"), SYMBOL, Side.LONG, Decimal(100))  # 6M USDT of margin
    with pytest.raises(Exception) as refused:
        await gateway.place(huge, look_up_first=False)
    assert classify_exception(refused.value, placement=True).type is ErrorType.INSUFFICIENT_FUNDS
    # a stop on the wrong side of the mark would trigger at once: -2021 / 110092-3
    await gateway.place(entry_intent(cid("e"), SYMBOL, Side.LONG, QTY), look_up_first=False)
    beyond = stop_intent(cid("sl"), SYMBOL, Side.LONG, QTY, PRICE * Decimal("1.01"))
    with pytest.raises(Exception) as at_once:
        await gateway.place(beyond, look_up_first=False)
    assert classify_exception(at_once.value, placement=True).type is (
        ErrorType.ORDER_IMMEDIATELY_FILLABLE
    )
    assert await gateway.find(SYMBOL, cid("never"), conditional=True) is None
    assert await gateway.order_fills(SYMBOL, cid("never"), conditional=False) == []


def episode(sim: PaperExchange, symbol: str = SYMBOL) -> dict[str, Any]:
    return [e for e in sim.ground_truth()["episodes"] if e["symbol"] == symbol][-1]


@pytest.mark.parametrize("side", [Side.LONG, Side.SHORT])
async def test_the_entry_and_its_stop_leave_no_window_where_the_venue_attaches_it(
    gateway: ExchangeGateway, sim: PaperExchange, side: Side
) -> None:
    """Bybit: the stop is sent with the entry (position TP/SL), live before the fill,
    then set to the fill's level in place: 0 ms unprotected, one stop. Binance: the
    stop follows the fill as an order of its own."""
    filters = await gateway.filters(SYMBOL)
    assert filters.entry_carries_stop is (sim.venue == "bybit")
    stop_cid = cid("s")
    req = EntryWithStopRequest(
        account=ACCOUNT,
        entry=entry_intent(cid("e"), SYMBOL, side, QTY),
        stop_client_order_id=stop_cid,
        stop=StopRule(percent=Decimal(2)),
        filters=filters,
        position_id=None,
    )
    acts = ExchangeActivities({ACCOUNT: gateway})
    result: EntryWithStopResult = await ActivityEnvironment().run(acts.place_entry_with_stop, req)
    assert result.entry.filled_qty == QTY and result.stop is not None
    stop = result.stop
    average = result.entry.average_price
    assert average is not None
    level = (average * (1 - side.sign * Decimal("0.02"))).quantize(filters.tick_size)
    assert abs(stop.trigger_price - level) <= filters.tick_size  # type: ignore[operator]
    assert stop.client_order_id == stop_cid and stop.status is OrderStatus.OPEN
    assert open_stops(sim) == 1 and episode(sim)["maxStops"] == 1
    assert stop.position_stop is (sim.venue == "bybit")
    if sim.venue == "bybit":
        assert episode(sim)["unprotectedMs"] == 0
    # Found, moved and read by our name for it, with its exchange id.
    found = await gateway.find(
        SYMBOL, stop_cid, conditional=True, exchange_order_id=stop.exchange_order_id
    )
    assert found is not None and found.exchange_order_id == stop.exchange_order_id
    assert found.client_order_id == stop_cid
    if filters.stop_moves_in_place:
        tighter = stop_price(side, Decimal("0.01"))
        moved = await gateway.amend_stop(
            SYMBOL,
            client_order_id=stop_cid,
            exchange_order_id=stop.exchange_order_id,
            trigger_price=tighter,
            position_stop=stop.position_stop,
        )
        assert moved.trigger_price == tighter and open_stops(sim) == 1
    sim.set_price(SYMBOL, stop_price(side, Decimal("0.06")))  # through the stop
    sim.publish_marks([SYMBOL])
    fired = await gateway.find(
        SYMBOL, stop_cid, conditional=True, exchange_order_id=stop.exchange_order_id
    )
    assert fired is not None and fired.status is OrderStatus.FILLED
    fills = await gateway.order_fills(
        SYMBOL, stop_cid, conditional=True, exchange_order_id=stop.exchange_order_id
    )
    assert sum(f.qty for f in fills) == QTY and signed(sim) == 0


async def test_a_stop_that_came_with_the_entry_is_cancelled_by_its_exchange_id(
    gateway: ExchangeGateway, sim: PaperExchange
) -> None:
    filters = await gateway.filters(SYMBOL)
    req = EntryWithStopRequest(
        account=ACCOUNT,
        entry=entry_intent(cid("e"), SYMBOL, Side.LONG, QTY),
        stop_client_order_id=cid("s"),
        stop=StopRule(percent=Decimal(2)),
        filters=filters,
        position_id=None,
    )
    acts = ExchangeActivities({ACCOUNT: gateway})
    result: EntryWithStopResult = await ActivityEnvironment().run(acts.place_entry_with_stop, req)
    assert result.stop is not None
    final = await gateway.cancel(
        SYMBOL,
        client_order_id=req.stop_client_order_id,
        exchange_order_id=result.stop.exchange_order_id,
        conditional=True,
    )
    assert final is not None and final.status is OrderStatus.CANCELED
    assert open_stops(sim) == 0


# --- Bybit's own traps ----------------------------------------------------------------------


@pytest_asyncio.fixture
async def bybit() -> AsyncIterator[PaperExchange]:
    async with PaperExchange(venue="bybit", mark_interval_ms=100, admin_port=None) as exchange:
        exchange.configure(rate_limit_per_s=10_000)
        exchange.set_price(SYMBOL, PRICE)
        yield exchange


@pytest_asyncio.fixture
async def bybit_gateway(bybit: PaperExchange) -> AsyncIterator[ExchangeGateway]:
    client = bybit_client(bybit, api_key=bybit.api_key, secret=bybit.api_secret)
    gw = ExchangeGateway(client, account="paper")
    try:
        yield gw
    finally:
        await gw.close()


async def test_bybit_an_entry_still_created_is_read_again_until_filled(
    bybit_gateway: ExchangeGateway, bybit: PaperExchange
) -> None:
    gateway = bybit_gateway
    bybit.configure(created_status_ms=60_000)  # the lists say "Created" for a minute
    intent = entry_intent(cid("e"), SYMBOL, Side.LONG, QTY)
    view = await gateway.place(intent, look_up_first=False)
    # ccxt reads "Created" as open; the gateway does not take it as the answer
    assert view.client_order_id == intent.client_order_id
    bybit.advance(61_000)
    done = await gateway.find(SYMBOL, intent.client_order_id, conditional=False)
    assert done is not None and done.status is OrderStatus.FILLED and done.filled_qty == QTY


async def test_bybit_a_stop_before_the_position_shows_is_refused_as_reduce_only(
    bybit_gateway: ExchangeGateway, bybit: PaperExchange
) -> None:
    gateway = bybit_gateway
    bybit.configure(position_lag_ms=5_000)
    await gateway.place(entry_intent(cid("e"), SYMBOL, Side.LONG, QTY), look_up_first=False)
    stop = stop_intent(cid("sl"), SYMBOL, Side.LONG, QTY, stop_price(Side.LONG))
    with pytest.raises(Exception) as early:
        await gateway.place(stop, look_up_first=False)
    assert classify_exception(early.value, placement=True).type is ErrorType.REDUCE_ONLY_REJECTED
    bybit.advance(5_001)
    placed = await gateway.place(stop, look_up_first=True)
    assert placed.status is OrderStatus.OPEN and open_stops(bybit) == 1


@pytest.mark.parametrize("side", [Side.LONG, Side.SHORT])
async def test_bybit_an_entrys_stop_refused_while_the_position_lags_is_placed_once_it_shows(
    bybit_gateway: ExchangeGateway, bybit: PaperExchange, side: Side
) -> None:
    # The audited bot's "No open position found": the stop followed the entry too
    # fast. The entry-with-stop activity retries that refusal until the position shows.
    bybit.configure(position_lag_ms=600)
    acts = ExchangeActivities({"paper": bybit_gateway})
    req = EntryWithStopRequest(
        account="paper",
        entry=entry_intent(cid("e"), SYMBOL, side, QTY),
        stop_client_order_id=cid("s"),
        stop=StopRule(percent=Decimal(2)),
        filters=await bybit_gateway.filters(SYMBOL),
        position_id=None,
    )
    result: EntryWithStopResult = await ActivityEnvironment().run(acts.place_entry_with_stop, req)
    assert result.entry.filled_qty == QTY
    assert result.stop_error is None and result.stop is not None
    assert result.stop.status is OrderStatus.OPEN
    assert open_stops(bybit) == 1 and signed(bybit) == (QTY if side is Side.LONG else -QTY)


async def test_bybit_a_ret_code_sent_as_a_string_is_read_alike(
    bybit_gateway: ExchangeGateway, bybit: PaperExchange
) -> None:
    bybit.configure(ret_code_as_string=True)
    intent = entry_intent(cid("e"), SYMBOL, Side.LONG, QTY)
    assert (await bybit_gateway.place(intent, look_up_first=False)).filled_qty == QTY
    huge = entry_intent(cid("e"), SYMBOL, Side.LONG, Decimal(100))
    with pytest.raises(Exception) as refused:
        await bybit_gateway.place(huge, look_up_first=False)
    assert classify_exception(refused.value, placement=True).type is ErrorType.INSUFFICIENT_FUNDS
    stop = stop_intent(cid("sl"), SYMBOL, Side.LONG, QTY, stop_price(Side.LONG))
    assert (await bybit_gateway.place(stop, look_up_first=False)).status is OrderStatus.OPEN


async def test_bybit_a_resend_refused_as_a_duplicate_link_id_answers_with_the_order(
    bybit_gateway: ExchangeGateway, bybit: PaperExchange
) -> None:
    # The answer was lost, and the resend does not look up first: Bybit refuses the
    # orderLinkId (110072, unique for ever) and the gateway answers with the order it
    # names. (Binance's client ids are unique among open orders only: a filled
    # entry's id is free again, which is why every retry looks up first.)
    gateway, sim = bybit_gateway, bybit
    intent = entry_intent(cid("e"), SYMBOL, Side.SHORT, QTY)
    sim.add_fault("drop_response", endpoint=CREATE["bybit"], count=1)
    with pytest.raises(Exception):  # noqa: B017  (any transport error)
        await gateway.place(intent, look_up_first=False)
    view = await gateway.place(intent, look_up_first=False)
    assert view.client_order_id == intent.client_order_id and view.filled_qty == QTY
    assert signed(sim) == -QTY  # one entry


@pytest.mark.parametrize("conditional", [False, True])
async def test_a_foreign_order_is_cancelled_by_its_exchange_id(
    gateway: ExchangeGateway, sim: PaperExchange, conditional: bool
) -> None:
    """An order a person placed (no client id of ours), cancelled by its id alone: its
    final view comes back (Bybit: from the open list or the history, where ccxt's
    `fetch_order` would refuse), and a second cancel finds it done."""
    if conditional:
        sim.engine.place_algo(
            SYMBOL, "SELL", "STOP_MARKET", QTY, PRICE * Decimal("0.9"), source="manual"
        )
    else:
        sim.engine.place_order(SYMBOL, "BUY", "LIMIT", QTY, PRICE * Decimal("0.9"), source="manual")
    [listed] = await gateway.account_orders()  # the venue's own id for it
    assert listed.is_conditional is conditional
    order_id = listed.exchange_order_id
    view = await gateway.cancel_by_exchange_id(SYMBOL, order_id, conditional=conditional)
    assert view is not None and view.status is OrderStatus.CANCELED, view
    assert [o for o in await gateway.account_orders() if o.exchange_order_id == order_id] == []
    again = await gateway.cancel_by_exchange_id(SYMBOL, order_id, conditional=conditional)
    assert again is None or again.status is OrderStatus.CANCELED
