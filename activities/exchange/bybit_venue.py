"""Bybit v5 linear perpetuals (`ccxt.bybit`): what differs from other venues.

Every kind of order is in one list (`/v5/order/realtime`, paged by cursor, 50 a
page at most); a conditional order keeps its id when it triggers, so its trades
are its own. ccxt cannot fetch an order by `orderLinkId` (notes/ccxt.md §0.4): it
is found in the open list, then in the history. Filters come from ccxt's parsed
precision and limits.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from activities.exchange.raw import first, to_decimal
from domain.market import MarketFilters
from domain.orders import OrderIntent, WorkingType
from domain.symbols import canonical_from_unified
from domain.types import Side

PAGE = 50
TRIGGER_BY = {WorkingType.MARK_PRICE: "MarkPrice", WorkingType.CONTRACT_PRICE: "LastPrice"}
"""posguard's working type -> Bybit's `triggerBy` / `slTriggerBy`."""
POSITION_IDX = {None: 0, Side.LONG: 1, Side.SHORT: 2}
"""A position's hedge side (None: one-way) -> Bybit's `positionIdx`."""
# Bybit's answers to an amend that changes nothing.
UNCHANGED = ("remains unchanged", "not modified")
MAX_PAGES = 100

INTERVALS = {
    "1m": "1",
    "3m": "3",
    "5m": "5",
    "15m": "15",
    "30m": "30",
    "1h": "60",
    "2h": "120",
    "4h": "240",
    "6h": "360",
    "12h": "720",
    "1d": "D",
}
"""ccxt timeframes → Bybit v5 kline intervals (minutes, or D)."""


def unified_id(exchange: Any, unified: str) -> str:
    """The venue's own symbol ("BTCUSDT") of a ccxt unified one ("BTC/USDT:USDT")."""
    return str(exchange.market(unified)["id"])


async def _open_or_done(
    exchange: Any, unified: str, params: dict[str, Any]
) -> Mapping[str, Any] | None:
    """The one order `params` name: from the open list, else from the history."""
    orders = await exchange.fetch_open_orders(unified, None, None, params)
    if not orders:
        orders = await exchange.fetch_canceled_and_closed_orders(unified, None, None, params)
    return orders[0] if orders else None


