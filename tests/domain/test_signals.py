"""The validated signal and its wave (domain/signals.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from pydantic import ValidationError

from domain.signals import Signal, SignalAction, wave_start
from domain.types import ExchangeId, Side

T = datetime(2026, 12, 2, 4, 7, 31, tzinfo=UTC)


@pytest.mark.parametrize(
    ("action", "side"),
    [
        (SignalAction.BUY, Side.LONG),
        (SignalAction.SELL, Side.SHORT),
        (SignalAction.HOLD, None),
        (SignalAction.CLOSE, None),
    ],
)
def test_only_buy_and_sell_open_a_position(action: SignalAction, side: Side | None) -> None:
    signal = Signal(
        service="svc",
        signal_id="1",
        exchange=ExchangeId.BINANCE_USDM,
        symbol="BTCUSDT",
        action=action,
        score_week=Decimal("71.5"),
        score_month=Decimal("64"),
        at=T,
        received_at=T,
    )
    assert signal.side is side


@pytest.mark.parametrize(
    ("period", "start"),
    [
        (timedelta(minutes=15), datetime(2026, 12, 2, 4, 0, tzinfo=UTC)),
        (timedelta(minutes=5), datetime(2026, 12, 2, 4, 5, tzinfo=UTC)),
        (timedelta(hours=1), datetime(2026, 12, 2, 4, 0, tzinfo=UTC)),
        (timedelta(seconds=30), datetime(2026, 12, 2, 4, 7, 30, tzinfo=UTC)),
    ],
)
def test_a_signal_belongs_to_the_wave_of_its_scoring_period(
    period: timedelta, start: datetime
) -> None:
    assert wave_start(T, period) == start
    assert wave_start(start, period) == start  # the first instant opens the wave
    assert wave_start(start - timedelta(microseconds=1), period) == start - period


def test_waves_are_the_same_instants_in_any_time_zone() -> None:
    local = T.astimezone(timezone(timedelta(hours=3)))
    assert wave_start(local, timedelta(minutes=15)) == wave_start(T, timedelta(minutes=15))


def test_a_wave_period_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        wave_start(T, timedelta(0))


def test_a_signal_needs_its_time_zone_and_an_id() -> None:
    fields = {
        "service": "svc",
        "exchange": ExchangeId.BYBIT,
        "symbol": "ETHUSDT",
        "action": SignalAction.SELL,
        "score_week": Decimal(1),
        "score_month": Decimal(1),
        "received_at": T,
    }
    with pytest.raises(ValidationError):
        Signal(signal_id="1", at=T.replace(tzinfo=None), **fields)
    with pytest.raises(ValidationError):
        Signal(signal_id="", at=T, **fields)
