"""Exchange calls of a position workflow: place, find, cancel, read.

Every outcome of an exchange activity is a value here, never an exception that
could escape workflow code: placements return a `Placement` (view or error),
reads that the workflow must have are retried until they answer (with backoff
and alerts), and reads that may fail return None.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    FailureError,
    is_cancelled_exception,
)
from temporalio.exceptions import TimeoutError as TemporalTimeoutError
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from activities.exchange.activities import ExchangeActivities
    from domain.client_ids import OrderStep, belongs_to, parse_client_id
    from domain.errors import NON_RETRYABLE_ERROR_TYPES, ErrorType
    from domain.events import (
        CriticalError,
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
        OutsideExit,
        stop_intent,
        take_profit_intent,
    )
    from domain.requests import (
        ExchangePosition,
        FundingRequest,
        OrderRequest,
        OutsideExitRequest,
        PlaceOrderRequest,
        SymbolRequest,
    )
    from domain.types import Severity

from workflows.position_recording import Recording

OUTSIDE_EXIT_ROUNDS = 5
"""Calls of `exchange.outside_exit` before a close by hand or by liquidation is booked
without its executions: the position is already flat, so nothing is left unprotected
by ending; its PnL is then incomplete and an alert says so."""

# Patch id: a stale order that executed before its cancel reached it is booked as the
# exit it was (fills, fees, PnL, its row and a fill event), no longer dropped.
STALE_EXIT_BOOKED = "stale-exit-booked"
# Patch id: the same for every cancel of ours (a trailing move's old stop, an order of
# a lost workflow task, a last order at the close), and a stale order is booked as
# what its client id says it was (a close order as the close, an entry not as an exit).
CANCEL_FILL_BOOKED = "cancel-fill-booked"
_CONDITIONAL_STEPS = frozenset(
    {OrderStep.STOP, OrderStep.EMERGENCY_STOP, OrderStep.TAKE_PROFIT, OrderStep.MOVE}
)


class ExchangeCallFailed(Exception):
    """An exchange activity gave up; `error` says how (domain ErrorType).

    `details` are the activity error's details (e.g. the order journaled under a
    reused client id). Raised only inside this module's helpers and caught by
    their callers in workflow code: it never leaves a workflow method.
    """

    def __init__(self, error: ErrorType, message: str, details: tuple[Any, ...] = ()) -> None:
        super().__init__(message)
        self.error = error
        self.details = details


@dataclass(frozen=True)
class Placement:
    """What became of one placement: the order as placed (its client id may differ
    from the one asked for, see `_place`), and the exchange's view or the error."""

    intent: OrderIntent
    view: OrderView | None
    error: ErrorType | None


def _failure_of(err: FailureError) -> tuple[ErrorType, tuple[Any, ...]]:
    cause: BaseException | None = err.cause if isinstance(err, ActivityError) else err
    if isinstance(cause, ApplicationError) and cause.type:
        try:
            return ErrorType(cause.type), tuple(cause.details)
        except ValueError:
            return ErrorType.EXCHANGE_ERROR, tuple(cause.details)
    if isinstance(cause, TemporalTimeoutError):
        return ErrorType.REQUEST_TIMEOUT, ()
    return ErrorType.UNEXPECTED, ()


def executed(view: OrderView) -> bool:
    """Whether an order executed at all (a triggered algo stop may report no quantity)."""
    return view.status is OrderStatus.FILLED or view.filled_qty > 0


def is_conditional_cid(client_order_id: str) -> bool:
    """Whether one of our client ids names a conditional (stop / take-profit) order."""
    parsed = parse_client_id(client_order_id)
    return parsed is None or parsed.step in _CONDITIONAL_STEPS


