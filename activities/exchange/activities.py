"""Temporal activities over the exchange gateway.

Exchange errors leave as `ApplicationError`s whose `type` is the domain's
`ErrorType` value: transient ones are retried by Temporal with backoff,
permanent ones are non-retryable and handled by the workflow by name. Every
placement after the first attempt looks its client id up before sending, so a
retry never places a second order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.exchange.gateway import ExchangeGateway
from domain.errors import ErrorType, classify_exception
from domain.events import Event, EventType, RateLimitHit, make_event
from domain.market import MarketFilters
from domain.orders import Fill, OrderView, stop_intent
from domain.requests import (
    CandlesRequest,
    EntryWithStopRequest,
    EntryWithStopResult,
    ExchangePosition,
    OrderRequest,
    PlaceOrderRequest,
    SymbolRequest,
)
from domain.sizing import InvalidStop, stop_level
from domain.types import OrderSide, Side
from domain.volatility import Candle


class EventSink(Protocol):
    """Where rate-limit events go (the worker's `Store`)."""

    def append_event(self, event: Event) -> Awaitable[bool]: ...


def to_application_error(exc: BaseException, *, placement: bool = False) -> ApplicationError:
    """The `ApplicationError` Temporal should see for an exchange exception."""
    kind = classify_exception(exc, placement=placement)
    return ApplicationError(
        f"{type(exc).__name__}: {exc}"[:2000],
        {"code": kind.code, "ambiguous": kind.ambiguous},
        type=kind.type.value,
        non_retryable=not kind.retryable,
    )


class ExchangeActivities:
    """Exchange activities for the accounts this worker holds keys for."""

    def __init__(
        self, gateways: Mapping[str, ExchangeGateway], events: EventSink | None = None
    ) -> None:
        self._gateways = dict(gateways)
        self._events = events

    async def _failed(self, exc: BaseException, *, placement: bool = False) -> ApplicationError:
        """The error to raise for `exc`; a rate limit is also recorded as an event."""
        error = to_application_error(exc, placement=placement)
        if error.type == ErrorType.RATE_LIMITED.value and self._events is not None:
            info = activity.info()
            event = make_event(
                EventType.RATE_LIMIT_HIT,
                RateLimitHit(exchange=info.activity_type, endpoint=None, retry_after_ms=None),
                event_id=f"rate-limit/{info.workflow_id}/{info.activity_id}/{info.attempt}",
                occurred_at=datetime.now(UTC),
                correlation_id=info.workflow_id,
                error_message=str(exc)[:500],
            )
            with contextlib.suppress(Exception):  # recording must not hide the real error
                await self._events.append_event(event)
        return error

    def _gateway(self, account: str) -> ExchangeGateway:
        try:
            return self._gateways[account]
        except KeyError:
            raise ApplicationError(
                f"this worker has no account {account!r}", type="UnknownAccount", non_retryable=True
            ) from None

    @activity.defn(name="exchange.place_order")
    async def place_order(self, req: PlaceOrderRequest) -> OrderView:
        """Place one order idempotently (look-up by client id on every retry)."""
        gateway = self._gateway(req.account)
        look_up = req.look_up_first or activity.info().attempt > 1
        try:
            return await gateway.place(req.intent, look_up_first=look_up)
        except Exception as exc:
            raise await self._failed(exc, placement=True) from exc

    @activity.defn(name="exchange.place_entry_with_stop")
    async def place_entry_with_stop(self, req: EntryWithStopRequest) -> EntryWithStopResult:
        """Entry, then at once its stop for the filled quantity (no round trip between).

        Idempotent like `place_order`: every retry looks both client ids up first.
        A failure of the stop is returned, not raised, so the workflow's stop-loss
        saga continues from it; only a failure of the entry fails the activity.
        """
        gateway = self._gateway(req.account)
        retry = req.look_up_first or activity.info().attempt > 1
        try:
            entry = await gateway.place(req.entry, look_up_first=retry)
        except Exception as exc:
            raise await self._failed(exc, placement=True) from exc
        if entry.filled_qty <= 0 or entry.average_price is None:
            return EntryWithStopResult(entry=entry)
        side = Side.LONG if req.entry.side is OrderSide.BUY else Side.SHORT
        try:
            price = stop_level(side, entry.average_price, req.stop, req.filters)
        except InvalidStop:
            return EntryWithStopResult(entry=entry, stop_error=ErrorType.INVALID_ORDER.value)
        intent = stop_intent(
            req.stop_client_order_id, req.entry.symbol, side, entry.filled_qty, price
        )
        try:
            stop = await gateway.place(intent, look_up_first=retry)
        except Exception as exc:
            kind = classify_exception(exc, placement=True)
            return EntryWithStopResult(
                entry=entry,
                stop_price=price,
                stop_error=kind.type.value,
                stop_ambiguous=kind.ambiguous,
            )
        return EntryWithStopResult(entry=entry, stop=stop, stop_price=price)

    @activity.defn(name="exchange.find_order")
    async def find_order(self, req: OrderRequest) -> OrderView | None:
        """The order with this client id, open or done; None if the exchange has none."""
        try:
            return await self._gateway(req.account).find(
                req.symbol, req.client_order_id, req.conditional
            )
        except Exception as exc:
            raise await self._failed(exc) from exc

    @activity.defn(name="exchange.cancel_order")
    async def cancel_order(self, req: OrderRequest) -> OrderView | None:
        """Cancel one order (a missing one counts as done); returns its final view."""
        try:
            return await self._gateway(req.account).cancel(
                req.symbol,
                client_order_id=req.client_order_id,
                exchange_order_id=req.exchange_order_id,
                conditional=req.conditional,
            )
        except Exception as exc:
            raise await self._failed(exc) from exc

    @activity.defn(name="exchange.position")
    async def position(self, req: SymbolRequest) -> ExchangePosition:
        """The account's position in one symbol (qty 0 when flat)."""
        try:
            return await self._gateway(req.account).position(req.symbol)
        except Exception as exc:
            raise await self._failed(exc) from exc

    @activity.defn(name="exchange.open_stops")
    async def open_stops(self, req: SymbolRequest) -> list[OrderView]:
        """Open conditional (stop / take-profit) orders of one symbol."""
        try:
            return await self._gateway(req.account).open_orders(req.symbol, conditional=True)
        except Exception as exc:
            raise await self._failed(exc) from exc

    @activity.defn(name="exchange.mark_price")
    async def mark_price(self, req: SymbolRequest) -> Decimal:
        """Current mark price of one symbol."""
        try:
            return await self._gateway(req.account).mark_price(req.symbol)
        except Exception as exc:
            raise await self._failed(exc) from exc

    @activity.defn(name="exchange.candles")
    async def candles(self, req: CandlesRequest) -> list[Candle]:
        """The last `limit` candles of one symbol, oldest first (for the ATR)."""
        try:
            return await self._gateway(req.account).candles(req.symbol, req.timeframe, req.limit)
        except Exception as exc:
            raise await self._failed(exc) from exc

    @activity.defn(name="exchange.filters")
    async def filters(self, req: SymbolRequest) -> MarketFilters:
        """Trading filters (tick, step, minimums) of one symbol."""
        try:
            return await self._gateway(req.account).filters(req.symbol)
        except KeyError:
            raise ApplicationError(
                f"{req.symbol} is not listed", type="BadSymbol", non_retryable=True
            ) from None
        except Exception as exc:
            raise await self._failed(exc) from exc

    @activity.defn(name="exchange.fills")
    async def fills(self, req: OrderRequest) -> list[Fill]:
        """Executions of one of our orders (for a triggered stop: of the order it became)."""
        try:
            return await self._gateway(req.account).order_fills(
                req.symbol, req.client_order_id, req.conditional
            )
        except Exception as exc:
            raise await self._failed(exc) from exc

    def all(self) -> list[object]:
        """Every activity method, for registration on a worker."""
        return [
            self.place_order,
            self.place_entry_with_stop,
            self.find_order,
            self.cancel_order,
            self.position,
            self.open_stops,
            self.mark_price,
            self.candles,
            self.filters,
            self.fills,
        ]
