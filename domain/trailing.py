"""The trailing-stop state machine of one position: pure, deterministic, Decimal only.

The position workflow owns one `TrailingState` and feeds it prices (`on_price`),
timer firings (`on_timer`), the exchange's answer to a move (`on_move_result`) and
run-time parameter changes (`with_params`). Every call returns a new frozen state;
nothing here does I/O, reads a clock or draws random numbers, so the functions can
run inside a Temporal workflow and replay identically.

Vocabulary (long; a short is the mirror image):

- *tighter*: closer to the price, i.e. higher for a long, lower for a short. The
  live stop only ever gets tighter.
- *away from the price*: down for a long, up for a short. Every computed stop is
  rounded to the tick in that direction, so rounding never brings a stop closer to
  the market than the formula asks for.
- *protective*: a stop strictly below the mark for a long. Only protective stops are
  sent; a stop at or beyond the mark would trigger at once (Binance -2021).

Percentages are in percent (``Decimal("1.5")`` is 1.5 %), as in Binance's
``callbackRate``.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import (
    ROUND_CEILING,
    ROUND_FLOOR,
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
)
from enum import StrEnum
from typing import Annotated, Any, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    NonNegativeInt,
    model_validator,
)

from domain.types import Side
from domain.volatility import VolatilityCallback

__all__ = [
    "MoveReason",
    "Phase",
    "StopMove",
    "TrailingDecision",
    "TrailingMode",
    "TrailingParams",
    "TrailingState",
    "activation_floor_price",
    "activation_price",
    "breakeven_stop_price",
    "breakeven_trigger_price",
    "desired_stop",
    "initial_state",
    "min_move_target",
    "next_timer",
    "on_move_result",
    "on_price",
    "on_timer",
    "round_away",
    "trail_stop",
    "trail_threshold",
    "with_params",
]


# ---------------------------------------------------------------- field types


def _reject_float(value: Any) -> Any:
    """Refuse binary floats before pydantic converts them: 0.1 is not 0.1."""
    if isinstance(value, float):
        raise ValueError("float is not accepted for prices or percentages; use Decimal or str")
    return value


_Dec = Annotated[Decimal, BeforeValidator(_reject_float), Field(allow_inf_nan=False)]
_Price = Annotated[_Dec, Field(gt=0)]
# Percentages stay below 100 so that a short's level entry * (1 - pct/100) is a price.
_Pct = Annotated[_Dec, Field(ge=0, lt=100)]
_PositivePct = Annotated[_Dec, Field(gt=0, lt=100)]


# ---------------------------------------------------------------- arithmetic

# Every operation goes through an explicit context, so results never depend on the
# caller's thread-local decimal context. 50 digits is far beyond any price * ratio
# we meet; where rounding could still happen it is directional (see the callers).
_PREC = 50


def _ctx(rounding: str = ROUND_HALF_EVEN) -> Context:
    # A fresh context per call: Context objects accumulate flags, and a shared one
    # would be hidden mutable module state.
    return Context(
        prec=_PREC, rounding=rounding, traps=[InvalidOperation, DivisionByZero, Overflow]
    )


def _away(side: Side) -> str:
    """Rounding mode that moves a stop away from the price (long: down)."""
    return ROUND_FLOOR if side is Side.LONG else ROUND_CEILING


def _toward(side: Side) -> str:
    """Rounding mode that moves a stop toward the price (long: up)."""
    return ROUND_CEILING if side is Side.LONG else ROUND_FLOOR


def _pct_factor(side: Side, pct: Decimal, favourable: bool) -> Decimal:
    """1 + pct/100 in the favourable direction of `side` (long: up), or 1 - pct/100."""
    ctx = _ctx()
    ratio = ctx.divide(pct, Decimal(100))
    up = favourable == (side is Side.LONG)
    return ctx.add(Decimal(1), ratio) if up else ctx.subtract(Decimal(1), ratio)


def round_away(side: Side, price: Decimal, tick: Decimal) -> Decimal:
    """Round `price` to a multiple of `tick` away from the market: down for a long's
    stop, up for a short's. Exact for any finite inputs that fit 50 digits."""
    rounding = _away(side)
    ctx = _ctx(rounding)
    units = ctx.divide(price, tick).to_integral_value(rounding=rounding)
    return ctx.multiply(units, tick)