class ExchangeCalls(Recording):
    """The position's orders and reads, each an activity on the account's queue."""

    # --- orders --------------------------------------------------------------------------------

    async def _cancel(self, ref: OrderRef) -> tuple[bool, OrderView | None]:
        """Cancel one of our orders; returns (done, the order's final view if known).

        On failure the order is kept as stale and cancelled again at the next look,
        never forgotten. A final view that shows a fill tells the caller to book it.
        """
        self.cancelling = [*self.cancelling[-31:], ref.client_order_id]
        try:
            view = cast(
                "OrderView | None",
                await self._call(
                    ExchangeActivities.cancel_order,
                    self._ref_request(ref),
                    summary=f"cancel {ref.client_order_id}",
                ),
            )
        except ExchangeCallFailed as exc:
            self._emit(
                EventType.ORDER_CANCEL_FAILED,
                OrderCancelFailed(
                    client_order_id=ref.client_order_id,
                    exchange_order_id=ref.exchange_order_id,
                    error_type=exc.error.value,
                    message=str(exc)[:500],
                ),
            )
            self.m = self.m.stale_added(ref)
            return False, None
        filled = view is not None and view.filled_qty > 0
        if not filled:
            self._emit(
                EventType.ORDER_CANCELLED,
                OrderCancelled(
                    client_order_id=ref.client_order_id,
                    exchange_order_id=ref.exchange_order_id,
                    reason=self.s.state.value,
                ),
            )
            intent = self._intent_of_ref(ref)
            if intent is not None:
                self._record_order(intent, view, status=OrderStatus.CANCELED)
        self.m = self.m.stale_done(ref.client_order_id)
        return True, view

    async def _cancel_stale(self) -> None:
        """Cancel the orders of ours that may exist after all (an ambiguous placement,
        a failed cancel). One that executed before its cancel reached it closed some
        of the position: it is booked as the exit it was (`_stale_executed`), never
        dropped with the stale entry (found by the chaos suite: the position then
        ended "external" without the fill, fees and PnL of the stop that closed it)."""
        for ref in list(self.m.stale_orders):
            _, final = await self._cancel(ref)
            if final is not None and executed(final) and workflow.patched(STALE_EXIT_BOOKED):
                await self._stale_executed(ref, final)

    async def _cancel_booked(self, ref: OrderRef) -> bool:
        """Cancel one of our orders; one that executed before the cancel reached it is
        booked as the exit it was (`_stale_executed`). Whether the cancel is done (on
        failure the order stays on the stale list, see `_cancel`).

        A trailing move's old stop can fill while the new one is on its way; an order
        of a lost workflow task can fill between the listing and its cancel. Their
        executions were dropped before (the position then ended "external" without
        that stop's fill, fee and PnL)."""
        done, final = await self._cancel(ref)
        if final is not None and executed(final) and workflow.patched(CANCEL_FILL_BOOKED):
            await self._stale_executed(ref, final)
        return done

    async def _stale_executed(self, ref: OrderRef, view: OrderView) -> None:
        """Book an order of ours that executed before its cancel (the position
        workflow does)."""
        raise NotImplementedError

    async def _place(
        self,
        intent: OrderIntent,
        *,
        look_up_first: bool,
        local: bool = False,
        take_position_stop: bool = False,
        position_stop_fired_since: datetime | None = None,
    ) -> Placement:
        """Place `intent` (idempotent by client id); the outcome as a value.

        If the client id turns out to be journaled for another order (a placement
        made in a workflow task that was lost, whose sequence number the replay
        handed out again), that other order is ours and goes to the stale list to
        be cancelled, and the intent is placed under a fresh client id.

        `take_position_stop`, `position_stop_fired_since`: see `PlaceOrderRequest`.
        """
        for _ in range(3):
            self.placing.add(intent.client_order_id)
            try:
                view = cast(
                    OrderView,
                    await self._call(
                        ExchangeActivities.place_order,
                        PlaceOrderRequest(
                            account=self.spec.account,
                            intent=intent,
                            look_up_first=look_up_first,
                            position_id=self.position_id,
                            hedge_mode=self.spec.hedge_mode,
                            take_position_stop=take_position_stop,
                            position_stop_fired_since=position_stop_fired_since,
                        ),
                        summary=f"{intent.kind.value} {intent.side.value} {intent.qty} "
                        f"{intent.symbol}"
                        + (f" @ {intent.trigger_price}" if intent.trigger_price else ""),
                        local=local,
                    ),
                )
            except ExchangeCallFailed as exc:
                if exc.error is not ErrorType.CLIENT_ID_REUSED:
                    return Placement(intent, None, exc.error)
                intent = self._reissue(intent, exc.details)
                look_up_first = False
                continue
            finally:
                self.placing.discard(intent.client_order_id)
            return Placement(intent, view, None)
        return Placement(intent, None, ErrorType.CLIENT_ID_REUSED)

    def _reissue(self, intent: OrderIntent, details: tuple[Any, ...]) -> OrderIntent:
        """The other order journaled under `intent`'s id is stale; a fresh id for `intent`."""
        journaled = details[0] if details and isinstance(details[0], dict) else {}
        qty = Decimal(str(journaled.get("quantity") or intent.qty))
        trigger = journaled.get("trigger_price")
        other = OrderRef(
            client_order_id=intent.client_order_id,
            qty=qty,
            trigger_price=None if trigger is None else Decimal(str(trigger)),
        )
        self.m = self.m.stale_added(other)
        self._emit(
            EventType.CRITICAL_ERROR,
            CriticalError(
                error_type="ClientIdReused",
                message=f"{intent.client_order_id} names an order placed in a lost workflow "
                "task; it will be cancelled and this order placed under a new id",
            ),
            severity=Severity.WARNING,
        )
        self.m = self.m.look_wanted()
        parsed = parse_client_id(intent.client_order_id)
        step = parsed.step if parsed is not None else OrderStep.STOP
        return intent.under_client_id(self._new_cid(step))

    # --- reads ---------------------------------------------------------------------------------

    async def _read(
        self,
        activity: Any,
        arg: Any,
        *,
        summary: str,
        give_up_on: Collection[ErrorType] = (),
        rounds: int | None = None,
    ) -> Any:
        """A read the workflow must have: retried until it answers.

        Temporal retries transient errors within one call; a call that gives up is
        recorded, alerted (critical from the third), and tried again after a
        growing delay. Only the errors in `give_up_on`, and any error once `rounds`
        calls have failed, reach the caller (as ExchangeCallFailed), for the caller
        to decide.
        """
        attempt = 0
        while True:
            try:
                return await self._call(activity, arg, summary=summary)
            except ExchangeCallFailed as exc:
                attempt += 1
                if exc.error in give_up_on or (rounds is not None and attempt >= rounds):
                    raise
                self._cannot_progress(summary, exc.error, str(exc), attempt)
                await self._sleep(self._backoff(attempt), f"retry {summary}")

    def _cannot_progress(self, what: str, error: ErrorType, message: str, attempt: int) -> None:
        """Record that a step keeps failing; a person is alerted from the third time."""
        severity = Severity.CRITICAL if attempt >= 3 else Severity.WARNING
        self._alert(
            severity,
            "exchange call keeps failing" if attempt >= 3 else "exchange call failed",
            f"{self.spec.symbol}: {what}: {error.value} (attempt {attempt}); "
            f"the stop stays in place; retrying. {message[:300]}",
        )

    def _backoff(self, attempt: int) -> timedelta:
        delay: timedelta = self.cfg.retry_delay * (2 ** min(attempt - 1, 16))
        return min(delay, self.cfg.max_backoff)

    async def _find(self, intent: OrderIntent) -> OrderView | None:
        """Our order with this client id as the exchange has it now (None: no such order)."""
        return cast(
            "OrderView | None",
            await self._read(
                ExchangeActivities.find_order,
                self._order_request(intent),
                summary=f"find {intent.client_order_id}",
            ),
        )

    async def _fills(self, client_order_id: str) -> list[Fill] | None:
        """Executions of one of our orders; None when they cannot be read now."""
        try:
            return cast(
                list[Fill],
                await self._call(
                    ExchangeActivities.fills,
                    self._cid_request(client_order_id),
                    summary=f"fills {client_order_id}",
                ),
            )
        except ExchangeCallFailed:
            return None

    async def _fills_until_known(self, client_order_id: str) -> list[Fill]:
        """Executions of one of our orders, read until the exchange answers."""
        return cast(
            list[Fill],
            await self._read(
                ExchangeActivities.fills,
                self._cid_request(client_order_id),
                summary=f"fills {client_order_id}",
            ),
        )

    async def _position(self) -> ExchangePosition:
        return cast(
            ExchangePosition,
            await self._read(
                ExchangeActivities.position,
                # the side names the position on a hedge-mode account
                SymbolRequest(
                    account=self.spec.account, symbol=self.spec.symbol, side=self.spec.side
                ),
                summary=f"position {self.spec.symbol}",
            ),
        )

    async def _outside_exit(self, since: datetime) -> OutsideExit | None:
        """What closed the position outside posguard (by hand, or a liquidation); None
        when the exchange could not tell after a few tries (the close is then booked
        without those executions, and said so)."""
        try:
            return cast(
                OutsideExit,
                await self._read(
                    ExchangeActivities.outside_exit,
                    OutsideExitRequest(
                        account=self.spec.account,
                        symbol=self.spec.symbol,
                        side=self.spec.side,
                        position_side=self.spec.side,
                        since=since,
                    ),
                    summary=f"what closed {self.spec.symbol}",
                    rounds=OUTSIDE_EXIT_ROUNDS,
                ),
            )
        except ExchangeCallFailed:
            return None

    async def _funding(self, since: datetime) -> Decimal | None:
        """Funding received (+) or paid (-) on the symbol since `since`; None when the
        exchange could not tell after a few tries."""
        try:
            return cast(
                Decimal,
                await self._read(
                    ExchangeActivities.funding,
                    FundingRequest(
                        account=self.spec.account,
                        symbol=self.spec.symbol,
                        since=since,
                        # hedge mode: the long and the short of the symbol each pay their own
                        position_side=self.spec.side if self.spec.hedge_mode else None,
                    ),
                    summary=f"funding {self.spec.symbol}",
                    rounds=OUTSIDE_EXIT_ROUNDS,
                ),
            )
        except ExchangeCallFailed:
            return None

    async def _mark_price(self) -> Decimal:
        return cast(
            Decimal,
            await self._read(
                ExchangeActivities.mark_price,
                SymbolRequest(account=self.spec.account, symbol=self.spec.symbol),
                summary=f"mark {self.spec.symbol}",
            ),
        )

    async def _own_open_orders(self) -> list[OrderView]:
        """Every open order of this position on the exchange, known to us or not."""
        views = cast(
            list[OrderView],
            await self._read(
                ExchangeActivities.open_orders,
                SymbolRequest(account=self.spec.account, symbol=self.spec.symbol),
                summary=f"open orders {self.spec.symbol}",
            ),
        )
        return [v for v in views if belongs_to(v.client_order_id, self.workflow_id, self.chain)]

    # --- requests ------------------------------------------------------------------------------

    def _order_request(
        self, intent: OrderIntent, exchange_order_id: str | None = None
    ) -> OrderRequest:
        return OrderRequest(
            account=self.spec.account,
            symbol=intent.symbol,
            client_order_id=intent.client_order_id,
            exchange_order_id=exchange_order_id or self._known_exchange_id(intent.client_order_id),
            conditional=intent.is_conditional,
        )

    def _cid_request(self, client_order_id: str) -> OrderRequest:
        return OrderRequest(
            account=self.spec.account,
            symbol=self.spec.symbol,
            client_order_id=client_order_id,
            exchange_order_id=self._known_exchange_id(client_order_id),
            conditional=is_conditional_cid(client_order_id),
        )

    def _known_exchange_id(self, client_order_id: str) -> str | None:
        """The exchange id of one of our resting orders, if known: a position stop has
        no client id on the exchange and is found by this id (the gateway tries the
        client id first)."""
        for ref in (*self.s.exit_orders, *self.m.stale_orders):
            if ref.client_order_id == client_order_id:
                return ref.exchange_order_id
        return None

    def _ref_request(self, ref: OrderRef) -> OrderRequest:
        return OrderRequest(
            account=self.spec.account,
            symbol=self.spec.symbol,
            client_order_id=ref.client_order_id,
            exchange_order_id=ref.exchange_order_id,
            conditional=is_conditional_cid(ref.client_order_id),
        )

    async def _call(
        self,
        activity: Any,
        arg: Any,
        *,
        summary: str,
        attempts: int | None = None,
        local: bool = False,
        timeout: timedelta | None = None,
        heartbeat_timeout: timedelta | None = None,
        cancellation: ActivityCancellationType = ActivityCancellationType.TRY_CANCEL,
    ) -> Any:
        """Run one exchange activity (an `ExchangeActivities` method); ExchangeCallFailed
        when it gives up.

        Every failure an activity can end with reaches here as a `FailureError`:
        an `ActivityError` for a regular activity, an `ApplicationError` or a
        `TimeoutError` for a failed local activity. All become ExchangeCallFailed,
        except the workflow's own cancellation. `local` runs it as a local activity
        in this worker: no round trip through the server before the request leaves
        (used where latency protects money: stop moves). `cancellation` says whether
        a cancellation of the workflow waits for the activity to end (the entry: its
        outcome must be known before the workflow acts on the cancellation).
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
                return await workflow.execute_local_activity_method(
                    activity,
                    arg,
                    start_to_close_timeout=timeout or self.cfg.exchange_call_timeout,
                    retry_policy=retry,
                    cancellation_type=cancellation,
                    summary=summary[:200],
                )
            return await workflow.execute_activity_method(
                activity,
                arg,
                task_queue=self.cfg.exchange_task_queue,
                start_to_close_timeout=timeout or self.cfg.exchange_call_timeout,
                heartbeat_timeout=heartbeat_timeout,
                retry_policy=retry,
                cancellation_type=cancellation,
                summary=summary[:200],
            )
        except FailureError as err:
            if is_cancelled_exception(err):
                # The workflow itself was cancelled while waiting: never let that
                # pass as an exchange failure (run() turns it into a close).
                raise asyncio.CancelledError() from err
            error, details = _failure_of(err)
            raise ExchangeCallFailed(error, str(err.cause or err), details) from err

    # --- our orders' intents --------------------------------------------------------------------

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

    def _intent_of_ref(self, ref: OrderRef) -> OrderIntent | None:
        """The intent of a resting exit order, or None for an order without a trigger."""
        return None if ref.trigger_price is None else self._intent_of(ref)

    def _resting(self, intent: OrderIntent, view: OrderView) -> tuple[OrderRef, OrderPlaced]:
        """What to remember and to record of a resting exit order the exchange accepted."""
        price = intent.trigger_price
        assert price is not None
        ref = OrderRef(
            client_order_id=intent.client_order_id,
            exchange_order_id=view.exchange_order_id,
            qty=intent.qty,
            trigger_price=price,
            position_stop=view.position_stop,
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
