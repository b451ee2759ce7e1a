"""The price band of the price gate: the prices at which a position workflow must act.

The market-data process holds one `PriceBand` per open position and forwards a tick
to the workflow only when the tick is not strictly inside the band. The guarantee
that makes this safe (property-tested in tests/domain/test_band.py):

    for every state and params, every time t with `now <= t` and
    (`next_timer(state, params)` is None or `t < next_timer(...)`), and every
    price p with `band.is_quiet(p)`: `on_price(state, params, p, t)` returns no
    move and no phase transition.

Time-based work (the end of `min_interval` for a pending stop, time activation) is
the workflow's own timer: `next_timer`.

The band is conservative: it may wake the workflow for a tick that turns out to need
nothing (e.g. inside `min_interval`, or while a move is in flight), never the
reverse. In-band ticks are not seen by the workflow, so its best price may lag the
true extreme, but only by prices whose trailing stop is less than the minimum step
away from the live stop.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from domain.trailing import (
    TrailingParams,
    TrailingState,
    activation_floor_price,
    activation_price,
    breakeven_trigger_price,
    desired_stop,
    min_move_target,
    next_timer,
    round_away,
    trail_threshold,
)
from domain.types import Side

__all__ = ["PriceBand", "band_for", "next_timer"]


def _reject_float(value: Any) -> Any:
    """Refuse binary floats before pydantic converts them: 0.1 is not 0.1."""
    if isinstance(value, float):
        raise ValueError("float is not accepted for prices; use Decimal or str")
    return value


_Price = Annotated[Decimal, BeforeValidator(_reject_float), Field(gt=0, allow_inf_nan=False)]


class PriceBand(BaseModel):
    """Quiet prices are strictly between `wake_below` and `wake_above`; None means
    unbounded on that side. A tick at or beyond either bound wakes the workflow.
    `wake_below >= wake_above` is an empty band: every tick wakes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    wake_below: _Price | None = None
    wake_above: _Price | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        # Both bounds None would mean "never wake", which no open position may have:
        # at least the stop level is always a bound.
        if self.wake_below is None and self.wake_above is None:
            raise ValueError("a band needs at least one bound")
        return self

    def is_quiet(self, price: Decimal) -> bool:
        """True if the gate may drop a tick at `price` without telling the workflow."""
        above_low = self.wake_below is None or price > self.wake_below
        below_high = self.wake_above is None or price < self.wake_above
        return above_low and below_high

    def wakes(self, price: Decimal) -> bool:
        """True if a tick at `price` must be sent to the workflow."""
        return not self.is_quiet(price)


def band_for(state: TrailingState, params: TrailingParams, now: datetime) -> PriceBand:
    """The band for `state` under `params`, valid from `now` until `next_timer` fires
    or the state changes: recompute it after every call that returns a new state
    (in particular after `on_move_result`, which may restore the older stop).

    The bound on the stop side is the tightest stop that may be live (the live stop,
    or the move in flight, which is placed before the old stop is cancelled): a tick
    there means the exchange's stop should have fired, and the workflow must check.
    The bound on the profit side is the nearest of:
    - the activation price (trailing inactive); with `activation_pct` None in POSGUARD
      mode, the first tick activates, so the band is empty (in FREQTRADE mode the
      level is then the entry price);
    - FREQTRADE mode, trailing active: the activation price again while the floor a
      tick exactly there would earn could still move the stop (a band is an interval,
      so every tick from that level on wakes);
    - the entry price, once the time activation is due (trailing inactive): any
      tick in profit then activates;
    - the breakeven trigger price (breakeven not yet reached);
    - the desired stop itself, if it already qualifies as a move (pending): any tick
      beyond it makes it protective and sendable;
    - otherwise (trailing active) the price whose trailing stop would move the live
      stop by at least the minimum step.
    """
    side = state.side
    live = state.stop if state.in_flight is None else state.in_flight.new
    profit_side: list[Decimal] = []

    if state.activated_at is None:
        level = activation_price(state, params)
        if level is None:
            # The first tick activates: no price is strictly between equal bounds,
            # so every tick wakes.
            return PriceBand(wake_below=live, wake_above=live)
        profit_side.append(level)
        deadline = None
        if params.time_activation_after is not None:
            deadline = state.opened_at + params.time_activation_after
        evaluated = max(now, state.updated_at or now)
        if deadline is not None and deadline <= evaluated:
            profit_side.append(state.entry_price)

    trigger = breakeven_trigger_price(state, params)
    if trigger is not None and state.breakeven_at is None:
        profit_side.append(trigger)

    # While a move is in flight nothing is sent, so any profit-side bound is safe;
    # measure the next move from the stop that is about to be live, otherwise every
    # tick beyond the in-flight stop would wake the workflow for nothing.
    basis = state if state.in_flight is None else state.model_copy(update={"stop": live})
    desired = desired_stop(basis, params)
    target = min_move_target(side, live, params)
    qualifies = desired >= target if side is Side.LONG else desired <= target
    if qualifies:
        profit_side.append(desired)
    elif state.activated_at is not None:
        threshold = trail_threshold(side, target, params)
        if threshold is not None:
            profit_side.append(threshold)

    floor = activation_floor_price(state, params)
    level = activation_price(state, params)
    if state.activated_at is not None and floor is not None and level is not None:
        # FREQTRADE mode: a price exactly at the level would earn `floor`; wake there
        # while that would tighten the desired stop into a move (before activation
        # the level is a bound anyway).
        tighter = floor > desired if side is Side.LONG else floor < desired
        floor_qualifies = floor >= target if side is Side.LONG else floor <= target
        if tighter and floor_qualifies:
            profit_side.append(level)

    # Rounded to the tick toward the inside of the band (long: down), which can only
    # narrow it, and keeps the gate's numbers short. Non-positive levels (a short's
    # unreachable target) are dropped: no price reaches them.
    profit_side = [round_away(side, p, params.tick_size) for p in profit_side if p > 0]
    if side is Side.LONG:
        return PriceBand(wake_below=live, wake_above=min(profit_side, default=None))
    return PriceBand(wake_below=max(profit_side, default=None), wake_above=live)