def _round_toward(side: Side, price: Decimal, tick: Decimal) -> Decimal:
    rounding = _toward(side)
    ctx = _ctx(rounding)
    units = ctx.divide(price, tick).to_integral_value(rounding=rounding)
    return ctx.multiply(units, tick)


def _tighter(side: Side, a: Decimal, b: Decimal) -> bool:
    """True if stop `a` is strictly tighter (closer to the price) than stop `b`."""
    return a > b if side is Side.LONG else a < b


def _tightest(side: Side, stops: Iterable[Decimal]) -> Decimal:
    return max(stops) if side is Side.LONG else min(stops)


def _protective(side: Side, stop: Decimal, mark: Decimal) -> bool:
    """True if `stop` would not trigger at `mark` (long: strictly below it)."""
    return stop < mark if side is Side.LONG else stop > mark


def _reached(side: Side, mark: Decimal, level: Decimal) -> bool:
    """True if `mark` is at or beyond a profit `level` (long: at or above it)."""
    return mark >= level if side is Side.LONG else mark <= level


def _better(side: Side, a: Decimal, b: Decimal) -> Decimal:
    """The more favourable of two prices (long: the higher)."""
    return max(a, b) if side is Side.LONG else min(a, b)


# ---------------------------------------------------------------- models


class Phase(StrEnum):
    """Where the trailing stop is in its life.

    WAITING: the initial stop is in force. BREAKEVEN: the breakeven trigger was
    reached, trailing not yet active. TRAILING: the stop follows the best price.
    Phases only move forward.
    """

    WAITING = "waiting"
    BREAKEVEN = "breakeven"
    TRAILING = "trailing"


class TrailingMode(StrEnum):
    """Which rule starts the trailing stop (see docs/trailing.md, "Mapping to freqtrade").

    POSGUARD (the default): trailing starts at the first price at or beyond the
    activation price; with no `activation_pct`, at the first price evaluated. The stop
    trails `best_price`, which starts at the entry price, so without `activation_pct` a
    position trails from its entry price even while at a loss.

    FREQTRADE: exactly freqtrade's `trailing_stop` with `stoploss` = the initial stop,
    `trailing_stop_positive` = `callback_pct`, `trailing_stop_positive_offset` =
    `activation_pct` (0 when None) and `trailing_only_offset_is_reached=True`
    (freqtrade/strategy/interface.py `IStrategy.ft_stoploss_adjust`, leverage 1, no
    fees). Trailing starts only at a price strictly beyond the activation price (with
    no `activation_pct`: strictly better than the entry price), and a price exactly at
    the activation price moves the stop to the initial stop's distance from that price
    (`activation_floor_price`), as freqtrade keeps its `stoploss` distance there.
    """

    POSGUARD = "posguard"
    FREQTRADE = "freqtrade"


class MoveReason(StrEnum):
    """Why a stop move is sent; also names the phase transitions (all but TRAIL)."""

    ACTIVATED = "activated"
    BREAKEVEN = "breakeven"
    TRAIL = "trail"
    TIME_ACTIVATED = "time_activated"


