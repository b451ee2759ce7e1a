"""Trailing-stop state machine: properties over random price paths, plus examples.

The random paths drive the machine the way PositionWorkflow does: due timers fire
first, then the price tick is evaluated, and a move sent is answered (accepted or
rejected) either at once or only before the next tick (so ticks also arrive while a
move is in flight). Every evaluation is checked against independent oracles written
with plain exact Decimal arithmetic, not with the module's helpers.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal, localcontext
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from domain.trailing import (
    MoveReason,
    Phase,
    StopMove,
    TrailingDecision,
    TrailingMode,
    TrailingParams,
    TrailingRule,
    TrailingState,
    initial_state,
    next_timer,
    on_move_result,
    on_price,
    on_timer,
    with_params,
)
from domain.types import Side

T0 = datetime(2025, 1, 1, tzinfo=UTC)
D = Decimal
PHASE_ORDER = {Phase.WAITING: 0, Phase.BREAKEVEN: 1, Phase.TRAILING: 2}

PATH_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# ---------------------------------------------------------------- exact oracles


def _exact() -> AbstractContextManager[Context]:
    # Oracles compute with 100 digits: nothing they compare is ever rounded.
    return localcontext(prec=100)


def tighter(side: Side, a: Decimal, b: Decimal) -> bool:
    return a > b if side is Side.LONG else a < b


def protective(side: Side, stop: Decimal, mark: Decimal) -> bool:
    return stop < mark if side is Side.LONG else stop > mark


def profit_reached(side: Side, entry: Decimal, mark: Decimal, pct: Decimal) -> bool:
    """mark is at least `pct` percent in profit from entry (exact, no division)."""
    with _exact():
        if side is Side.LONG:
            return mark * 100 >= entry * (100 + pct)
        return mark * 100 <= entry * (100 - pct)


def profit_beyond(side: Side, entry: Decimal, mark: Decimal, pct: Decimal) -> bool:
    """mark is strictly more than `pct` percent in profit from entry (exact)."""
    with _exact():
        if side is Side.LONG:
            return mark * 100 > entry * (100 + pct)
        return mark * 100 < entry * (100 - pct)


def level_of(side: Side, entry: Decimal, pct: Decimal) -> Decimal:
    """entry moved `pct` percent into profit, exactly."""
    with _exact():
        return entry * (100 + pct) / 100 if side is Side.LONG else entry * (100 - pct) / 100


def expected_floor(side: Side, initial: Decimal, pct: Decimal, tick: Decimal) -> Decimal:
    """freqtrade's stoploss distance kept at the offset price: initial stop times the
    activation factor, rounded to the tick away from the price."""
    with _exact():
        raw = level_of(side, initial, pct)
        rounding = ROUND_FLOOR if side is Side.LONG else ROUND_CEILING
        return (raw / tick).to_integral_value(rounding=rounding) * tick


def in_profit(side: Side, entry: Decimal, mark: Decimal) -> bool:
    return mark > entry if side is Side.LONG else mark < entry


def step_ok(old: Decimal, new: Decimal, step_pct: Decimal) -> bool:
    with _exact():
        return abs(new - old) * 100 >= old * step_pct


def is_tick_multiple(price: Decimal, tick: Decimal) -> bool:
    with _exact():
        return price % tick == 0


# ---------------------------------------------------------------- strategies


def decimals(lo: str, hi: str, places: int) -> st.SearchStrategy[Decimal]:
    return st.decimals(D(lo), D(hi), places=places, allow_nan=False, allow_infinity=False)


@st.composite
def trailing_params(draw: st.DrawFn, /, **overrides: object) -> TrailingParams:
    """Random but valid parameters, including the edge cases None and 0."""
    fee = draw(st.sampled_from([D(0), D("0.05"), D("0.1"), D("0.2")]))
    values: dict[str, object] = {
        "callback_pct": draw(decimals("0.1", "10", 2)),
        "tick_size": draw(st.sampled_from([D("0.01"), D("0.001"), D("0.1"), D("0.5"), D(1)])),
        "activation_pct": draw(st.none() | decimals("0.1", "8", 2)),
        "breakeven_trigger_pct": draw(st.none() | decimals("0.3", "6", 2)),
        "breakeven_fee_pct": fee,
        "time_activation_after": draw(
            st.none() | st.integers(1, 600).map(lambda s: timedelta(seconds=s))
        ),
        "min_step_pct": draw(st.sampled_from([D(0), D("0.01"), D("0.1"), D("0.5"), D(1)])),
        "min_interval": draw(
            st.sampled_from([0, 1, 5, 30, 120]).map(lambda s: timedelta(seconds=s))
        ),
        "mode": draw(st.sampled_from(list(TrailingMode))),
    }
    values.update(overrides)
    return TrailingParams.model_validate(values)


@dataclass(frozen=True)
class Step:
    """One tick of a path: time advance, relative price change, how the move is answered."""

    dt: int  # seconds since the previous tick
    bps: int  # price change in basis points
    ack_at_once: bool  # answer a move before the next tick arrives, or only after it
    accept: bool
    # The price jumps to exactly the activation price (the entry price without one):
    # the edge where POSGUARD and FREQTRADE modes differ.
    at_level: bool = False


steps = st.builds(
    Step,
    dt=st.integers(0, 40),
    bps=st.integers(-150, 160),
    ack_at_once=st.booleans(),
    # Mostly accepted, as on a healthy exchange; rejections exercise the recovery.
    accept=st.sampled_from([True, True, True, False]),
    at_level=st.integers(0, 7).map(lambda x: x == 0),
)


Scenario = tuple[Side, TrailingParams, TrailingState, list[Step]]


@st.composite
def scenario(
    draw: st.DrawFn,
    params: st.SearchStrategy[TrailingParams] | None = None,
    side: Side | None = None,
) -> Scenario:
    """A side, parameters, a fresh position (stop 0.5-20 % away) and a price path."""
    side = side if side is not None else draw(st.sampled_from(list(Side)))
    p = draw(params if params is not None else trailing_params())
    with _exact():
        entry = draw(st.integers(1000, 200_000)) * p.tick_size
        sl_pct = draw(decimals("0.5", "20", 1))
        raw_stop = entry * (1 - sl_pct / 100) if side is Side.LONG else entry * (1 + sl_pct / 100)
        rounding = ROUND_FLOOR if side is Side.LONG else ROUND_CEILING
        stop = (raw_stop / p.tick_size).to_integral_value(rounding=rounding) * p.tick_size
    state = initial_state(side, entry, stop, T0)
    # A per-path trend, so that both longs and shorts see runs in and out of profit.
    drift = draw(st.integers(-40, 40))
    path = [replace(s, bps=s.bps + drift) for s in draw(st.lists(steps, min_size=1, max_size=60))]
    return side, p, state, path


# ---------------------------------------------------------------- the driver


@dataclass
class Run:
    """What a path produced, for assertions after the fact."""

    side: Side
    params: TrailingParams
    states: list[TrailingState] = field(default_factory=list)
    sends: list[tuple[datetime, StopMove, Decimal]] = field(default_factory=list)
    marks: list[Decimal] = field(default_factory=list)


def check_decision(
    run: Run, before: TrailingState, d: TrailingDecision, mark: Decimal | None, now: datetime
) -> None:
    """Invariants of one evaluation (on_price or on_timer)."""
    side, p, after = run.side, run.params, d.state
    assert after.stop == before.stop, "an evaluation never changes the live stop"
    assert PHASE_ORDER[after.phase] >= PHASE_ORDER[before.phase], "phases never go back"

    if d.move is not None:
        move = d.move
        assert mark is not None
        assert before.in_flight is None, "one move at a time"
        assert move.old == before.stop
        assert tighter(side, move.new, move.old), "a move only tightens"
        assert protective(side, move.new, mark), "a stop is never sent at or beyond the mark"
        assert is_tick_multiple(move.new, p.tick_size)
        assert step_ok(move.old, move.new, p.min_step_pct), "moves below min_step are not sent"
        if before.last_move_at is not None:
            assert now - before.last_move_at >= p.min_interval, "moves closer than min_interval"
        assert after.in_flight == move
        run.sends.append((now, move, mark))

    # A pending stop is only held for a reason: a move in flight, the interval,
    # or the stop not being protective at the price.
    if after.pending is not None:
        held_by_interval = (
            after.last_move_at is not None and now - after.last_move_at < p.min_interval
        )
        assert (
            after.in_flight is not None
            or held_by_interval
            or mark is None
            or not protective(side, after.pending, mark)
        )

    # Activation and breakeven happen at the first evaluation that qualifies:
    # POSGUARD at or beyond the level (any price without one), FREQTRADE strictly
    # beyond it (beyond the entry price without one).
    if before.activated_at is None:
        if p.mode is TrailingMode.FREQTRADE:
            by_price = mark is not None and profit_beyond(
                side, before.entry_price, mark, p.activation_pct or D(0)
            )
        else:
            by_price = mark is not None and (
                p.activation_pct is None
                or profit_reached(side, before.entry_price, mark, p.activation_pct)
            )
        by_time = (
            mark is not None
            and p.time_activation_after is not None
            and now - before.opened_at >= p.time_activation_after
            and in_profit(side, before.entry_price, mark)
        )
        assert (after.activated_at == now) == (by_price or by_time)
        if by_price:
            assert MoveReason.ACTIVATED in d.events
        elif by_time:
            assert MoveReason.TIME_ACTIVATED in d.events
    else:
        assert after.activated_at == before.activated_at
    if before.breakeven_at is None:
        be = (
            mark is not None
            and p.breakeven_trigger_pct is not None
            and profit_reached(side, before.entry_price, mark, p.breakeven_trigger_pct)
        )
        assert (after.breakeven_at == now) == be
        assert (MoveReason.BREAKEVEN in d.events) == be

    # FREQTRADE mode: a price exactly at the activation price earns the floor.
    floor = before.activation_floor
    initial = before.initial_stop
    if (
        p.mode is TrailingMode.FREQTRADE
        and p.activation_pct is not None
        and mark is not None
        and initial is not None
        and tighter(side, before.entry_price, initial)
        and mark == level_of(side, before.entry_price, p.activation_pct)
    ):
        earned = expected_floor(side, initial, p.activation_pct, p.tick_size)
        floor = earned if floor is None or tighter(side, earned, floor) else floor
    assert after.activation_floor == floor
    if d.move is not None and floor is not None:
        with _exact():  # the floor, on the current tick grid (away from the price)
            rounding = ROUND_FLOOR if side is Side.LONG else ROUND_CEILING
            units = (floor / p.tick_size).to_integral_value(rounding=rounding)
        assert not tighter(side, units * p.tick_size, d.move.new), "a move is below the floor"
    assert after.initial_stop == before.initial_stop

    # Exact JSON round trip: the state is a workflow payload.
    payload = after.model_dump_json()
    back = TrailingState.model_validate_json(payload)
    assert back == after
    assert back.model_dump_json() == payload


def answer(run: Run, state: TrailingState, accept: bool, now: datetime) -> TrailingState:
    assert state.in_flight is not None
    move = state.in_flight
    after = on_move_result(state, move, accept, now)
    assert after.in_flight is None
    assert after.stop == (move.new if accept else move.old)
    return after


def drive(side: Side, p: TrailingParams, state: TrailingState, path: list[Step]) -> Run:
    """Run a path like the workflow does; check every step; return the history."""
    run = Run(side=side, params=p, states=[state])
    now = state.updated_at or state.opened_at
    mark = state.last_mark or state.entry_price
    # A state may arrive with a move in flight (second half of a path): answer it.
    deferred_accept: bool | None = True if state.in_flight is not None else None
    for step in path:
        now = now + timedelta(seconds=step.dt)
        if deferred_accept is not None:
            state = answer(run, state, deferred_accept, now)
            deferred_accept = None
            run.states.append(state)
        due = next_timer(state, p)
        if due is not None and due <= now:
            fire_at = max(due, state.updated_at or state.opened_at)
            d = on_timer(state, p, fire_at)
            check_decision(run, state, d, state.last_mark, fire_at)
            state = d.state
            run.states.append(state)
            if d.move is not None:
                state = answer(run, state, step.accept, fire_at)
                run.states.append(state)
        with _exact():
            mark = mark * (10_000 + step.bps) / 10_000
            # Mark prices carry one more digit than the tick, as Binance's do.
            mark = max(mark.quantize(p.tick_size / 10), p.tick_size)
        if step.at_level:
            entry = run.states[0].entry_price
            pct = p.activation_pct
            mark = level_of(side, entry, pct) if pct is not None else entry
        run.marks.append(mark)
        d = on_price(state, p, mark, now)
        check_decision(run, state, d, mark, now)
        state = d.state
        run.states.append(state)
        seen = [*run.marks, run.states[0].best_price]
        assert state.best_price == (max(seen) if side is Side.LONG else min(seen))
        if d.move is not None:
            if step.ack_at_once:
                state = answer(run, state, step.accept, now)
                run.states.append(state)
            else:
                deferred_accept = step.accept
    return run


# ---------------------------------------------------------------- properties


@PATH_SETTINGS
@given(scenario())
def test_random_paths_keep_every_invariant(case: Scenario) -> None:
    side, p, state, path = case
    run = drive(side, p, state, path)
    # The live stop never loosens over the whole life of the position.
    for a, b in pairwise(run.states):
        assert not tighter(side, a.stop, b.stop), f"stop loosened {a.stop} -> {b.stop}"


@pytest.mark.parametrize("side", list(Side))
@PATH_SETTINGS
@given(data=st.data())
def test_each_side_trails_and_moves_are_spaced(side: Side, data: st.DataObject) -> None:
    p = data.draw(trailing_params(min_interval=timedelta(seconds=30)))
    _, _, state, path = data.draw(scenario(st.just(p), side=side))
    run = drive(side, p, state, path)
    times = [t for t, _, _ in run.sends]
    assert all(b - a >= timedelta(seconds=30) for a, b in pairwise(times))


@PATH_SETTINGS
@given(scenario(), st.data())
def test_param_changes_never_loosen_the_stop(case: Scenario, data: st.DataObject) -> None:
    side, p, state, path = case
    run = drive(side, p, state, path[: len(path) // 2])
    state = run.states[-1]
    p2 = data.draw(trailing_params())
    changed = with_params(state, p2)
    assert changed.stop == state.stop
    assert changed.in_flight == state.in_flight
    assert changed.phase == state.phase
    assert changed.best_price == state.best_price
    # And the machine keeps all its invariants under the new parameters.
    rest = drive(side, p2, changed, path[len(path) // 2 :])
    for a, b in pairwise(rest.states):
        assert not tighter(side, a.stop, b.stop)


@settings(max_examples=100, deadline=None)
@given(trailing_params())
def test_params_round_trip_through_json(p: TrailingParams) -> None:
    payload = p.model_dump_json()
    assert TrailingParams.model_validate_json(payload) == p
    assert TrailingParams.model_validate_json(payload).model_dump_json() == payload


# ---------------------------------------------------------------- examples


def params(**kw: object) -> TrailingParams:
    base: dict[str, object] = {"callback_pct": D(2), "tick_size": D("0.01")}
    base.update(kw)
    return TrailingParams.model_validate(base)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def feed(
    state: TrailingState, p: TrailingParams, ticks: list[tuple[float, str]], accept: bool = True
) -> tuple[TrailingState, list[tuple[float, StopMove]]]:
    """Feed ticks, answering every move at once; return the state and the moves."""
    moves: list[tuple[float, StopMove]] = []
    for t, m in ticks:
        d = on_price(state, p, D(m), at(t))
        state = d.state
        if d.move is not None:
            moves.append((t, d.move))
            state = on_move_result(state, d.move, accept, at(t))
    return state, moves


@pytest.mark.parametrize(
    ("side", "ticks", "expect_tick", "expect_stop"),
    [
        # Long, entry 100, activation 3 %: 102.99 does not qualify, 103.00 does.
        (Side.LONG, ["101", "102.99", "103.00", "104"], 2, D("100.94")),
        # Short mirrored: 97.01 no, 97.00 yes; stop 97 * 1.02 = 98.94.
        (Side.SHORT, ["99", "97.01", "97.00", "96"], 2, D("98.94")),
    ],
)
def test_activation_happens_at_the_first_qualifying_tick(
    side: Side, ticks: list[str], expect_tick: int, expect_stop: Decimal
) -> None:
    p = params(activation_pct=D(3))
    stop = D(90) if side is Side.LONG else D(110)
    state = initial_state(side, D(100), stop, T0)
    for i, m in enumerate(ticks):
        d = on_price(state, p, D(m), at(i))
        if i < expect_tick:
            assert d.events == () and d.move is None
        if i == expect_tick:
            assert d.events == (MoveReason.ACTIVATED,)
            assert d.move == StopMove(old=stop, new=expect_stop, reason=MoveReason.ACTIVATED)
            assert d.state.phase is Phase.TRAILING
            break
        state = d.state


@pytest.mark.parametrize(
    ("side", "stop", "trigger_mark", "be_stop"),
    [
        # 100 * (1 + 0.00123) = 100.123 rounds DOWN to 100.12 (away from the price).
        (Side.LONG, D(95), "102", D("100.12")),
        # Short: 100 * (1 - 0.00123) = 99.877 rounds UP to 99.88.
        (Side.SHORT, D(105), "98", D("99.88")),
    ],
)
def test_breakeven_moves_to_entry_plus_fees_rounded_away(
    side: Side, stop: Decimal, trigger_mark: str, be_stop: Decimal
) -> None:
    p = params(breakeven_trigger_pct=D(2), breakeven_fee_pct=D("0.123"), activation_pct=D(5))
    state = initial_state(side, D(100), stop, T0)
    near = "101.99" if side is Side.LONG else "98.01"
    d = on_price(state, p, D(near), at(1))
    assert d.move is None and d.state.phase is Phase.WAITING
    d = on_price(d.state, p, D(trigger_mark), at(2))
    assert d.events == (MoveReason.BREAKEVEN,)
    assert d.move == StopMove(old=stop, new=be_stop, reason=MoveReason.BREAKEVEN)
    assert d.state.phase is Phase.BREAKEVEN


def test_breakeven_and_activation_on_one_tick_report_both() -> None:
    p = params(breakeven_trigger_pct=D(1), activation_pct=D(2), callback_pct=D(5))
    state = initial_state(Side.LONG, D(100), D(90), T0)
    d = on_price(state, p, D(103), at(1))
    assert d.events == (MoveReason.BREAKEVEN, MoveReason.ACTIVATED)
    # 103 * 0.95 = 97.85 < breakeven 100: breakeven is a floor while trailing.
    assert d.move == StopMove(old=D(90), new=D(100), reason=MoveReason.ACTIVATED)


def test_moves_inside_min_interval_coalesce_into_the_latest() -> None:
    p = params(min_interval=timedelta(seconds=10))
    state = initial_state(Side.LONG, D(100), D(90), T0)
    state, moves = feed(state, p, [(0, "100")])  # activates; 98 sent at t=0
    assert moves == [(0, StopMove(old=D(90), new=D(98), reason=MoveReason.ACTIVATED))]
    d = on_price(state, p, D(101), at(3))
    assert d.move is None and d.state.pending == D("98.98")
    d = on_price(d.state, p, D(102), at(6))
    assert d.move is None and d.state.pending == D("99.96")
    assert next_timer(d.state, p) == at(10)
    # The first tick after the interval sends the latest desired stop, once.
    d2 = on_price(d.state, p, D("101.5"), at(11))
    assert d2.move == StopMove(old=D(98), new=D("99.96"), reason=MoveReason.TRAIL)
    # Or the timer does, with the last price.
    d3 = on_timer(d.state, p, at(10))
    assert d3.move == StopMove(old=D(98), new=D("99.96"), reason=MoveReason.TRAIL)
    assert next_timer(d3.state, p) is None


def test_a_transition_held_by_the_interval_keeps_its_reason() -> None:
    p = params(min_interval=timedelta(seconds=10), activation_pct=D(3), breakeven_trigger_pct=D(1))
    state = initial_state(Side.LONG, D(100), D(90), T0)
    state, moves = feed(state, p, [(0, "101")])
    assert [m.reason for _, m in moves] == [MoveReason.BREAKEVEN]
    d = on_price(state, p, D(104), at(2))
    assert d.events == (MoveReason.ACTIVATED,) and d.move is None
    d = on_timer(d.state, p, at(10))
    assert d.move == StopMove(old=D(100), new=D("101.92"), reason=MoveReason.ACTIVATED)


def test_small_moves_are_not_sent_but_the_best_price_is_tracked() -> None:
    p = params(min_step_pct=D(1))
    state = initial_state(Side.LONG, D(100), D(90), T0)
    state, _ = feed(state, p, [(0, "100")])  # stop 98
    d = on_price(state, p, D("100.9"), at(1))  # 98.882: < 1 % of 98 (0.98) away
    assert d.move is None and d.state.pending is None and d.state.best_price == D("100.9")
    d = on_price(d.state, p, D("101"), at(2))  # 98.98: exactly 0.98 away -> sent
    assert d.move == StopMove(old=D(98), new=D("98.98"), reason=MoveReason.TRAIL)


@pytest.mark.parametrize("side", list(Side))
def test_a_stop_at_or_beyond_the_mark_is_skipped_then_sent_when_protective(side: Side) -> None:
    # Breakeven at 1 % with fee 0.5 %: stop 100.5 (long). The interval holds it,
    # the price falls back through 100.5, so sending it would trigger at once.
    sign = 1 if side is Side.LONG else -1
    p = params(
        breakeven_trigger_pct=D(1),
        breakeven_fee_pct=D("0.5"),
        activation_pct=D(50),
        min_interval=timedelta(seconds=10),
    )
    start = D(90) if side is Side.LONG else D(110)
    state = initial_state(side, D(100), start, T0)
    state = TrailingState.model_validate({**dict(state), "last_move_at": at(0)})  # recent move
    be_stop = D("100.5") if side is Side.LONG else D("99.5")
    d = on_price(state, p, D(100) + sign * D("1.2"), at(1))
    assert d.move is None and d.state.pending == be_stop
    d = on_price(d.state, p, D(100) + sign * D("0.5"), at(11))  # mark == stop: skip
    assert d.move is None and d.state.pending == be_stop
    assert next_timer(d.state, p) is None  # a price, not a timer, must unblock it
    d = on_price(d.state, p, D(100) + sign * D("0.6"), at(12))
    assert d.move == StopMove(old=start, new=be_stop, reason=MoveReason.BREAKEVEN)


def test_rejected_move_keeps_old_stop_and_is_recomputed_from_next_price() -> None:
    p = params()
    state = initial_state(Side.LONG, D(100), D(90), T0)
    d = on_price(state, p, D(100), at(0))
    assert d.move is not None
    state = on_move_result(d.state, d.move, False, at(1))
    assert state.stop == D(90) and state.pending is None and state.moves_rejected == 1
    assert state.reason_due is MoveReason.ACTIVATED  # the activation still owes a move
    d = on_price(state, p, D(99), at(2))
    assert d.move == StopMove(old=D(90), new=D(98), reason=MoveReason.ACTIVATED)
    state = on_move_result(d.state, d.move, True, at(3))
    assert state.stop == D(98) and state.reason_due is None


def test_no_second_move_while_one_is_in_flight() -> None:
    p = params()
    state = initial_state(Side.LONG, D(100), D(90), T0)
    d = on_price(state, p, D(100), at(0))
    assert d.move is not None
    d2 = on_price(d.state, p, D(110), at(1))
    assert d2.move is None and d2.state.pending == D("107.8")
    with pytest.raises(ValueError, match="not the move in flight"):
        on_move_result(
            d2.state, StopMove(old=D(90), new=D(99), reason=MoveReason.TRAIL), True, at(1)
        )
    state = on_move_result(d2.state, d.move, True, at(2))
    assert state.stop == D(98) and state.pending == D("107.8")
    assert next_timer(state, p) == at(0)  # interval 0 elapsed: send it now
    d3 = on_timer(state, p, at(2))
    assert d3.move == StopMove(old=D(98), new=D("107.8"), reason=MoveReason.TRAIL)


def test_time_activation_fires_by_timer_when_in_profit() -> None:
    p = params(activation_pct=D(10), time_activation_after=timedelta(minutes=5))
    state = initial_state(Side.LONG, D(100), D(90), T0)
    state, _ = feed(state, p, [(10, "101")])
    assert next_timer(state, p) == at(300)
    d = on_timer(state, p, at(300))
    assert d.events == (MoveReason.TIME_ACTIVATED,)
    # 101 * 0.98 = 98.98
    assert d.move == StopMove(old=D(90), new=D("98.98"), reason=MoveReason.TIME_ACTIVATED)


def test_time_activation_waits_for_profit_without_timer_loop() -> None:
    p = params(activation_pct=D(10), time_activation_after=timedelta(minutes=5))
    state = initial_state(Side.LONG, D(100), D(90), T0)
    state, _ = feed(state, p, [(10, "99")])
    d = on_timer(state, p, at(300))
    assert d.events == () and next_timer(d.state, p) is None
    d = on_price(d.state, p, D(100), at(301))  # not strictly in profit
    assert d.events == ()
    d = on_price(d.state, p, D("100.01"), at(302))
    assert d.events == (MoveReason.TIME_ACTIVATED,)


def test_with_params_tightens_only_through_the_machine_and_never_regresses() -> None:
    p = params(callback_pct=D(5))
    state = initial_state(Side.LONG, D(100), D(90), T0)
    state, _ = feed(state, p, [(0, "110")])
    assert state.stop == D("104.5")
    # A looser callback: nothing moves, ever.
    loose = params(callback_pct=D(9))
    s2 = with_params(state, loose)
    assert s2.stop == D("104.5") and s2.phase is Phase.TRAILING
    assert on_price(s2, loose, D(109), at(5)).move is None
    # A tighter callback applies from the next price.
    tight = params(callback_pct=D(1))
    d = on_price(with_params(state, tight), tight, D(109), at(5))
    assert d.move == StopMove(old=D("104.5"), new=D("108.9"), reason=MoveReason.TRAIL)
    # A further activation level does not take trailing back.
    far = params(activation_pct=D(50))
    assert with_params(state, far).phase is Phase.TRAILING


def test_state_json_round_trip_with_a_move_in_flight_and_a_pending_stop() -> None:
    state = initial_state(Side.SHORT, D("0.012345"), D("0.0130"), T0)
    p = params(tick_size=D("0.000001"), min_interval=timedelta(seconds=5))
    d = on_price(state, p, D("0.012000"), at(1))
    d = on_price(d.state, p, D("0.011000"), at(2))
    s = d.state
    assert s.in_flight is not None and s.pending is not None
    payload = s.model_dump_json()
    assert TrailingState.model_validate_json(payload) == s
    assert TrailingDecision.model_validate_json(d.model_dump_json()) == d


@pytest.mark.parametrize(
    "bad",
    [
        {"callback_pct": D(0)},
        {"callback_pct": D(100)},
        {"callback_pct": 1.5},  # float
        {"tick_size": D(0)},
        {"breakeven_trigger_pct": D("0.1"), "breakeven_fee_pct": D("0.1")},
        {"time_activation_after": timedelta(0)},
        {"min_interval": timedelta(seconds=-1)},
        {"min_step_pct": D(-1)},
        {"activation_pct": D("NaN")},
    ],
)
def test_invalid_params_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        params(**bad)


@pytest.mark.parametrize(
    "call",
    [
        lambda s, p: on_price(s, p, D(0), at(1)),
        lambda s, p: on_price(s, p, 101.0, at(1)),  # type: ignore[arg-type]  # float
        lambda s, p: on_price(s, p, D(101), datetime(2025, 1, 1, 0, 0, 1)),  # naive
        lambda s, p: on_price(s, p, D(101), at(-1)),  # before opening
    ],
)
def test_invalid_inputs_are_refused(
    call: Callable[[TrailingState, TrailingParams], object],
) -> None:
    state = initial_state(Side.LONG, D(100), D(90), T0)
    with pytest.raises(ValueError):
        call(state, params())


def test_state_refuses_inconsistent_phase() -> None:
    state = initial_state(Side.LONG, D(100), D(90), T0)
    with pytest.raises(ValidationError):
        TrailingState.model_validate({**dict(state), "phase": Phase.TRAILING})


# ---------------------------------------------------------------- FREQTRADE mode


def ft(**kw: object) -> TrailingParams:
    return params(mode=TrailingMode.FREQTRADE, **kw)


@pytest.mark.parametrize(
    ("side", "ticks", "stops"),
    [
        # Entry 100, stop 90, activation 3 %: 103.00 keeps the 10 % distance (92.70),
        # 103.01 activates (103.01 * 0.98 = 100.9498, down to 100.94).
        (Side.LONG, ["102.99", "103.00", "103.01"], ["90", "92.70", "100.94"]),
        (Side.SHORT, ["97.01", "97.00", "96.99"], ["110", "106.70", "98.93"]),
    ],
)
def test_freqtrade_mode_activates_strictly_beyond_the_level(
    side: Side, ticks: list[str], stops: list[str]
) -> None:
    state = initial_state(side, D(100), D(stops[0]), T0)
    state, moves = feed(state, ft(activation_pct=D(3)), list(enumerate(ticks)))
    assert [m.new for _, m in moves] == [D(x) for x in stops[1:]]
    assert [m.reason for _, m in moves] == [MoveReason.TRAIL, MoveReason.ACTIVATED]
    assert state.activation_floor == D(stops[1]) and state.phase is Phase.TRAILING


@pytest.mark.parametrize("side", list(Side))
def test_freqtrade_mode_without_activation_waits_for_profit(side: Side) -> None:
    # freqtrade's offset 0: the initial stop stays at and on the loss side of entry.
    sign = 1 if side is Side.LONG else -1
    stop = D(100) - sign * 10
    state = initial_state(side, D(100), stop, T0)
    p = ft()
    for i, m in enumerate([D(100) - sign * D("0.5"), D(100)]):
        d = on_price(state, p, m, at(i))
        assert d.move is None and d.events == ()
        state = d.state
    d = on_price(state, p, D(100) + sign * D("0.01"), at(2))
    assert d.events == (MoveReason.ACTIVATED,)
    # 100.01 * 0.98 = 98.0098 -> 98.00; 99.99 * 1.02 = 101.9898 -> 101.99.
    assert d.move is not None and d.move.new == (D("98.00") if side is Side.LONG else D("101.99"))
    # The default mode trails from the entry price at once.
    assert on_price(initial_state(side, D(100), stop, T0), params(), D(100), at(0)).move


def test_freqtrade_floor_survives_the_interval_and_a_rejection() -> None:
    p = ft(activation_pct=D(3), min_interval=timedelta(seconds=10))
    state = initial_state(Side.LONG, D(100), D(90), T0)
    state = TrailingState.model_validate({**dict(state), "last_move_at": at(0)})
    d = on_price(state, p, D(103), at(1))  # floor 92.70, held by the interval
    assert d.move is None and d.state.pending == D("92.70")
    d = on_price(d.state, p, D(102), at(5))  # no longer at the level: still earned
    assert d.state.pending == D("92.70") and d.state.activation_floor == D("92.70")
    d = on_timer(d.state, p, at(10))
    assert d.move == StopMove(old=D(90), new=D("92.70"), reason=MoveReason.TRAIL)
    state = on_move_result(d.state, d.move, False, at(10))  # rejected: recomputed later
    d = on_price(state, p, D(101), at(21))
    assert d.move == StopMove(old=D(90), new=D("92.70"), reason=MoveReason.TRAIL)


def test_freqtrade_floor_needs_a_recorded_initial_stop_on_the_loss_side() -> None:
    p = ft(activation_pct=D(3))
    legacy = initial_state(Side.LONG, D(100), D(90), T0).model_copy(update={"initial_stop": None})
    d = on_price(legacy, p, D(103), at(1))
    assert d.move is None and d.state.activation_floor is None
    in_profit_stop = initial_state(Side.LONG, D(100), D(101), T0)
    d = on_price(in_profit_stop, p, D(103), at(1))
    assert d.move is None and d.state.activation_floor is None


def test_freqtrade_floor_is_kept_by_with_params_and_json() -> None:
    p = ft(activation_pct=D(3))
    state, _ = feed(initial_state(Side.SHORT, D(100), D(110), T0), p, [(1, "97")])
    assert state.stop == D("106.70") and state.activation_floor == D("106.70")
    changed = with_params(state, ft(activation_pct=D(5)))
    assert changed.activation_floor == D("106.70") and changed.initial_stop == D(110)
    assert TrailingState.model_validate_json(changed.model_dump_json()) == changed


def test_rule_carries_the_mode_into_the_params() -> None:
    rule = TrailingRule(callback_pct=D(2), activation_pct=D(3), mode=TrailingMode.FREQTRADE)
    assert rule.params(D("0.01")).mode is TrailingMode.FREQTRADE
    assert TrailingRule(callback_pct=D(2)).params(D("0.01")).mode is TrailingMode.POSGUARD
    assert TrailingRule.model_validate_json(rule.model_dump_json()) == rule
    # A rule saved before the field existed reads as the default mode.
    old = TrailingRule.model_validate({"callback_pct": "2"})
    assert old.mode is TrailingMode.POSGUARD
