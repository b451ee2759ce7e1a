"""PositionWorkflow: one position's whole life as a durable Temporal workflow.

Entry → stop-loss for the filled quantity (saga: retry, close at market,
emergency stop, critical alert and retry forever) → watch (user-stream signals
and a periodic look as fallback) → close, with every remaining order cancelled.
A crash of any process resumes mid-step: every exchange call is an activity,
placements are idempotent by client order id, and every transition is an
idempotent store write.

Two rules hold by construction (docs/safety.md):
- no exception escapes workflow code: every activity outcome is a value the code
  handles, and a step that fails anyway is caught by the main loop, alerted and
  retried with backoff while the exchange's stop keeps protecting;
- the workflow ends only on a verified flat position with every order of its own
  final on the exchange (or by handing its whole state to the next run).

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
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from activities.exchange.activities import ExchangeActivities
    from domain.band import band_for
    from domain.client_ids import (
        OrderStep,
        belongs_to,
        client_order_id,
        kind_of_client_id,
        parse_client_id,
    )
    from domain.errors import ErrorType
    from domain.events import (
        CloseTriggered,
        CriticalError,
        EmergencyStop,
        EventType,
        OrderCancelFailed,
        OrderCancelled,
        OrderFailed,
        OrderFilled,
        OrderPlaced,
        OutsideFill,
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
    from domain.managed_position import ManagedPosition
    from domain.market import MarketFilters
    from domain.order_updates import needs_look
    from domain.orders import (
        Fill,
        OrderIntent,
        OrderKind,
        OrderRef,
        OrderStatus,
        OrderView,
        OutsideOrder,
        close_intent,
        entry_intent,
        stop_intent,
        take_profit_intent,
    )
    from domain.position import (
        CloseReason,
        PositionState,
        is_open_on_exchange,
        is_terminal,
    )
    from domain.position_messages import BAND_QUERY, EXCHANGE_UPDATE_SIGNAL, PRICE_UPDATE
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
    from domain.requests import (
        EntryWithStopRequest,
        EntryWithStopResult,
        ExchangePosition,
        SymbolRequest,
    )
    from domain.sizing import InvalidStop, NotSized, size_position, stop_level, take_profit_level
    from domain.trailing import TrailingRule, on_price, on_timer, with_params
    from domain.types import Severity, Side
    from workflows.position_io import (
        BandView,
        CloseRequest,
        CloseResult,
        ExchangeUpdate,
        PositionInput,
        PositionView,
        PriceTick,
    )
    from workflows.position_records import outside_order_record

from workflows.position_orders import CANCEL_FILL_BOOKED, ExchangeCallFailed, executed
from workflows.position_trailing import Trailing

_OPENING = frozenset(
    {PositionState.PENDING_ENTRY, PositionState.ENTRY_PLACED, PositionState.PENDING_SL}
)
# Patch id: a protection round reuses an unsure order's id only for an order of its kind.
STOP_ID_PER_KIND = "stop-id-per-kind"
# Patch id: an adopter, once its own stop protects the position, removes the stop a
# workflow that is gone left on the position (Bybit's, sent with that one's entry).
ADOPT_CLEARS_POSITION_STOP = "adopt-clears-position-stop"
# Patch id: a close outside posguard (liquidation, by hand) is read from the exchange's
# trade history and booked (exit price, PnL, fees, its orders and fills), instead of
# being booked as flat with no exit.
PATCH_BOOK_OUTSIDE_EXIT = "book-outside-exit"
# Patch id: an order of this position whose placement's outcome the workflow never
# learned (a stop or take-profit answered with a timeout, the stop an entry's activity
# placed before it died), found in the trade history of a position gone flat, is
# booked as the exit it was, no longer as a close outside posguard.
OWN_EXIT_BOOKED = "own-exit-booked"
OWN_EXIT_SLACK = timedelta(minutes=10)
OUTSIDE_EXIT_LOOKBACK = timedelta(days=6)
# Patch id: at its close a position books the funding received or paid while held.
PATCH_BOOK_FUNDING = "book-funding"
# Patch id: an emergency stop left from a bad round is cancelled at once once the
# real stop protects (a look right away), not at the next periodic look.
EMERGENCY_STOP_GOES_AT_ONCE = "emergency-stop-goes-at-once"
# Patch id: an entry of unknown outcome is looked up over the window by the sum of the
# waits between look-ups, not by `workflow.now()` differences across tasks. A harsh
# 1000-kill chaos run froze a position in nondeterminism there: the run had waited
# (a timer) where its replay found the window over (an activity), the two reading
# different workflow times for the task that began the look-ups.
ENTRY_LOOKUPS_COUNTED = "entry-lookups-counted"
# Patch id: a stop found filled when it was placed (Bybit: the stop-loss an entry came
# with fired before it was taken) is booked by a look right away, and no take-profit
# is placed on the flat position (before: a take-profit refused, an alert, a look later).
FIRED_STOP_BOOKED_AT_ONCE = "fired-stop-booked-at-once"
_STEP_OF_INTENT = {
    ProtectionStep.PLACE_STOP: OrderStep.STOP,
    ProtectionStep.PLACE_EMERGENCY_STOP: OrderStep.EMERGENCY_STOP,
}
# Before anything is placed, these answers mean the position cannot be opened.
_REFUSALS = frozenset(t for t in ErrorType if not t.retryable)
# Reads of the opening phase give up after this many failed rounds: a trader who
# asked for a position now does not want it opened an hour later.
_OPENING_READ_ROUNDS = 3
_GONE = (OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.REJECTED)
# The alert people are reminded of until the saga ends, and how each end reads.
UNPROTECTED = "position unprotected"
_PROTECTION_ENDS = {
    ActionKind.PROTECTED: "the stop is placed again",
    ActionKind.CLOSED: "the position was closed",
    ActionKind.EMERGENCY_PROTECTED: "the emergency stop is placed; the position needs a look",
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
    - it ends only when the exchange holds neither its position nor an open order
      of its own (verified), or by continuing as new with its whole state;
    - messages: `close` (update), `price` (update, from the price gate),
      `set_trailing` (update), `exchange_update` (signal), `state` and `band` (queries).
    """

    @workflow.init
    def __init__(self, inp: PositionInput) -> None:
        self.spec = inp.spec
        self.cfg = inp.config
        self.m = inp.carried or ManagedPosition.opening(
            adopt=inp.spec.adopt, trailing_rule=inp.spec.trailing
        )
        self.pending_move = None
        self.draining = False  # continue-as-new under way: ticks only observed
        # Client ids whose "open" / "cancelled" echo from the user stream needs no look.
        self.placing = set()
        self.cancelling = []
        # A stale exit order that executed and left nothing held: how the look ends it.
        self.stale_exit: CloseReason | None = None
        self.outbox = []
        self.order_rows = []
        self.fill_rows = []
        self.alerts = []
        self.writes = []
        self.flushed = None  # the state last written
        self.step_failures = 0
        self.last_mark = None
        self.entry_filled_at = None
        self.stop_found_filled = False

    # --- messages ------------------------------------------------------------------------

    @workflow.query
    def state(self) -> PositionView:
        """The whole state of the position."""
        return PositionView(
            workflow_id=self.workflow_id,
            position_id=self.position_id,
            spec=self.spec,
            snapshot=self.s,
            stale_orders=list(self.m.stale_orders),
            fills_due=list(self.m.fills_due),
            last_error=self.m.last_error,
            runs=self.m.runs,
            history_length=workflow.info().get_current_history_length(),
            trailing_rule=self.trailing_rule,
            trailing=self.trail,
            measured_callback_pct=self.measured_callback,
        )

    @workflow.query(name=BAND_QUERY)
    def band(self) -> BandView:
        """The price band the gate must watch for this position."""
        return self._band()

    @workflow.update(name=PRICE_UPDATE)
    async def price(self, tick: PriceTick) -> BandView:
        """A mark price outside the band: act on it, answer with the new band.

        The gate keeps at most one of these in flight per position and waits for
        the answer, so a stop move it causes is finished (new stop placed, old one
        cancelled) before the next price for this position can arrive.
        """
        self._snap(self.s.observe_price(tick.price))
        self.last_mark = (tick.price, tick.at)
        self._show_details()
        # Until the entry and its first stop are settled there is no band to give;
        # answering an empty one would leave the gate silent for this position.
        await workflow.wait_condition(lambda: self.s.state not in _OPENING)
        stop = self.s.stop_price
        if stop is not None and self.spec.side.sign * (tick.price - stop) <= 0:
            self.m = self.m.look_wanted()  # the exchange's stop should have fired: check
        if self._may_trail():
            await workflow.wait_condition(lambda: self.pending_move is None)
            if self._may_trail():
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
                try:
                    self._apply_trailing(on_price(trail, params, tick.price, workflow.now()))
                except Exception as exc:  # a bug must not fail the task: the stop stays
                    self._step_failed(exc, "trailing on a price")
                await workflow.wait_condition(lambda: self.pending_move is None)
        self._flush()
        return self._band()

    def _may_trail(self) -> bool:
        return self._trailing_live() and not self.draining and self.m.close_requested is None

    @workflow.update
    def set_trailing(self, rule: TrailingRule) -> TrailingRule | None:
        """Change the trailing settings at run time; returns the previous ones.

        The live stop never loosens: a looser setting only stops future moves.
        """
        old = self.trailing_rule
        self.m = self.m.with_trailing_rule(rule)
        if self.trail is not None:
            self.m = self.m.with_trailing(with_params(self.trail, self._trailing_params()))
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
        if is_terminal(self.s.state) or self.m.filters is None:
            raise ApplicationError(f"position is {self.s.state}", type="NotOpen")
        try:
            rule.params(self.m.filters.tick_size)
        except ValueError as exc:  # invalid for this symbol: refused, the workflow is untouched
            raise ApplicationError(str(exc), type="InvalidTrailing") from None

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

    @workflow.signal(name=EXCHANGE_UPDATE_SIGNAL)
    def exchange_update(self, update: ExchangeUpdate) -> None:
        """Something changed on the exchange: read the stop and the position again,
        unless the update only echoes this workflow's own placements and cancels."""
        expected_open = {r.client_order_id for r in self.s.exit_orders} | self.placing
        expected_cancelled = {*self.cancelling, *(r.client_order_id for r in self.m.stale_orders)}
        if needs_look(
            update.orders, expected_open=expected_open, expected_cancelled=expected_cancelled
        ):
            self.m = self.m.look_wanted()

    @workflow.update
    async def close(self, request: CloseRequest) -> CloseResult:
        """Close at market, cancel every remaining order, and return how it ended."""
        self.m = self.m.close_accepted(request.reason, request.requested_by)
        await workflow.wait_condition(lambda: is_terminal(self.s.state))
        return self._result()

    @close.validator
    def _validate_close(self, request: CloseRequest) -> None:
        if is_terminal(self.s.state):
            raise ApplicationError(f"position already {self.s.state}", type="AlreadyClosed")
        if self.m.close_requested is not None or self.s.state is PositionState.CLOSING:
            raise ApplicationError("position is already closing", type="AlreadyClosing")

    # --- main ----------------------------------------------------------------------------

    @workflow.run
    async def run(self, inp: PositionInput) -> CloseResult:
        """Drive the position to a terminal state; returns how it ended."""
        try:
            if inp.carried is None:
                self._started()
            else:
                self._set_search_state()
            while not is_terminal(self.s.state):
                await self._guarded(self._step)
        except asyncio.CancelledError:
            # `temporal workflow cancel` means "close this position": never leave
            # an exchange position or an order unmanaged.
            while not is_terminal(self.s.state):
                await self._guarded(self._wind_down)
            await self._drain_writes()
            raise
        await self._drain_writes()
        self.pending_move = None  # nothing moves any more: no price update may wait on it
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._result()

    async def _guarded(self, step: Any) -> None:
        """Run one step; a failure of ours becomes a critical alert and a later retry.

        Every exchange outcome is handled where it happens; this is the net under
        that: a bug or an answer nobody foresaw must not fail the workflow task on
        every replay (a frozen position). The stop on the exchange keeps protecting
        while the step is retried with backoff.
        """
        try:
            await step()
            self.step_failures = 0
        except (asyncio.CancelledError, workflow.NondeterminismError):
            raise
        except Exception as exc:  # the net: every failure becomes an alert
            self.step_failures += 1
            self._step_failed(exc, self.s.state.value)
            await self._sleep(self._backoff(self.step_failures), "retry the failed step")

    def _step_failed(self, exc: Exception, where: str) -> None:
        """Record and alert a failure of the workflow's own code (critical)."""
        self.m = self.m.error_noted(f"{type(exc).__name__}: {exc}")
        self._alert(
            Severity.CRITICAL,
            "position cannot make progress",
            f"{self.spec.symbol} ({where}): {type(exc).__name__}: {exc}; "
            "its stop stays on the exchange; retrying",
        )

    def _started(self) -> None:
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

    async def _step(self) -> None:
        """One round of the lifecycle, chosen by state."""
        state = self.s.state
        if self.m.filters is None:
            await self._load_filters()
        elif self.spec.adopt and self.s.opened_at is None:
            await self._adopt()
        elif state is PositionState.PENDING_ENTRY and self._close_before_entry():
            self._roll_back(CloseReason.OPERATOR, "closed before the entry was placed")
        elif state is PositionState.PENDING_SL:
            await self._protect()
        elif state is PositionState.CLOSING:
            await self._close(self.s.close_reason or CloseReason.OPERATOR)
        elif state in (PositionState.ACTIVE, PositionState.FAILED):
            await self._watch()
        else:  # pending_entry / entry_placed (also after a crash mid-entry)
            await self._enter()

    def _close_before_entry(self) -> bool:
        return self.m.close_requested is not None and self.s.entry_order is None

    async def _wind_down(self) -> None:
        """After a cancellation: close whatever the exchange holds for us, then end."""
        state = self.s.state
        if self.spec.adopt and self.s.opened_at is None:
            self._roll_back(CloseReason.OPERATOR, "cancelled before adoption")
            return
        if state is PositionState.PENDING_ENTRY and self.s.entry_order is None:
            self._roll_back(CloseReason.OPERATOR, "cancelled before the entry was placed")
            return
        ref = self.s.entry_order
        if state is PositionState.PENDING_ENTRY and ref is not None:
            # The entry may have been accepted just before the cancel: the truth decides.
            intent = entry_intent(ref.client_order_id, self.spec.symbol, self.spec.side, ref.qty)
            view = await self._resolve_unknown_entry(intent)
            view = await self._settle_entry(intent, view)
            if view is None:
                return  # rolled back, or adopted from the exchange's position
            await self._book_entry(intent, view)
        if self.s.state is PositionState.ENTRY_PLACED:
            self._transition(PositionState.PENDING_SL)
        if is_open_on_exchange(self.s.state) and self.s.qty > 0:
            await self._close(CloseReason.OPERATOR, requested_by="workflow cancellation")
        elif not is_terminal(self.s.state):
            self._roll_back(CloseReason.OPERATOR, "cancelled")

    def _roll_back(self, reason: CloseReason, why: str, error: str = "Cancelled") -> None:
        """End a position that never held anything on the exchange."""
        self.m = self.m.error_noted(f"{error}: {why}")
        self._emit(
            EventType.ENTRY_ORDER_FAILED,
            OrderFailed(
                client_order_id=None
                if self.s.entry_order is None
                else self.s.entry_order.client_order_id,
                error_type=error,
                message=why,
            ),
        )
        self._transition(PositionState.ROLLED_BACK, reason)

    async def _load_filters(self) -> None:
        """The symbol's trading filters; a refusal before the entry rolls the position back."""
        request = SymbolRequest(account=self.spec.account, symbol=self.spec.symbol)
        try:
            filters = cast(
                MarketFilters,
                await self._read(
                    ExchangeActivities.filters,
                    request,
                    summary=f"filters {self.spec.symbol}",
                    give_up_on=() if self.spec.adopt else _REFUSALS,
                    rounds=None if self.spec.adopt else _OPENING_READ_ROUNDS,
                ),
            )
        except ExchangeCallFailed as exc:
            self._refused(exc)
            return
        self.m = self.m.with_filters(filters)

    def _refused(self, exc: ExchangeCallFailed) -> None:
        """The exchange refused to open the position before any order existed."""
        self._alert(
            Severity.WARNING,
            "position not opened",
            f"{self.spec.symbol}: {exc.error.value}: {str(exc)[:300]}",
        )
        self._roll_back(CloseReason.REJECTED, str(exc)[:500], exc.error.value)

    # --- entry ---------------------------------------------------------------------------

    async def _enter(self) -> None:
        spec, filters = self.spec, self._filters()
        assert spec.sizing is not None
        if self.s.entry_order is None:
            try:
                mark = cast(
                    Decimal,
                    await self._read(
                        ExchangeActivities.mark_price,
                        SymbolRequest(account=spec.account, symbol=spec.symbol),
                        summary=f"mark {spec.symbol}",
                        give_up_on=_REFUSALS,
                        rounds=_OPENING_READ_ROUNDS,
                    ),
                )
            except ExchangeCallFailed as exc:
                return self._refused(exc)
            try:
                stop_preview = stop_level(spec.side, mark, spec.stop, filters)
            except InvalidStop as exc:
                return self._roll_back_unsized(str(exc))
            sized = size_position(spec.sizing, mark, stop_preview, filters)
            if isinstance(sized, NotSized):
                return self._roll_back_unsized(f"cannot size: {sized.reason}")
            cid = self._new_cid(OrderStep.ENTRY)
            self._new_cid(OrderStep.STOP)  # the entry's stop takes the next sequence
            self._snap(self.s.with_entry_order(OrderRef(client_order_id=cid, qty=sized.qty)))
        ref = self.s.entry_order
        assert ref is not None
        intent = entry_intent(ref.client_order_id, spec.symbol, spec.side, ref.qty)
        stop_cid = self._entry_stop_cid(ref)
        # After a crash the placement may already have happened: look it up first.
        resumed = self.s.state is not PositionState.PENDING_ENTRY or bool(ref.exchange_order_id)
        view: OrderView | None = None
        error: ErrorType | None = None
        refusal = "entry refused"
        placed: EntryWithStopResult | None = None
        try:
            placed = cast(
                EntryWithStopResult,
                await self._call(
                    ExchangeActivities.place_entry_with_stop,
                    EntryWithStopRequest(
                        account=spec.account,
                        entry=intent,
                        stop_client_order_id=stop_cid,
                        stop=spec.stop,
                        filters=filters,
                        look_up_first=resumed,
                        position_id=self.position_id,
                        hedge_mode=spec.hedge_mode,
                        stop_retry_for_s=self.cfg.entry_stop_retry.total_seconds(),
                    ),
                    summary=f"entry {intent.side.value} {intent.qty} {intent.symbol} + stop",
                    heartbeat_timeout=self.cfg.entry_heartbeat_timeout,
                    timeout=self.cfg.entry_call_timeout,
                    cancellation=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
                ),
            )
            view = placed.entry
        except ExchangeCallFailed as exc:
            error = exc.error
            refusal = f"entry refused: {exc}"[:500]
        if view is None and (error is None or error.retryable):
            view = await self._resolve_unknown_entry(intent)  # ambiguous: the truth decides
        elif view is None:
            self._emit(
                EventType.ENTRY_ORDER_FAILED,
                OrderFailed(
                    client_order_id=intent.client_order_id,
                    error_type=(error or ErrorType.EXCHANGE_ERROR).value,
                    message=refusal,
                ),
            )
            self._record_order(intent, None, status=OrderStatus.REJECTED)
            self._transition(PositionState.ROLLED_BACK, CloseReason.ENTRY_NOT_FILLED)
            return
        view = await self._settle_entry(intent, view)
        if view is None:
            return
        await self._book_entry(intent, view)
        self._transition(PositionState.PENDING_SL)
        await self._protect(*self._entry_stop_outcome(placed, stop_cid))
        await self._book_entry_fees(intent.client_order_id)

    def _entry_stop_cid(self, ref: OrderRef) -> str:
        parsed = parse_client_id(ref.client_order_id)
        assert parsed is not None
        return client_order_id(self.workflow_id, self.chain, OrderStep.STOP, parsed.seq + 1)

    async def _resolve_unknown_entry(self, intent: OrderIntent) -> OrderView | None:
        """An entry whose placement outcome is unknown: ask the exchange until sure.

        An accepted order can show up late, so it is looked up over a window before
        it is judged absent (`ambiguous_entry_window` of waits between look-ups, the
        look-ups' own time on top); judged absent, a position that exists anyway on
        our side is taken as ours and protected (never left without a stop).
        """
        counted = workflow.patched(ENTRY_LOOKUPS_COUNTED)
        loop_start = workflow.now()
        delay, waited = timedelta(milliseconds=250), timedelta(0)
        while True:
            view = await self._find(intent)
            if view is not None:
                return view
            if counted:
                if waited >= self.cfg.ambiguous_entry_window:
                    return None
            elif workflow.now() - loop_start >= self.cfg.ambiguous_entry_window:
                return None  # histories from before the patch
            await self._sleep(delay, "look the entry up again")
            waited += delay
            delay = min(delay * 2, timedelta(seconds=4))

    async def _settle_entry(self, intent: OrderIntent, view: OrderView | None) -> OrderView | None:
        """The entry as it finally stands: filled (returned), or rolled back (None).

        An entry still resting after a few seconds is cancelled, and what it filled
        until the cancel is kept. Nothing found and nothing filled: the position is
        checked before rolling back, so a live position is never abandoned.
        """
        if view is not None and not view.is_final and view.filled_qty == 0:
            view = await self._await_entry_fill(intent, view)
        if view is not None and not view.is_final:
            ref = OrderRef(
                client_order_id=intent.client_order_id,
                exchange_order_id=view.exchange_order_id,
                qty=intent.qty,
            )
            done, final = await self._cancel(ref)
            if not done:
                return None  # kept as stale; the next step resolves it again
            view = final if final is not None else await self._find(intent)
        if view is not None and view.filled_qty > 0:
            return view
        pos = await self._position()
        if not pos.is_flat and pos.side is self.spec.side and pos.entry_price is not None:
            await self._adopt_unknown_entry(intent, pos)
            return None
        self._emit(
            EventType.ENTRY_ORDER_FAILED,
            OrderFailed(
                client_order_id=intent.client_order_id,
                error_type=ErrorType.EXCHANGE_ERROR.value,
                message="entry not filled",
            ),
        )
        self._record_order(intent, view, status=None if view else OrderStatus.REJECTED)
        self._transition(PositionState.ROLLED_BACK, CloseReason.ENTRY_NOT_FILLED)
        return None

    async def _adopt_unknown_entry(self, intent: OrderIntent, pos: ExchangePosition) -> None:
        """Our entry cannot be found but our side holds a position: protect it as ours."""
        assert pos.entry_price is not None
        self._alert(
            Severity.ERROR,
            "entry not found, position present",
            f"{self.spec.symbol}: {intent.client_order_id} not found but the exchange holds "
            f"{pos.side} {pos.qty}; protecting it as this position",
        )
        self._record_order(intent, None, status=OrderStatus.UNKNOWN)
        self._transition(PositionState.ENTRY_PLACED)
        self._snap(self.s.adopt(pos.qty, pos.entry_price, workflow.now()))
        self._transition(PositionState.PENDING_SL)

    async def _book_entry(self, intent: OrderIntent, view: OrderView) -> None:
        """Book the entry's fill (qty and average price) and record it."""
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
        ref = self.s.entry_order
        assert ref is not None
        self._snap(self.s.with_entry_order(ref.with_exchange_id(view.exchange_order_id)))
        self.entry_filled_at = view.updated_at
        entry_fill = await self._aggregate_fill(intent, view)
        self._snap(self.s.apply_entry_fills([entry_fill], workflow.now()))
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

    def _entry_stop_outcome(
        self, placed: EntryWithStopResult | None, cid: str
    ) -> tuple[ProtectionAttempt | None, str | None]:
        """What the combined entry activity did with the stop, as the saga's first attempt.

        When its outcome is unknown (the activity failed after the entry filled), the
        stop may be on the exchange: the saga's first placement reuses its client id
        and looks it up first, so a second stop is never placed beside it.
        """
        if placed is None:
            return None, cid
        if placed.stop is None and placed.stop_error is None:
            return None, None  # the entry filled later: the saga places the stop
        if placed.stop_error == ErrorType.CLIENT_ID_REUSED.value:
            # The stop's id names an order of a lost workflow task: that one goes,
            # and the saga places the stop under a fresh id.
            conflict = placed.stop_conflict
            if conflict is not None:
                self.m = self.m.stale_added(
                    OrderRef(
                        client_order_id=conflict.client_order_id,
                        qty=conflict.quantity,
                        trigger_price=conflict.trigger_price,
                    )
                )
            return None, None
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

    async def _aggregate_fill(self, intent: OrderIntent, view: OrderView) -> Fill:
        """One fill for the whole order: its quantity at its average price.

        An exchange that reports a fill without an average price is asked for the
        executions instead (read until known), never guessed.
        """
        price = view.average_price
        qty = view.filled_qty
        attempt = 0
        while price is None:
            fills = await self._fills_until_known(intent.client_order_id)
            total = sum((f.qty for f in fills), Decimal(0))
            if total > 0:
                price = sum((f.qty * f.price for f in fills), Decimal(0)) / total
                qty = max(qty, total)
                break
            attempt += 1
            self._cannot_progress(
                f"average price of {intent.client_order_id}",
                ErrorType.EXCHANGE_ERROR,
                "filled order without an average price or executions",
                attempt,
            )
            await self._sleep(self._backoff(attempt), "read the fill again")
            found = await self._find(intent)
            if found is not None and found.average_price is not None:
                price, qty = found.average_price, found.filled_qty
        return Fill(trade_id=f"order:{view.exchange_order_id}", qty=qty, price=price)

    async def _book_entry_fees(self, client_order_id: str) -> None:
        """The entry's executions (fees, fills table); unknown ones are read again later."""
        fills = await self._fills(client_order_id)
        if fills is None:
            self.m = self.m.fills_unknown(client_order_id)
            return
        self._record_fills(client_order_id, fills)
        self._snap(self.s.book_fees(fills))
        self.m = self.m.fills_known(client_order_id)

    async def _settle_fills_due(self, *, until_known: bool) -> None:
        """Read the executions that could not be read before (fees and fills rows)."""
        for cid in self.m.fills_due:
            if until_known:
                fills: list[Fill] | None = await self._fills_until_known(cid)
            else:
                fills = await self._fills(cid)
            if fills is None:
                continue
            self._record_fills(cid, fills)
            self._snap(self.s.book_fees(fills))
            self.m = self.m.fills_known(cid)

    async def _await_entry_fill(self, intent: OrderIntent, view: OrderView) -> OrderView | None:
        # A market order can be reported NEW before it fills (seen on Binance).
        current: OrderView | None = view
        for delay_ms in (100, 300, 1000, 3000):
            await self._sleep(timedelta(milliseconds=delay_ms), "wait for the entry to fill")
            current = await self._find(intent)
            if current is None or current.is_final or current.filled_qty > 0:
                return current
        return current

    def _roll_back_unsized(self, why: str) -> None:
        self.m = self.m.error_noted(f"Unsizable: {why}")
        self._emit(
            EventType.ENTRY_ORDER_FAILED,
            OrderFailed(client_order_id=None, error_type="Unsizable", message=why),
        )
        self._transition(PositionState.ROLLED_BACK, CloseReason.UNSIZABLE)

    async def _adopt(self) -> None:
        pos = await self._position()
        if pos.is_flat or pos.side is not self.spec.side:
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
        if pos.entry_price is None:
            # Ours, but the exchange does not report its entry price yet: read it
            # again; a position the exchange holds is never let go.
            await self._sleep(self.cfg.retry_delay, "read the position to adopt again")
            return
        self._snap(self.s.adopt(pos.qty, pos.entry_price, workflow.now()))
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
        own = self.s.stop
        if (
            self.s.state is PositionState.ACTIVE
            and own is not None
            and not own.position_stop
            and self._filters().entry_carries_stop
            and workflow.patched(ADOPT_CLEARS_POSITION_STOP)
        ):
            await self._clear_earlier_position_stop()

    async def _clear_earlier_position_stop(self) -> None:
        """New before old, as a trailing move: this position's own stop is live, so the
        stop-loss an earlier workflow left on the position (its entry's, no client id
        of ours) goes, and the position keeps one stop. If it cannot go, it stays:
        two stops protect as well as one, and the failure is recorded."""
        request = SymbolRequest(
            account=self.spec.account, symbol=self.spec.symbol, side=self.spec.side
        )
        try:
            cleared = cast(
                OrderView | None,
                await self._call(
                    ExchangeActivities.clear_position_stop,
                    request,
                    summary=f"remove the earlier position stop of {self.spec.symbol}",
                ),
            )
        except ExchangeCallFailed as exc:
            self._emit(
                EventType.ORDER_CANCEL_FAILED,
                OrderCancelFailed(
                    client_order_id=None,
                    exchange_order_id=None,
                    error_type=exc.error.value,
                    message=f"the earlier position stop stays beside this one's: {exc}"[:500],
                ),
            )
            return
        if cleared is not None:
            self._emit(
                EventType.ORDER_CANCELLED,
                OrderCancelled(
                    client_order_id=None,
                    exchange_order_id=cleared.exchange_order_id,
                    reason="adopted: the position's earlier stop-loss, replaced by its own",
                ),
            )

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
        unprotected = False  # alerted: people are told when it ends
        while True:
            if action.alert is Severity.CRITICAL:
                unprotected = True
                self._alert(
                    Severity.CRITICAL,
                    UNPROTECTED,
                    f"{self.spec.symbol}: stop, close and emergency stop all failed; retrying",
                    resolvable=True,
                )
            if action.delay:
                await self._sleep(action.delay)
            if action.kind in _PROTECTION_ENDS and unprotected:
                if workflow.patched("alert-resolution"):
                    self._resolve_alert(UNPROTECTED, _PROTECTION_ENDS[action.kind])
            if action.kind is ActionKind.PROTECTED:
                self._became_protected()
                if self.stop_found_filled and workflow.patched(FIRED_STOP_BOOKED_AT_ONCE):
                    self.m = self.m.look_wanted()  # it closed the position: book it now
                    return
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

    @staticmethod
    def _reusable(cid: str, step: ProtectionStep) -> bool:
        """Whether an unsure order's id may be reused by this step: only an order of
        the same kind (a stop for a stop). Runs recorded before this rule reused it
        whatever the kind (the journal then refused it and `_place` took a fresh id)."""
        parsed = parse_client_id(cid)
        if parsed is None or parsed.step is _STEP_OF_INTENT[step]:
            return True
        return not workflow.patched(STOP_ID_PER_KIND)

    def _note_stop_attempt(self, step: ProtectionStep, error: ErrorType | None) -> None:
        if error is ErrorType.ORDER_IMMEDIATELY_FILLABLE and step is ProtectionStep.PLACE_STOP:
            # The mark is already beyond the stop: the trader's loss limit is hit.
            self._snap(self.s.with_close_reason(CloseReason.STOP_BEYOND_MARK))
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
        except InvalidStop as exc:
            self._emit_stop_failure(emergency, None, ErrorType.INVALID_ORDER, str(exc))
            return ErrorType.INVALID_ORDER, None
        if reused_cid is not None and not self._reusable(reused_cid, step):
            # The unsure order was of the other kind (a stop, now an emergency stop):
            # the journal would refuse its id for this one. It is ours if it exists,
            # so the next look cancels it, as any unknown order of ours.
            self.m = self.m.stale_added(OrderRef(client_order_id=reused_cid, qty=self.s.qty))
            self.m = self.m.look_wanted()
            reused_cid = None
        cid = reused_cid or self._new_cid(_STEP_OF_INTENT[step])
        intent = stop_intent(
            cid, self.spec.symbol, self.spec.side, self.s.qty, price, emergency=emergency
        )
        self._emit(
            EventType.SL_PLACEMENT_STARTED,
            StopPlacementStarted(client_order_id=cid, stop_price=price, quantity=self.s.qty),
        )
        # An unsure stop on a venue whose entries carry theirs may be the position's
        # own stop-loss (an entry whose answer was lost came with it): taken, not doubled,
        # even when it has fired already (then it closed the position).
        take = reused_cid is not None and not emergency and self._filters().entry_carries_stop
        placed = await self._place(
            intent,
            look_up_first=reused_cid is not None,
            take_position_stop=take,
            position_stop_fired_since=self.entry_filled_at if take else None,
        )
        intent, view, error = placed.intent, placed.view, placed.error
        cid = intent.client_order_id
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
        self.stop_found_filled = executed(view)
        ref, placed = self._resting(intent, view)
        self._record_order(intent, view)
        if intent.kind is OrderKind.EMERGENCY_STOP:
            self._snap(self.s.with_emergency_stop(ref))
            self._emit(
                EventType.EMERGENCY_STOP_PLACED,
                EmergencyStop(
                    client_order_id=ref.client_order_id,
                    stop_price=placed.trigger_price or Decimal(0),
                    quantity=intent.qty,
                ),
            )
            return
        self._snap(self.s.with_stop(ref, workflow.now()))
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
        """Rest a reduce-only take-profit if the spec asks for one (never blocks the stop).

        A transient failure is retried at the next look under the same client id,
        looked up first; a refusal (e.g. a level on the wrong side) is alerted once.
        """
        rule, entry = self.spec.take_profit, self.s.avg_entry_price
        if rule is None or self.s.take_profit is not None or entry is None:
            return
        retry = self.m.take_profit_retry
        self.m = self.m.take_profit_pending(None)
        try:
            price = take_profit_level(self.spec.side, entry, rule, self._filters())
        except InvalidStop as exc:
            self._alert(Severity.WARNING, "take-profit not placed", str(exc))
            return
        cid = retry or self._new_cid(OrderStep.TAKE_PROFIT)
        intent = take_profit_intent(cid, self.spec.symbol, self.spec.side, self.s.qty, price)
        placement = await self._place(intent, look_up_first=retry is not None)
        intent, view, error = placement.intent, placement.view, placement.error
        self._record_order(intent, view)
        if view is None:
            retryable = error is not None and error.retryable
            self._alert(
                Severity.WARNING,
                "take-profit not placed",
                f"{error}" + ("; retried at the next look" if retryable else ""),
            )
            if retryable:  # it may exist after all: the retry looks it up first
                self.m = self.m.take_profit_pending(intent.client_order_id).look_wanted()
            return
        ref, placed = self._resting(intent, view)
        self._snap(self.s.with_take_profit(ref))
        self._emit(EventType.TAKE_PROFIT_PLACED, placed, order_id=intent.client_order_id)

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
        # A real stop now protects: an emergency stop left from a bad round goes. Left
        # until the periodic look, it would close the position at its wider level if
        # the real stop were cancelled by hand, and it holds margin meanwhile.
        if self.s.emergency_stop is not None:
            self.m = self.m.stale_added(self.s.emergency_stop)
            self._snap(self.s.with_emergency_stop(None))
            if workflow.patched(EMERGENCY_STOP_GOES_AT_ONCE):
                self.m = self.m.look_wanted()

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
        due_at = min(deadlines)
        timeout = max(due_at - now, timedelta(milliseconds=1))
        self._flush()
        try:
            await workflow.wait_condition(
                lambda: (
                    self.m.close_requested is not None
                    or self.m.look_requested
                    or self.pending_move is not None
                    or self._should_continue_as_new()
                    or self._volatility_unmeasured()
                ),
                timeout=timeout,
                timeout_summary="next look at stop and position",
            )
            now = workflow.now()
        except TimeoutError:
            # The timer's firing (an event in the history) says the deadline is
            # reached, whatever time this activation reads: a query that runs the
            # firing before its workflow task reads the last task's time, and a
            # decision taken on that time would differ from every replay's.
            now = max(workflow.now(), due_at)
        closing = self.m.close_requested is not None
        if self.pending_move is not None and not closing:
            await self._move_stop()
            return
        measure_due = self._volatility_due()
        if measure_due is not None and now >= measure_due and not closing:
            await self._measure_volatility()
            if self.pending_move is not None and self.m.close_requested is None:
                await self._move_stop()
            return
        trail_due = self._trailing_timer()
        if trail_due is not None and now >= trail_due and not closing:
            assert self.trail is not None
            self._apply_trailing(on_timer(self.trail, self._trailing_params(), now))
            if self.pending_move is not None:
                await self._move_stop()
            return
        nothing_due = due_at > now and not (
            closing or self.m.look_requested or self._should_continue_as_new()
        )
        if nothing_due:
            return
        if self.m.close_requested is not None:
            # The close cancels every stop: a move still pending is dropped, which
            # also releases the price update waiting for it.
            self.pending_move = None
            await self._close(self.m.close_requested, requested_by=self.m.close_requested_by)
            return
        if self._aged_out(now):
            await self._close(CloseReason.MAX_AGE)
            return
        self.m = self.m.look_taken()
        await self._look()
        if self.s.state is PositionState.FAILED:
            await self._protect()  # keep trying to get the real stop back on
        if not is_terminal(self.s.state) and self._should_continue_as_new():
            await self._continue_as_new()

    def _aged_out(self, now: datetime) -> bool:
        if self.spec.max_age is None or self.s.opened_at is None:
            return False
        return now >= self.s.opened_at + self.spec.max_age

    async def _look(self) -> None:
        """Read the exchange position, then our exit orders; react per `domain.protection`.

        The position is read first on purpose: a stop that fills after that read is
        then seen as filled. Read the other way round, a fill between the two reads
        would look like a resting stop on a flat position: an "external" close.
        Orders of ours the workflow does not know (placed in a workflow task that
        was lost) are cancelled; executions not yet read are read.
        """
        await self._cancel_stale()
        if await self._ended_by_stale_exit():
            return
        await self._cancel_unknown_own_orders()
        if await self._ended_by_stale_exit():
            return
        await self._settle_fills_due(until_known=False)
        pos = await self._position()
        for ref in self.s.exit_orders:
            view = await self._find(self._intent_of(ref))
            if view is not None and view.status is OrderStatus.FILLED:
                await self._exit_order_filled(ref)
                return
            if view is not None and view.status not in _GONE:
                continue
            if ref is self.s.stop:
                if not pos.is_flat:
                    self._emit(
                        EventType.STOP_MISSING_DETECTED,
                        StopMissing(
                            expected_client_order_id=ref.client_order_id, quantity=self.s.qty
                        ),
                    )
                    self._snap(self.s.with_stop(None, workflow.now()))
                    self._transition(PositionState.PENDING_SL)
                    return
            else:
                self._snap(self.s.exit_order_gone(ref.client_order_id))
        reaction = on_position_observed(self.s.state, self.spec.side, self.s.qty, pos.side, pos.qty)
        if reaction.kind is ReactionKind.RECORD_CLOSE:
            await self._record_external_close(reaction.close_reason or CloseReason.EXTERNAL)
        elif reaction.kind is ReactionKind.RESIZE_STOP and reaction.qty is not None:
            self._emit(
                EventType.QUANTITY_MISMATCH,
                QuantityMismatch(expected=self.s.qty, on_exchange=reaction.qty),
            )
            self._snap(self.s.with_exchange_qty(reaction.qty, workflow.now()))
            await self._replace_stop_for_qty()
        elif reaction.kind is ReactionKind.INTERVENTION:
            self._alert(
                Severity.CRITICAL,
                "position needs intervention",
                f"exchange shows {pos.side} {pos.qty}",
            )
        if self.s.state is PositionState.ACTIVE and self.m.take_profit_retry is not None:
            await self._place_take_profit()

    async def _ended_by_stale_exit(self) -> bool:
        """An order of ours that filled on its way to a cancel closed the position:
        end it as that order's close (True), not as a close outside posguard."""
        if self.stale_exit is None:
            return False
        reason, self.stale_exit = self.stale_exit, None
        open_ = self.s.state in (PositionState.ACTIVE, PositionState.PENDING_SL)
        if open_ and (await self._position()).is_flat:
            await self._finish_close(reason)
            return True
        return False

    async def _cancel_unknown_own_orders(self) -> None:
        """Cancel open orders of this position that the workflow does not know of."""
        known = {r.client_order_id for r in self.s.exit_orders}
        for view in await self._own_open_orders():
            cid = view.client_order_id
            if cid is None or cid in known:
                continue
            ref = OrderRef(
                client_order_id=cid,
                exchange_order_id=view.exchange_order_id,
                qty=view.qty if view.qty and view.qty > 0 else Decimal(1),
                trigger_price=view.trigger_price,
            )
            self._emit(
                EventType.CRITICAL_ERROR,
                CriticalError(
                    error_type="UnknownOwnOrder",
                    message=f"{cid} is open on the exchange but not in the workflow's "
                    "state (placed in a lost workflow task); cancelling it",
                ),
                severity=Severity.WARNING,
            )
            self.m = self.m.stale_added(ref)
            await self._cancel_booked(ref)

    async def _exit_order_filled(self, ref: OrderRef) -> None:
        """Our stop, emergency stop or take-profit filled: book it; close or re-protect."""
        intent = self._intent_of(ref)
        emergency = intent.kind is OrderKind.EMERGENCY_STOP
        take_profit = intent.kind is OrderKind.TAKE_PROFIT
        fills = await self._fills_until_known(ref.client_order_id)
        self._record_executed_order(intent, ref.exchange_order_id, fills)
        self._record_fills(intent.client_order_id, fills)
        filled = sum((f.qty for f in fills), Decimal(0))
        reaction = on_stop_filled(self.s.state, self.s.qty, filled, emergency=emergency)
        if reaction.kind is ReactionKind.VERIFY_POSITION:
            pos = await self._position()
            filled = self.s.qty - pos.qty
        if fills:
            self._book_exit(fills)
        else:
            self._snap(self.s.with_exchange_qty(self.s.qty - filled, workflow.now()))
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
        self._snap(self.s.exit_order_gone(ref.client_order_id))
        if self.s.qty > 0:
            if not take_profit and self.s.state is not PositionState.CLOSING:
                self._transition(PositionState.PENDING_SL)  # the rest needs a stop of its own
            return
        if take_profit:
            reason = CloseReason.TAKE_PROFIT
        else:
            reason = CloseReason.EMERGENCY_STOP_FILLED if emergency else CloseReason.STOP_FILLED
        await self._finish_close(reason)

    async def _stale_executed(self, ref: OrderRef, view: OrderView) -> None:
        """An order of ours executed before its cancel reached it (its placement's
        outcome was unknown, its cancel failed, or it filled on the way): an exit of
        this position, booked as the fill it was (its row, fills, fees and PnL, the
        event naming it). If nothing is held any more, the next step of the look ends
        the position with its reason. An entry is not an exit: the entry's own step
        books it."""
        by_id = workflow.patched(CANCEL_FILL_BOOKED)
        kind = kind_of_client_id(ref.client_order_id) if by_id else None
        if kind is OrderKind.ENTRY:
            return
        intent = self._intent_of_ref(ref)
        fills = await self._fills_until_known(ref.client_order_id)
        if intent is not None:
            self._record_order(intent, view, status=OrderStatus.FILLED)
        self._record_fills(ref.client_order_id, fills)
        if fills:
            self._book_exit(fills)
        kind = kind or (intent.kind if intent is not None else OrderKind.STOP)
        self._emit(
            {
                OrderKind.TAKE_PROFIT: EventType.TAKE_PROFIT_FILLED,
                OrderKind.CLOSE: EventType.CLOSE_ORDER_FILLED,
            }.get(kind, EventType.STOP_TRIGGERED),
            OrderFilled(
                client_order_id=ref.client_order_id,
                exchange_order_id=view.exchange_order_id or ref.exchange_order_id,
                filled_quantity=sum((f.qty for f in fills), Decimal(0)),
                average_price=self.s.avg_exit_price or ref.trigger_price or Decimal(0),
                fee=sum((f.fee for f in fills), Decimal(0)),
            ),
            order_id=ref.client_order_id,
        )
        if self.s.qty == 0 and self.s.exited_qty > 0:
            if by_id:
                self.m = self.m.look_wanted()  # end it at once, not at the next look
            self.stale_exit = {
                OrderKind.TAKE_PROFIT: CloseReason.TAKE_PROFIT,
                OrderKind.EMERGENCY_STOP: CloseReason.EMERGENCY_STOP_FILLED,
                OrderKind.CLOSE: self.s.close_reason or CloseReason.OPERATOR,
            }.get(kind, CloseReason.STOP_FILLED)

    def _book_exit(self, fills: list[Fill]) -> None:
        """Book exit executions; more than we thought we held means our qty was stale."""
        total = sum((f.qty for f in fills), Decimal(0))
        fresh = [f for f in fills if f.trade_id not in self.s.fill_ids]
        fresh_total = sum((f.qty for f in fresh), Decimal(0))
        if fresh_total > self.s.qty:
            self._emit(
                EventType.QUANTITY_MISMATCH,
                QuantityMismatch(expected=self.s.qty, on_exchange=total),
            )
            self._snap(self.s.with_exchange_qty(fresh_total, workflow.now()))
        self._snap(self.s.apply_exit_fills(self.spec.side, fills, workflow.now()))

    async def _record_external_close(self, reason: CloseReason) -> None:
        """The position went flat without one of our exit orders: find what closed
        it (the exchange's liquidation, or an order placed by hand), book its
        executions (exit price, PnL, fees, rows of their own), then finish the close
        (cancel our orders, settle)."""
        if workflow.patched(PATCH_BOOK_OUTSIDE_EXIT):
            reason = await self._book_outside_exit(reason)
        self._emit(
            EventType.CLOSE_TRIGGERED, CloseTriggered(reason=reason.value, requested_by="exchange")
        )
        await self._finish_close(reason)

    async def _book_outside_exit(self, reason: CloseReason) -> CloseReason:
        """Book what closed the position outside posguard; the close's reason
        (LIQUIDATION when the exchange liquidated it)."""
        if self.s.avg_entry_price is None:  # nothing entered: nothing to book against
            return reason
        # Binance answers at most 7 days of trades from a start time: what closed the
        # position happened since it was last seen held, minutes ago, not days.
        since = max(
            self.s.opened_at or workflow.info().start_time,
            workflow.now() - OUTSIDE_EXIT_LOOKBACK,
        )
        lookback = since
        if workflow.patched(OWN_EXIT_BOOKED):
            # `since` is when the workflow learned of the fill; an order of its own may
            # have traded before that (the entry's stop, filled while the entry's
            # activity still ran). Its own ids make an earlier trade safe to take.
            lookback = since - OWN_EXIT_SLACK
        outside = await self._outside_exit(lookback)
        if outside is not None and lookback < since:
            for order in outside.own:
                await self._own_exit_found(order)
            if self.stale_exit is not None:  # one of them closed it
                reason = self.stale_exit
            outside = outside.since(since)  # other orders: only this position's time
        if outside is None:
            self._alert(
                Severity.ERROR,
                "close not booked",
                f"{self.spec.symbol}: the position closed outside posguard and the exchange "
                "did not tell by what; its exit price and PnL are left out",
            )
            return reason
        for order in outside.orders:
            fills = [f for f in order.fills if f.trade_id not in self.s.fill_ids]
            if not fills:
                continue
            self.order_rows.append(
                outside_order_record(self.position_id, self.spec, order, self.s.event_seq)
            )
            self._record_fills(order.record_id, fills)
            kind = EventType.OUTSIDE_CLOSE_FILLED
            if order.liquidation:
                kind = EventType.POSITION_LIQUIDATED
            for fill in fills:
                self._emit(
                    kind,
                    OutsideFill(
                        exchange_order_id=order.exchange_order_id,
                        client_order_id=order.client_order_id,
                        trade_id=fill.trade_id,
                        price=fill.price,
                        quantity=fill.qty,
                        fee=fill.fee,
                    ),
                )
            self._book_exit(fills)
        if outside.liquidation:
            self._alert(
                Severity.CRITICAL,
                "position liquidated",
                f"{self.spec.symbol}: the exchange liquidated the {self.spec.side.value} "
                f"position; realised pnl {self.s.realised_pnl}, fees {self.s.fees}",
            )
            return CloseReason.LIQUIDATION
        return reason

    async def _own_exit_found(self, order: OutsideOrder) -> None:
        """An order of this position that traded on the exit side and is not booked:
        its placement's outcome was never learned (found in the trade history when the
        position went flat). Booked as the exit its client id says it was, its fills
        read back by that id; a stop the workflow never knew placed is recorded placed
        first. Orders of other positions, entries and booked fills are left alone."""
        cid = order.client_order_id
        if cid is None or not belongs_to(cid, self.workflow_id, self.chain):
            return
        kind = kind_of_client_id(cid)
        if kind is OrderKind.ENTRY or all(f.trade_id in self.s.fill_ids for f in order.fills):
            return
        qty = sum((f.qty for f in order.fills), Decimal(0))
        if qty <= 0:
            return
        value = sum((f.qty * f.price for f in order.fills), Decimal(0))
        view = OrderView(
            exchange_order_id=order.exchange_order_id,
            client_order_id=cid,
            symbol=self.spec.symbol,
            side=order.side,
            status=OrderStatus.FILLED,
            qty=qty,
            filled_qty=qty,
            average_price=value / qty,
        )
        # Its level, for its row in `orders` (its fills reference it): the exchange
        # knows it; at worst the price it filled at stands in.
        found = cast(
            "OrderView | None",
            await self._read(
                ExchangeActivities.find_order,
                self._cid_request(cid),
                summary=f"find {cid}",
            ),
        )
        trigger = (found.trigger_price if found is not None else None) or view.average_price
        ref = OrderRef(
            client_order_id=cid,
            exchange_order_id=order.exchange_order_id,
            qty=qty,
            trigger_price=trigger,
        )
        if kind is OrderKind.STOP and self.s.stop is None:
            self._emit(
                EventType.SL_PLACED,
                OrderPlaced(
                    client_order_id=cid,
                    exchange_order_id=order.exchange_order_id,
                    side=order.side.value,
                    quantity=qty,
                    reduce_only=True,
                ),
                order_id=cid,
            )
        await self._stale_executed(ref, view)

    async def _replace_stop_for_qty(self) -> None:
        """New stop for the current quantity first, then the old one cancelled.

        A stop that lives on the position (Bybit's, sent with the entry) closes
        whatever the position holds: it already covers the new quantity.
        """
        old = self.s.stop
        if old is not None and old.position_stop:
            self._snap(self.s.with_stop(old.covering(self.s.qty), workflow.now()))
            return
        error, _ = await self._stop_attempt(ProtectionStep.PLACE_STOP, None)
        if error is not None:
            if old is None:
                self._transition(PositionState.PENDING_SL)
            return  # the old stop still protects (it can only over-protect)
        if old is not None:
            await self._cancel_booked(old)

    async def _reconcile_qty(self) -> bool:
        """Adopt the exchange's quantity; False when the position turned out flat."""
        pos = await self._position()
        if pos.is_flat:
            if await self._exit_fill_found():
                return False
            await self._record_external_close(CloseReason.EXTERNAL)
            return False
        if pos.qty != self.s.qty:
            self._emit(
                EventType.QUANTITY_MISMATCH,
                QuantityMismatch(expected=self.s.qty, on_exchange=pos.qty),
            )
            self._snap(self.s.with_exchange_qty(pos.qty, workflow.now()))
        return True

    async def _exit_fill_found(self) -> bool:
        """Did one of our exit orders fill? If so it is booked (and the close with it)."""
        for ref in self.s.exit_orders:
            view = await self._find(self._intent_of(ref))
            if view is not None and executed(view):
                await self._exit_order_filled(ref)
                return True
        return False

    # --- closing -----------------------------------------------------------------------------

    async def _close(self, reason: CloseReason, *, requested_by: str | None = None) -> None:
        """Close at market until flat, then cancel every remaining order."""
        if self.s.state is not PositionState.CLOSING:
            self._snap(self.s.with_close_reason(reason))
            self._transition(PositionState.CLOSING)
            self._emit(
                EventType.CLOSE_TRIGGERED,
                CloseTriggered(reason=reason.value, requested_by=requested_by),
            )
        attempt = 0
        while not is_terminal(self.s.state):
            error = await self._close_attempt(reason.value)
            if error is None:
                return
            attempt += 1
            self._alert(
                Severity.CRITICAL if attempt >= 3 else Severity.ERROR,
                "close failed",
                f"{self.spec.symbol}: {error.value}; the stop stays in place; retrying",
            )
            await self._sleep(
                self.cfg.protection.backoff(self.cfg.protection.retry_delay, attempt),
                "retry the close",
            )

    async def _close_attempt(self, why: str) -> ErrorType | None:
        """One reduce-only market close of what we hold; None when the position is over.

        Whatever else closed the position meanwhile (our stop or take-profit filling,
        someone outside) is found and booked as what it was, never as our close.
        """
        if self.s.state is not PositionState.CLOSING:
            if self.s.close_reason is None:
                self._snap(self.s.with_close_reason(CloseReason.STOP_UNPLACEABLE))
            self._transition(PositionState.CLOSING)
            self._emit(
                EventType.POSITION_ROLLBACK_STARTED,
                RollbackStarted(reason=why, quantity=self.s.qty),
            )
        pos = await self._position()
        if pos.is_flat:
            if not await self._exit_fill_found():
                await self._flat_without_our_close()
            return None
        if pos.qty < self.s.qty:
            self._snap(self.s.with_exchange_qty(pos.qty, workflow.now()))
        cid = self._new_cid(OrderStep.CLOSE)
        intent = close_intent(cid, self.spec.symbol, self.spec.side, self.s.qty)
        placed = await self._place(intent, look_up_first=False)
        intent, view, error = placed.intent, placed.view, placed.error
        cid = intent.client_order_id
        if view is None and error is not None and error.retryable:
            view = await self._find(intent)
        if view is None or view.filled_qty == 0:
            self._record_order(intent, view, status=None if view else OrderStatus.REJECTED)
            if error is ErrorType.REDUCE_ONLY_REJECTED or view is not None:
                # Nothing left to reduce, or nothing filled: the truth decides.
                pos = await self._position()
                if pos.is_flat:
                    if not await self._exit_fill_found():
                        await self._flat_without_our_close()
                    return None
            return error or ErrorType.EXCHANGE_ERROR
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
        fills = await self._fills_until_known(cid)
        self._record_fills(cid, fills)
        if fills:
            self._book_exit(fills)
        else:  # the exchange reports the order filled but lists no execution yet
            self._book_exit([await self._aggregate_fill(intent, view)])
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
            self._snap(self.s.with_exchange_qty(pos.qty, workflow.now()))
            return ErrorType.EXCHANGE_ERROR
        await self._finish_close(self.s.close_reason or CloseReason.OPERATOR)
        return None

    async def _flat_without_our_close(self) -> None:
        """Flat, and neither our close nor an exit order of ours we knew of did it: the
        exchange's trade history says what did (an order of ours whose placement's
        outcome was never learned, booked as what it was; one placed by hand; the
        exchange's liquidation), else it is booked as closed outside."""
        if self.s.exited_qty == 0 or self.s.qty > 0:
            reason = CloseReason.EXTERNAL
            if workflow.patched(OWN_EXIT_BOOKED):
                reason = await self._book_outside_exit(reason)
            self._emit(
                EventType.CLOSE_TRIGGERED,
                CloseTriggered(reason=reason.value, requested_by="exchange"),
            )
        else:
            reason = self.s.close_reason or CloseReason.OPERATOR
        await self._finish_close(reason)

    async def _finish_close(self, reason: CloseReason) -> None:
        """The position is flat: cancel every remaining order, book the close.

        An exit order that filled before its cancel reached it is booked as the fill
        it was. The position ends only once the exchange lists no open order of it
        and every execution is read.
        """
        for ref in self.s.exit_orders:
            _, final = await self._cancel(ref)
            if final is not None and executed(final):
                fills = await self._fills_until_known(ref.client_order_id)
                self._record_order(self._intent_of(ref), final)
                self._record_fills(ref.client_order_id, fills)
                if fills:
                    self._book_exit(fills)
            self._snap(self.s.exit_order_gone(ref.client_order_id))
        if self.s.qty > 0:  # flat on the exchange: the rest was closed outside posguard
            self._snap(self.s.with_exchange_qty(Decimal(0), workflow.now()))
        await self._until_no_own_order_open()
        await self._settle_fills_due(until_known=True)
        if self.s.opened_at is not None and workflow.patched(PATCH_BOOK_FUNDING):
            await self._book_funding(self.s.opened_at)
        self._snap(self.s.with_close_reason(reason))
        if self.trail is not None:
            self._emit(EventType.TRAILING_REMOVED, TrailingRemoved(reason=reason.value))
            self.m = self.m.with_trailing(None)
        rollback = reason in (CloseReason.STOP_UNPLACEABLE, CloseReason.STOP_BEYOND_MARK)
        if self.s.state is PositionState.FAILED and rollback:
            self._transition(PositionState.CLOSING)
        if self.s.state is PositionState.PENDING_SL:
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
                funding=self.s.funding,
            ),
        )
        self._transition(target)

    async def _book_funding(self, since: datetime) -> None:
        """Book the funding received or paid while the position was held (its net PnL
        counts it); an alert when the exchange cannot tell."""
        funding = await self._funding(since)
        if funding is None:
            self._alert(
                Severity.WARNING,
                "funding not booked",
                f"{self.spec.symbol}: the exchange did not tell the funding since "
                f"{since:%Y-%m-%d %H:%M} UTC; the net PnL leaves it out",
            )
            return
        self._snap(self.s.with_funding(funding))

    async def _until_no_own_order_open(self) -> None:
        """Cancel until the exchange lists no open order of this position (verified)."""
        attempt = 0
        while True:
            await self._cancel_stale()
            left = await self._own_open_orders()
            if not left and not self.m.stale_orders:
                return
            for view in left:
                if view.client_order_id is None:
                    continue
                ref = OrderRef(
                    client_order_id=view.client_order_id,
                    exchange_order_id=view.exchange_order_id,
                    qty=view.qty if view.qty and view.qty > 0 else Decimal(1),
                    trigger_price=view.trigger_price,
                )
                await self._cancel_booked(ref)
            attempt += 1
            if attempt >= 2:
                self._cannot_progress(
                    "cancel the position's last orders",
                    ErrorType.EXCHANGE_ERROR,
                    f"still open: {[v.client_order_id for v in left]}",
                    attempt,
                )
                await self._sleep(self._backoff(attempt), "cancel the last orders again")

    # --- history ------------------------------------------------------------------------------

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() >= self.cfg.max_history_events
        )

    async def _continue_as_new(self) -> None:
        """Start a fresh run with the whole state, once no message is half handled.

        A close accepted meanwhile is carried out first (its update waits for the
        end of the position, which a new run could not answer).
        """
        self.draining = True  # from now on ticks are only observed; the next run acts
        while True:
            if self.pending_move is not None:
                await self._move_stop()  # a price update is waiting for it
            await self._drain_writes()
            if self.m.close_requested is not None:
                self.draining = False
                return
            await workflow.wait_condition(
                lambda: (
                    workflow.all_handlers_finished()
                    or self.pending_move is not None
                    or self.m.close_requested is not None
                )
            )
            if (
                self.pending_move is None
                and self.m.close_requested is None
                and workflow.all_handlers_finished()
            ):
                break
        workflow.continue_as_new(
            PositionInput(spec=self.spec, config=self.cfg, carried=self.m.next_run())
        )

    def _result(self) -> CloseResult:
        return CloseResult(
            state=self.s.state,
            reason=self.s.close_reason,
            exit_price=self.s.avg_exit_price,
            realised_pnl=self.s.realised_pnl,
            fees=self.s.fees,
            funding=self.s.funding,
        )
