"""Exchange activities against the real paper exchange (over ccxt and HTTP) and PostgreSQL.

Run in Temporal's `ActivityEnvironment` (activity context, heartbeats, attempt
number) without a Temporal server: the server's part (retrying the attempt on
another worker after a missed heartbeat) is measured by bench/bench_entry_crash.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.exchange.activities import ExchangeActivities
from activities.exchange.gateway import ExchangeGateway
from activities.store.repository import Store
from domain.errors import NON_RETRYABLE_ERROR_TYPES, ErrorType
from domain.events import Event, EventType
from domain.journal import JournalEntry, journal_entry
from domain.market import MarketFilters
from domain.orders import (
    OrderIntent,
    OrderKind,
    OrderStatus,
    entry_intent,
    stop_intent,
    take_profit_intent,
)
from domain.requests import (
    EntryWithStopRequest,
    EntryWithStopResult,
    PlaceOrderRequest,
    SymbolRequest,
)
from domain.sizing import StopRule
from domain.types import Side
from simulator.server import PaperExchange

ACCOUNT = "paper"
SYMBOL = "BTCUSDT"
PRICE = Decimal(60000)
QTY = Decimal("0.010")


def cid(tag: str = "t") -> str:
    return f"{tag}{uuid.uuid4().hex[:20]}"


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[PaperExchange]:
    async with PaperExchange(mark_interval_ms=100, admin_port=None) as exchange:
        exchange.set_price(SYMBOL, PRICE)
        exchange.set_price("ETHUSDT", "3000")
        yield exchange


class Sink:
    """An EventSink that keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def append_event(self, event: Event) -> bool:
        self.events.append(event)
        return True


@pytest.fixture
def sink() -> Sink:
    return Sink()


@pytest.fixture
def acts(gateway: ExchangeGateway, store: Store, sink: Sink) -> ExchangeActivities:
    return ExchangeActivities(
        {ACCOUNT: gateway}, events=sink, journal=store, heartbeat_every_s=0.05
    )


def env(attempt: int = 1, beats: list[Any] | None = None) -> ActivityEnvironment:
    e = ActivityEnvironment()
    e.info = dataclasses.replace(
        e.info,
        attempt=attempt,
        workflow_id="wf-test",
        started_time=datetime.now(UTC),
        start_to_close_timeout=timedelta(seconds=120),  # the entry activity's
    )
    if beats is not None:
        e.on_heartbeat = lambda *details: beats.append(details)
    return e


async def run(coro_fn: Any, arg: Any, *, attempt: int = 1, beats: list[Any] | None = None) -> Any:
    return await env(attempt, beats).run(coro_fn, arg)


async def app_error(awaitable: Awaitable[Any]) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        await awaitable
    return info.value


def orders_with(sim: PaperExchange, client_id: str) -> list[dict[str, Any]]:
    truth = sim.ground_truth()
    regular = [o for o in truth["orders"] if o.get("clientOrderId") == client_id]
    algos = [a for a in truth["algoOrders"] if a.get("clientAlgoId") == client_id]
    return regular + algos


async def filters(gateway: ExchangeGateway) -> MarketFilters:
    return await gateway.filters(SYMBOL)


def entry_request(
    f: MarketFilters, *, position_id: str | None = "wf-test/run-1", **kw: Any
) -> EntryWithStopRequest:
    return EntryWithStopRequest(
        account=ACCOUNT,
        entry=entry_intent(cid("e"), SYMBOL, Side.LONG, QTY),
        stop_client_order_id=cid("s"),
        stop=StopRule(percent=Decimal(2)),
        filters=f,
        position_id=position_id,
        **kw,
    )


async def open_long(acts: ExchangeActivities) -> None:
    await run(
        acts.place_order,
        PlaceOrderRequest(account=ACCOUNT, intent=entry_intent(cid(), SYMBOL, Side.LONG, QTY)),
    )


# --- the module is importable without ccxt / asyncpg -----------------------------------


