"""The dashboard's chart data and mark history (pure: no server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from typing import Any

from domain.events import Event, EventType
from workers.dashboard.chart import build_chart
from workers.dashboard.marks import MarkHistory

T0 = datetime(2026, 12, 3, 4, 0, tzinfo=UTC)


def ev(kind: EventType, second: float, **payload: Any) -> Event:
    return Event(
        event_id=f"e{second}-{kind.value}",
        type=kind,
        occurred_at=T0 + timedelta(seconds=second),
        payload={k: str(v) for k, v in payload.items()},
    )


LIFE = [
    ev(EventType.ENTRY_ORDER_FILLED, 0, average_price=100),
    ev(EventType.SL_PLACED, 0.2, trigger_price=98),
    ev(EventType.POSITION_ACTIVE, 0.3, entry_price=100, stop_price=98),
    ev(EventType.PRICE_BAND_CROSSED, 10, price=103),
    ev(EventType.TRAILING_ACTIVATED, 10.1, new_stop="101.97"),
    ev(EventType.TRAILING_STOP_MOVED, 10.5, new_stop="102.5"),
]


def values(points: list[Any]) -> list[tuple[int, float | None]]:
    return [(p.time - int(T0.timestamp()), p.value) for p in points]


def test_an_open_positions_levels_step_up_to_now_and_none_is_lost() -> None:
    chart = build_chart(
        LIFE, [(T0 + timedelta(seconds=5), D(101))], now=T0 + timedelta(seconds=20), is_open=True
    )
    # two moves within one second: the second is drawn a second later, not lost
    assert values(chart.stop) == [(0, 98.0), (10, 101.97), (11, 102.5), (20, 102.5)]
    assert values(chart.entry) == [(0, 100.0), (20, 100.0)]
    assert values(chart.mark) == [(5, 101.0), (10, 103.0)]
    assert [lv.value for lv in chart.stop_levels] == [D(98), D("101.97"), D("102.5")]


def test_a_stop_that_goes_missing_leaves_a_gap_and_a_close_ends_the_lines() -> None:
    events = [
        *LIFE[:3],
        ev(EventType.STOP_MISSING_DETECTED, 30, quantity=1),
        ev(EventType.PROTECTION_STOP_SET, 40, stop_price=97),
        ev(EventType.POSITION_CLOSED, 50, reason="operator", quantity=1),
    ]
    chart = build_chart(events, [], now=T0 + timedelta(seconds=99), is_open=False)
    assert values(chart.stop) == [(0, 98.0), (30, 98.0), (31, None), (40, 97.0), (50, 97.0)]
    assert values(chart.entry) == [(0, 100.0), (50, 100.0)]
    assert [lv.value for lv in chart.stop_levels] == [D(98), None, D(97), None]


def test_the_mark_history_is_bounded_and_keeps_one_sample_a_second() -> None:
    history = MarkHistory(max_points=3, max_positions=2)
    for second in range(5):
        history.add("a", D(second), T0 + timedelta(seconds=second))
    history.add("a", D(9), T0 + timedelta(seconds=4.5))  # same second: replaces
    assert [m for _, m in history.of("a")] == [D(2), D(3), D(9)]
    history.add("b", D(1), T0)
    history.add("c", D(1), T0)  # a third position: the one sampled longest ago goes
    assert history.of("a") == [] and len(history.of("c")) == 1
