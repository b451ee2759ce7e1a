"""The whole state of a position survives continue-as-new as one value."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from domain.managed_position import ManagedPosition
from domain.market import MarketFilters
from domain.orders import Fill, OrderRef
from domain.position import CloseReason, PositionSpec, PositionState
from domain.sizing import SizingMode, SizingRequest, StopRule
from domain.trailing import TrailingRule
from domain.trailing import initial_state as initial_trailing
from domain.types import ExchangeId, Side
from domain.volatility import VolatilityCallback
from workers.temporal import DATA_CONVERTER
from workflows.position_io import PositionConfig, PositionInput

T0 = datetime(2026, 12, 1, 12, tzinfo=UTC)
FILTERS = MarketFilters(
    symbol="BTCUSDT",
    tick_size=Decimal("0.1"),
    step_size=Decimal("0.001"),
    min_qty=Decimal("0.001"),
    max_qty=Decimal(1000),
    min_notional=Decimal(5),
)


def busy_state() -> ManagedPosition:
    """A position in the middle of everything: every field away from its default."""
    rule = TrailingRule(
        callback_pct=Decimal(1),
        activation_pct=Decimal("0.5"),
        volatility=VolatilityCallback(
            multiple=Decimal(2), min_pct=Decimal("0.5"), max_pct=Decimal(5)
        ),
    )
    m = ManagedPosition.opening(adopt=False, trailing_rule=rule).with_filters(FILTERS)
    snap = m.snapshot.advance(PositionState.ENTRY_PLACED, T0)
    snap = snap.apply_entry_fills(
        [Fill(trade_id="t1", qty=Decimal("0.02"), price=Decimal(60000), fee=Decimal("0.5"))], T0
    )
    snap = snap.advance(PositionState.PENDING_SL, T0).advance(PositionState.ACTIVE, T0)
    stop = OrderRef(client_order_id="s1", qty=Decimal("0.02"), trigger_price=Decimal(58800))
    snap = snap.with_stop(stop, T0).observe_price(Decimal(61000))
    m = m.with_snapshot(snap)
    m = m.with_trailing(initial_trailing(Side.LONG, Decimal(60000), Decimal(58800), T0))
    m = m.stale_added(OrderRef(client_order_id="old", qty=Decimal("0.02"), trigger_price=None))
    m = m.fills_unknown("e1").close_accepted(CloseReason.OPERATOR, "alice").look_wanted()
    m = m.error_noted("ExchangeNotAvailable: 503").take_profit_pending("tp1")
    m = m.measurement_started(T0 + timedelta(minutes=5)).callback_measured(Decimal("1.25"))
    _, m = m.next_revision(T0)
    return m.next_run()


def test_every_field_of_a_busy_position_is_away_from_its_default() -> None:
    m = busy_state()
    fresh = ManagedPosition.opening(adopt=False, trailing_rule=None)
    for name in ManagedPosition.model_fields:
        assert getattr(m, name) != getattr(fresh, name), name


def test_continue_as_new_carries_the_whole_state_through_the_data_converter() -> None:
    spec = PositionSpec(
        account="paper",
        exchange=ExchangeId.BINANCE_USDM,
        symbol="BTCUSDT",
        side=Side.LONG,
        sizing=SizingRequest(mode=SizingMode.QUOTE, amount=Decimal(1200)),
        stop=StopRule(percent=Decimal(2)),
        emergency_stop_percent=Decimal(5),
    )
    carried = busy_state()
    inp = PositionInput(spec=spec, config=PositionConfig(exchange_task_queue="q"), carried=carried)
    [payload] = DATA_CONVERTER.payload_converter.to_payloads([inp])
    [back] = DATA_CONVERTER.payload_converter.from_payloads([payload], [PositionInput])
    assert back == inp
    assert back.carried is not None
    assert back.carried.look_requested and back.carried.fills_due == ("e1",)
    assert back.carried.close_requested is CloseReason.OPERATOR


def test_named_changes_never_lose_other_fields() -> None:
    m = busy_state()
    assert m.look_taken().look_requested is False
    assert m.look_taken().model_dump(exclude={"look_requested"}) == m.model_dump(
        exclude={"look_requested"}
    )
    assert m.stale_done("old").stale_orders == ()
    assert m.fills_known("e1").fills_due == ()
    assert m.stale_added(m.stale_orders[0]) is m  # the same order is listed once


def test_a_new_volatility_rule_drops_the_old_measurement() -> None:
    m = busy_state()
    assert m.trailing_rule is not None
    same = m.with_trailing_rule(m.trailing_rule.model_copy(update={"callback_pct": Decimal(2)}))
    assert same.measured_callback_pct == Decimal("1.25")
    other = m.with_trailing_rule(TrailingRule(callback_pct=Decimal(1)))
    assert other.measured_callback_pct is None and other.measured_at is None


def test_store_revisions_increase_and_a_later_branch_outranks_an_earlier_one() -> None:
    """Within a run each write's revision is greater than the last, however many share
    one instant; a run reset to an earlier point writes after the reset, and its
    revisions outrank every one the dropped branch used, though it numbers its writes
    again from the reset point."""
    start = ManagedPosition.opening(adopt=False, trailing_rule=None)
    revisions, m = [], start
    for at in [T0, T0, T0, T0 + timedelta(milliseconds=1), T0 + timedelta(seconds=5)]:
        r, m = m.next_revision(at)
        revisions.append(r)
    assert revisions == sorted(set(revisions))
    dropped = revisions[-1]  # the old branch's last write, 5 s in
    # The new branch starts from the state before those writes, 2 minutes later.
    first, _ = start.next_revision(T0 + timedelta(minutes=2))
    assert first > dropped