def test_activity_modules_import_neither_ccxt_nor_asyncpg() -> None:
    code = (
        "import sys\n"
        "import activities.exchange.activities, activities.store.activities\n"
        "bad = [m for m in ('ccxt', 'asyncpg', 'aiohttp') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_activity_names_unchanged() -> None:
    from temporalio.activity import _Definition

    names = {_Definition.must_from_callable(fn).name for fn in ExchangeActivities({}).all()}
    assert names == {
        "exchange.place_order",
        "exchange.place_entry_with_stop",
        "exchange.amend_stop",
        "exchange.find_order",
        "exchange.cancel_order",
        "exchange.cancel_by_exchange_id",
        "exchange.position",
        "exchange.open_orders",
        "exchange.account_snapshot",
        "exchange.entry_readiness",
        "exchange.mark_price",
        "exchange.candles",
        "exchange.filters",
        "exchange.fills",
        "exchange.clear_position_stop",
        "exchange.outside_exit",
        "exchange.funding",
    }
    # referenced by definition from a workflow: the unbound method carries it
    definition = _Definition.must_from_callable(ExchangeActivities.place_entry_with_stop)
    assert definition.arg_types == [EntryWithStopRequest]
    assert definition.ret_type is EntryWithStopResult


def test_new_error_types_are_classified() -> None:
    assert ErrorType.CLIENT_ID_REUSED.value == "ClientIdReused"
    assert "ClientIdReused" in NON_RETRYABLE_ERROR_TYPES
    assert ErrorType.JOURNAL_UNAVAILABLE.retryable
    assert "JournalUnavailable" not in NON_RETRYABLE_ERROR_TYPES


# --- one error-translation wrapper -------------------------------------------------------


async def test_permanent_exchange_error_is_non_retryable(
    acts: ExchangeActivities, sim: PaperExchange
) -> None:
    await open_long(acts)
    sim.add_fault(
        "error",
        endpoint="POST /fapi/v1/algoOrder",
        code=-2021,
        msg="Order would immediately trigger.",
        count=1,
    )
    intent = stop_intent(cid(), SYMBOL, Side.LONG, QTY, Decimal(59000))
    err = await app_error(run(acts.place_order, PlaceOrderRequest(account=ACCOUNT, intent=intent)))
    assert err.type == ErrorType.ORDER_IMMEDIATELY_FILLABLE.value
    assert err.non_retryable
    assert err.details == ({"code": -2021, "ambiguous": False},)


async def test_transient_placement_error_is_retryable_and_ambiguous(
    acts: ExchangeActivities, sim: PaperExchange
) -> None:
    sim.add_fault("http_status", endpoint="POST /fapi/v1/order", status=502, count=1)
    intent = entry_intent(cid(), SYMBOL, Side.LONG, QTY)
    err = await app_error(run(acts.place_order, PlaceOrderRequest(account=ACCOUNT, intent=intent)))
    assert err.type == ErrorType.EXCHANGE_UNAVAILABLE.value
    assert not err.non_retryable
    assert err.details == ({"code": None, "ambiguous": True},)


async def test_read_error_is_not_ambiguous_and_rate_limit_is_recorded(
    acts: ExchangeActivities, sim: PaperExchange, sink: Sink
) -> None:
    sim.add_fault("rate_limit", endpoint="GET /fapi/v1/premiumIndex", count=1)
    err = await app_error(run(acts.mark_price, SymbolRequest(account=ACCOUNT, symbol=SYMBOL)))
    assert err.type == ErrorType.RATE_LIMITED.value and not err.non_retryable
    assert err.details[0]["ambiguous"] is False
    assert [e.type for e in sink.events] == [EventType.RATE_LIMIT_HIT]
    assert await run(acts.mark_price, SymbolRequest(account=ACCOUNT, symbol=SYMBOL)) > 0


async def test_own_application_errors_pass_unchanged(acts: ExchangeActivities) -> None:
    err = await app_error(run(acts.mark_price, SymbolRequest(account="nobody", symbol=SYMBOL)))
    assert err.type == "UnknownAccount" and err.non_retryable
    err = await app_error(run(acts.filters, SymbolRequest(account=ACCOUNT, symbol="NOPEUSDT")))
    assert err.type == "BadSymbol" and err.non_retryable


# --- the order journal: a record before the exchange sees the order ----------------------


async def test_journal_row_exists_before_the_exchange_sees_the_order(
    acts: ExchangeActivities, sim: PaperExchange, store: Store
) -> None:
    slow = sim.add_fault("latency", endpoint="POST /fapi/v1/order", latency_ms=800, count=1)
    intent = entry_intent(cid(), SYMBOL, Side.LONG, QTY)
    req = PlaceOrderRequest(account=ACCOUNT, intent=intent, position_id="wf-test/run-1")
    task = asyncio.create_task(run(acts.place_order, req))
    while slow.hits < 1:  # the request is held at the exchange, not executed yet
        assert not task.done()
        await asyncio.sleep(0.01)
    assert orders_with(sim, intent.client_order_id) == []
    row = await store.journaled_order(intent.client_order_id)
    assert row is not None
    assert (row.position_id, row.workflow_id, row.account, row.exchange) == (
        "wf-test/run-1",
        "wf-test",
        ACCOUNT,
        "binanceusdm",
    )
    assert (row.kind, row.symbol, row.quantity, row.trigger_price, row.reduce_only) == (
        OrderKind.ENTRY,
        SYMBOL,
        QTY,
        None,
        False,
    )
    view = await task
    assert view.status is OrderStatus.FILLED
    assert len(orders_with(sim, intent.client_order_id)) == 1


async def test_entry_and_stop_both_journaled_before_sent(
    acts: ExchangeActivities, sim: PaperExchange, store: Store, gateway: ExchangeGateway
) -> None:
    slow = sim.add_fault("latency", endpoint="POST /fapi/v1/algoOrder", latency_ms=800, count=1)
    req = entry_request(await filters(gateway))
    task = asyncio.create_task(run(acts.place_entry_with_stop, req))
    while slow.hits < 1:
        assert not task.done()
        await asyncio.sleep(0.01)
    assert orders_with(sim, req.stop_client_order_id) == []
    entry_row = await store.journaled_order(req.entry.client_order_id)
    stop_row = await store.journaled_order(req.stop_client_order_id)
    assert entry_row is not None and stop_row is not None
    assert stop_row.kind is OrderKind.STOP and stop_row.reduce_only
    result: EntryWithStopResult = await task
    assert result.stop is not None and result.stop_error is None
    assert stop_row.quantity == result.entry.filled_qty
    assert stop_row.trigger_price == result.stop_price
    assert [r.client_order_id for r in await store.journaled_orders(position_id="wf-test/run-1")][
        -2:
    ] == [req.entry.client_order_id, req.stop_client_order_id]


async def test_without_position_id_nothing_is_journaled(
    acts: ExchangeActivities, store: Store
) -> None:
    intent = entry_intent(cid(), SYMBOL, Side.LONG, QTY)
    await run(acts.place_order, PlaceOrderRequest(account=ACCOUNT, intent=intent))
    assert await store.journaled_order(intent.client_order_id) is None


async def test_client_id_reused_for_a_different_intent_is_refused(
    acts: ExchangeActivities, sim: PaperExchange, store: Store
) -> None:
    await open_long(acts)
    same_id = cid()
    first = stop_intent(same_id, SYMBOL, Side.LONG, QTY, Decimal(58000))
    placed = await run(
        acts.place_order,
        PlaceOrderRequest(account=ACCOUNT, intent=first, position_id="wf-a/run-1"),
    )
    assert placed.status is OrderStatus.OPEN
    for other in (
        stop_intent(same_id, SYMBOL, Side.LONG, QTY, Decimal(57000)),  # other trigger
        stop_intent(same_id, SYMBOL, Side.LONG, Decimal("0.005"), Decimal(58000)),  # other qty
        take_profit_intent(same_id, SYMBOL, Side.LONG, QTY, Decimal(61000)),  # other kind
        stop_intent(same_id, SYMBOL, Side.SHORT, QTY, Decimal(58000)),  # other side
        stop_intent(same_id, "ETHUSDT", Side.LONG, QTY, Decimal(2900)),  # other symbol
    ):
        err = await app_error(
            run(
                acts.place_order,
                PlaceOrderRequest(account=ACCOUNT, intent=other, position_id="wf-b/run-1"),
                attempt=2,
            )
        )
        assert err.type == ErrorType.CLIENT_ID_REUSED.value and err.non_retryable
        [details] = err.details
        assert details == {
            "client_order_id": same_id,
            "position_id": "wf-a/run-1",
            "workflow_id": "wf-test",
            "account": ACCOUNT,
            "exchange": "binanceusdm",
            "symbol": SYMBOL,
            "kind": "stop",
            "side": "sell",
            "quantity": "0.010",
            "trigger_price": "58000",
            "reduce_only": "true",
        }
        assert JournalEntry.from_details(details).trigger_price == Decimal(58000)
    # nothing of the refused intents reached the exchange
    [only] = orders_with(sim, same_id)
    assert Decimal(only["triggerPrice"]) == 58000
    row = await store.journaled_order(same_id)
    assert row is not None and row.position_id == "wf-a/run-1"


async def test_identical_retry_proceeds_and_places_once(
    acts: ExchangeActivities, sim: PaperExchange
) -> None:
    intent = entry_intent(cid(), SYMBOL, Side.LONG, QTY)
    req = PlaceOrderRequest(account=ACCOUNT, intent=intent, position_id="wf-test/run-1")
    first = await run(acts.place_order, req)
    # the same intent again (Decimal spelled differently), as a retry attempt
    again = intent.model_copy(update={"qty": Decimal("0.01")})
    second = await run(
        acts.place_order,
        PlaceOrderRequest(account=ACCOUNT, intent=again, position_id="wf-test/run-1"),
        attempt=2,
    )
    assert second.exchange_order_id == first.exchange_order_id
    assert len(orders_with(sim, intent.client_order_id)) == 1


async def test_an_order_journaled_before_is_looked_up_whatever_the_attempt(
    acts: ExchangeActivities, sim: PaperExchange, gateway: ExchangeGateway
) -> None:
    """A workflow reset (by hand, or of a frozen workflow) replays from before an
    order's outcome was recorded and asks for it again as a first attempt, with no
    look-up asked for: the journal knows it was journaled, so it is looked up and
    found, not sent twice. An entry fills on arrival and leaves no open order for
    the exchange to refuse a second one by its client id."""
    req = entry_request(await filters(gateway))
    first: EntryWithStopResult = await run(acts.place_entry_with_stop, req)
    assert first.stop is not None and first.entry.filled_qty == QTY
    again: EntryWithStopResult = await run(acts.place_entry_with_stop, req)  # attempt 1
    assert again.entry.exchange_order_id == first.entry.exchange_order_id
    assert again.stop is not None
    assert again.stop.exchange_order_id == first.stop.exchange_order_id
    assert len(orders_with(sim, req.entry.client_order_id)) == 1
    assert len(orders_with(sim, req.stop_client_order_id)) == 1
    close = entry_intent(cid("c"), SYMBOL, Side.SHORT, QTY)
    order = PlaceOrderRequest(account=ACCOUNT, intent=close, position_id="wf-test/run-1")
    closed = await run(acts.place_order, order)
    assert (await run(acts.place_order, order)).exchange_order_id == closed.exchange_order_id
    assert len(orders_with(sim, close.client_order_id)) == 1


class DeadJournal:
    """A journal whose database does not answer (hangs) or refuses at once."""

    def __init__(self, hang: bool) -> None:
        self.hang = hang
        self.calls = 0

    async def journal_order(self, entry: JournalEntry) -> JournalEntry:
        self.calls += 1
        if self.hang:
            await asyncio.sleep(3600)
        raise ConnectionRefusedError("connection refused")


@pytest.mark.parametrize("hang", [True, False])
async def test_journal_down_stop_still_goes_entry_does_not(
    gateway: ExchangeGateway, sim: PaperExchange, hang: bool
) -> None:
    journal = DeadJournal(hang)
    acts = ExchangeActivities(
        {ACCOUNT: gateway}, journal=journal, journal_wait_s=0.3, journal_wait_entry_s=0.3
    )
    await open_long(acts)  # no position_id: not journaled
    loop = asyncio.get_running_loop()

    stop = stop_intent(cid(), SYMBOL, Side.LONG, QTY, Decimal(58000))
    t0 = loop.time()
    view = await run(
        acts.place_order,
        PlaceOrderRequest(account=ACCOUNT, intent=stop, position_id="wf-test/run-1"),
    )
    assert view.status is OrderStatus.OPEN  # protection first: sent after the bounded wait
    assert 0.3 <= loop.time() - t0 < 2
    assert len(orders_with(sim, stop.client_order_id)) == 1

    entry = entry_intent(cid(), SYMBOL, Side.LONG, QTY)
    err = await app_error(
        run(
            acts.place_order,
            PlaceOrderRequest(account=ACCOUNT, intent=entry, position_id="wf-test/run-1"),
        )
    )
    assert err.type == ErrorType.JOURNAL_UNAVAILABLE.value and not err.non_retryable
    assert err.details == ({"code": None, "ambiguous": False},)
    assert orders_with(sim, entry.client_order_id) == []  # never sent
    assert journal.calls >= 2


async def test_journal_down_on_a_retry_the_filled_entry_still_gets_its_stop(
    gateway: ExchangeGateway, sim: PaperExchange
) -> None:
    acts = ExchangeActivities(
        {ACCOUNT: gateway}, journal=DeadJournal(hang=True), journal_wait_s=0.3
    )
    req = entry_request(await filters(gateway))
    # the first attempt placed the entry (journaled then), and its worker died
    await run(acts.place_order, PlaceOrderRequest(account=ACCOUNT, intent=req.entry))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    result: EntryWithStopResult = await run(acts.place_entry_with_stop, req, attempt=2)
    assert result.stop is not None and result.stop_error is None
    assert loop.time() - t0 < 2  # the short wait, not the entry's
    assert len(orders_with(sim, req.entry.client_order_id)) == 1
    # an entry the exchange does not have is never sent unjournaled, retry or not
    other = entry_request(await filters(gateway))
    err = await app_error(run(acts.place_entry_with_stop, other, attempt=2))
    assert err.type == ErrorType.JOURNAL_UNAVAILABLE.value and not err.non_retryable
    assert orders_with(sim, other.entry.client_order_id) == []


# --- open orders: regular and conditional -------------------------------------------------


async def test_open_orders_lists_regular_and_conditional(
    acts: ExchangeActivities, sim: PaperExchange, gateway: ExchangeGateway
) -> None:
    await open_long(acts)
    stop = stop_intent(cid("sl"), SYMBOL, Side.LONG, QTY, Decimal(58000))
    tp = take_profit_intent(cid("tp"), SYMBOL, Side.LONG, QTY, Decimal(62000))
    for intent in (stop, tp):
        await run(acts.place_order, PlaceOrderRequest(account=ACCOUNT, intent=intent))
    limit_id = cid("lim")
    await gateway.exchange.create_order(
        "BTC/USDT:USDT", "limit", "buy", 0.01, 50000, {"clientOrderId": limit_id}
    )
    # another symbol's orders are not listed
    await gateway.exchange.create_order(
        "ETH/USDT:USDT", "limit", "buy", 0.1, 2000, {"clientOrderId": cid("eth")}
    )
    views = await run(acts.open_orders, SymbolRequest(account=ACCOUNT, symbol=SYMBOL))
    by_id = {v.client_order_id: v for v in views}
    assert set(by_id) == {stop.client_order_id, tp.client_order_id, limit_id}
    assert by_id[limit_id].is_conditional is False
    assert by_id[stop.client_order_id].is_conditional is True
    assert by_id[tp.client_order_id].is_conditional is True
    assert by_id[stop.client_order_id].trigger_price == 58000
    assert all(v.symbol == SYMBOL and v.status is OrderStatus.OPEN for v in views)


async def test_open_orders_lists_many(acts: ExchangeActivities, gateway: ExchangeGateway) -> None:
    await open_long(acts)
    ids = []
    for i in range(30):
        ids.append(cid("m"))
        await gateway.exchange.create_order(
            "BTC/USDT:USDT", "limit", "buy", 0.003, 40000 + i, {"clientOrderId": ids[-1]}
        )
    for i in range(25):
        intent = stop_intent(cid("ms"), SYMBOL, Side.LONG, Decimal("0.001"), Decimal(50000 + i))
        ids.append(intent.client_order_id)
        await run(acts.place_order, PlaceOrderRequest(account=ACCOUNT, intent=intent))
    views = await run(acts.open_orders, SymbolRequest(account=ACCOUNT, symbol=SYMBOL))
    assert sorted(v.client_order_id or "" for v in views) == sorted(ids)


# --- the entry activity: heartbeats, its own stop retries, fill wait ---------------------


async def test_entry_with_stop_heartbeats_and_retries_the_stop_through_5xx(
    acts: ExchangeActivities, sim: PaperExchange, gateway: ExchangeGateway
) -> None:
    failing = sim.add_fault("http_status", endpoint="POST /fapi/v1/algoOrder", status=503, count=3)
    beats: list[Any] = []
    req = entry_request(await filters(gateway))
    result: EntryWithStopResult = await run(acts.place_entry_with_stop, req, beats=beats)
    assert failing.hits == 3
    assert result.stop_error is None and result.stop is not None
    assert result.stop.status is OrderStatus.OPEN
    assert result.stop.qty == result.entry.filled_qty == QTY
    # 0.2 + 0.4 + 0.8 s of backoff: heartbeats kept going all along
    assert len(beats) >= 10
    assert beats[0] == ("journal",) and ("stop",) in beats
    [stop] = orders_with(sim, req.stop_client_order_id)
    assert stop["algoStatus"] == "NEW" and stop["reduceOnly"] is True


async def test_heartbeats_continue_while_an_exchange_call_hangs(
    acts: ExchangeActivities, sim: PaperExchange, gateway: ExchangeGateway
) -> None:
    slow = sim.add_fault("latency", endpoint="POST /fapi/v1/algoOrder", latency_ms=1000, count=1)
    beats: list[Any] = []
    task = asyncio.create_task(
        run(acts.place_entry_with_stop, entry_request(await filters(gateway)), beats=beats)
    )
    while slow.hits < 1:
        await asyncio.sleep(0.01)
    before = len(beats)
    await asyncio.sleep(0.6)  # the stop request is held at the exchange all this time
    assert len(beats) - before >= 6  # every 0.05 s here (0.3 s by default)
    assert beats[-1] == ("stop",)
    result: EntryWithStopResult = await task
    assert result.stop is not None


async def test_a_cancellation_after_the_entry_was_sent_still_places_the_stop(
    acts: ExchangeActivities, sim: PaperExchange, gateway: ExchangeGateway
) -> None:
    slow = sim.add_fault("latency", endpoint="POST /fapi/v1/algoOrder", latency_ms=500, count=1)
    e = env()
    req = entry_request(await filters(gateway))
    task = asyncio.create_task(e.run(acts.place_entry_with_stop, req))
    while slow.hits < 1:
        await asyncio.sleep(0.01)
    e.cancel()  # e.g. the worker shuts down, or the workflow is cancelled
    # The placements are seen through, then the cancellation is reported: the
    # workflow, which waits for it, finds both orders by client id.
    with pytest.raises(asyncio.CancelledError):
        await task
    [entry] = orders_with(sim, req.entry.client_order_id)
    assert entry["status"] == "FILLED"
    [stop] = orders_with(sim, req.stop_client_order_id)
    assert stop["algoStatus"] == "NEW"


async def test_a_cancellation_before_anything_was_sent_is_obeyed(
    gateway: ExchangeGateway, sim: PaperExchange
) -> None:
    acts = ExchangeActivities({ACCOUNT: gateway}, journal=DeadJournal(hang=True))
    req = entry_request(await filters(gateway))
    e = env()
    task = asyncio.create_task(e.run(acts.place_entry_with_stop, req))
    await asyncio.sleep(0.2)  # waiting for the journal
    e.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert orders_with(sim, req.entry.client_order_id) == []


async def test_stop_accepted_but_answer_lost_is_found_not_placed_twice(
    acts: ExchangeActivities, sim: PaperExchange, gateway: ExchangeGateway
) -> None:
    sim.add_fault("drop_response", endpoint="POST /fapi/v1/algoOrder", count=1)
    req = entry_request(await filters(gateway))
    result: EntryWithStopResult = await run(acts.place_entry_with_stop, req)
    assert result.stop is not None and result.stop_error is None
    assert len(orders_with(sim, req.stop_client_order_id)) == 1


async def test_permanent_stop_error_returns_at_once(
    acts: ExchangeActivities, sim: PaperExchange, gateway: ExchangeGateway
) -> None:
    refusing = sim.add_fault(
        "error",
        endpoint="POST /fapi/v1/algoOrder",
        code=-2021,
        msg="Order would immediately trigger.",
    )
    req = entry_request(await filters(gateway))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    result: EntryWithStopResult = await run(acts.place_entry_with_stop, req)
    assert loop.time() - t0 < 1.5
    assert refusing.hits == 1
    assert result.entry.filled_qty == QTY and result.stop is None
    assert result.stop_error == ErrorType.ORDER_IMMEDIATELY_FILLABLE.value
    assert not result.stop_ambiguous


async def test_stop_retries_are_bounded(
    acts: ExchangeActivities, sim: PaperExchange, gateway: ExchangeGateway
) -> None:
    sim.add_fault("http_status", endpoint="POST /fapi/v1/algoOrder", status=502)
    req = entry_request(await filters(gateway), stop_retry_for_s=1.0)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    result: EntryWithStopResult = await run(acts.place_entry_with_stop, req)
    assert 0.5 < loop.time() - t0 < 3
    assert result.stop is None
    assert result.stop_error == ErrorType.EXCHANGE_UNAVAILABLE.value
    assert result.stop_ambiguous  # the exchange may have taken it: the workflow looks first
    assert result.stop_price is not None


# --- a ban with a known end: waited out, not spent -------------------------------------------


async def test_a_ban_is_waited_out_and_the_filled_entry_gets_its_stop(
    acts: ExchangeActivities, sim: PaperExchange, gateway: ExchangeGateway
) -> None:
    """Binance bans the stop's endpoint for longer than the activity's own stop retries
    last: the ban's end is waited for, so the entry's stop goes in this very activity,
    with one refusal, instead of going back to the workflow unplaced."""
    ban = sim.add_fault(
        "rate_limit", endpoint="POST /fapi/v1/algoOrder", status=418, duration_ms=2500
    )
    req = entry_request(await filters(gateway), stop_retry_for_s=1.0)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    result: EntryWithStopResult = await run(acts.place_entry_with_stop, req)
    assert result.stop_error is None and result.stop is not None
    assert result.stop.status is OrderStatus.OPEN
    assert ban.hits == 1  # not hammered within the ban
    assert loop.time() - t0 >= 2.0
    [stop] = orders_with(sim, req.stop_client_order_id)
    assert stop["algoStatus"] == "NEW"


async def test_a_ban_longer_than_the_longest_wait_goes_back_to_the_workflow(
    acts: ExchangeActivities,
    sim: PaperExchange,
    gateway: ExchangeGateway,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("activities.exchange.activities.BAN_WAIT_MAX", timedelta(seconds=1))
    sim.add_fault("rate_limit", endpoint="POST /fapi/v1/algoOrder", status=418, duration_ms=30_000)
    req = entry_request(await filters(gateway), stop_retry_for_s=0.5)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    result: EntryWithStopResult = await run(acts.place_entry_with_stop, req)
    assert loop.time() - t0 < 5
    assert result.stop is None and result.stop_error == ErrorType.RATE_LIMITED.value
    assert not result.stop_ambiguous  # refused before anything was done


async def test_a_ban_is_not_waited_past_the_attempt_s_timeout(
    acts: ExchangeActivities, sim: PaperExchange, gateway: ExchangeGateway
) -> None:
    """A wait for the ban's end that would outlast the attempt's start-to-close
    timeout is cut short: the stop goes back to the workflow unplaced rather than
    Temporal starting the next attempt beside this one."""
    sim.add_fault("rate_limit", endpoint="POST /fapi/v1/algoOrder", status=418, duration_ms=10_000)
    req = entry_request(await filters(gateway), stop_retry_for_s=0.5)
    e = env()
    e.info = dataclasses.replace(e.info, start_to_close_timeout=timedelta(seconds=22))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    result: EntryWithStopResult = await e.run(acts.place_entry_with_stop, req)
    assert loop.time() - t0 < 5
    assert result.stop is None and result.stop_error == ErrorType.RATE_LIMITED.value


async def test_a_reported_ban_holds_every_request_of_the_account_until_it_ends(
    acts: ExchangeActivities, sim: PaperExchange
) -> None:
    """Binance's ban is on the IP: once one request is answered 418 "banned until",
    the account's other requests are refused without being sent (requests sent into
    a ban lengthen it), in the same words, until it ends; then they go."""
    ban = sim.add_fault("rate_limit", endpoint="POST /fapi/v1/order", status=418, duration_ms=3000)
    sent_before = sim.stats.requests

    def order() -> PlaceOrderRequest:
        return PlaceOrderRequest(
            account=ACCOUNT, intent=entry_intent(cid(), SYMBOL, Side.LONG, QTY)
        )

    first = await app_error(run(acts.place_order, order()))
    assert first.type == ErrorType.RATE_LIMITED.value and ban.hits == 1
    sent = sim.stats.requests
    held = await app_error(run(acts.place_order, order()))
    read = await app_error(run(acts.mark_price, SymbolRequest(account=ACCOUNT, symbol=SYMBOL)))
    for err in (held, read):
        assert err.type == ErrorType.RATE_LIMITED.value and "not sent" in err.message
        assert err.next_retry_delay is not None
        assert err.next_retry_delay <= timedelta(seconds=3.8)
    assert sim.stats.requests == sent and ban.hits == 1  # nothing reached the exchange
    assert sent > sent_before
    await asyncio.sleep(first.next_retry_delay.total_seconds() if first.next_retry_delay else 3.5)
    assert (await run(acts.place_order, order())).filled_qty == QTY


async def test_a_ban_tells_temporal_when_to_try_again(
    acts: ExchangeActivities, sim: PaperExchange, sink: Sink
) -> None:
    """The activity's failure carries the ban's end as `next_retry_delay`, so the
    server's next attempt comes after it; a 429 leaves the retry policy's back-off."""
    sim.add_fault("rate_limit", endpoint="POST /fapi/v1/order", status=418, duration_ms=3000)
    intent = entry_intent(cid(), SYMBOL, Side.LONG, QTY)
    err = await app_error(run(acts.place_order, PlaceOrderRequest(account=ACCOUNT, intent=intent)))
    assert err.type == ErrorType.RATE_LIMITED.value and not err.non_retryable
    assert err.next_retry_delay is not None
    assert timedelta(seconds=2) < err.next_retry_delay < timedelta(seconds=4)
    [hit] = sink.events
    assert hit.type is EventType.RATE_LIMIT_HIT
    assert 2000 < hit.payload["retry_after_ms"] <= 3000
    sim.clear_faults()
    await asyncio.sleep(err.next_retry_delay.total_seconds())  # the ban is over
    sim.add_fault("rate_limit", endpoint="POST /fapi/v1/order", count=1)
    err = await app_error(run(acts.place_order, PlaceOrderRequest(account=ACCOUNT, intent=intent)))
    assert err.type == ErrorType.RATE_LIMITED.value and err.next_retry_delay is None


async def test_entry_still_new_is_waited_for(
    acts: ExchangeActivities, sim: PaperExchange, gateway: ExchangeGateway
) -> None:
    sim.configure(market_fill_delay_ms=1200)
    req = entry_request(await filters(gateway))
    result: EntryWithStopResult = await run(acts.place_entry_with_stop, req)
    assert result.entry.status is OrderStatus.FILLED and result.entry.filled_qty == QTY
    assert result.stop is not None and result.stop.qty == QTY


async def test_entry_never_filling_returns_unfilled_after_the_wait(
    acts: ExchangeActivities, sim: PaperExchange, gateway: ExchangeGateway
) -> None:
    sim.configure(market_fill_delay_ms=5000)
    req = entry_request(await filters(gateway), entry_fill_wait_s=0.5)
    result: EntryWithStopResult = await run(acts.place_entry_with_stop, req)
    assert result.entry.filled_qty == 0 and result.stop is None and result.stop_error is None
    assert orders_with(sim, req.stop_client_order_id) == []


async def test_a_later_attempt_looks_both_ids_up_first(
    acts: ExchangeActivities, sim: PaperExchange, gateway: ExchangeGateway
) -> None:
    req = entry_request(await filters(gateway))
    first: EntryWithStopResult = await run(acts.place_entry_with_stop, req)
    again: EntryWithStopResult = await run(acts.place_entry_with_stop, req, attempt=2)
    assert again.entry.exchange_order_id == first.entry.exchange_order_id
    assert again.stop is not None and first.stop is not None
    assert again.stop.exchange_order_id == first.stop.exchange_order_id
    assert len(orders_with(sim, req.entry.client_order_id)) == 1
    assert len(orders_with(sim, req.stop_client_order_id)) == 1


async def test_a_later_attempt_places_the_stop_the_first_one_never_sent(
    acts: ExchangeActivities, sim: PaperExchange, gateway: ExchangeGateway
) -> None:
    """What another worker does after the first died between the entry fill and the stop."""
    f = await filters(gateway)
    req = entry_request(f)
    # the first attempt got as far as the entry (placed and journaled), then died
    await run(
        acts.place_order,
        PlaceOrderRequest(account=ACCOUNT, intent=req.entry, position_id=req.position_id),
    )
    result: EntryWithStopResult = await run(acts.place_entry_with_stop, req, attempt=2)
    assert result.stop is not None and result.stop_error is None
    assert len(orders_with(sim, req.entry.client_order_id)) == 1
    assert len(orders_with(sim, req.stop_client_order_id)) == 1


async def test_stop_journaled_for_another_order_is_returned_not_sent(
    acts: ExchangeActivities, sim: PaperExchange, gateway: ExchangeGateway, store: Store
) -> None:
    req = entry_request(await filters(gateway))
    other: OrderIntent = stop_intent(
        req.stop_client_order_id, SYMBOL, Side.LONG, Decimal("0.003"), Decimal(50000)
    )
    await store.journal_order(
        journal_entry(
            other,
            position_id="wf-x/run-1",
            workflow_id="wf-x",
            account=ACCOUNT,
            exchange="binanceusdm",
        )
    )
    result: EntryWithStopResult = await run(acts.place_entry_with_stop, req)
    assert result.entry.filled_qty == QTY
    assert result.stop is None and result.stop_error == ErrorType.CLIENT_ID_REUSED.value
    assert result.stop_conflict is not None
    assert result.stop_conflict.position_id == "wf-x/run-1"
    assert result.stop_conflict.quantity == Decimal("0.003")


async def test_local_activity_does_not_heartbeat(
    acts: ExchangeActivities, gateway: ExchangeGateway
) -> None:
    beats: list[Any] = []
    e = env(beats=beats)
    e.info = dataclasses.replace(e.info, is_local=True)
    result: EntryWithStopResult = await e.run(
        acts.place_entry_with_stop, entry_request(await filters(gateway))
    )
    assert result.stop is not None and beats == []