class TrailingParams(BaseModel):
    """Trailing configuration of one position; percentages in percent, from entry.

    - `callback_pct`: distance of the stop behind the best price, 0 < x < 100.
    - `activation_pct`: profit at which trailing starts; None = trail from the first tick.
    - `breakeven_trigger_pct`: profit at which the stop goes to entry plus fees;
      None = off. Must exceed `breakeven_fee_pct`, or the breakeven stop would sit
      at or beyond the very price that triggered it.
    - `breakeven_fee_pct`: fees the breakeven stop covers: entry*(1+fee) long,
      entry*(1-fee) short.
    - `time_activation_after`: once the position is this old, trailing starts at the
      first evaluation at which it is in profit (mark strictly better than entry).
    - `min_step_pct`: a move smaller than this percent of the live stop is not sent.
    - `min_interval`: least time between two moves sent; moves inside it coalesce.
    - `tick_size`: the symbol's price increment; every computed stop is a multiple.
    - `mode`: how `activation_pct` starts trailing (`TrailingMode`); FREQTRADE follows
      freqtrade's rule exactly, POSGUARD (the default) activates at the level itself.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    callback_pct: _PositivePct
    tick_size: _Price
    activation_pct: _PositivePct | None = None
    breakeven_trigger_pct: _PositivePct | None = None
    breakeven_fee_pct: _Pct = Decimal(0)
    time_activation_after: timedelta | None = None
    min_step_pct: _Pct = Decimal(0)
    min_interval: timedelta = timedelta(0)
    mode: TrailingMode = TrailingMode.POSGUARD

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.time_activation_after is not None and self.time_activation_after <= timedelta(0):
            raise ValueError("time_activation_after must be positive")
        if self.min_interval < timedelta(0):
            raise ValueError("min_interval must not be negative")
        if (
            self.breakeven_trigger_pct is not None
            and self.breakeven_trigger_pct <= self.breakeven_fee_pct
        ):
            raise ValueError("breakeven_trigger_pct must exceed breakeven_fee_pct")
        return self


class TrailingRule(BaseModel):
    """A position's trailing settings as the trader gives them: `TrailingParams`
    without the tick size, which comes from the exchange's filters.

    With `volatility`, the callback follows the market (`domain.volatility`):
    `callback_pct` is then the fallback used until a measurement exists.
    `mode=TrailingMode.FREQTRADE` gives freqtrade's exact trailing semantics.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    callback_pct: _PositivePct
    activation_pct: _PositivePct | None = None
    breakeven_trigger_pct: _PositivePct | None = None
    breakeven_fee_pct: _Pct = Decimal(0)
    time_activation_after: timedelta | None = None
    min_step_pct: _Pct = Decimal(0)
    min_interval: timedelta = timedelta(0)
    volatility: VolatilityCallback | None = None
    mode: TrailingMode = TrailingMode.POSGUARD

    def params(
        self, tick_size: Decimal, measured_callback_pct: Decimal | None = None
    ) -> TrailingParams:
        """The full parameters for a symbol with `tick_size` (validated there).

        `measured_callback_pct` (from `volatility_callback_pct`) replaces `callback_pct`
        when the rule has `volatility`; it is ignored otherwise.
        """
        fields = self.model_dump(exclude={"volatility"})
        if self.volatility is not None and measured_callback_pct is not None:
            fields["callback_pct"] = measured_callback_pct
        return TrailingParams(tick_size=tick_size, **fields)


class StopMove(BaseModel):
    """A request to replace the live stop `old` by the tighter stop `new`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    old: _Price
    new: _Price
    reason: MoveReason


class TrailingState(BaseModel):
    """Everything the machine remembers; carried across continue-as-new as JSON.

    - `stop`: the stop live on the exchange (changes only when a move is accepted).
    - `best_price`: highest price seen for a long, lowest for a short (starts at entry).
    - `last_mark`: the last price evaluated; `on_timer` decides with it.
    - `activated_at`, `breakeven_at`: when those transitions happened; they define
      `phase` (validated).
    - `in_flight`: the move sent and not yet answered; no other move is sent meanwhile.
    - `pending`: the coalesced desired stop that qualifies but is not sent yet
      (inside `min_interval`, a move in flight, or not protective at the last mark).
    - `reason_due`: a transition whose stop move has not been accepted yet; the
      next move carries it as its reason.
    - `last_move_at`: when the last move was sent (accepted or not).
    - `updated_at`: the `now` of the last `on_price`/`on_timer`.
    - `initial_stop`: the stop the machine started from (`initial_state`); None in a
      state saved before it was recorded.
    - `activation_floor`: FREQTRADE mode only: the stop earned by a price exactly at the
      activation price (`activation_floor_price`); a floor from then on, in every phase.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    side: Side
    entry_price: _Price
    opened_at: AwareDatetime
    stop: _Price
    best_price: _Price
    phase: Phase = Phase.WAITING
    last_mark: _Price | None = None
    activated_at: AwareDatetime | None = None
    breakeven_at: AwareDatetime | None = None
    in_flight: StopMove | None = None
    pending: _Price | None = None
    reason_due: MoveReason | None = None
    last_move_at: AwareDatetime | None = None
    last_result_at: AwareDatetime | None = None
    updated_at: AwareDatetime | None = None
    ticks: NonNegativeInt = 0
    moves_sent: NonNegativeInt = 0
    moves_accepted: NonNegativeInt = 0
    moves_rejected: NonNegativeInt = 0
    initial_stop: _Price | None = None
    activation_floor: _Price | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        expected = _phase_of(self.activated_at, self.breakeven_at)
        if self.phase is not expected:
            raise ValueError(f"phase {self.phase} contradicts the transition times ({expected})")
        if self.in_flight is not None:
            if self.in_flight.old != self.stop:
                raise ValueError("the move in flight must start from the live stop")
            if not _tighter(self.side, self.in_flight.new, self.in_flight.old):
                raise ValueError("a move in flight must tighten the stop")
            if self.last_move_at is None:
                raise ValueError("a move in flight needs last_move_at")
        if self.pending is not None and not _tighter(self.side, self.pending, self.stop):
            raise ValueError("a pending stop must be tighter than the live stop")
        if self.reason_due is MoveReason.TRAIL:
            raise ValueError("reason_due names a transition, never TRAIL")
        if _tighter(self.side, self.entry_price, self.best_price):
            raise ValueError("best_price cannot be worse than the entry price")
        return self


