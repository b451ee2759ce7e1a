"""The pure parts around a wave: its identity, the account it sees, pauses, positions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from domain.records import AccountPause
from domain.signals import Signal, SignalAction
from domain.sizing import SizingMode, SizingRequest, StopRule
from domain.types import ExchangeId, Side
from domain.wave_io import (
    EntryReadiness,
    PauseCause,
    PositionTemplate,
    StoredAccount,
    StoredOpen,
    account_view,
    decision_event_id,
    insufficient,
    outcome_counts,
    pause_cause,
    wave_workflow_id,
)
from domain.waves import FilterReason, WaveRules, select_wave

NOW = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
RULES = WaveRules(
    min_score_week=Decimal(0),
    min_score_month=Decimal(0),
    max_open_positions=5,
    max_new_per_wave=5,
    max_exposure=Decimal(10_000),
    notional_per_position=Decimal(1000),
    max_signal_age=timedelta(minutes=5),
)


def signal(
    symbol: str = "BTCUSDT", action: SignalAction = SignalAction.BUY, **extra: object
) -> Signal:
    fields: dict[str, object] = {
        "service": "svc",
        "signal_id": f"{symbol}-{action}",
        "exchange": ExchangeId.BINANCE_USDM,
        "symbol": symbol,
        "action": action,
        "score_week": Decimal(80),
        "score_month": Decimal(70),
        "at": NOW,
        "received_at": NOW,
        **extra,
    }
    return Signal.model_validate(fields)


def test_a_wave_is_named_by_account_and_period_in_utc() -> None:
    from zoneinfo import ZoneInfo

    local = datetime(2026, 12, 2, 7, 15, tzinfo=ZoneInfo("Europe/Berlin"))
    assert wave_workflow_id("paper", local) == "wave/paper/2026-12-02T06:15:00Z"


def test_decision_event_ids_fit_and_stay_the_same() -> None:
    long_row = "svc/" + "x" * 300
    first = decision_event_id(long_row, "paper", "filtered")
    assert len(first) <= 200 and first == decision_event_id(long_row, "paper", "filtered")
    assert first != decision_event_id(long_row, "other", "filtered")
    assert decision_event_id("svc/1", "paper", "selected") == "signal/svc/1/paper/selected"


@pytest.mark.parametrize(
    ("error_type", "cause"),
    [
        ("AuthenticationError", PauseCause.KEY_INVALID),
        ("PermissionDenied", PauseCause.KEY_INVALID),
        ("InsufficientFunds", PauseCause.INSUFFICIENT_BALANCE),
        ("ExchangeNotAvailable", PauseCause.MAINTENANCE),
        ("NetworkError", None),
        ("RequestTimeout", None),
        (None, None),
    ],
)
def test_only_the_key_funds_and_maintenance_pause_entries(
    error_type: str | None, cause: PauseCause | None
) -> None:
    assert pause_cause(error_type) is cause


def test_the_account_counts_running_positions_not_yet_stored_at_the_expected_notional() -> None:
    view = account_view(
        EntryReadiness(listed=frozenset({"BTCUSDT", "ETHUSDT"})),
        StoredAccount(open=[StoredOpen(symbol="BTCUSDT", notional=Decimal(2500))]),
        ["BTCUSDT", "SOLUSDT"],  # SOLUSDT: started a moment ago, no row yet
        RULES,
    )
    assert view.open_symbols == {"BTCUSDT", "SOLUSDT"}
    assert view.open_positions == 2
    assert view.exposure == Decimal(3500)
    assert view.paused is None


def test_hedge_mode_counts_each_side_of_a_symbol_as_its_own_position() -> None:
    stored = StoredAccount(
        open=[
            StoredOpen(symbol="BTCUSDT", side=Side.LONG, notional=Decimal(2500)),
            StoredOpen(symbol="BTCUSDT", side=Side.SHORT, notional=Decimal(1500)),
        ]
    )
    running = ["BTCUSDT:long", "ETHUSDT:short"]  # ETHUSDT's short: no row yet
    view = account_view(EntryReadiness(listed=frozenset()), stored, running, RULES, True)
    assert view.hedge_mode
    assert view.open_symbols == {"BTCUSDT:long", "BTCUSDT:short", "ETHUSDT:short"}
    assert view.open_positions == 3
    assert view.exposure == Decimal(2500) + Decimal(1500) + RULES.notional_per_position
    # the same rows on a one-way account: one position per symbol, as before
    one_way = account_view(EntryReadiness(listed=frozenset()), stored, ["BTCUSDT"], RULES)
    assert one_way.open_symbols == {"BTCUSDT"}


def test_the_operator_s_pause_is_named_first() -> None:
    pauses = [
        AccountPause(account="a", source="exchange", reason="maintenance"),
        AccountPause(account="a", source="operator", reason="news", detail="FOMC"),
    ]
    view = account_view(EntryReadiness(listed=frozenset()), StoredAccount(pauses=pauses), [], RULES)
    assert view.paused == "operator: news (FOMC)"


def test_insufficient_only_when_the_balance_is_known_and_below() -> None:
    assert insufficient(EntryReadiness(listed=frozenset(), free_balance=Decimal(9)), Decimal(10))
    assert not insufficient(
        EntryReadiness(listed=frozenset(), free_balance=Decimal(10)), Decimal(10)
    )
    assert not insufficient(EntryReadiness(listed=frozenset()), Decimal(10))


@pytest.mark.parametrize(
    ("action", "side"), [(SignalAction.BUY, Side.LONG), (SignalAction.SELL, Side.SHORT)]
)
def test_a_selected_signal_becomes_the_position_the_template_describes(
    action: SignalAction, side: Side
) -> None:
    template = PositionTemplate(
        sizing=SizingRequest(mode=SizingMode.QUOTE, amount=Decimal(100)),
        stop=StopRule(percent=Decimal(2)),
        emergency_stop_percent=Decimal(5),
    )
    spec = template.spec("paper", ExchangeId.BINANCE_USDM, signal("ETHUSDT", action))
    assert (spec.side, spec.symbol, spec.account) == (side, "ETHUSDT", "paper")
    assert spec.signal_id == f"svc/ETHUSDT-{action}"
    with pytest.raises(ValueError, match="opens no position"):
        template.spec("paper", ExchangeId.BINANCE_USDM, signal(action=SignalAction.HOLD))


def test_a_signal_older_than_its_maximum_age_expires_and_is_never_traded() -> None:
    old = signal("BTCUSDT", at=NOW - timedelta(minutes=6))
    fresh = signal("ETHUSDT", at=NOW - timedelta(minutes=4))
    view = account_view(
        EntryReadiness(listed=frozenset({"BTCUSDT", "ETHUSDT"})), StoredAccount(), [], RULES
    )
    decisions = select_wave([old, fresh], view, RULES, exchange=ExchangeId.BINANCE_USDM, now=NOW)
    by_symbol = {d.signal.symbol: d for d in decisions}
    assert by_symbol["BTCUSDT"].reason is FilterReason.EXPIRED
    assert by_symbol["ETHUSDT"].selected


def test_outcomes_are_counted_by_name() -> None:
    assert outcome_counts(["opened", "cooldown", "opened"]) == {"cooldown": 1, "opened": 2}
