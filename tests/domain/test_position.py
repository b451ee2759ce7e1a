"""Position state machine, spec, PnL and the persisted snapshot."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from itertools import pairwise
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from domain.orders import Fill, OrderRef
from domain.position import (
    ALLOWED_TRANSITIONS,
    CloseReason,
    IllegalTransition,
    PositionSnapshot,
    PositionSpec,
    PositionState,
    average_price,
    initial_state,
    is_open_on_exchange,
    is_terminal,
    realised_pnl,
    total_fees,
    transition,
)
from domain.sizing import SizingMode, SizingRequest, StopRule, TakeProfitRule
from domain.types import ExchangeId, Side

S = PositionState
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=1)
ALL_PAIRS = [(a, b) for a in S for b in S]


# --- state machine ---------------------------------------------------------------


@pytest.mark.parametrize(("state", "to"), ALL_PAIRS)
def test_transition_allowed_iff_in_table(state: PositionState, to: PositionState) -> None:
    if to in ALLOWED_TRANSITIONS[state]:
        assert transition(state, to) is to
    else:
        with pytest.raises(IllegalTransition) as err:
            transition(state, to)
        assert (err.value.from_state, err.value.to_state) == (state, to)


def test_the_happy_path() -> None:
    path = [S.PENDING_ENTRY, S.ENTRY_PLACED, S.PENDING_SL, S.ACTIVE, S.CLOSING, S.CLOSED]
    for a, b in pairwise(path):
        assert transition(a, b) is b


@pytest.mark.parametrize("state", list(S))
def test_terminal_states_have_no_way_out(state: PositionState) -> None:
    assert is_terminal(state) is (not ALLOWED_TRANSITIONS[state])
    assert is_terminal(state) is (state in {S.CLOSED, S.ROLLED_BACK})


@pytest.mark.parametrize("state", list(S))
def test_every_state_can_end(state: PositionState) -> None:
    seen = {state}
    frontier = [state]
    while frontier:
        for nxt in ALLOWED_TRANSITIONS[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    assert seen & {S.CLOSED, S.ROLLED_BACK}


@pytest.mark.parametrize("state", list(S))
def test_no_state_moves_to_itself(state: PositionState) -> None:
    assert state not in ALLOWED_TRANSITIONS[state]


def test_failed_is_not_terminal_and_is_open() -> None:
    # failed: still protected by an emergency stop, the workflow keeps watching
    assert not is_terminal(S.FAILED)
    assert is_open_on_exchange(S.FAILED)


@pytest.mark.parametrize(
    ("state", "open_"),
    [
        (S.PENDING_ENTRY, False),
        (S.ENTRY_PLACED, True),
        (S.PENDING_SL, True),
        (S.ACTIVE, True),
        (S.CLOSING, True),
        (S.FAILED, True),
        (S.CLOSED, False),
        (S.ROLLED_BACK, False),
    ],
)
def test_is_open_on_exchange(state: PositionState, open_: bool) -> None:
    assert is_open_on_exchange(state) is open_


def test_an_active_position_cannot_be_rolled_back_and_an_entry_cannot_skip_the_stop() -> None:
    with pytest.raises(IllegalTransition):
        transition(S.ACTIVE, S.ROLLED_BACK)
    with pytest.raises(IllegalTransition):
        transition(S.ENTRY_PLACED, S.ACTIVE)


def test_initial_state() -> None:
    assert initial_state(adopt=False) is S.PENDING_ENTRY
    assert initial_state(adopt=True) is S.PENDING_SL


# --- spec ------------------------------------------------------------------------

SPEC: dict[str, Any] = {
    "account": "main",
    "exchange": "binanceusdm",
    "symbol": "BTCUSDT",
    "side": "long",
    "sizing": {"mode": "quote", "amount": "200"},
    "stop": {"percent": "2"},
    "emergency_stop_percent": "5",
    "take_profit": {"percent": "6"},
    "max_age": "PT24H",
}


def test_spec_round_trips() -> None:
    spec = PositionSpec.model_validate(SPEC)
    assert spec.max_age == timedelta(hours=24)
    assert spec.sizing == SizingRequest(mode=SizingMode.QUOTE, amount=D("200"))
    assert spec.take_profit == TakeProfitRule(percent=D("6"))
    assert spec.exchange is ExchangeId.BINANCE_USDM
    assert PositionSpec.model_validate(spec.model_dump(mode="json")) == spec
    assert PositionSpec.model_validate_json(spec.model_dump_json()) == spec


def test_adopted_spec_has_no_sizing() -> None:
    spec = PositionSpec.model_validate(SPEC | {"sizing": None, "adopt": True})
    assert spec.adopt


@pytest.mark.parametrize(
    "update",
    [
        {"symbol": "BTC/USDT:USDT"},  # must be canonical
        {"symbol": "btcusdt"},
        {"adopt": True},  # adopt with sizing
        {"sizing": None},  # open without sizing
        {"emergency_stop_percent": "2"},  # not wider than the stop
        {"emergency_stop_percent": "1"},
        {"emergency_stop_percent": 5.0},  # float
        {"max_age": "PT0S"},
        {"exchange": "kraken"},
        {"stop": {"percent": "2", "price": "90000"}},
    ],
)
def test_spec_validation(update: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        PositionSpec.model_validate(SPEC | update)


def test_spec_with_stop_price_skips_width_check() -> None:
    spec = PositionSpec.model_validate(
        SPEC | {"stop": StopRule(price=D("90000")).model_dump(mode="json")}
    )
    assert spec.stop.price == D("90000")


# --- pnl -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "entry", "exit_", "qty", "expected"),
    [
        (Side.LONG, D("100"), D("110"), D("2"), D("20")),
        (Side.LONG, D("100"), D("95"), D("2"), D("-10")),
        (Side.SHORT, D("100"), D("110"), D("2"), D("-20")),
        (Side.SHORT, D("100"), D("95"), D("2"), D("10")),
        (Side.LONG, D("0.1"), D("0.3"), D("3"), D("0.6")),  # exact, unlike float
    ],
)
def test_realised_pnl(side: Side, entry: D, exit_: D, qty: D, expected: D) -> None:
    assert realised_pnl(side, entry, exit_, qty) == expected


money = st.decimals(min_value=D("0.0001"), max_value=D("100000"), places=4)


@given(entry=money, exit_=money, qty=money)
def test_long_and_short_pnl_are_opposite(entry: D, exit_: D, qty: D) -> None:
    assert realised_pnl(Side.LONG, entry, exit_, qty) == -realised_pnl(
        Side.SHORT, entry, exit_, qty
    )


def test_pnl_uses_contract_size() -> None:
    assert realised_pnl(Side.LONG, D("1"), D("2"), D("3"), contract_size=D("10")) == D("30")


def fill(tid: str, qty: str, price: str, fee: str = "0") -> Fill:
    return Fill(trade_id=tid, qty=D(qty), price=D(price), fee=D(fee))


def test_average_price_and_fees() -> None:
    fills = [fill("a", "1", "100", "0.1"), fill("b", "3", "104", "0.3")]
    assert average_price(fills) == D("103")
    assert total_fees(fills) == D("0.4")
    assert total_fees([]) == D("0")
    with pytest.raises(ValueError):
        average_price([])


# --- snapshot --------------------------------------------------------------------


@pytest.mark.parametrize("side", list(Side))
def test_entry_then_exit_books_pnl_and_fees(side: Side) -> None:
    snap = PositionSnapshot(state=S.ENTRY_PLACED)
    snap = snap.apply_entry_fills(
        [fill("e1", "1", "100", "0.05"), fill("e2", "1", "102", "0.05")], T0
    )
    assert (snap.qty, snap.avg_entry_price, snap.fees, snap.opened_at) == (
        D("2"),
        D("101"),
        D("0.10"),
        T0,
    )
    snap = snap.apply_exit_fills(side, [fill("x1", "2", "111", "0.1")], T1)
    assert snap.qty == 0
    assert snap.avg_exit_price == D("111")
    assert snap.realised_pnl == side.sign * D("20")
    assert snap.fees == D("0.20")
    assert snap.net_pnl == side.sign * D("20") - D("0.20")
    assert snap.opened_at == T0
    assert snap.updated_at == T1


def test_duplicate_fills_count_once() -> None:
    snap = PositionSnapshot(state=S.ENTRY_PLACED).apply_entry_fills([fill("e1", "1", "100")], T0)
    again = snap.apply_entry_fills([fill("e1", "1", "100")], T1)
    assert again is snap
    both = snap.apply_entry_fills(
        [fill("e1", "1", "100"), fill("e2", "1", "100"), fill("e2", "1", "100")], T1
    )
    assert both.qty == D("2")


def test_average_is_derived_from_exact_values() -> None:
    snap = PositionSnapshot(state=S.ENTRY_PLACED)
    for i in range(3):
        snap = snap.apply_entry_fills([fill(f"e{i}", "1", "1" if i < 2 else "2")], T0)
    assert snap.entry_value == D("4")
    assert snap.avg_entry_price == D("4") / D("3")


@given(st.lists(st.tuples(money, money), min_size=1, max_size=8))
def test_average_entry_matches_average_price(pairs: list[tuple[D, D]]) -> None:
    fills = [Fill(trade_id=str(i), qty=q, price=p) for i, (q, p) in enumerate(pairs)]
    snap = PositionSnapshot(state=S.ENTRY_PLACED)
    for f in fills:  # one at a time, as fills arrive
        snap = snap.apply_entry_fills([f], T0)
    assert snap.avg_entry_price == average_price(fills)
    assert snap.qty == sum((f.qty for f in fills), D(0))


@pytest.mark.parametrize("side", list(Side))
def test_exit_beyond_the_held_qty_is_an_error(side: Side) -> None:
    snap = PositionSnapshot(state=S.ACTIVE).apply_entry_fills([fill("e", "1", "100")], T0)
    with pytest.raises(ValueError, match="exceed"):
        snap.apply_exit_fills(side, [fill("x", "2", "100")], T1)
    with pytest.raises(ValueError, match="entry price"):
        PositionSnapshot(state=S.ACTIVE).apply_exit_fills(side, [fill("x", "1", "100")], T1)


def test_sequences_are_allocated_once() -> None:
    snap = PositionSnapshot(state=S.PENDING_ENTRY)
    first, snap = snap.allocate_order_seq()
    second, snap = snap.allocate_order_seq()
    event, snap = snap.allocate_event_seq()
    assert (first, second, event, snap.order_seq, snap.event_seq) == (0, 1, 0, 2, 1)


def test_observe_price_tracks_extremes() -> None:
    snap = PositionSnapshot(state=S.ACTIVE)
    for price in ["100", "105", "98", "101"]:
        snap = snap.observe_price(D(price))
    assert (snap.highest_price, snap.lowest_price) == (D("105"), D("98"))
    assert snap.observe_price(D("100")) is snap


def test_advance_checks_and_stamps() -> None:
    snap = PositionSnapshot(state=S.CLOSING)
    closed = snap.advance(S.CLOSED, T1)
    assert (closed.state, closed.updated_at, closed.closed_at) == (S.CLOSED, T1, T1)
    with pytest.raises(IllegalTransition):
        closed.advance(S.ACTIVE, T1)
    assert snap.advance(S.FAILED, T1).closed_at is None


def test_adopt_and_external_changes() -> None:
    snap = PositionSnapshot(state=S.PENDING_SL).adopt(D("0.5"), D("64000"), T0)
    assert (snap.qty, snap.avg_entry_price, snap.entry_value) == (
        D("0.5"),
        D("64000"),
        D("32000.0"),
    )
    with pytest.raises(ValueError):
        snap.adopt(D("1"), D("1"), T0)
    assert snap.with_exchange_qty(D("0.2"), T1).qty == D("0.2")
    stop = OrderRef(client_order_id="c", qty=D("0.5"), trigger_price=D("63000"))
    moved = snap.with_stop(stop, T1)
    assert (moved.stop_price, moved.stop_moved_at) == (D("63000"), T1)


def test_snapshot_round_trips_exactly() -> None:
    snap = PositionSnapshot(
        state=S.ACTIVE,
        qty=D("0.010"),
        entered_qty=D("0.010"),
        entry_value=D("964.2750"),
        avg_entry_price=D("96427.50"),
        entry_order=OrderRef(
            client_order_id="pgabc-entry-0", exchange_order_id="1", qty=D("0.010")
        ),
        stop=OrderRef(
            client_order_id="pgabc-sl-1",
            exchange_order_id="2",
            qty=D("0.010"),
            trigger_price=D("94500.0"),
        ),
        emergency_stop=None,
        realised_pnl=D("-1.25"),
        fees=D("0.38571000"),
        close_reason=CloseReason.STOP_FILLED,
        order_seq=2,
        event_seq=7,
        highest_price=D("97000.1"),
        lowest_price=D("96000.0"),
        fill_ids=("t1", "t2"),
        opened_at=T0,
        stop_moved_at=T1,
        updated_at=T1,
    )
    dumped = snap.model_dump(mode="json")
    assert dumped["avg_entry_price"] == "96427.50"
    again = PositionSnapshot.model_validate(dumped)
    assert again == snap
    assert again.model_dump(mode="json") == dumped
    assert PositionSnapshot.model_validate_json(snap.model_dump_json()) == snap


def test_snapshot_refuses_floats_and_naive_times() -> None:
    with pytest.raises(ValidationError):
        PositionSnapshot.model_validate({"state": "active", "qty": 0.1})
    with pytest.raises(ValidationError):
        PositionSnapshot.model_validate({"state": "active", "opened_at": "2025-01-01T00:00:00"})
