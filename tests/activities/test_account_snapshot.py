"""`exchange.account_snapshot`: one account read whole, against the real paper exchange.

Through real ccxt and HTTP, in Temporal's `ActivityEnvironment`; every snapshot is
compared with the simulator's own state. Bybit (no simulator yet) is covered by a
stand-in for ccxt that records the calls: paging, settle coin, canonical symbols.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest_asyncio
from temporalio.testing import ActivityEnvironment

from activities.exchange.activities import ExchangeActivities
from activities.exchange.gateway import SNAPSHOT_WEIGHT, ExchangeGateway
from domain.orders import OrderStatus, OrderView, entry_intent, stop_intent
from domain.requests import AccountRequest, AccountSnapshot, PlaceOrderRequest
from domain.types import Side
from simulator.server import PaperExchange

ACCOUNT = "paper"
PRICES = {
    "BTCUSDT": "60000",
    "ETHUSDT": "3000",
    "SOLUSDT": "200",
    "BNBUSDT": "600",
    "XRPUSDT": "2.5",
}


def cid(tag: str = "t") -> str:
    return f"{tag}{uuid.uuid4().hex[:20]}"


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[PaperExchange]:
    async with PaperExchange(mark_interval_ms=100, admin_port=None) as exchange:
        for symbol, price in PRICES.items():
            exchange.set_price(symbol, price)
        yield exchange


@pytest_asyncio.fixture
async def acts(gateway: ExchangeGateway) -> ExchangeActivities:
    return ExchangeActivities({ACCOUNT: gateway})


async def snapshot(acts: ExchangeActivities) -> AccountSnapshot:
    result: AccountSnapshot = await ActivityEnvironment().run(
        acts.account_snapshot, AccountRequest(account=ACCOUNT)
    )
    return result


async def place(acts: ExchangeActivities, req: PlaceOrderRequest) -> OrderView:
    view: OrderView = await ActivityEnvironment().run(acts.place_order, req)
    return view


def truth_positions(sim: PaperExchange) -> dict[str, Decimal]:
    """Signed quantity of every non-flat position, by symbol."""
    return {
        p["symbol"]: Decimal(p["positionAmt"])
        for p in sim.ground_truth()["positions"]
        if Decimal(p["positionAmt"]) != 0
    }


Row = tuple[str, bool, str, str | None, bool, bool]


def truth_orders(sim: PaperExchange) -> set[Row]:
    """(symbol, conditional, exchange id, client id, reduce-only, close-position) of
    every open order; a close-position order counts as reduce-only."""
    truth = sim.ground_truth()
    rows: set[Row] = set()
    for o in truth["orders"]:
        if o["status"] in ("NEW", "PARTIALLY_FILLED"):
            rows.add(
                (
                    o["symbol"],
                    False,
                    str(o["orderId"]),
                    o["clientOrderId"],
                    bool(o["reduceOnly"] or o["closePosition"]),
                    bool(o["closePosition"]),
                )
            )
    for a in truth["algoOrders"]:
        if a["algoStatus"] == "NEW":
            rows.add(
                (
                    a["symbol"],
                    True,
                    str(a["algoId"]),
                    a["clientAlgoId"],
                    bool(a["reduceOnly"] or a["closePosition"]),
                    bool(a["closePosition"]),
                )
            )
    return rows


def rows(views: list[OrderView]) -> list[Row]:
    return [
        (
            v.symbol,
            v.is_conditional,
            v.exchange_order_id,
            v.client_order_id,
            bool(v.reduce_only),
            v.close_position,
        )
        for v in views
    ]


async def close_position_stop(
    gateway: ExchangeGateway, unified: str, side: str, trigger: str
) -> str:
    client_id = cid("cp")
    await gateway.exchange.create_order(
        unified,
        "market",
        side,
        None,
        None,
        {
            "triggerPrice": trigger,
            "closePosition": True,
            "workingType": "MARK_PRICE",
            "clientOrderId": client_id,
        },
    )
    return client_id


async def limit_order(
    gateway: ExchangeGateway, unified: str, side: str, qty: str, price: str
) -> str:
    client_id = cid("lim")
    await gateway.exchange.create_order(
        unified, "limit", side, qty, price, {"clientOrderId": client_id}
    )
    return client_id


# --- the paper exchange, through ccxt ----------------------------------------------------


async def test_snapshot_of_an_empty_account_is_empty(acts: ExchangeActivities) -> None:
    assert await snapshot(acts) == AccountSnapshot(positions=[], orders=[])


async def test_snapshot_is_the_ground_truth(
    acts: ExchangeActivities, gateway: ExchangeGateway, sim: PaperExchange
) -> None:
    # a long opened by posguard, a short opened by hand, one closed again (flat)
    await place(
        acts,
        PlaceOrderRequest(
            account=ACCOUNT, intent=entry_intent(cid("e"), "BTCUSDT", Side.LONG, Decimal("0.010"))
        ),
    )
    sim.open_position("ETHUSDT", "sell", "0.500")
    sim.open_position("SOLUSDT", "buy", "3")
    sim.close_position("SOLUSDT")

    stop = stop_intent(cid("sl"), "BTCUSDT", Side.LONG, Decimal("0.010"), Decimal(58000))
    placed_stop = await place(acts, PlaceOrderRequest(account=ACCOUNT, intent=stop))
    btc_limit = await limit_order(gateway, "BTC/USDT:USDT", "buy", "0.002", "50000")
    eth_close = await close_position_stop(gateway, "ETH/USDT:USDT", "buy", "3300")
    # orders on symbols without a position: a limit, and a close-position stop
    bnb_limit = await limit_order(gateway, "BNB/USDT:USDT", "buy", "0.10", "500")
    sol_close = await close_position_stop(gateway, "SOL/USDT:USDT", "sell", "150")

    snap = await snapshot(acts)

    # positions: exactly the exchange's, the flat one absent
    assert {p.symbol: (p.qty if p.side is Side.LONG else -p.qty) for p in snap.positions} == (
        truth_positions(sim)
    )
    assert truth_positions(sim) == {"BTCUSDT": Decimal("0.010"), "ETHUSDT": Decimal("-0.500")}
    assert len(snap.positions) == 2
    by_symbol = {p.symbol: p for p in snap.positions}
    truth = {p["symbol"]: p for p in sim.ground_truth()["positions"]}
    for symbol, position in by_symbol.items():
        assert position.entry_price == Decimal(truth[symbol]["entryPrice"])
        assert position.mark_price is not None and position.mark_price > 0

    # orders: exactly the open ones, each once, every field the reconciler reads
    listed = rows(snap.orders)
    assert len(listed) == len(set(listed)) == 5
    assert set(listed) == truth_orders(sim)
    by_client = {v.client_order_id: v for v in snap.orders}
    assert set(by_client) == {stop.client_order_id, btc_limit, eth_close, bnb_limit, sol_close}
    assert all(v.status is OrderStatus.OPEN for v in snap.orders)

    sl = by_client[stop.client_order_id]
    assert (sl.symbol, sl.is_conditional, sl.reduce_only, sl.close_position) == (
        "BTCUSDT",
        True,
        True,
        False,
    )
    assert sl.exchange_order_id == placed_stop.exchange_order_id
    assert (sl.qty, sl.trigger_price) == (Decimal("0.010"), Decimal(58000))
    for close_id, symbol, trigger in ((eth_close, "ETHUSDT", 3300), (sol_close, "SOLUSDT", 150)):
        view = by_client[close_id]
        assert (view.symbol, view.is_conditional, view.reduce_only, view.close_position) == (
            symbol,
            True,
            True,
            True,
        )
        assert view.trigger_price == trigger
    for limit_id, symbol in ((btc_limit, "BTCUSDT"), (bnb_limit, "BNBUSDT")):
        view = by_client[limit_id]
        assert (view.symbol, view.is_conditional, view.reduce_only, view.close_position) == (
            symbol,
            False,
            False,
            False,
        )
        assert view.trigger_price is None

    # what is gone is gone: a cancelled order, a closed position
    sim.cancel_order(int(by_client[bnb_limit].exchange_order_id))
    sim.close_position("ETHUSDT")
    later = await snapshot(acts)
    assert [p.symbol for p in later.positions] == ["BTCUSDT"]
    assert set(rows(later.orders)) == truth_orders(sim)
    assert bnb_limit not in {v.client_order_id for v in later.orders}


async def test_snapshot_costs_binances_weight(
    acts: ExchangeActivities, gateway: ExchangeGateway, sim: PaperExchange
) -> None:
    sim.open_position("BTCUSDT", "buy", "0.010")
    await limit_order(gateway, "ETH/USDT:USDT", "buy", "0.010", "2500")
    await snapshot(acts)  # ccxt's one-off reads (markets, leverage brackets) happen here

    charged: list[int] = []
    charge = sim.limiter.charge

    def recording(ip: str, weight: int) -> int:
        charged.append(weight)
        return charge(ip, weight)

    sim.limiter.charge = recording  # type: ignore[method-assign]
    snap = await snapshot(acts)
    assert len(snap.positions) == 1 and len(snap.orders) == 1
    # positionRisk 5, openOrders 40 and openAlgoOrders 40 without a symbol
    assert sorted(charged) == [5, 40, 40]
    assert sum(charged) == SNAPSHOT_WEIGHT == 85
    # what ccxt sees: Binance's used-weight header on every response
    headers = {k.lower(): v for k, v in dict(gateway.exchange.last_response_headers).items()}
    assert int(headers["x-mbx-used-weight-1m"]) >= 40


# --- request shapes, with a stand-in for ccxt ----------------------------------------------


def _bybit_order(n: int, symbol: str, cursor: str | None = None, **info: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "orderId": f"o{n}",
        "orderLinkId": f"c{n}",
        "qty": "0.01",
        "cumExecQty": "0",
        "reduceOnly": False,
        "closeOnTrigger": False,
        "triggerPrice": "0",
        **info,
    }
    if cursor is not None:
        raw["nextPageCursor"] = cursor
    trigger = float(raw["triggerPrice"]) or None
    return {
        "id": f"o{n}",
        "clientOrderId": f"c{n}",
        "symbol": symbol,
        "side": "sell",
        "status": "open",
        "reduceOnly": raw["reduceOnly"],
        "triggerPrice": trigger,
        "info": raw,
    }


class FakeBybit:
    """Bybit as ccxt shows it: open orders in pages of 50, cursor in the first order."""

    id = "bybit"

    def __init__(self, orders: list[dict[str, Any]]) -> None:
        self.orders = orders
        self.calls: list[tuple[str | None, int | None, dict[str, Any]]] = []
        self.options: dict[str, Any] = {}

    async def fetch_positions(self, symbols: list[str] | None = None) -> list[dict[str, Any]]:
        return [
            {
                "symbol": "ETH/USDT:USDT",
                "side": "short",
                "contracts": 2.0,
                "info": {"size": "2", "avgPrice": "3000", "markPrice": "2990"},
            }
        ]

    async def fetch_open_orders(
        self, symbol: str | None, since: Any, limit: int | None, params: dict[str, Any]
    ) -> list[dict[str, Any]]:
        self.calls.append((symbol, limit, dict(params)))
        start = int(params.get("cursor", "0"))
        assert limit is not None
        page = [dict(o, info=dict(o["info"])) for o in self.orders[start : start + limit]]
        if start + limit < len(self.orders) and page:
            page[0]["info"]["nextPageCursor"] = str(start + limit)
        return page


async def test_bybit_account_orders_every_page_with_settle_coin() -> None:
    orders = [
        _bybit_order(n, "BTC/USDT:USDT" if n % 2 else "SOL/USDT:USDT", reduceOnly=True)
        for n in range(120)
    ]
    orders[7] = _bybit_order(7, "ETH/USDT:USDT", triggerPrice="3100", reduceOnly=True)
    orders[8] = _bybit_order(8, "ETH/USDT:USDT", closeOnTrigger=True)
    orders.append(orders[0])  # listed twice (it moved between pages): kept once
    fake = FakeBybit(orders)
    gw = ExchangeGateway(fake, account=ACCOUNT)
    snap = await gw.account_snapshot()
    assert [(p.symbol, p.side, p.qty) for p in snap.positions] == [
        ("ETHUSDT", Side.SHORT, Decimal(2))
    ]
    assert [c[0] for c in fake.calls] == [None, None, None]
    assert [c[2] for c in fake.calls] == [
        {"settleCoin": "USDT"},
        {"settleCoin": "USDT", "cursor": "50"},
        {"settleCoin": "USDT", "cursor": "100"},
    ]
    assert len(snap.orders) == 120
    assert {v.symbol for v in snap.orders} == {"BTCUSDT", "SOLUSDT", "ETHUSDT"}
    by_id = {v.exchange_order_id: v for v in snap.orders}
    assert by_id["o7"].is_conditional and by_id["o7"].trigger_price == 3100
    assert not by_id["o1"].is_conditional and by_id["o1"].trigger_price is None
    assert by_id["o8"].reduce_only is True  # closeOnTrigger: reduce-only by nature
    assert not any(v.close_position for v in snap.orders)  # Bybit has no closePosition


class FakeBinance:
    """Binance as ccxt shows it: order ids unique within a symbol only."""

    id = "binanceusdm"

    def __init__(self) -> None:
        self.options: dict[str, Any] = {"fetchOpenOrders": {"warnWithoutSymbol": True}}
        self.calls: list[tuple[str | None, dict[str, Any]]] = []

    async def fetch_open_orders(
        self, symbol: str | None, since: Any, limit: Any, params: dict[str, Any]
    ) -> list[dict[str, Any]]:
        assert self.options["fetchOpenOrders"]["warnWithoutSymbol"] is False
        self.calls.append((symbol, dict(params)))
        if params.get("trigger"):
            info = {"algoId": 9, "clientAlgoId": "a9", "closePosition": "true"}
            return [{"id": "9", "symbol": "ETH/USDT:USDT", "status": "open", "info": info}]
        return [
            {"id": "1", "symbol": s, "status": "open", "reduceOnly": False, "info": {}}
            for s in ("BTC/USDT:USDT", "ETH/USDT:USDT")
        ]


async def test_binance_account_orders_both_lists_without_symbol() -> None:
    fake = FakeBinance()
    views = await ExchangeGateway(fake, account=ACCOUNT).account_orders()
    assert len(fake.calls) == 2
    assert (None, {}) in fake.calls and (None, {"trigger": True}) in fake.calls
    assert sorted((v.symbol, v.exchange_order_id, v.is_conditional) for v in views) == [
        ("BTCUSDT", "1", False),
        ("ETHUSDT", "1", False),  # same id, other symbol: another order
        ("ETHUSDT", "9", True),
    ]
    [algo] = [v for v in views if v.is_conditional]
    assert algo.close_position is True and algo.reduce_only is True  # the string "true"
