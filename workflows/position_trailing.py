"""The trailing stop of a position workflow: moves, new stop first."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import cast

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.exchange.activities import ExchangeActivities
    from domain.client_ids import OrderStep
    from domain.errors import ErrorType
    from domain.events import (
        EventType,
        StopMoved,
        StopMoveFailed,
        TrailingCreated,
        TrailingParamsChanged,
    )
    from domain.orders import (
        OrderIntent,
        OrderRef,
        OrderStatus,
        OrderView,
        stop_intent,
    )
    from domain.position import (
        PositionState,
    )
    from domain.protection import (
        MoveOutcome,
        on_move_failed,
    )
    from domain.requests import AmendStopRequest, CandlesRequest
    from domain.trailing import (
        MoveReason,
        TrailingDecision,
        TrailingParams,
        on_move_result,
        on_timer,
        with_params,
    )
    from domain.trailing import initial_state as initial_trailing
    from domain.trailing import next_timer as next_trailing_timer
    from domain.volatility import volatility_callback_pct

from workflows.position_orders import ExchangeCallFailed, ExchangeCalls


class Trailing(ExchangeCalls):
    """The trailing machine's decisions carried out on the exchange."""

    # --- trailing ----------------------------------------------------------------------------

    def _trailing_live(self) -> bool:
        return self.trail is not None and self.s.state is PositionState.ACTIVE

    def _trailing_params(self) -> TrailingParams:
        assert self.trailing_rule is not None
        return self.trailing_rule.params(self._filters().tick_size, self.measured_callback)

    def _volatility_due(self) -> datetime | None:
        """When the callback must be measured again (now if never), or None."""
        rule = self.trailing_rule
        if rule is None or rule.volatility is None or not self._trailing_live():
            return None
        if self.m.measured_at is None:
            return workflow.now()
        return self.m.measured_at + rule.volatility.refresh

    def _volatility_unmeasured(self) -> bool:
        """A volatility rule without a measurement yet (new position or new rule)."""
        rule = self.trailing_rule
        return (
            rule is not None
            and rule.volatility is not None
            and self.m.measured_at is None
            and self._trailing_live()
        )

    async def _measure_volatility(self) -> None:
        """Fetch candles, set the callback from their ATR; a failure keeps the old one.

        A new callback applies from this evaluation on: a tighter stop it allows is
        sent at once; a wider one never loosens the live stop.
        """
        rule = self.trailing_rule
        assert rule is not None and rule.volatility is not None
        vol = rule.volatility
        self.m = self.m.measurement_started(workflow.now())
        try:
            candles = await self._call(
                ExchangeActivities.candles,
                CandlesRequest(
                    account=self.spec.account,
                    symbol=self.spec.symbol,
                    timeframe=vol.timeframe,
                    limit=vol.candles_needed + 1,  # the forming candle is one of them
                ),
                summary=f"candles {vol.timeframe} x{vol.candles_needed + 1} {self.spec.symbol}",
                attempts=1,  # a failure only keeps the callback in force; never block moves
            )
        except ExchangeCallFailed as exc:
            workflow.logger.warning("volatility not measured: %s", exc.error.value)
            return
        if self.trailing_rule is None or self.trailing_rule.volatility != vol:
            return  # the rule changed during the fetch: this measurement is not for it
        if self.m.close_requested is not None or not self._trailing_live():
            return
        try:
            measured = volatility_callback_pct(vol, candles)
        except ValueError as exc:  # candles out of order: a bad answer, not a bad workflow
            workflow.logger.warning("volatility not measured: %s", exc)
            return
        if measured is None or measured == self.measured_callback:
            return
        old = self._trailing_params().callback_pct
        self.m = self.m.callback_measured(measured)
        self._emit(
            EventType.TRAILING_PARAMS_CHANGED,
            TrailingParamsChanged(
                old={"callback_pct": str(old)},
                new={
                    "callback_pct": str(measured),
                    "source": "volatility",
                    "timeframe": vol.timeframe,
                    "period": vol.period,
                    "multiple": str(vol.multiple),
                },
            ),
            flush=False,
        )
        if self.trail is not None and self._trailing_live() and self.pending_move is None:
            params = self._trailing_params()
            self.m = self.m.with_trailing(with_params(self.trail, params))
            assert self.trail is not None
            self._apply_trailing(on_timer(self.trail, params, workflow.now()))

    def _start_trailing(self) -> None:
        """Arm the trailing machine on the live stop (once per position)."""
        stop, entry = self.s.stop_price, self.s.avg_entry_price
        if self.trailing_rule is None or self.trail is not None or stop is None or entry is None:
            return
        self.m = self.m.with_trailing(
            initial_trailing(self.spec.side, entry, stop, self.s.opened_at or workflow.now())
        )
        rule = self.trailing_rule
        activation = None
        if rule.activation_pct is not None:
            activation = entry * (1 + self.spec.side.sign * rule.activation_pct / 100)
        self._emit(
            EventType.TRAILING_CREATED,
            TrailingCreated(
                activation_price=activation,
                callback_pct=rule.callback_pct,
                breakeven_trigger_pct=rule.breakeven_trigger_pct,
                params=rule.model_dump(mode="json"),
            ),
        )

    def _apply_trailing(self, decision: TrailingDecision) -> None:
        """Take the machine's decision: record what happened, queue the move."""
        self.m = self.m.with_trailing(decision.state)
        live = self.s.stop_price
        for reason in decision.events:
            kind = (
                EventType.TRAILING_BREAKEVEN
                if reason is MoveReason.BREAKEVEN
                else EventType.TRAILING_ACTIVATED
            )
            self._emit(
                kind,
                StopMoved(
                    old_stop=live,
                    new_stop=decision.move.new if decision.move else live or Decimal(0),
                    reason=reason.value,
                    best_price=decision.state.best_price,
                ),
                flush=False,
            )
        if decision.move is not None:
            self.pending_move = decision.move

    async def _move_stop(self) -> None:
        """Replace the live stop by a tighter one: new stop first, then cancel the old.

        Both are reduce-only, so two live stops can never over-close; if the new
        one cannot be placed the old one simply stays. A venue that amends stops
        (`MarketFilters.stop_moves_in_place`: Bybit) moves the one stop instead.
        """
        move, trail = self.pending_move, self.trail
        assert move is not None and trail is not None
        old = self.s.stop
        if old is not None and self._filters().stop_moves_in_place:
            await self._amend_stop(old)
            return
        cid = self._new_cid(OrderStep.MOVE)
        intent = stop_intent(cid, self.spec.symbol, self.spec.side, self.s.qty, move.new)
        placed = await self._place(intent, look_up_first=False, local=True)
        intent, view, error = placed.intent, placed.view, placed.error
        cid = intent.client_order_id
        now = workflow.now()
        if view is None:
            assert error is not None
            self.m = self.m.with_trailing(on_move_result(trail, move, False, now))
            rejected = None if error.retryable else OrderStatus.REJECTED
            self._record_order(intent, None, status=rejected)
            if error.retryable:  # it may exist after all: cancel it at a look, soon
                self.m = self.m.stale_added(
                    OrderRef(client_order_id=cid, qty=intent.qty, trigger_price=move.new)
                )
                self.m = self.m.look_wanted()  # its "open" echo, if any, was not a reason
            self._move_failed(error, "new stop not placed; the old stop stays")
        else:
            ref, _ = self._resting(intent, view)
            self._move_done(intent, view, ref)
            if old is not None:
                await self._cancel_booked(old)  # on failure: kept in stale
        self.pending_move = None

    def _move_failed(self, error: ErrorType, message: str) -> None:
        """Record a move that did not happen (the live stop stays); alert or look as
        `domain.protection.on_move_failed` says."""
        move = self.pending_move
        assert move is not None
        decision = on_move_failed(error)
        self._emit(
            EventType.TRAILING_MOVE_FAILED,
            StopMoveFailed(
                old_stop=move.old, new_stop=move.new, error_type=error.value, message=message
            ),
        )
        if decision.alert is not None:
            self._alert(decision.alert, "stop move failed", error.value)
        if decision.outcome is MoveOutcome.RECONCILE:
            self.m = self.m.look_wanted()

    def _move_done(self, intent: OrderIntent, view: OrderView, ref: OrderRef) -> None:
        """Take `ref` as the live stop after the pending move; record it."""
        move, trail = self.pending_move, self.trail
        assert move is not None and trail is not None
        now = workflow.now()
        self._snap(self.s.with_stop(ref, now))
        self.m = self.m.with_trailing(on_move_result(trail, move, True, now))
        self._record_order(intent, view)
        self._show_details()
        self._emit(
            EventType.TRAILING_STOP_MOVED,
            StopMoved(
                old_stop=move.old,
                new_stop=move.new,
                reason=move.reason.value,
                best_price=trail.best_price,
                client_order_id=ref.client_order_id,
            ),
            order_id=ref.client_order_id,
        )

    async def _amend_stop(self, old: OrderRef) -> None:
        """Move the live stop in place (a venue that amends, Bybit): one request, the
        same order before and after, so the position never has two stops, nor none.

        If the amend fails the stop stays where it was. After an ambiguous failure
        the exchange may hold the old level or the new one: both protect, the new
        one more, and the next move amends from whichever it is.
        """
        move, trail = self.pending_move, self.trail
        assert move is not None and trail is not None
        cid = old.client_order_id
        intent = stop_intent(cid, self.spec.symbol, self.spec.side, old.qty, move.new)
        view: OrderView | None = None
        error: ErrorType | None = None
        try:
            view = cast(
                OrderView,
                await self._call(
                    ExchangeActivities.amend_stop,
                    AmendStopRequest(
                        account=self.spec.account,
                        symbol=self.spec.symbol,
                        client_order_id=cid,
                        exchange_order_id=old.exchange_order_id,
                        trigger_price=move.new,
                        position_stop=old.position_stop,
                        side=self.spec.side,
                    ),
                    summary=f"move stop {cid} {move.old} -> {move.new}",
                    local=True,
                ),
            )
        except ExchangeCallFailed as exc:
            error = exc.error
        if view is None:
            assert error is not None
            self.m = self.m.with_trailing(on_move_result(trail, move, False, workflow.now()))
            self._move_failed(error, "stop not moved; it stays where it was")
            if error is ErrorType.ORDER_NOT_FOUND:  # gone meanwhile: the look books it
                self.m = self.m.look_wanted()
        else:
            ref = OrderRef(
                client_order_id=cid,
                exchange_order_id=view.exchange_order_id,
                qty=old.qty,
                trigger_price=move.new,
                position_stop=old.position_stop,
            )
            self._move_done(intent, view, ref)
        self.pending_move = None

    def _trailing_timer(self) -> datetime | None:
        if not self._trailing_live() or self.pending_move is not None:
            return None
        assert self.trail is not None
        return next_trailing_timer(self.trail, self._trailing_params())
