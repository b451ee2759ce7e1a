"""PositionWorkflow: one position's whole life as a durable Temporal workflow.

Entry → stop-loss for the filled quantity (saga: retry, close at market,
emergency stop, critical alert and retry forever) → watch (user-stream signals
and a periodic look as fallback) → close, with every remaining order cancelled.
A crash of any process resumes mid-step: every exchange call is an activity,
placements are idempotent by client order id, and every transition is an
idempotent store write.

This workflow is the single writer of its position's orders. The reconciler and
the user-data stream only *signal* it (`exchange_update`); operators close it
with the `close` update or by cancelling the workflow.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from domain.band import band_for
    from domain.client_ids import OrderStep, client_order_id, parse_client_id
    from domain.errors import ErrorType
    from domain.events import (
        CloseTriggered,
        CriticalError,
        EmergencyStop,
        EventType,
        OrderFailed,
        OrderFilled,
        OrderPlaced,
        PositionActive,
        PositionAdopted,
        PositionClosed,
        PositionCreateStarted,
        PriceBandCrossed,
        QuantityMismatch,
        RollbackStarted,
        RolledBack,
        StopMissing,
        StopPlacementStarted,
        StopWouldTriggerImmediately,
        TrailingParamsChanged,
        TrailingRemoved,
    )
    from domain.market import MarketFilters
    from domain.order_updates import needs_look
    from domain.orders import (
        Fill,
        OrderIntent,
        OrderKind,
        OrderRef,
        OrderStatus,
        OrderView,
        close_intent,
        entry_intent,
        stop_intent,
        take_profit_intent,
    )
    from domain.position import (
        CloseReason,
        PositionSnapshot,
        PositionState,
        initial_state,
        is_open_on_exchange,
        is_terminal,
    )
    from domain.protection import (
        ActionKind,
        ProtectionAttempt,
        ProtectionStep,
        ReactionKind,
        advance,
        emergency_stop_price,
        on_position_observed,
        on_stop_filled,
        start_protection,
    )
    from domain.records import AlertRecord, FillRecord, OrderRecord
    from domain.requests import (
        EntryWithStopRequest,
        EntryWithStopResult,
        ExchangePosition,
        SymbolRequest,
    )
    from domain.sizing import InvalidStop, NotSized, size_position, stop_level, take_profit_level
    from domain.trailing import (
        StopMove,
        TrailingRule,
        TrailingState,
        on_price,
        on_timer,
        with_params,
    )
    from domain.types import Severity, Side
    from workflows.position_io import (
        BandView,
        CarriedState,
        CloseRequest,
        CloseResult,
        ExchangeUpdate,
        PositionInput,
        PositionView,
        PriceTick,
    )

from workflows.position_orders import ExchangeCallFailed
from workflows.position_trailing import Trailing

_OPENING = frozenset(
    {PositionState.PENDING_ENTRY, PositionState.ENTRY_PLACED, PositionState.PENDING_SL}
)
_STEP_OF_INTENT = {
    ProtectionStep.PLACE_STOP: OrderStep.STOP,
    ProtectionStep.PLACE_EMERGENCY_STOP: OrderStep.EMERGENCY_STOP,
}


@workflow.defn(name="PositionWorkflow")
class PositionWorkflow(Trailing):
    """One position on one (account, exchange, symbol), from entry to close.

    Contract:
    - the entry is placed at most once (client id derived from the workflow id
      and a sequence in workflow state; every retry looks the id up first);
    - the stop-loss protects the *filled* quantity, and the position is never
      left unprotected silently (see `domain.protection`);
    - every state change is recorded as an event and in the positions/orders rows;
    - messages: `close` (update), `exchange_update` (signal), `state` (query).
    """

    @workflow.init
    def __init__(self, inp: PositionInput) -> None:
        self.spec = inp.spec
        self.cfg = inp.config
        carried = inp.carried
        self.s = (
            carried.snapshot if carried else PositionSnapshot(state=initial_state(inp.spec.adopt))
        )
        self.filters: MarketFilters | None = carried.filters if carried else None
        self.stale: list[OrderRef] = list(carried.stale_orders) if carried else []
        self.runs = carried.runs if carried else 1
        self.revision = carried.revision if carried else 0
        self.trailing_rule: TrailingRule | None = (
            carried.trailing_rule if carried else inp.spec.trailing
        )
        self.trail: TrailingState | None = carried.trailing if carried else None
        self.measured_callback: Decimal | None = carried.measured_callback_pct if carried else None
        self.measured_at: datetime | None = carried.measured_at if carried else None
        self.pending_move: StopMove | None = None
        self.draining = False  # continue-as-new under way: ticks only observed
        self.close_request: CloseRequest | None = None
        if carried and carried.close_reason is not None:
            self.close_request = CloseRequest(reason=carried.close_reason)
        self.look_requested = False
        # Client ids whose "open" / "cancelled" echo from the user stream needs no look.
        self.placing: set[str] = set()
        self.cancelling: list[str] = []
        self.outbox: list[Any] = []
        self.order_rows: list[OrderRecord] = []
        self.fill_rows: list[FillRecord] = []
        self.alerts: list[AlertRecord] = []
        self.writes: list[workflow.ActivityHandle[int]] = []
        self.flushed: PositionSnapshot | None = None  # the snapshot last written

    # --- messages ------------------------------------------------------------------------

    @workflow.query
    def state(self) -> PositionView:
        """The whole state of the position."""
        return PositionView(
            workflow_id=self.workflow_id,
            position_id=self.position_id,
            spec=self.spec,
            snapshot=self.s,
            stale_orders=self.stale,
            runs=self.runs,
            history_length=workflow.info().get_current_history_length(),
            trailing_rule=self.trailing_rule,
            trailing=self.trail,
            measured_callback_pct=self.measured_callback,
        )

    @workflow.query
    def band(self) -> BandView:
        """The price band the gate must watch for this position."""
        return self._band()

    @workflow.update
    async def price(self, tick: PriceTick) -> BandView:
        """A mark price outside the band: act on it, answer with the new band.

        The gate keeps at most one of these in flight per position and waits for
        the answer, so a stop move it causes is finished (new stop placed, old one
        cancelled) before the next price for this position can arrive.
        """
        self.s = self.s.observe_price(tick.price)
        # Until the entry and its first stop are settled there is no band to give;
        # answering an empty one would leave the gate silent for this position.
        await workflow.wait_condition(lambda: self.s.state not in _OPENING)
        stop = self.s.stop_price
        if stop is not None and self.spec.side.sign * (tick.price - stop) <= 0:
            self.look_requested = True  # the exchange's stop should have fired: check
        if self._trailing_live() and not self.draining:
            await workflow.wait_condition(lambda: self.pending_move is None)
            if self._trailing_live() and not self.draining:
                params, trail = self._trailing_params(), self.trail
                assert trail is not None
                band = self._band()
                self._emit(
                    EventType.PRICE_BAND_CROSSED,
                    PriceBandCrossed(
                        price=tick.price, wake_below=band.wake_below, wake_above=band.wake_above
                    ),
                    flush=False,
                )
                self._apply_trailing(on_price(trail, params, tick.price, workflow.now()))
                await workflow.wait_condition(lambda: self.pending_move is None)
        self._flush()
        return self._band()

    @workflow.update
    def set_trailing(self, rule: TrailingRule) -> TrailingRule | None:
        """Change the trailing settings at run time; returns the previous ones.

        The live stop never loosens: a looser setting only stops future moves.
        """
        old = self.trailing_rule
        self.trailing_rule = rule
        if old is None or old.volatility != rule.volatility:
            # Measured under another rule (or none): measure again, the fixed
            # callback applies until then.
            self.measured_callback, self.measured_at = None, None
        if self.trail is not None:
            self.trail = with_params(self.trail, self._trailing_params())
        elif self.s.state is PositionState.ACTIVE:
            self._start_trailing()
        self._emit(
            EventType.TRAILING_PARAMS_CHANGED,
            TrailingParamsChanged(
                old={} if old is None else old.model_dump(mode="json"),
                new=rule.model_dump(mode="json"),
            ),
        )
        self._flush()
        return old

    @set_trailing.validator
    def _validate_set_trailing(self, rule: TrailingRule) -> None:
        if is_terminal(self.s.state) or self.filters is None:
            raise ApplicationError(f"position is {self.s.state}", type="NotOpen")
        rule.params(self.filters.tick_size)  # raises if invalid for this symbol

    def _band(self) -> BandView:
        open_ = not is_terminal(self.s.state)
        if open_ and self._trailing_live():
            assert self.trail is not None
            band = band_for(self.trail, self._trailing_params(), workflow.now())
            below, above = band.wake_below, band.wake_above
        else:
            stop = self.s.stop_price if open_ else None
            below, above = (stop, None) if self.spec.side is Side.LONG else (None, stop)
        return BandView(
            workflow_id=self.workflow_id,
            symbol=self.spec.symbol,
            wake_below=below,
            wake_above=above,
            open=open_,
        )

    @workflow.signal
    def exchange_update(self, update: ExchangeUpdate) -> None:
        """Something changed on the exchange: read the stop and the position again,
        unless the update only echoes this workflow's own placements and cancels."""
        live = (self.s.stop, self.s.emergency_stop, self.s.take_profit)
        expected_open = {r.client_order_id for r in live if r is not None} | self.placing
        expected_cancelled = {*self.cancelling, *(r.client_order_id for r in self.stale)}
        if needs_look(
            update.orders, expected_open=expected_open, expected_cancelled=expected_cancelled
        ):
            self.look_requested = True

    @workflow.update
    async def close(self, request: CloseRequest) -> CloseResult:
        """Close at market, cancel every remaining order, and return how it ended."""
        self.close_request = request
        await workflow.wait_condition(lambda: is_terminal(self.s.state))
        return self._result()

    @close.validator
    def _validate_close(self, request: CloseRequest) -> None:
        if is_terminal(self.s.state):
            raise ApplicationError(f"position already {self.s.state}", type="AlreadyClosed")
        if self.close_request is not None or self.s.state is PositionState.CLOSING:
            raise ApplicationError("position is already closing", type="AlreadyClosing")

    # --- main ----------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: PositionInput) -> CloseResult:
        """Drive the position to a terminal state; returns how it ended."""
        try:
            if inp.carried is None:
                await self._begin()
            while not is_terminal(self.s.state):
                await self._step()
        except asyncio.CancelledError:
            # `temporal workflow cancel` means "close this position": never leave
            # an exchange position unmanaged.
            await self._wind_down()
            await self._drain_writes()
            raise
        await self._drain_writes()
        self.pending_move = None  # nothing moves any more: no price update may wait on it
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._result()

    async def _wind_down(self) -> None:
        """After a cancellation: close whatever the exchange holds for us, then end."""
        ref = self.s.entry_order
        if self.s.state is PositionState.PENDING_ENTRY and ref is not None:
            # The entry may have been accepted just before the cancel: ask the exchange.
            intent = entry_intent(ref.client_order_id, self.spec.symbol, self.spec.side, ref.qty)
            view = await self._find(intent, patient=True)
            if view is not None and view.filled_qty > 0:
                self._transition(PositionState.ENTRY_PLACED)
                self.s = self.s.apply_entry_fills([self._aggregate_fill(view)], workflow.now())
                self._record_order(intent, view)
        if self.s.state is PositionState.ENTRY_PLACED:
            self._transition(PositionState.PENDING_SL)
        if is_open_on_exchange(self.s.state) and self.s.qty > 0:
            await self._close(CloseReason.OPERATOR, requested_by="workflow cancellation")
        elif not is_terminal(self.s.state):
            self._transition(PositionState.ROLLED_BACK, CloseReason.OPERATOR)

    async def _begin(self) -> None:
        self._set_search_state()
        self._emit(
            EventType.POSITION_CREATE_STARTED,
            PositionCreateStarted(
                side=self.spec.side.value,
                quote_amount=None if self.spec.sizing is None else self.spec.sizing.amount,
                stop_price=self.spec.stop.price,
                signal_id=self.spec.signal_id,
            ),
        )
        self.filters = await self._call(
            "exchange.filters",
            SymbolRequest(account=self.spec.account, symbol=self.spec.symbol),
            MarketFilters,
            summary=f"filters {self.spec.symbol}",
        )
        if self.spec.adopt:
            await self._adopt()
        else:
            await self._enter()

    async def _step(self) -> None:
        """One round of the lifecycle, chosen by state."""
        state = self.s.state
        if state is PositionState.PENDING_SL:
            await self._protect()
        elif state is PositionState.CLOSING:
            await self._close(self.s.close_reason or CloseReason.OPERATOR)
        elif state in (PositionState.ACTIVE, PositionState.FAILED):
            await self._watch()
        else:  # pending_entry / entry_placed after a crash mid-entry: resolve the entry
            await self._enter()

    # --- entry ---------------------------------------------------------------------------

    async def _enter(self) -> None:
        spec, filters = self.spec, self._filters()
        assert spec.sizing is not None
        if self.s.entry_order is None:
            mark = await self._mark_price()
            try:
                stop_preview = stop_level(spec.side, mark, spec.stop, filters)
            except InvalidStop as exc:
                return self._roll_back_unsized(str(exc))
            sized = size_position(spec.sizing, mark, stop_preview, filters)
            if isinstance(sized, NotSized):
                return self._roll_back_unsized(f"cannot size: {sized.reason}")
            cid = self._new_cid(OrderStep.ENTRY)
            self._new_cid(OrderStep.STOP)  # the entry's stop takes the next sequence
            self.s = self.s.model_copy(
                update={"entry_order": OrderRef(client_order_id=cid, qty=sized.qty)}
            )
        ref = self.s.entry_order
        assert ref is not None
        intent = entry_intent(ref.client_order_id, spec.symbol, spec.side, ref.qty)
        parsed = parse_client_id(ref.client_order_id)
        assert parsed is not None
        stop_cid = client_order_id(self.workflow_id, self.chain, OrderStep.STOP, parsed.seq + 1)
        # After a crash the placement may already have happened: look it up first.
        resumed = self.s.state is not PositionState.PENDING_ENTRY or ref.exchange_order_id
        view: OrderView | None = None
        error: ErrorType | None = None
        placed: EntryWithStopResult | None = None
        try:
            placed = cast(
                EntryWithStopResult,
                await self._call(
                    "exchange.place_entry_with_stop",
                    EntryWithStopRequest(
                        account=spec.account,
                        entry=intent,
                        stop_client_order_id=stop_cid,
                        stop=spec.stop,
                        filters=filters,
                        look_up_first=bool(resumed),
                    ),
                    EntryWithStopResult,
                    summary=f"entry {intent.side.value} {intent.qty} {intent.symbol} + stop",
                ),
            )
            view = placed.entry
        except ExchangeCallFailed as exc:
            error = exc.error
        if view is None and error is not None and error.retryable:
            view = await self._find(intent, patient=True)  # ambiguous: the truth decides
        if view is not None and not view.is_final and view.filled_qty == 0:
            view = await self._await_entry_fill(intent, view)
        if view is None or view.filled_qty == 0:
            self._emit(
                EventType.ENTRY_ORDER_FAILED,
                OrderFailed(
                    client_order_id=intent.client_order_id,
                    error_type=(error or ErrorType.EXCHANGE_ERROR).value,
                    message="entry not filled" if error is None else "entry refused",
                ),
            )
            self._record_order(intent, view)
            self._transition(PositionState.ROLLED_BACK, CloseReason.ENTRY_NOT_FILLED)
            return
        if self.s.state is PositionState.PENDING_ENTRY:
            self._transition(PositionState.ENTRY_PLACED)
            self._emit(
                EventType.ENTRY_ORDER_PLACED,
                OrderPlaced(
                    client_order_id=intent.client_order_id,
                    exchange_order_id=view.exchange_order_id,
                    side=intent.side.value,
                    quantity=intent.qty,
                ),
            )
        self.s = self.s.model_copy(
            update={
                "entry_order": ref.model_copy(update={"exchange_order_id": view.exchange_order_id})
            }
        )
        # Protect first: the stop goes out before fees are looked up.
        entry_fill = self._aggregate_fill(view)
        self.s = self.s.apply_entry_fills([entry_fill], workflow.now())
        self._record_order(intent, view)
        self._emit(
            EventType.ENTRY_ORDER_FILLED,
            OrderFilled(
                client_order_id=intent.client_order_id,
                exchange_order_id=view.exchange_order_id,
                filled_quantity=view.filled_qty,
                average_price=entry_fill.price,
                partial=view.filled_qty < intent.qty,
            ),
        )
        self._transition(PositionState.PENDING_SL)
        await self._protect(*self._entry_stop_outcome(placed, stop_cid))
        await self._book_entry_fees(intent, view)

    def _entry_stop_outcome(
        self, placed: EntryWithStopResult | None, cid: str
    ) -> tuple[ProtectionAttempt | None, str | None]:
        """What the combined entry activity did with the stop, as the saga's first attempt."""
        if placed is None or (placed.stop is None and placed.stop_error is None):
            return None, None  # the entry filled later: the saga places the stop
        price = placed.stop_price
        if price is not None:
            self._emit(
                EventType.SL_PLACEMENT_STARTED,
                StopPlacementStarted(client_order_id=cid, stop_price=price, quantity=self.s.qty),
            )
        if placed.stop is not None and price is not None:
            intent = stop_intent(cid, self.spec.symbol, self.spec.side, self.s.qty, price)
            self._stop_placed(intent, placed.stop)
            return ProtectionAttempt(step=ProtectionStep.PLACE_STOP), None
        assert placed.stop_error is not None
        error = ErrorType(placed.stop_error)
        self._emit_stop_failure(False, cid, error, "stop not placed with the entry")
        reuse = cid if placed.stop_ambiguous or error.retryable else None
        return ProtectionAttempt(step=ProtectionStep.PLACE_STOP, error=error), reuse

    def _aggregate_fill(self, view: OrderView) -> Fill:
        price = view.average_price
        if price is None:
            raise ApplicationError("filled order without an average price", type="BadExchangeData")
        return Fill(trade_id=f"order:{view.exchange_order_id}", qty=view.filled_qty, price=price)

    async def _book_entry_fees(self, intent: OrderIntent, view: OrderView) -> None:
        try:
            fills = await self._call(
                "exchange.fills",
                self._order_request(intent),
                list[Fill],
                summary="entry fees",
                attempts=self.cfg.exchange_attempts,
            )
        except ExchangeCallFailed:
            return  # fees stay unknown; the fill itself is booked
        self._record_fills(intent.client_order_id, fills)
        fee = sum((f.fee for f in fills), Decimal(0))
        if fee:
            self.s = self.s.model_copy(update={"fees": self.s.fees + fee})

    async def _await_entry_fill(self, intent: OrderIntent, view: OrderView) -> OrderView | None:
        # A market order can be reported NEW before it fills (seen on Binance).
        current: OrderView | None = view
        for delay_ms in (100, 300, 1000, 3000):
            await self._sleep(timedelta(milliseconds=delay_ms))
            current = await self._find(intent, patient=True)
            if current is None or current.is_final or current.filled_qty > 0:
                return current
        return current

    def _roll_back_unsized(self, why: str) -> None:
        self._emit(
            EventType.ENTRY_ORDER_FAILED,
            OrderFailed(client_order_id=None, error_type="Unsizable", message=why),
        )
        self._transition(PositionState.ROLLED_BACK, CloseReason.UNSIZABLE)

    async def _adopt(self) -> None:
        pos = await self._position()
        if pos.is_flat or pos.side is not self.spec.side or pos.entry_price is None:
            self._emit(
                EventType.CRITICAL_ERROR,
                CriticalError(
                    error_type="NothingToAdopt",
                    message=f"no {self.spec.side} position in {self.spec.symbol} to adopt",
                ),
                severity=Severity.WARNING,
            )
            self._transition(PositionState.ROLLED_BACK, CloseReason.EXTERNAL)
            return
        self.s = self.s.adopt(pos.qty, pos.entry_price, workflow.now())
        self._emit(
            EventType.POSITION_ADOPTED,
            PositionAdopted(
                quantity=pos.qty,
                entry_price=pos.entry_price,
                side=self.spec.side.value,
                had_stop=False,
            ),
        )
        await self._protect()

    # --- protection (the stop-loss saga) -------------------------------------------------

    async def _protect(
        self, first: ProtectionAttempt | None = None, reused_cid: str | None = None
    ) -> None:
        """Run the saga until the position is protected, closed, or emergency-protected.

        `first` is an attempt already made (the stop sent with the entry).
        """
        progress, action = start_protection()
        if first is not None:
            self._note_stop_attempt(first.step, first.error)
            progress, action = advance(progress, first, self.cfg.protection)
        while True:
            if action.alert is Severity.CRITICAL:
                self._alert(
                    Severity.CRITICAL,
                    "position unprotected",
                    f"{self.spec.symbol}: stop, close and emergency stop all failed; retrying",
                )
            if action.delay:
                await self._sleep(action.delay)
            if action.kind is ActionKind.PROTECTED:
                self._became_protected()
                await self._place_take_profit()
                return
            if action.kind is ActionKind.CLOSED:
                return
            if action.kind is ActionKind.EMERGENCY_PROTECTED:
                if self.s.state is not PositionState.FAILED:
                    self._transition(PositionState.FAILED)
                return
            if action.kind is ActionKind.RECONCILE:
                if not await self._reconcile_qty():
                    return
                progress, action = start_protection()
                continue
            step = progress.step
            if step is ProtectionStep.CLOSE_AT_MARKET:
                error = await self._close_attempt(action.reason.value)
                if error is None and is_terminal(self.s.state):
                    return
                if error is not None and self.s.state is PositionState.CLOSING:
                    self._transition(PositionState.FAILED)
            else:
                error, reused_cid = await self._stop_attempt(step, reused_cid)
                self._note_stop_attempt(step, error)
            progress, action = advance(
                progress, ProtectionAttempt(step=step, error=error), self.cfg.protection
            )

    def _note_stop_attempt(self, step: ProtectionStep, error: ErrorType | None) -> None:
        if error is ErrorType.ORDER_IMMEDIATELY_FILLABLE and step is ProtectionStep.PLACE_STOP:
            # The mark is already beyond the stop: the trader's loss limit is hit.
            self.s = self.s.model_copy(update={"close_reason": CloseReason.STOP_BEYOND_MARK})
            self._emit(
                EventType.SL_WOULD_TRIGGER_IMMEDIATELY,
                StopWouldTriggerImmediately(
                    stop_price=self._stop_price(), mark_price=None, action="close_at_market"
                ),
            )

    def _stop_price(self) -> Decimal:
        """The stop level to (re)place: the trailed stop once trailing has moved it."""
        if self.trail is not None:
            return self.trail.stop
        entry = self.s.avg_entry_price
        assert entry is not None
        return stop_level(self.spec.side, entry, self.spec.stop, self._filters())

    async def _stop_attempt(
        self, step: ProtectionStep, reused_cid: str | None
    ) -> tuple[ErrorType | None, str | None]:
        """Place the stop (or the emergency stop); returns (error, cid to reuse on retry)."""
        emergency = step is ProtectionStep.PLACE_EMERGENCY_STOP
        try:
            if emergency:
                price = emergency_stop_price(
                    self.spec.side,
                    await self._mark_price(),
                    self.spec.emergency_stop_percent,
                    self._filters(),
                )
            else:
                price = self._stop_price()
        except (InvalidStop, ExchangeCallFailed) as exc:
            failure = exc.error if isinstance(exc, ExchangeCallFailed) else ErrorType.INVALID_ORDER
            self._emit_stop_failure(emergency, None, failure, str(exc))
            return failure, None
        cid = reused_cid or self._new_cid(_STEP_OF_INTENT[step])
        intent = stop_intent(
            cid, self.spec.symbol, self.spec.side, self.s.qty, price, emergency=emergency
        )
        self._emit(
            EventType.SL_PLACEMENT_STARTED,
            StopPlacementStarted(client_order_id=cid, stop_price=price, quantity=self.s.qty),
        )
        view, error = await self._place(intent, look_up_first=reused_cid is not None)
        if view is None:
            assert error is not None
            self._emit_stop_failure(emergency, cid, error, "stop not placed")
            self._record_order(
                intent, None, status=OrderStatus.REJECTED if not error.retryable else None
            )
            # A transient failure may have placed it after all: same id next time.
            return error, (cid if error.retryable else None)
        self._stop_placed(intent, view)
        return None, None

    def _stop_placed(self, intent: OrderIntent, view: OrderView) -> None:
        """Remember and record a stop (or emergency stop) the exchange accepted."""
        ref, placed = self._resting(intent, view)
        self._record_order(intent, view)
        if intent.kind is OrderKind.EMERGENCY_STOP:
            self.s = self.s.model_copy(update={"emergency_stop": ref})
            self._emit(
                EventType.EMERGENCY_STOP_PLACED,
                EmergencyStop(
                    client_order_id=ref.client_order_id,
                    stop_price=placed.trigger_price or Decimal(0),
                    quantity=intent.qty,
                ),
            )
            return
        self.s = self.s.with_stop(ref, workflow.now())
        self._emit(EventType.SL_PLACED, placed, order_id=ref.client_order_id)

    def _emit_stop_failure(
        self, emergency: bool, cid: str | None, error: ErrorType, msg: str
    ) -> None:
        if emergency:
            self._emit(
                EventType.EMERGENCY_STOP_FAILED,
                EmergencyStop(
                    client_order_id=cid,
                    stop_price=Decimal(0) if cid is None else self._stop_price(),
                    quantity=self.s.qty,
                    error=f"{error.value}: {msg}",
                ),
            )
        else:
            self._emit(
                EventType.SL_PLACEMENT_FAILED,
                OrderFailed(client_order_id=cid, error_type=error.value, message=msg),
            )

    async def _place_take_profit(self) -> None:
        """Rest a reduce-only take-profit if the spec asks for one (never blocks the stop)."""
        rule, entry = self.spec.take_profit, self.s.avg_entry_price
        if rule is None or self.s.take_profit is not None or entry is None:
            return
        try:
            price = take_profit_level(self.spec.side, entry, rule, self._filters())
        except InvalidStop as exc:
            self._alert(Severity.WARNING, "take-profit not placed", str(exc))
            return
        cid = self._new_cid(OrderStep.TAKE_PROFIT)
        intent = take_profit_intent(cid, self.spec.symbol, self.spec.side, self.s.qty, price)
        view, error = await self._place(intent, look_up_first=False)
        self._record_order(intent, view)
        if view is None:
            self._alert(Severity.WARNING, "take-profit not placed", f"{error}")
            return
        ref, placed = self._resting(intent, view)
        self.s = self.s.model_copy(update={"take_profit": ref})
        self._emit(EventType.TAKE_PROFIT_PLACED, placed, order_id=cid)

    def _became_protected(self) -> None:
        stop = self.s.stop
        assert stop is not None and stop.trigger_price is not None
        entry = self.s.avg_entry_price
        assert entry is not None
        if self.s.state is not PositionState.ACTIVE:
            self._transition(PositionState.ACTIVE)
        self._start_trailing()
        self._emit(
            EventType.POSITION_ACTIVE,
            PositionActive(quantity=self.s.qty, entry_price=entry, stop_price=stop.trigger_price),
        )
        # A real stop now protects: an emergency stop left from a bad round goes.
        if self.s.emergency_stop is not None:
            self.stale.append(self.s.emergency_stop)
            self.s = self.s.model_copy(update={"emergency_stop": None})

    # --- watching --------------------------------------------------------------------------

    async def _watch(self) -> None:
        """Wait for a close request, an exchange update or the periodic look; act on it."""
        now = workflow.now()
        deadlines = [now + self.cfg.check_interval]
        if self.spec.max_age is not None and self.s.opened_at is not None:
            deadlines.append(self.s.opened_at + self.spec.max_age)
        trail_due = self._trailing_timer()
        if trail_due is not None:
            deadlines.append(trail_due)
        measure_due = self._volatility_due()
        if measure_due is not None:
            deadlines.append(measure_due)
        timeout = max(min(deadlines) - now, timedelta(milliseconds=1))
        self._flush()
        try:
            await workflow.wait_condition(
                lambda: (
                    self.close_request is not None
                    or self.look_requested
                    or self.pending_move is not None
                    or self._should_continue_as_new()
                    or self._volatility_unmeasured()
                ),
                timeout=timeout,
                timeout_summary="next look at stop and position",
            )
        except TimeoutError:
            pass
        if self.pending_move is not None and self.close_request is None:
            await self._move_stop()
            return
        measure_due = self._volatility_due()
        if measure_due is not None and workflow.now() >= measure_due and self.close_request is None:
            await self._measure_volatility()
            if self.pending_move is not None and self.close_request is None:
                await self._move_stop()
            return
        trail_due = self._trailing_timer()
        if trail_due is not None and workflow.now() >= trail_due:
            assert self.trail is not None
            self._apply_trailing(on_timer(self.trail, self._trailing_params(), workflow.now()))
            if self.pending_move is not None:
                await self._move_stop()
            return
        nothing_due = min(deadlines) > workflow.now() and not (
            self.close_request is not None or self.look_requested or self._should_continue_as_new()
        )
        if nothing_due:
            return
        if self.close_request is not None:
            request = self.close_request
            # The close cancels every stop: a move still pending is dropped, which
            # also releases the price update waiting for it.
            self.pending_move = None
            await self._close(request.reason, requested_by=request.requested_by)
            return
        if self._aged_out():
            await self._close(CloseReason.MAX_AGE)
            return
        self.look_requested = False
        await self._look()
        if self.s.state is PositionState.FAILED:
            await self._protect()  # keep trying to get the real stop back on
        if not is_terminal(self.s.state) and self._should_continue_as_new():
            await self._continue_as_new()

    def _aged_out(self) -> bool:
        if self.spec.max_age is None or self.s.opened_at is None:
            return False
        return workflow.now() >= self.s.opened_at + self.spec.max_age

    async def _look(self) -> None:
        """Read the exchange position, then our exit orders; react per `domain.protection`.

        The position is read first on purpose: a stop that fills after that read is
        then seen as filled. Read the other way round, a fill between the two reads
        would look like a resting stop on a flat position: an "external" close.
        """
        await self._cancel_stale()
        pos = await self._position()
        for ref in (self.s.stop, self.s.emergency_stop, self.s.take_profit):
            if ref is None:
                continue
            view = await self._find(self._intent_of(ref), patient=False)
            if view is not None and view.status is OrderStatus.FILLED:
                await self._exit_order_filled(ref)
                return
            gone = view is None or view.status in (
                OrderStatus.CANCELED,
                OrderStatus.EXPIRED,
                OrderStatus.REJECTED,
            )
            if not gone:
                continue
            if ref is self.s.stop:
                if not pos.is_flat:
                    self._emit(
                        EventType.STOP_MISSING_DETECTED,
                        StopMissing(
                            expected_client_order_id=ref.client_order_id, quantity=self.s.qty
                        ),
                    )
                    self.s = self.s.with_stop(None, workflow.now())
                    self._transition(PositionState.PENDING_SL)
                    return
            elif ref is self.s.emergency_stop:
                self.s = self.s.model_copy(update={"emergency_stop": None})
            else:
                self.s = self.s.model_copy(update={"take_profit": None})
        reaction = on_position_observed(self.s.state, self.spec.side, self.s.qty, pos.side, pos.qty)
        if reaction.kind is ReactionKind.RECORD_CLOSE:
            await self._record_external_close(reaction.close_reason or CloseReason.EXTERNAL, pos)
        elif reaction.kind is ReactionKind.RESIZE_STOP and reaction.qty is not None:
            self._emit(
                EventType.QUANTITY_MISMATCH,
                QuantityMismatch(expected=self.s.qty, on_exchange=reaction.qty),
            )
            self.s = self.s.with_exchange_qty(reaction.qty, workflow.now())
            await self._replace_stop_for_qty()
        elif reaction.kind is ReactionKind.INTERVENTION:
            self._alert(
                Severity.CRITICAL,
                "position needs intervention",
                f"exchange shows {pos.side} {pos.qty}",
            )

    async def _exit_order_filled(self, ref: OrderRef) -> None:
        """Our stop, emergency stop or take-profit filled: book it; close or re-protect."""
        intent = self._intent_of(ref)
        emergency = intent.kind is OrderKind.EMERGENCY_STOP
        take_profit = intent.kind is OrderKind.TAKE_PROFIT
        fills = await self._fills(intent)
        self._record_order(intent, None, status=OrderStatus.FILLED)
        self._record_fills(intent.client_order_id, fills)
        filled = sum((f.qty for f in fills), Decimal(0))
        reaction = on_stop_filled(self.s.state, self.s.qty, filled, emergency=emergency)
        if reaction.kind is ReactionKind.VERIFY_POSITION:
            pos = await self._position()
            filled = self.s.qty - pos.qty
        if fills:
            self.s = self.s.apply_exit_fills(self.spec.side, fills, workflow.now())
        else:
            self.s = self.s.with_exchange_qty(self.s.qty - filled, workflow.now())
        self._emit(
            EventType.TAKE_PROFIT_FILLED if take_profit else EventType.STOP_TRIGGERED,
            OrderFilled(
                client_order_id=ref.client_order_id,
                exchange_order_id=ref.exchange_order_id,
                filled_quantity=filled,
                average_price=self.s.avg_exit_price or ref.trigger_price or Decimal(0),
                fee=sum((f.fee for f in fills), Decimal(0)),
            ),
            order_id=ref.client_order_id,
        )
        field = "take_profit" if take_profit else "emergency_stop" if emergency else "stop"
        self.s = self.s.model_copy(update={field: None})
        if self.s.qty > 0:
            if not take_profit:
                self._transition(PositionState.PENDING_SL)  # the rest needs a stop of its own
            return
        if take_profit:
            reason = CloseReason.TAKE_PROFIT
        else:
            reason = CloseReason.EMERGENCY_STOP_FILLED if emergency else CloseReason.STOP_FILLED
        await self._finish_close(reason)

    async def _record_external_close(self, reason: CloseReason, pos: ExchangePosition) -> None:
        self._emit(
            EventType.CLOSE_TRIGGERED, CloseTriggered(reason=reason.value, requested_by="exchange")
        )
        self.s = self.s.with_exchange_qty(Decimal(0), workflow.now())
        await self._finish_close(reason)

    async def _replace_stop_for_qty(self) -> None:
        """New stop for the current quantity first, then the old one cancelled."""
        old = self.s.stop
        error, _ = await self._stop_attempt(ProtectionStep.PLACE_STOP, None)
        if error is not None:
            if old is None:
                self._transition(PositionState.PENDING_SL)
            return  # the old stop still protects (it can only over-protect)
        if old is not None:
            await self._cancel(self._intent_of(old), old)

    async def _reconcile_qty(self) -> bool:
        """Adopt the exchange's quantity; False when the position turned out flat."""
        pos = await self._position()
        if pos.is_flat:
            await self._record_external_close(CloseReason.EXTERNAL, pos)
            return False
        if pos.qty != self.s.qty:
            self._emit(
                EventType.QUANTITY_MISMATCH,
                QuantityMismatch(expected=self.s.qty, on_exchange=pos.qty),
            )
            self.s = self.s.with_exchange_qty(pos.qty, workflow.now())
        return True

    # --- closing -----------------------------------------------------------------------------

    async def _close(self, reason: CloseReason, *, requested_by: str | None = None) -> None:
        """Close at market until flat, then cancel every remaining order."""
        if self.s.state is not PositionState.CLOSING:
            self.s = self.s.model_copy(update={"close_reason": reason})
            self._transition(PositionState.CLOSING)
            self._emit(
                EventType.CLOSE_TRIGGERED,
                CloseTriggered(reason=reason.value, requested_by=requested_by),
            )
        for attempt in range(1, 1000):
            error = await self._close_attempt(reason.value)
            if error is None:
                return
            self._alert(
                Severity.CRITICAL if attempt >= 3 else Severity.ERROR,
                "close failed",
                f"{self.spec.symbol}: {error.value}; the stop stays in place; retrying",
            )
            await self._sleep(self.cfg.protection.backoff(self.cfg.protection.retry_delay, attempt))

    async def _close_attempt(self, why: str) -> ErrorType | None:
        """One reduce-only market close of what we hold; None when the position is flat."""
        if self.s.state is not PositionState.CLOSING:
            if self.s.close_reason is None:
                self.s = self.s.model_copy(update={"close_reason": CloseReason.STOP_UNPLACEABLE})
            self._transition(PositionState.CLOSING)
            self._emit(
                EventType.POSITION_ROLLBACK_STARTED,
                RollbackStarted(reason=why, quantity=self.s.qty),
            )
        pos = await self._position()
        if not pos.is_flat and pos.qty < self.s.qty:
            self.s = self.s.with_exchange_qty(pos.qty, workflow.now())
        if not pos.is_flat:
            cid = self._new_cid(OrderStep.CLOSE)
            intent = close_intent(cid, self.spec.symbol, self.spec.side, self.s.qty)
            view, error = await self._place(intent, look_up_first=False)
            if view is None and error is not None and error.retryable:
                view = await self._find(intent, patient=True)
            if view is None or view.filled_qty == 0:
                if error is not ErrorType.REDUCE_ONLY_REJECTED:
                    return error or ErrorType.EXCHANGE_ERROR
            else:
                self._record_order(intent, view)
                self._emit(
                    EventType.CLOSE_ORDER_PLACED,
                    OrderPlaced(
                        client_order_id=cid,
                        exchange_order_id=view.exchange_order_id,
                        side=intent.side.value,
                        quantity=intent.qty,
                        reduce_only=True,
                    ),
                )
                fills = await self._fills(intent)
                self._record_fills(cid, fills)
                fills = fills or [self._aggregate_fill(view)]
                self.s = self.s.apply_exit_fills(self.spec.side, fills, workflow.now())
                self._emit(
                    EventType.CLOSE_ORDER_FILLED,
                    OrderFilled(
                        client_order_id=cid,
                        exchange_order_id=view.exchange_order_id,
                        filled_quantity=view.filled_qty,
                        average_price=self.s.avg_exit_price or Decimal(0),
                        fee=sum((f.fee for f in fills), Decimal(0)),
                    ),
                )
            pos = await self._position()  # verify, never assume
            if not pos.is_flat:
                self.s = self.s.with_exchange_qty(pos.qty, workflow.now())
                return ErrorType.EXCHANGE_ERROR
        else:
            self.s = self.s.with_exchange_qty(Decimal(0), workflow.now())
        await self._finish_close(self.s.close_reason or CloseReason.OPERATOR)
        return None

    async def _finish_close(self, reason: CloseReason) -> None:
        """The position is flat: cancel every remaining order, book the close."""
        for ref in (self.s.stop, self.s.emergency_stop, self.s.take_profit):
            if ref is not None:
                await self._cancel(self._intent_of(ref), ref)
        self.s = self.s.model_copy(
            update={"stop": None, "emergency_stop": None, "take_profit": None}
        )
        await self._cancel_stale()
        self.s = self.s.model_copy(update={"close_reason": reason})
        if self.trail is not None:
            self._emit(EventType.TRAILING_REMOVED, TrailingRemoved(reason=reason.value))
            self.trail = None
        rollback = reason in (CloseReason.STOP_UNPLACEABLE, CloseReason.STOP_BEYOND_MARK)
        if self.s.state is PositionState.FAILED and rollback:
            self._transition(PositionState.CLOSING)
        target = (
            PositionState.ROLLED_BACK
            if rollback and self.s.state is PositionState.CLOSING
            else PositionState.CLOSED
        )
        if rollback:
            self._emit(
                EventType.POSITION_ROLLED_BACK,
                RolledBack(
                    reason=reason.value,
                    close_price=self.s.avg_exit_price,
                    realized_pnl=self.s.realised_pnl,
                ),
            )
        self._emit(
            EventType.POSITION_CLOSED,
            PositionClosed(
                reason=reason.value,
                exit_price=self.s.avg_exit_price,
                quantity=self.s.exited_qty,
                realized_pnl=self.s.realised_pnl,
                fees=self.s.fees,
            ),
        )
        self._transition(target)

    # --- history ------------------------------------------------------------------------------

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() >= self.cfg.max_history_events
        )

    async def _continue_as_new(self) -> None:
        """Start a fresh run with the whole state, once no message is half handled."""
        self.draining = True  # from now on ticks are only observed; the next run acts
        while True:
            if self.pending_move is not None:
                await self._move_stop()  # a price update is waiting for it
            await self._drain_writes()
            await workflow.wait_condition(
                lambda: workflow.all_handlers_finished() or self.pending_move is not None
            )
            if self.pending_move is None and workflow.all_handlers_finished():
                break
        workflow.continue_as_new(
            PositionInput(
                spec=self.spec,
                config=self.cfg,
                carried=CarriedState(
                    snapshot=self.s,
                    filters=self._filters(),
                    stale_orders=self.stale,
                    close_reason=None if self.close_request is None else self.close_request.reason,
                    runs=self.runs + 1,
                    revision=self.revision,
                    trailing_rule=self.trailing_rule,
                    trailing=self.trail,
                    measured_callback_pct=self.measured_callback,
                    measured_at=self.measured_at,
                ),
            )
        )

    def _result(self) -> CloseResult:
        return CloseResult(
            state=self.s.state,
            reason=self.s.close_reason,
            exit_price=self.s.avg_exit_price,
            realised_pnl=self.s.realised_pnl,
            fees=self.s.fees,
        )