class BybitVenue:
    """`Venue` for Bybit v5 linear (USDT) perpetuals."""

    def market_filters(self, market: Mapping[str, Any]) -> MarketFilters:
        """Filters from ccxt's parsed precision and limits (exact via their repr)."""
        step = to_decimal(market["precision"]["amount"]) or Decimal(0)
        return MarketFilters(
            symbol=canonical_from_unified(market["symbol"]),
            tick_size=to_decimal(market["precision"]["price"]) or Decimal(0),
            step_size=step,
            min_qty=to_decimal(market["limits"]["amount"]["min"]) or step,
            max_qty=to_decimal(market["limits"]["amount"].get("max")),
            min_notional=to_decimal(market["limits"].get("cost", {}).get("min")) or Decimal(0),
            stop_moves_in_place=True,
            entry_carries_stop=True,
        )

    def order_params(self, intent: OrderIntent) -> dict[str, Any]:
        """`triggerBy` for a conditional order (ccxt would force LastPrice otherwise)."""
        if not intent.is_conditional:
            return {}
        return {"triggerBy": TRIGGER_BY[intent.working_type]}

    async def amend_stop(
        self,
        exchange: Any,
        unified: str,
        client_order_id: str,
        exchange_order_id: str | None,
        trigger_price: Decimal,
        *,
        position_stop: bool = False,
        hedge_side: Side | None = None,
    ) -> None:
        """`POST /v5/order/amend` with the new `triggerPrice`: the same conditional
        order, moved in one request, so the position never has two stops. The
        position's own stop-loss is moved where Bybit documents it, through
        `POST /v5/position/trading-stop` (tpslMode Full).

        ccxt's `edit_order` would send a quantity too; the raw endpoints send only
        what moves. "The order remains unchanged" / "not modified" (the price is
        already set: a retry whose first answer was lost) is success.
        """
        symbol = unified_id(exchange, unified)
        try:
            if position_stop:
                await exchange.privatePostV5PositionTradingStop(
                    {
                        "category": "linear",
                        "symbol": symbol,
                        "tpslMode": "Full",
                        "positionIdx": POSITION_IDX[hedge_side],
                        "stopLoss": str(trigger_price),
                        "slTriggerBy": TRIGGER_BY[WorkingType.MARK_PRICE],
                    }
                )
                return
            request: dict[str, Any] = {
                "category": "linear",
                "symbol": symbol,
                "triggerPrice": str(trigger_price),
            }
            if exchange_order_id:
                request["orderId"] = exchange_order_id
            else:
                request["orderLinkId"] = client_order_id
            await exchange.privatePostV5OrderAmend(request)
        except Exception as exc:
            if not any(text in str(exc) for text in UNCHANGED):
                raise

    async def clear_position_stop(
        self, exchange: Any, unified: str, *, hedge_side: Side | None = None
    ) -> None:
        """`POST /v5/position/trading-stop` with `stopLoss` "0": Bybit's way to remove a
        position's stop-loss (tpslMode Full). Already gone counts as done."""
        try:
            await exchange.privatePostV5PositionTradingStop(
                {
                    "category": "linear",
                    "symbol": unified_id(exchange, unified),
                    "tpslMode": "Full",
                    "positionIdx": POSITION_IDX[hedge_side],
                    "stopLoss": "0",
                }
            )
        except Exception as exc:
            if not any(text in str(exc) for text in UNCHANGED):
                raise

    def position_mode_scope(self, unified: str) -> str:
        """Bybit sets the mode per symbol (or per coin): each symbol is read."""
        return unified

    async def hedge_mode(self, exchange: Any, unified: str) -> bool | None:
        """From the symbol's position list: Bybit lists a hedge-mode symbol as two rows,
        `positionIdx` 1 and 2 (flat ones too), a one-way symbol as one row, 0."""
        res = await exchange.privateGetV5PositionList(
            {"category": "linear", "symbol": unified_id(exchange, unified)}
        )
        rows = (res.get("result") or {}).get("list") or []
        indices = {str(row.get("positionIdx")) for row in rows}
        if indices & {"1", "2"}:
            return True
        return False if "0" in indices else None

    def attached_stop_params(self, stop: OrderIntent) -> dict[str, Any]:
        """The entry's `stopLoss` for the whole position (tpslMode Full): Bybit makes
        it live before the entry executes and cancels it when the position closes."""
        assert stop.trigger_price is not None
        return {
            "stopLoss": {"triggerPrice": str(stop.trigger_price)},  # ccxt: request stopLoss
            "slTriggerBy": TRIGGER_BY[stop.working_type],
            "tpslMode": "Full",
        }

    async def done_orders(
        self, exchange: Any, unified: str, since_ms: int
    ) -> list[Mapping[str, Any]]:
        """`/v5/order/history` since `since_ms`: one page of the newest (every kind)."""
        orders: list[Mapping[str, Any]] = await exchange.fetch_canceled_and_closed_orders(
            unified, since_ms, PAGE
        )
        return orders

    async def find_by_id(
        self, exchange: Any, unified: str, exchange_order_id: str, conditional: bool
    ) -> Mapping[str, Any] | None:
        """The open order with this `orderId`, else the closed or cancelled one."""
        return await _open_or_done(exchange, unified, {"orderId": exchange_order_id})

    def by_id_params(self, conditional: bool) -> dict[str, Any]:
        """Nothing: one id space for every kind of order."""
        return {}

    def by_client_id_params(self, client_order_id: str, conditional: bool) -> dict[str, Any]:
        """`orderLinkId`."""
        return {"orderLinkId": client_order_id}

    async def find(
        self, exchange: Any, unified: str, client_order_id: str, conditional: bool
    ) -> Mapping[str, Any] | None:
        """The open order with our `orderLinkId`, else the closed or cancelled one."""
        return await _open_or_done(
            exchange, unified, self.by_client_id_params(client_order_id, conditional)
        )

    def executed_order_id(self, order: Mapping[str, Any], conditional: bool) -> str | None:
        """A triggered conditional order keeps its id: its trades are its own."""
        value = order.get("id")
        return None if value in (None, "", "0", 0) else str(value)

    async def open_orders(
        self, exchange: Any, unified: str | None
    ) -> list[tuple[Mapping[str, Any], bool]]:
        """Every page of the one list (every kind), following `nextPageCursor`.

        ccxt puts the cursor into the `info` of the page's orders. Without a
        symbol, Bybit v5 needs a settle coin: USDT (linear perpetuals).
        """
        orders: list[Mapping[str, Any]] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            params: dict[str, Any] = {} if unified else {"settleCoin": "USDT"}
            if cursor:
                params["cursor"] = cursor
            page = await exchange.fetch_open_orders(unified, None, PAGE, params)
            orders.extend(page)
            cursor = next(
                (
                    str(o["info"]["nextPageCursor"])
                    for o in page
                    if (o.get("info") or {}).get("nextPageCursor")
                ),
                None,
            )
            if len(page) < PAGE or cursor is None:
                return [(o, False) for o in orders]
        where = unified or "the account"
        raise RuntimeError(f"more than {MAX_PAGES * PAGE} open orders in {where}")

    async def mark_price(self, exchange: Any, unified: str) -> Decimal | None:
        """From the ticker (`/v5/market/tickers`), which carries the mark price."""
        ticker = await exchange.fetch_ticker(unified)
        return to_decimal((ticker.get("info") or {}).get("markPrice")) or to_decimal(
            ticker.get("markPrice")
        )

    # ccxt asks for execType Trade; liquidations (BustTrade) and auto-deleveraging
    # (AdlTrade) are executions of their own type, one type per call
    trade_history_params: tuple[dict[str, Any], ...] = (
        {"execType": "Trade"},
        {"execType": "BustTrade"},
        {"execType": "AdlTrade"},
    )
    funding_page = 100  # /v5/execution/list's most
    funding_rate_page = 200  # /v5/market/funding/history's most

    def funding_amount(self, income: Mapping[str, Any]) -> Decimal:
        """`/v5/execution/list` execType Funding: `execFee` is what the account paid
        (Bybit's transaction-log page: its `funding`, positive when received, "is
        opposite to the execFee from Get Trade History")."""
        return -(to_decimal(first(income, "execFee")) or Decimal(0))

    async def trade_origin(
        self, exchange: Any, unified: str, trade: Mapping[str, Any]
    ) -> tuple[str | None, bool]:
        """An execution of `/v5/execution/list` carries its `orderLinkId` and its
        `execType`: `BustTrade` is the exchange's liquidation (takeover)."""
        info = trade.get("info") or {}
        cid = first(info, "orderLinkId")
        liquidation = str(first(info, "execType") or "") == "BustTrade"
        return (None if cid in (None, "") else str(cid)), liquidation

    async def klines(
        self, exchange: Any, symbol: str, timeframe: str, limit: int
    ) -> list[list[Any]]:
        """`/v5/market/kline`: newest first on the wire, turned oldest first."""
        data = await exchange.publicGetV5MarketKline(
            {
                "category": "linear",
                "symbol": symbol,
                "interval": INTERVALS[timeframe],
                "limit": limit,
            }
        )
        return list(reversed((data.get("result") or {}).get("list") or []))