class TrailingDecision(BaseModel):
    """The result of one evaluation: the new state, the move to send now (if any),
    and the phase transitions that happened in this evaluation (in order)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    state: TrailingState
    move: StopMove | None = None
    events: tuple[MoveReason, ...] = ()


def _phase_of(activated_at: datetime | None, breakeven_at: datetime | None) -> Phase:
    if activated_at is not None:
        return Phase.TRAILING
    if breakeven_at is not None:
        return Phase.BREAKEVEN
    return Phase.WAITING


def _replace(state: TrailingState, **changes: Any) -> TrailingState:
    # Re-validate on every change (model_copy does not): the invariants above are
    # checked at each step, not only when a payload is decoded.
    return TrailingState.model_validate({**dict(state), **changes})


# ---------------------------------------------------------------- levels


def activation_price(state: TrailingState, params: TrailingParams) -> Decimal | None:
    """The activation level: entry moved `activation_pct` into profit. POSGUARD mode:
    trailing activates at or beyond it, and with `activation_pct` None there is no level
    (None: the first evaluated price activates). FREQTRADE mode: trailing activates
    strictly beyond it, and with `activation_pct` None the level is the entry price
    (freqtrade's offset 0). Not tick-rounded: it is compared with prices, never sent."""
    if params.activation_pct is None:
        return state.entry_price if params.mode is TrailingMode.FREQTRADE else None
    factor = _pct_factor(state.side, params.activation_pct, favourable=True)
    return _ctx().multiply(state.entry_price, factor)


def _activates(side: Side, mark: Decimal, level: Decimal, params: TrailingParams) -> bool:
    """True if `mark` starts trailing at activation level `level` (see `TrailingMode`)."""
    if params.mode is TrailingMode.FREQTRADE:
        return _tighter(side, mark, level)  # freqtrade: profit strictly above the offset
    return _reached(side, mark, level)


def activation_floor_price(state: TrailingState, params: TrailingParams) -> Decimal | None:
    """FREQTRADE mode: the stop that a price exactly at the activation price earns.

    At profit equal to the offset, freqtrade does not switch to the trailing distance
    yet but does adjust the stop with its `stoploss` distance from that price
    (`ft_stoploss_adjust`: `bound_profit > sl_offset` is False, the guard
    `bound_profit < sl_offset` does not stop it). With the initial stop at the
    `stoploss` distance from entry, that is the initial stop times the activation
    factor: `initial_stop * (1 + activation_pct/100)` for a long, `* (1 - ...)` for a
    short, rounded away from the price.

    None in POSGUARD mode, with `activation_pct` None (at offset 0 the level is the
    entry and the stop it earns is the initial stop itself), without a recorded
    `initial_stop`, or if the initial stop is not on the loss side of entry (freqtrade
    cannot express that).
    """
    initial = state.initial_stop
    if params.mode is not TrailingMode.FREQTRADE or params.activation_pct is None:
        return None
    if initial is None or not _tighter(state.side, state.entry_price, initial):
        return None
    factor = _pct_factor(state.side, params.activation_pct, favourable=True)
    raw = _ctx(_away(state.side)).multiply(initial, factor)
    return round_away(state.side, raw, params.tick_size)


def breakeven_trigger_price(state: TrailingState, params: TrailingParams) -> Decimal | None:
    """Price at or beyond which breakeven is reached, or None if breakeven is off."""
    if params.breakeven_trigger_pct is None:
        return None
    factor = _pct_factor(state.side, params.breakeven_trigger_pct, favourable=True)
    return _ctx().multiply(state.entry_price, factor)


def breakeven_stop_price(state: TrailingState, params: TrailingParams) -> Decimal | None:
    """The breakeven stop: entry plus `breakeven_fee_pct` (long; minus for a short),
    rounded away from the price; None if breakeven is off."""
    if params.breakeven_trigger_pct is None:
        return None
    factor = _pct_factor(state.side, params.breakeven_fee_pct, favourable=True)
    raw = _ctx(_away(state.side)).multiply(state.entry_price, factor)
    return round_away(state.side, raw, params.tick_size)


def _trail_factor(side: Side, params: TrailingParams) -> Decimal:
    return _pct_factor(side, params.callback_pct, favourable=False)


def trail_stop(side: Side, best: Decimal, params: TrailingParams) -> Decimal:
    """The trailing stop for best price `best`: best*(1 - callback) for a long,
    best*(1 + callback) for a short, rounded away from the price."""
    # The product is rounded away from the price too, so no digit of precision can
    # make the stop tighter than the exact formula (the band relies on it).
    raw = _ctx(_away(side)).multiply(best, _trail_factor(side, params))
    return round_away(side, raw, params.tick_size)


def desired_stop(state: TrailingState, params: TrailingParams) -> Decimal:
    """The tightest stop the machine wants from what it knows: the live stop, the
    breakeven stop once breakeven was reached (a floor in every later phase), the
    activation floor once earned (FREQTRADE mode), and the trailing stop of the best
    price once trailing is active."""
    stops = [state.stop]
    be = breakeven_stop_price(state, params)
    if be is not None and state.breakeven_at is not None:
        stops.append(be)
    if state.activation_floor is not None:
        # Earned with the tick size of its time; a changed tick must not make it off-grid.
        stops.append(round_away(state.side, state.activation_floor, params.tick_size))
    if state.activated_at is not None:
        stops.append(trail_stop(state.side, state.best_price, params))
    return _tightest(state.side, stops)


def min_move_target(side: Side, stop: Decimal, params: TrailingParams) -> Decimal:
    """The loosest tick-multiple stop a move away from `stop` may go to: strictly
    tighter than `stop` and at least `min_step_pct` of `stop` away from it.

    Every computed stop is a tick multiple, so "tighter than or equal to this" is
    exactly "tighter than the live stop by at least the minimum step". For a short
    the result may be <= 0, meaning no move is possible.
    """
    step_factor = _pct_factor(side, params.min_step_pct, favourable=True)
    # Rounded toward the price: the threshold is never looser than the exact step.
    least = _ctx(_toward(side)).multiply(stop, step_factor)
    least = _round_toward(side, least, params.tick_size)
    tick = params.tick_size
    if side is Side.LONG:
        next_tick = _ctx().add(round_away(side, stop, tick), tick)
        return max(least, next_tick)
    next_tick = _ctx().subtract(round_away(side, stop, tick), tick)
    return min(least, next_tick)


def _qualifies(side: Side, desired: Decimal, target: Decimal) -> bool:
    return desired >= target if side is Side.LONG else desired <= target


def trail_threshold(side: Side, target: Decimal, params: TrailingParams) -> Decimal | None:
    """A price no tighter than the first one whose trailing stop reaches `target`
    (long: any price strictly below the result gives a trailing stop below target).
    None if no price can (a short's target <= 0)."""
    if target <= 0:
        return None
    factor = _trail_factor(side, params)
    # Long: p*f >= target <=> p >= target/f; divide rounding down keeps the quiet
    # side strictly on the safe side of the exact threshold (short: mirrored).
    return _ctx(_away(side)).divide(target, factor)


# ---------------------------------------------------------------- transitions


def initial_state(
    side: Side, entry_price: Decimal, initial_stop: Decimal, opened_at: datetime
) -> TrailingState:
    """The state of a freshly protected position: phase WAITING, the initial stop
    live, best price = entry. Raises ValueError on invalid input (e.g. naive time)."""
    return TrailingState(
        side=side,
        entry_price=entry_price,
        opened_at=opened_at,
        stop=initial_stop,
        best_price=entry_price,
        initial_stop=initial_stop,
    )


def _check_now(state: TrailingState, now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    floor = state.updated_at or state.opened_at
    if now < floor:
        raise ValueError(f"time went backwards: {now} < {floor}")


def _interval_elapsed(state: TrailingState, params: TrailingParams, now: datetime) -> bool:
    return state.last_move_at is None or now - state.last_move_at >= params.min_interval


def _time_deadline(state: TrailingState, params: TrailingParams) -> datetime | None:
    if params.time_activation_after is None:
        return None
    return state.opened_at + params.time_activation_after


def on_price(
    state: TrailingState, params: TrailingParams, mark: Decimal, now: datetime
) -> TrailingDecision:
    """Evaluate one price tick at workflow time `now`.

    Contract:
    - the best price is updated even if no move results;
    - breakeven, then activation (price level; else age plus profit), happen at the
      first tick that qualifies, and are reported in `events`;
    - FREQTRADE mode: a tick exactly at the activation price earns the activation
      floor (`activation_floor_price`), kept in the state;
    - a move is returned only if: no move is in flight, `min_interval` has passed
      since the last move sent, the new stop is tighter than the live stop by at
      least `min_step_pct`, and it is protective at `mark` (long: strictly below);
    - a qualifying move held back by any of these is kept as `pending` and recomputed
      at every evaluation; the state records the move as in flight until
      `on_move_result`;
    - a tick that qualifies no move clears `pending`.
    Raises ValueError for a non-positive or float mark, or for time going backwards.
    """
    if isinstance(mark, float) or not mark.is_finite() or mark <= 0:
        raise ValueError(f"mark must be a positive finite Decimal, got {mark!r}")
    _check_now(state, now)
    state = _replace(
        state,
        best_price=_better(state.side, state.best_price, mark),
        last_mark=mark,
        ticks=state.ticks + 1,
    )
    return _evaluate(state, params, mark, now)


def on_timer(state: TrailingState, params: TrailingParams, now: datetime) -> TrailingDecision:
    """Evaluate at `now` without a new price, deciding with `last_mark`.

    Called when the timer from `next_timer` fires: it sends a pending move whose
    `min_interval` has passed and applies time-based activation. Same contract as
    `on_price`, except that the best price does not change; with no price seen yet,
    nothing price-dependent happens.
    """
    _check_now(state, now)
    return _evaluate(state, params, state.last_mark, now)


def _evaluate(
    state: TrailingState, params: TrailingParams, mark: Decimal | None, now: datetime
) -> TrailingDecision:
    side = state.side
    events: list[MoveReason] = []
    activated_at = state.activated_at
    breakeven_at = state.breakeven_at
    reason_due = state.reason_due
    floor = state.activation_floor

    if mark is not None:
        # Breakeven first so that, if both happen on one tick, the activation (the
        # later phase) names the move.
        be_trigger = breakeven_trigger_price(state, params)
        if breakeven_at is None and be_trigger is not None and _reached(side, mark, be_trigger):
            breakeven_at = now
            events.append(MoveReason.BREAKEVEN)
            reason_due = MoveReason.BREAKEVEN
        level = activation_price(state, params)
        earned = activation_floor_price(state, params)
        if earned is not None and mark == level:
            # freqtrade keeps its stoploss distance at exactly the offset, in any phase.
            floor = earned if floor is None else _tightest(side, (floor, earned))
        if activated_at is None:
            deadline = _time_deadline(state, params)
            if level is None or _activates(side, mark, level, params):
                activated_at = now
                events.append(MoveReason.ACTIVATED)
                reason_due = MoveReason.ACTIVATED
            elif (
                deadline is not None
                and now >= deadline
                and _tighter(side, mark, state.entry_price)  # strictly in profit
            ):
                activated_at = now
                events.append(MoveReason.TIME_ACTIVATED)
                reason_due = MoveReason.TIME_ACTIVATED

    state = _replace(
        state,
        activated_at=activated_at,
        breakeven_at=breakeven_at,
        activation_floor=floor,
        phase=_phase_of(activated_at, breakeven_at),
        updated_at=now,
    )
    desired = desired_stop(state, params)
    target = min_move_target(side, state.stop, params)
    if not _qualifies(side, desired, target):
        # Nothing worth sending: a transition that needs no move is reported in
        # `events` only, and no stale pending stop survives.
        state = _replace(state, pending=None, reason_due=None)
        return TrailingDecision(state=state, events=tuple(events))

    sendable = (
        state.in_flight is None
        and _interval_elapsed(state, params, now)
        and mark is not None
        and _protective(side, desired, mark)
    )
    if not sendable:
        # Skip rather than clamp a non-protective stop to one tick inside the mark:
        # the price has already retraced past the stop the rules ask for, the old
        # stop still protects, and a clamped stop would fire on the next tick of
        # noise. The desired stop is retried when the price allows it.
        state = _replace(state, pending=desired, reason_due=reason_due)
        return TrailingDecision(state=state, events=tuple(events))

    move = StopMove(old=state.stop, new=desired, reason=reason_due or MoveReason.TRAIL)
    state = _replace(
        state,
        pending=None,
        reason_due=reason_due,
        in_flight=move,
        last_move_at=now,
        moves_sent=state.moves_sent + 1,
    )
    return TrailingDecision(state=state, move=move, events=tuple(events))


def on_move_result(
    state: TrailingState, sent: StopMove, accepted: bool, now: datetime
) -> TrailingState:
    """Record the exchange's answer to the move in flight.

    Accepted: `sent.new` becomes the live stop and a transition it carried is done;
    a pending stop still tighter than it is kept. Rejected (e.g. it would trigger at
    once): the old stop stays live and the pending stop is dropped, so the move is
    recomputed from the next price rather than re-sent from a stale one. Either way
    `min_interval` keeps counting from when the move was sent. Raises ValueError if
    `sent` is not the move in flight (a duplicate or stale answer).
    """
    if state.in_flight is None or state.in_flight != sent:
        raise ValueError(f"{sent!r} is not the move in flight ({state.in_flight!r})")
    if now.tzinfo is None or state.last_move_at is None or now < state.last_move_at:
        raise ValueError("now must be timezone-aware and not before the move was sent")
    if accepted:
        pending = state.pending
        if pending is not None and not _tighter(state.side, pending, sent.new):
            pending = None
        reason_due = None if state.reason_due == sent.reason else state.reason_due
        return _replace(
            state,
            stop=sent.new,
            in_flight=None,
            pending=pending,
            reason_due=reason_due,
            last_result_at=now,
            moves_accepted=state.moves_accepted + 1,
        )
    return _replace(
        state,
        in_flight=None,
        pending=None,
        last_result_at=now,
        moves_rejected=state.moves_rejected + 1,
    )


def with_params(state: TrailingState, params: TrailingParams) -> TrailingState:
    """Adopt new parameters (a workflow update) without ever loosening the stop.

    The live stop, a move in flight, the best price, an earned activation floor and
    the counters are kept.
    Phases never go back: a trailing position stays trailing and a reached breakeven
    stays reached even if the new levels are further away (going back could only ask
    for a looser stop, which is never sent). The pending stop is dropped because it
    was computed with the old parameters; the next evaluation recomputes it. A new
    level that is already reached takes effect at the next tick, which the band
    (`domain.band.band_for`) wakes for.
    """
    # The workflow keeps the parameters; the state only drops what it derived from
    # the old ones (the pending stop). Nothing else in it depends on them.
    return _replace(state, pending=None)


def next_timer(state: TrailingState, params: TrailingParams) -> datetime | None:
    """When the workflow must call `on_timer` even if no price leaves the band, or
    None. It may be in the past: then fire at once.

    Two deadlines: the end of `min_interval` for a pending stop that is protective at
    the last mark and not waiting for an answer; and the time activation
    (`opened_at + time_activation_after`) while trailing is inactive and the machine
    has not been evaluated since. Each is returned only while its evaluation can
    still change something, so a timer never re-fires in a loop.
    """
    deadlines: list[datetime] = []
    deadline = _time_deadline(state, params)
    if (
        deadline is not None
        and state.activated_at is None
        and (state.updated_at is None or state.updated_at < deadline)
    ):
        deadlines.append(deadline)
    if (
        state.pending is not None
        and state.in_flight is None
        and state.last_move_at is not None
        and state.last_mark is not None
        and _protective(state.side, state.pending, state.last_mark)
    ):
        deadlines.append(state.last_move_at + params.min_interval)
    return min(deadlines) if deadlines else None
