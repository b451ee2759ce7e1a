"""The price band: ticks strictly inside it provably need no workflow call.

Key property: for any reachable state (random path, possibly a move in flight,
possibly new parameters from a workflow update), any time before `next_timer`, and
any price strictly inside `band_for(...)`, `on_price` returns no move and no phase
transition. A second property checks that the band is not uselessly wide: one tick
beyond its profit-side bound, a machine that nothing holds back does act.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal, localcontext

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.band import PriceBand, band_for, next_timer
from domain.trailing import (
    TrailingMode,
    TrailingParams,
    TrailingState,
    activation_price,
    initial_state,
    on_move_result,
    on_price,
    with_params,
)
from domain.types import Side
from tests.domain.test_trailing import T0, Scenario, at, drive, params, scenario, trailing_params

D = Decimal
BAND_SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@st.composite
def reachable(draw: st.DrawFn) -> tuple[TrailingState, TrailingParams]:
    """A state reached by a random path, sometimes followed by a parameter update."""
    case: Scenario = draw(scenario())
    side, p, state, path = case
    cut = draw(st.integers(0, len(path)))
    state = drive(side, p, state, path[:cut]).states[-1]
    if draw(st.booleans()):
        p = draw(trailing_params())
        state = with_params(state, p)
    return state, p


@st.composite
def price_inside(draw: st.DrawFn, band: PriceBand, tick: Decimal) -> Decimal | None:
    """A price strictly inside the band, biased to its edges; None if it is empty."""
    with localcontext(prec=60):
        lo = band.wake_below if band.wake_below is not None else D(0)
        hi = band.wake_above if band.wake_above is not None else lo * 3 + 1
        if lo >= hi:
            return None
        eps = draw(st.sampled_from([D("1e-9"), tick / 10, tick]))
        mode = draw(st.sampled_from(["low", "high", "uniform"]))
        if mode == "low":
            p = lo + eps
        elif mode == "high":
            p = hi - eps
        else:
            u = draw(st.decimals(D("0.000001"), D("0.999999"), places=6))
            p = lo + (hi - lo) * u
    return p if p > 0 and band.is_quiet(p) else None


@BAND_SETTINGS
@given(reachable(), st.data())
def test_a_tick_inside_the_band_produces_no_move(
    sp: tuple[TrailingState, TrailingParams], data: st.DataObject
) -> None:
    state, p = sp
    now = (state.updated_at or state.opened_at) + timedelta(seconds=data.draw(st.integers(0, 900)))
    band = band_for(state, p, now)
    timer = next_timer(state, p)
    # Any number of in-band ticks, in order, before the timer: the gate drops them
    # all, so none of them may need the workflow, whatever the others did.
    t = now
    for _ in range(data.draw(st.integers(1, 4))):
        t = t + timedelta(seconds=data.draw(st.integers(0, 120)))
        if timer is not None and t >= timer:
            return
        price = data.draw(price_inside(band, p.tick_size))
        if price is None:
            return
        d = on_price(state, p, price, t)
        assert d.move is None, f"in-band tick {price} moved the stop: {d.move} (band {band})"
        assert d.events == (), f"in-band tick {price} caused {d.events} (band {band})"
        state = d.state


@BAND_SETTINGS
@given(reachable(), st.data())
def test_one_tick_beyond_the_profit_bound_acts_when_nothing_holds_back(
    sp: tuple[TrailingState, TrailingParams], data: st.DataObject
) -> None:
    state, p = sp
    if state.in_flight is not None:
        state = on_move_result(state, state.in_flight, data.draw(st.booleans()), state.last_move_at)  # type: ignore[arg-type]
    now = (state.updated_at or state.opened_at) + timedelta(seconds=data.draw(st.integers(0, 900)))
    if state.last_move_at is not None and now - state.last_move_at < p.min_interval:
        now = state.last_move_at + p.min_interval
    band = band_for(state, p, now)
    if state.side is Side.LONG:
        if band.wake_above is None:
            return
        price = band.wake_above + p.tick_size
    else:
        if band.wake_below is None or band.wake_below <= p.tick_size:
            return
        price = band.wake_below - p.tick_size
    d = on_price(state, p, price, now)
    if d.move is None and d.events == () and p.mode is TrailingMode.FREQTRADE:
        # While trailing, FREQTRADE mode may bound the band at the activation price,
        # where only a price exactly there acts (it earns the activation floor).
        level = activation_price(state, p)
        assert state.activated_at is not None and level is not None, band
        d = on_price(state, p, level, now)
    assert d.move is not None or d.events != (), f"band {band} wakes for nothing at {price}"


@pytest.mark.parametrize("side", list(Side))
def test_fresh_position_band_is_stop_and_nearest_trigger(side: Side) -> None:
    p = params(activation_pct=D(3), breakeven_trigger_pct=D("1.5"))
    stop = D(90) if side is Side.LONG else D(110)
    band = band_for(initial_state(side, D(100), stop, T0), p, T0)
    if side is Side.LONG:
        assert band == PriceBand(wake_below=D(90), wake_above=D("101.50"))
    else:
        assert band == PriceBand(wake_below=D("98.50"), wake_above=D(110))


def test_trail_from_the_start_wakes_on_the_first_tick() -> None:
    band = band_for(initial_state(Side.LONG, D(100), D(90), T0), params(), T0)
    assert not band.is_quiet(D(100)) and not band.is_quiet(D(95))


def test_trailing_band_bound_is_the_price_that_moves_the_stop_one_step() -> None:
    p = params(min_step_pct=D(1))
    state = initial_state(Side.LONG, D(100), D(90), T0)
    d = on_price(state, p, D(100), at(0))
    assert d.move is not None
    state = on_move_result(d.state, d.move, True, at(0))  # stop 98
    band = band_for(state, p, at(1))
    # Next stop >= 98 * 1.01 = 98.98, reached from 98.98 / 0.98 = 101.
    assert band == PriceBand(wake_below=D(98), wake_above=D("101.00"))
    assert on_price(state, p, D("100.99"), at(1)).move is None
    assert on_price(state, p, D("101.00"), at(1)).move is not None


def test_time_activation_due_adds_the_entry_price() -> None:
    p = params(activation_pct=D(10), time_activation_after=timedelta(minutes=5))
    state = initial_state(Side.SHORT, D(100), D(110), T0)
    assert band_for(state, p, at(0)).wake_below == D(90)
    assert next_timer(state, p) == at(300)
    assert band_for(state, p, at(300)).wake_below == D(100)


def test_band_round_trips_through_json() -> None:
    band = PriceBand(wake_below=D("0.000123"), wake_above=None)
    assert PriceBand.model_validate_json(band.model_dump_json()) == band


@pytest.mark.parametrize("side", list(Side))
def test_freqtrade_mode_wakes_at_the_level_and_at_the_entry_without_one(side: Side) -> None:
    stop = D(90) if side is Side.LONG else D(110)
    state = initial_state(side, D(100), stop, T0)
    p = params(activation_pct=D(3), mode=TrailingMode.FREQTRADE)
    level = D(103) if side is Side.LONG else D(97)
    band = band_for(state, p, T0)
    assert band.wakes(level) and band.is_quiet((level + D(100)) / 2)
    # Offset 0: a bound at the entry price, not an empty band.
    band = band_for(state, params(mode=TrailingMode.FREQTRADE), T0)
    assert band == (
        PriceBand(wake_below=D(90), wake_above=D(100))
        if side is Side.LONG
        else PriceBand(wake_below=D(100), wake_above=D(110))
    )


def test_freqtrade_mode_keeps_the_level_in_the_band_while_its_floor_can_still_move() -> None:
    # Stop 1 % away, trail 5 %: trailing from 105 gives 99.75, and a price exactly at
    # 103 would still earn 101.97. The band must wake there.
    p = params(callback_pct=D(5), activation_pct=D(3), mode=TrailingMode.FREQTRADE)
    state = initial_state(Side.LONG, D(100), D(99), T0)
    d = on_price(state, p, D(105), at(0))
    assert d.move is not None
    state = on_move_result(d.state, d.move, True, at(0))
    band = band_for(state, p, at(1))
    assert band.wake_above == D(103) and not band.is_quiet(D(103))
    d = on_price(state, p, D(103), at(1))
    assert d.move is not None and d.move.new == D("101.97")
    state = on_move_result(d.state, d.move, True, at(1))
    # Earned: the level leaves the band.
    assert band_for(state, p, at(2)).is_quiet(D(103))
