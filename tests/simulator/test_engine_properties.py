"""Property tests of the pure engine (no I/O): invariants under random operation sequences."""

from __future__ import annotations

import json
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator.clock import ManualClock
from simulator.engine import Engine, EngineConfig
from simulator.errors import ApiError
from simulator.markets import build_markets
from simulator.prices import SyntheticPath

SYM = "ETHUSDT"
STEP = Decimal("0.001")
TICK = Decimal("0.01")

qty_st = st.integers(min_value=1, max_value=3000).map(lambda n: n * STEP)
price_st = st.integers(min_value=300_000, max_value=400_000).map(lambda n: n * TICK)
op_st = st.one_of(
    st.tuples(st.just("order"), st.sampled_from(["BUY", "SELL"]), qty_st, st.booleans()),
    st.tuples(st.just("price"), price_st),
    st.tuples(st.just("stop"), st.sampled_from(["BUY", "SELL"]), qty_st, price_st),
)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _engine(**cfg: object) -> Engine:
    config = EngineConfig(check_margin=False, **cfg)  # type: ignore[arg-type]
    return Engine(build_markets(), ManualClock(), config)


def _apply(engine: Engine, op: tuple) -> None:  # type: ignore[type-arg]
    clock = engine.clock
    assert isinstance(clock, ManualClock)
    clock.advance(250)
    try:
        if op[0] == "order":
            engine.place_order(SYM, op[1], "MARKET", op[2], reduce_only=op[3])
        elif op[0] == "price":
            engine.set_price(SYM, op[1])
        else:
            engine.place_algo(
                SYM, op[1], "STOP_MARKET", op[2], op[3], reduce_only=True, working_type="MARK_PRICE"
            )
    except ApiError:
        pass  # rejections are part of the space explored


@SETTINGS
@given(st.lists(op_st, max_size=40))
def test_reduce_only_never_increases_position(ops: list[tuple]) -> None:  # type: ignore[type-arg]
    engine = _engine(fill_parts=2)
    for op in ops:
        before = engine.positions[SYM].amt
        _apply(engine, op)
        after = engine.positions[SYM].amt
        if op[0] == "order" and op[3]:  # a reduce-only market order
            assert abs(after) <= abs(before)
            assert after == 0 or (after > 0) == (before > 0)
    # every reduce-only execution, replayed in order, only shrank the position
    amt = Decimal(0)
    for f in engine.fills:
        delta = f.qty if f.side == "BUY" else -f.qty
        if engine.orders[f.order_id].reduce_only:
            assert amt != 0 and (delta > 0) != (amt > 0) and abs(delta) <= abs(amt)
        amt += delta
    assert amt == engine.positions[SYM].amt


@SETTINGS
@given(st.lists(op_st, max_size=40))
def test_wallet_moves_only_by_realised_pnl_and_fees(ops: list[tuple]) -> None:  # type: ignore[type-arg]
    engine = _engine(slippage_bps=Decimal("5"))
    start = engine.wallet_balance
    for op in ops:
        _apply(engine, op)
    realised = sum((f.realized_pnl for f in engine.fills), Decimal(0))
    fees = sum((f.commission for f in engine.fills), Decimal(0))
    assert engine.wallet_balance - start == realised - fees


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(["BUY", "SELL"]), qty_st, st.booleans()), max_size=30))
def test_equity_at_constant_mark_changes_only_by_fees(orders: list[tuple]) -> None:  # type: ignore[type-arg]
    """No slippage, fixed mark: wallet + unrealised PnL drops by exactly the fees
    (up to the 1e-8 rounding of realised PnL per fill)."""
    engine = _engine()
    equity0 = engine.wallet_balance + engine.total_unrealized()
    for side, qty, reduce_only in orders:
        _apply(engine, ("order", side, qty, reduce_only))
    fees = sum((f.commission for f in engine.fills), Decimal(0))
    equity1 = engine.wallet_balance + engine.total_unrealized()
    assert abs((equity1 - equity0) + fees) <= Decimal("0.00000001") * (len(engine.fills) + 1)


def _run(seed: int) -> str:
    markets = build_markets()
    engine = Engine(markets, ManualClock(), EngineConfig(slippage_bps=Decimal("2"), fill_parts=2))
    path = SyntheticPath(markets, seed=seed, scenario="jumps", step_ms=1000)
    engine.place_order("BTCUSDT", "BUY", "MARKET", Decimal("0.05"))
    engine.place_algo(
        "BTCUSDT",
        "SELL",
        "STOP_MARKET",
        Decimal("0.05"),
        Decimal("93000.0"),
        reduce_only=True,
        working_type="MARK_PRICE",
    )
    engine.place_order("ETHUSDT", "SELL", "MARKET", Decimal("1"))
    engine.place_algo(
        "ETHUSDT",
        "BUY",
        "STOP_MARKET",
        None,
        Decimal("3600.00"),
        close_position=True,
        working_type="MARK_PRICE",
    )
    for _ in range(300):
        assert isinstance(engine.clock, ManualClock)
        engine.clock.advance(1000)
        for sym, price in path.step():
            engine.set_price(sym, price)
    state = {
        "wallet": str(engine.wallet_balance),
        "fills": [(f.symbol, f.side, str(f.price), str(f.qty), f.time) for f in engine.fills],
        "algos": [(a.algo_id, a.algo_status, a.trigger_time) for a in engine.algos.values()],
        "marks": {s: str(p) for s, p in engine.mark.items()},
    }
    return json.dumps(state, sort_keys=True)


def test_same_seed_same_run() -> None:
    assert _run(7) == _run(7)
    assert _run(7) != _run(8)


def test_unprotected_time_tracks_stop_coverage() -> None:
    engine = _engine()
    clock = engine.clock
    assert isinstance(clock, ManualClock)
    engine.place_order(SYM, "BUY", "MARKET", Decimal("1"))
    clock.advance(1500)
    algo = engine.place_algo(
        SYM,
        "SELL",
        "STOP_MARKET",
        Decimal("1"),
        Decimal("3000"),
        reduce_only=True,
        working_type="MARK_PRICE",
    )
    clock.advance(10_000)  # protected: does not count
    tp = engine.place_algo(
        SYM,
        "SELL",
        "TAKE_PROFIT_MARKET",
        Decimal("1"),
        Decimal("4000"),
        reduce_only=True,
        working_type="MARK_PRICE",
    )
    engine.cancel_algo(algo.algo_id)
    clock.advance(700)  # a take-profit alone is not protection
    assert engine.unprotected_ms(SYM) == 2200
    engine.cancel_algo(tp.algo_id)
    engine.place_order(SYM, "SELL", "MARKET", Decimal("1"), reduce_only=True)
    clock.advance(5000)  # flat: does not count
    assert engine.unprotected_ms(SYM) == 2200
    assert [e.closed_ms is not None for e in engine.episodes] == [True]


def test_tick_without_crossing_leaves_state_untouched() -> None:
    engine = _engine()
    engine.place_order(SYM, "BUY", "MARKET", Decimal("1"))
    engine.place_algo(
        SYM,
        "SELL",
        "STOP_MARKET",
        Decimal("1"),
        Decimal("3000"),
        reduce_only=True,
        working_type="MARK_PRICE",
    )
    fills = len(engine.fills)
    for p in ("3400", "3100", "3000.01", "3900"):
        engine.set_price(SYM, Decimal(p))
    assert len(engine.fills) == fills and len(engine.open_algos(SYM)) == 1
    engine.set_price(SYM, Decimal("3000"))
    assert engine.positions[SYM].amt == 0
