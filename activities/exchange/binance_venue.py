"""Binance USD-M futures (`ccxt.binanceusdm`): what differs from other venues.

Conditional orders are algo orders (`/fapi/v1/algoOrder`): ccxt needs
`trigger: True` to fetch, cancel or list them, and they live in a list of their
own. A triggered algo order executes as a new matching-engine order
(`actualOrderId`). Filters are exact strings from exchangeInfo.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from activities.exchange.raw import first, to_decimal
from domain.market import MarketFilters
from domain.orders import OrderIntent
from domain.symbols import canonical_from_unified
from domain.types import Side


class BinanceVenue:
    """`Venue` for Binance USD-M."""

    def market_filters(self, market: Mapping[str, Any]) -> MarketFilters:
        """Filters from exchangeInfo's exact strings (`info.filters`)."""
        raw = {f.get("filterType"): f for f in (market.get("info") or {}).get("filters", [])}
        lot = raw.get("MARKET_LOT_SIZE") or raw["LOT_SIZE"]
        return MarketFilters(
            symbol=canonical_from_unified(market["symbol"]),
            tick_size=Decimal(raw["PRICE_FILTER"]["tickSize"]),
            step_size=Decimal(raw["LOT_SIZE"]["stepSize"]),
            min_qty=Decimal(raw["LOT_SIZE"]["minQty"]),
            max_qty=to_decimal(lot.get("maxQty")),
            min_notional=to_decimal((raw.get("MIN_NOTIONAL") or {}).get("notional")) or Decimal(0),
        )

    def order_params(self, intent: OrderIntent) -> dict[str, Any]:
        """`workingType` for a conditional order; a market order answers with its fill."""
        if intent.is_conditional:
            return {"workingType": intent.working_type.value}
        return {"newOrderRespType": "RESULT"}

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
        """Binance cannot amend an algo order: its stops move new-first instead."""
        raise NotImplementedError("Binance stops are moved by a new stop, then a cancel")

    async def clear_position_stop(
        self, exchange: Any, unified: str, *, hedge_side: Side | None = None
    ) -> None:
        """Binance positions carry no stop of their own."""
        raise NotImplementedError("Binance positions carry no stop")

    def position_mode_scope(self, unified: str) -> str:
        """One mode for the whole USD-M account (and the read costs weight 30)."""
        return "*"

    async def hedge_mode(self, exchange: Any, unified: str) -> bool | None:
        """`GET /fapi/v1/positionSide/dual`: one mode for every USD-M symbol."""
        mode = await exchange.fetch_position_mode(unified)
        hedged = mode.get("hedged")
        return hedged if isinstance(hedged, bool) else None

    def attached_stop_params(self, stop: OrderIntent) -> dict[str, Any]:
        """Binance sends no stop with an entry: the stop follows the fill."""
        raise NotImplementedError("Binance entries carry no stop")

    async def done_orders(
        self, exchange: Any, unified: str, since_ms: int
    ) -> list[Mapping[str, Any]]:
        """Not needed: Binance entries carry no stop."""
        raise NotImplementedError("Binance entries carry no stop")

    async def find_by_id(
        self, exchange: Any, unified: str, exchange_order_id: str, conditional: bool
    ) -> Mapping[str, Any] | None:
        """`GET /fapi/v1/order` (or the algo order) by id; OrderNotFound if none."""
        order: Mapping[str, Any] = await exchange.fetch_order(
            exchange_order_id, unified, self.by_id_params(conditional)
        )
        return order

    def by_id_params(self, conditional: bool) -> dict[str, Any]:
        """Algo orders are reached with `trigger: True`."""
        return {"trigger": True} if conditional else {}

    def by_client_id_params(self, client_order_id: str, conditional: bool) -> dict[str, Any]:
        """`clientOrderId` (ccxt sends `origClientOrderId`, or `clientAlgoId` for algo)."""
        return {"clientOrderId": client_order_id, **self.by_id_params(conditional)}

    async def find(
        self, exchange: Any, unified: str, client_order_id: str, conditional: bool
    ) -> Mapping[str, Any] | None:
        """`GET /fapi/v1/order` (or the algo order) by client id; OrderNotFound if none."""
        order: Mapping[str, Any] = await exchange.fetch_order(
            None, unified, self.by_client_id_params(client_order_id, conditional)
        )
        return order

    def executed_order_id(self, order: Mapping[str, Any], conditional: bool) -> str | None:
        """A triggered algo order's trades belong to its `actualOrderId`."""
        value = first(order.get("info") or {}, "actualOrderId") if conditional else order.get("id")
        return None if value in (None, "", "0", 0) else str(value)

    async def open_orders(
        self, exchange: Any, unified: str | None
    ) -> list[tuple[Mapping[str, Any], bool]]:
        """Both lists, read concurrently; neither pages (weight 40 each without a symbol)."""
        if unified is None:
            exchange.options.setdefault("fetchOpenOrders", {})["warnWithoutSymbol"] = False
        regular, conditional = await asyncio.gather(
            exchange.fetch_open_orders(unified, None, None, {}),
            exchange.fetch_open_orders(unified, None, None, {"trigger": True}),
        )
        return [(o, False) for o in regular] + [(o, True) for o in conditional]

    async def mark_price(self, exchange: Any, unified: str) -> Decimal | None:
        """`GET /fapi/v1/premiumIndex`."""
        data = await exchange.fetch_mark_price(unified)
        return to_decimal(first(data.get("info") or {}, "markPrice")) or to_decimal(
            data.get("markPrice")
        )

    trade_history_params: tuple[dict[str, Any], ...] = ({},)  # userTrades lists them all
    funding_page = 1000  # 3 settlements a day: most of a year
    funding_rate_page = 1000  # /fapi/v1/fundingRate's most

    def funding_amount(self, income: Mapping[str, Any]) -> Decimal:
        """`/fapi/v1/income` FUNDING_FEE: `income` is signed as the account sees it."""
        return to_decimal(first(income, "income")) or Decimal(0)

    async def trade_origin(
        self, exchange: Any, unified: str, trade: Mapping[str, Any]
    ) -> tuple[str | None, bool]:
        """A trade of `/fapi/v1/userTrades` names only its `orderId`: the order
        (`GET /fapi/v1/order`) tells its client id; Binance's liquidation order is
        type LIQUIDATION with client id `autoclose-...` (`adl_autoclose-...` is
        auto-deleveraging, not a liquidation of this position's margin)."""
        order = await exchange.fetch_order(str(trade["order"]), unified)
        info = order.get("info") or {}
        cid = first(info, "clientOrderId") or order.get("clientOrderId")
        kind = str(first(info, "type", "origType") or "").upper()
        liquidation = kind == "LIQUIDATION" or str(cid or "").startswith("autoclose-")
        return (None if cid in (None, "") else str(cid)), liquidation

    async def klines(
        self, exchange: Any, symbol: str, timeframe: str, limit: int
    ) -> list[list[Any]]:
        """`GET /fapi/v1/klines`: oldest first already."""
        rows: list[list[Any]] = await exchange.fapiPublicGetKlines(
            {"symbol": symbol, "interval": timeframe, "limit": limit}
        )
        return rows
