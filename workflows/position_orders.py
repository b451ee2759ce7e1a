"""Exchange calls of a position workflow: place, find, cancel, read."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal
from typing import Any, cast

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception
from temporalio.exceptions import TimeoutError as TemporalTimeoutError

with workflow.unsafe.imports_passed_through():
    from domain.client_ids import OrderStep, parse_client_id
    from domain.errors import NON_RETRYABLE_ERROR_TYPES, ErrorType
    from domain.events import (
        EventType,
        OrderCancelFailed,
        OrderCancelled,
        OrderPlaced,
    )
    from domain.orders import (
        Fill,
        OrderIntent,
        OrderRef,
        OrderStatus,
        OrderView,
        stop_intent,
        take_profit_intent,
    )
    from domain.requests import (
        ExchangePosition,
        OrderRequest,
        PlaceOrderRequest,
        SymbolRequest,
    )

from workflows.position_recording import Recording


class ExchangeCallFailed(Exception):
    """An exchange activity failed for good; `error` says how (domain ErrorType)."""

    def __init__(self, error: ErrorType, message: str) -> None:
        super().__init__(message)
        self.error = error


def _error_type(err: BaseException) -> ErrorType:
    cause = err.cause if isinstance(err, ActivityError) else err
    if isinstance(cause, ApplicationError) and cause.type:
        try:
            return ErrorType(cause.type)
        except ValueError:
            return ErrorType.EXCHANGE_ERROR
    if isinstance(cause, TemporalTimeoutError):
        return ErrorType.REQUEST_TIMEOUT
    return ErrorType.UNEXPECTED


class ExchangeCalls(Recording):
    """The position's orders and reads, each an activity on the account's queue."""

    # --- orders --------------------------------------------------------------------------------

    async def _cancel(self, intent: OrderIntent, ref: OrderRef) -> bool:
        """Cancel one of our orders; on failure it is kept and retried later, never forgotten."""
        self.cancelling = [*self.cancelling[-31:], ref.client_order_id]
        try:
            await self._call(
                "exchange.cancel_order",
                self._order_request(intent, ref.exchange_order_id),
                OrderView | None,
                summary=f"cancel {intent.kind.value} {intent.client_order_id}",
            )
        except ExchangeCallFailed as exc:
            self._emit(
                EventType.ORDER_CANCEL_FAILED,
                OrderCancelFailed(
                    client_order_id=ref.client_order_id,
                    exchange_order_id=ref.exchange_order_id,
                    error_type=exc.error.value,
                    message=str(exc),
                ),
            )
            if ref not in self.stale:
                self.stale.append(ref)
            return False
        self._emit(
            EventType.ORDER_CANCELLED,
            OrderCancelled(
                client_order_id=ref.client_order_id,
                exchange_order_id=ref.exchange_order_id,
                reason=self.s.state.value,
            ),
        )
        self._record_order(intent, None, status=OrderStatus.CANCELED)
        if ref in self.stale:
            self.stale.remove(ref)
        return True

    async def _cancel_stale(self) -> None:
        for ref in list(self.stale):
            await self._cancel(self._intent_of(ref), ref)

    async def _place(
        self, intent: OrderIntent, *, look_up_first: bool, local: bool = False
    ) -> tuple[OrderView | None, ErrorType | None]:
        self.placing.add(intent.client_order_id)
        try:
            view = await self._call(
                "exchange.place_order",
                PlaceOrderRequest(
                    account=self.spec.account, intent=intent, look_up_first=look_up_first
                ),
                OrderView,
                summary=f"{intent.kind.value} {intent.side.value} {intent.qty} {intent.symbol}"
                + (f" @ {intent.trigger_price}" if intent.trigger_price else ""),
                local=local,
            )
        except ExchangeCallFailed as exc:
            return None, exc.error
        finally:
            self.placing.discard(intent.client_order_id)
        return view, None

    async def _find(self, intent: OrderIntent, *, patient: bool) -> OrderView | None:
        return cast(
            "OrderView | None",
            await self._call(
                "exchange.find_order",
                self._order_request(intent),
                OrderView | None,
                summary=f"find {intent.client_order_id}",
                attempts=0 if patient else self.cfg.exchange_attempts,
            ),
        )

    async def _fills(self, intent: OrderIntent) -> list[Fill]:
        try:
            return cast(
                list[Fill],
                await self._call(
                    "exchange.fills",
                    self._order_request(intent),
                    list[Fill],
                    summary=f"fills {intent.client_order_id}",
                ),
            )
        except ExchangeCallFailed:
            return []

    def _order_request(
        self, intent: OrderIntent, exchange_order_id: str | None = None
    ) -> OrderRequest:
        return OrderRequest(
            account=self.spec.account,
            symbol=intent.symbol,
            client_order_id=intent.client_order_id,
            exchange_order_id=exchange_order_id,
            conditional=intent.is_conditional,
        )

    async def _position(self) -> ExchangePosition:
        return cast(
            ExchangePosition,
            await self._call(
                "exchange.position",
                SymbolRequest(account=self.spec.account, symbol=self.spec.symbol),
                ExchangePosition,
                summary=f"position {self.spec.symbol}",
                attempts=0,
            ),
        )

    async def _mark_price(self) -> Decimal:
        return cast(
            Decimal,
            await self._call(
                "exchange.mark_price",
                SymbolRequest(account=self.spec.account, symbol=self.spec.symbol),
                Decimal,
                summary=f"mark {self.spec.symbol}",
                attempts=0,
            ),
        )

    async def _call(
        self,
        name: str,
        arg: Any,
        result_type: Any,
        *,
        summary: str,
        attempts: int | None = None,
        local: bool = False,
    ) -> Any:
        """Run one exchange activity; ExchangeCallFailed when it gives up.

        `attempts=0` retries transient errors forever (reads whose answer we must have).
        `local` runs it as a local activity in this worker: no round trip through the
        server before the request leaves (used where latency protects money: stop
        moves). It skips the account queue's server-side rate limit; the process's
        ccxt limiter still applies.
        """
        n = self.cfg.exchange_attempts if attempts is None else attempts
        retry = RetryPolicy(
            initial_interval=timedelta(milliseconds=200),
            backoff_coefficient=2,
            maximum_interval=timedelta(seconds=10),
            maximum_attempts=n,
            non_retryable_error_types=list(NON_RETRYABLE_ERROR_TYPES),
        )
        self._flush()
        try:
            if local:
                return await workflow.execute_local_activity(
                    name,
                    arg,
                    result_type=result_type,
                    start_to_close_timeout=self.cfg.exchange_call_timeout,
                    retry_policy=retry,
                    summary=summary[:200],
                )
            return await workflow.execute_activity(
                name,
                arg,
                result_type=result_type,
                task_queue=self.cfg.exchange_task_queue,
                start_to_close_timeout=self.cfg.exchange_call_timeout,
                retry_policy=retry,
                summary=summary[:200],
            )
        except ActivityError as err:
            if is_cancelled_exception(err):
                # The workflow itself was cancelled while waiting: never let that
                # pass as an exchange failure (run() turns it into a close).
                raise asyncio.CancelledError() from err
            raise ExchangeCallFailed(_error_type(err), str(err.cause or err)) from err

    def _intent_of(self, ref: OrderRef) -> OrderIntent:
        """The intent behind one of our resting exit orders, from its client id."""
        assert ref.trigger_price is not None
        parsed = parse_client_id(ref.client_order_id)
        step = parsed.step if parsed is not None else OrderStep.STOP
        if step is OrderStep.TAKE_PROFIT:
            return take_profit_intent(
                ref.client_order_id, self.spec.symbol, self.spec.side, ref.qty, ref.trigger_price
            )
        return stop_intent(
            ref.client_order_id,
            self.spec.symbol,
            self.spec.side,
            ref.qty,
            ref.trigger_price,
            emergency=step is OrderStep.EMERGENCY_STOP,
        )

    def _resting(self, intent: OrderIntent, view: OrderView) -> tuple[OrderRef, OrderPlaced]:
        """What to remember and to record of a resting exit order the exchange accepted."""
        price = intent.trigger_price
        assert price is not None
        ref = OrderRef(
            client_order_id=intent.client_order_id,
            exchange_order_id=view.exchange_order_id,
            qty=intent.qty,
            trigger_price=price,
        )
        placed = OrderPlaced(
            client_order_id=intent.client_order_id,
            exchange_order_id=view.exchange_order_id,
            side=intent.side.value,
            quantity=intent.qty,
            trigger_price=price,
            reduce_only=True,
        )
        return ref, placed
