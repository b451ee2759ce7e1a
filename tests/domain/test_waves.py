"""The selection of one wave: what a trader whose money follows the signals expects.

Two halves:

- one example per filter reason (and the ranking, the caps, the details);
- properties over random waves and accounts: every signal gets exactly one
  decision, no limit is ever exceeded, at most one position per symbol, nothing on
  a symbol open, stoplisted or in cooldown, and nothing depends on the order the
  signals arrived in.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.position import book_key
from domain.signals import Signal, SignalAction
from domain.types import ExchangeId, Side
from domain.waves import AccountView, Decision, FilterReason, WaveRules, select_wave

R = FilterReason
EXCHANGE = ExchangeId.BINANCE_USDM
NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
BTC, ETH, SOL, DOGE = "BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"
SYMBOLS = (BTC, ETH, SOL, DOGE, "XRPUSDT", "ADAUSDT")

RULES = WaveRules(
    min_score_week=D("0.5"),
    min_score_month=D("0.4"),
    max_open_positions=10,
    max_new_per_wave=5,
    max_exposure=D(10000),
    notional_per_position=D(1000),
    cooldown=timedelta(hours=1),
)
ACCOUNT = AccountView(listed=frozenset(SYMBOLS))

PROPERTY_SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def sig(
    signal_id: str = "1",
    symbol: str = BTC,
    *,
    action: SignalAction = SignalAction.BUY,
    week: D | str = "0.8",
    month: D | str = "0.7",
    exchange: ExchangeId = EXCHANGE,
) -> Signal:
    return Signal(
        service="svc",
        signal_id=signal_id,
        exchange=exchange,
        symbol=symbol,
        action=action,
        score_week=D(week),
        score_month=D(month),
        at=NOW - timedelta(minutes=1),
        received_at=NOW - timedelta(seconds=30),
    )


def select(
    signals: list[Signal],
    account: AccountView = ACCOUNT,
    rules: WaveRules = RULES,
) -> list[Decision]:
    return select_wave(signals, account, rules, exchange=EXCHANGE, now=NOW)


def by_id(decisions: list[Decision]) -> dict[str, Decision]:
    return {d.signal.signal_id: d for d in decisions}


# --- examples ------------------------------------------------------------------


def test_a_good_signal_is_selected_with_rank_one() -> None:
    [decision] = select([sig()])
    assert decision.selected
    assert decision.rank == 1
    assert decision.reason is None
    assert "BTCUSDT" in decision.detail


@pytest.mark.parametrize(
    "signal, account, reason",
    [
        (sig(exchange=ExchangeId.BYBIT), ACCOUNT, R.WRONG_EXCHANGE),
        (sig(action=SignalAction.HOLD), ACCOUNT, R.ACTION_OPENS_NOTHING),
        (sig(action=SignalAction.CLOSE), ACCOUNT, R.ACTION_OPENS_NOTHING),
        (sig(symbol="NEWUSDT"), ACCOUNT, R.NOT_LISTED),
        (sig(), ACCOUNT.model_copy(update={"stoplist": frozenset({BTC})}), R.STOPLISTED),
        (sig(week="0.49"), ACCOUNT, R.BELOW_SCORE_WEEK),
        (sig(week="-0.9", action=SignalAction.SELL), ACCOUNT, R.BELOW_SCORE_WEEK),
        (sig(month="0.39"), ACCOUNT, R.BELOW_SCORE_MONTH),
        (sig(), ACCOUNT.model_copy(update={"open_symbols": frozenset({BTC})}), R.POSITION_OPEN),
        (
            sig(),
            ACCOUNT.model_copy(update={"closed_at": {BTC: NOW - timedelta(minutes=59)}}),
            R.COOLDOWN,
        ),
        (sig(), ACCOUNT.model_copy(update={"paused": "invalid API key"}), R.ACCOUNT_PAUSED),
    ],
)
def test_each_per_signal_reason(signal: Signal, account: AccountView, reason: FilterReason) -> None:
    [decision] = select([signal], account)
    assert not decision.selected
    assert decision.rank is None
    assert decision.reason is reason
    assert decision.detail


@pytest.mark.parametrize("held", [Side.LONG, Side.SHORT])
def test_hedge_mode_a_held_side_leaves_the_other_side_free(held: Side) -> None:
    """On a hedge-mode account the open book is (symbol, side): a long held on BTC
    filters another long and lets a short through, and the reverse."""
    account = ACCOUNT.model_copy(
        update={"hedge_mode": True, "open_symbols": frozenset({book_key(BTC, held)})}
    )
    same = SignalAction.BUY if held is Side.LONG else SignalAction.SELL
    other = SignalAction.SELL if held is Side.LONG else SignalAction.BUY
    [blocked] = select([sig(action=same)], account)
    assert blocked.reason is R.POSITION_OPEN and held.value in blocked.detail
    [free] = select([sig(action=other)], account)
    assert free.selected


def test_one_way_a_held_symbol_blocks_both_sides() -> None:
    account = ACCOUNT.model_copy(update={"open_symbols": frozenset({BTC})})
    for action in (SignalAction.BUY, SignalAction.SELL):
        [decision] = select([sig(action=action)], account)
        assert decision.reason is R.POSITION_OPEN


@pytest.mark.parametrize(
    "week, month, selected",
    [("0.5", "0.4", True), ("0.5", "0.3999", False), ("0.4999", "0.9", False)],
)
def test_score_minimums_are_inclusive(week: str, month: str, selected: bool) -> None:
    [decision] = select([sig(week=week, month=month)])
    assert decision.selected is selected


def test_a_sell_is_selected_on_the_same_scores_as_a_buy() -> None:
    [decision] = select([sig(action=SignalAction.SELL)])
    assert decision.selected


@pytest.mark.parametrize(
    "ago, in_cooldown", [(timedelta(minutes=59), True), (timedelta(hours=1), False)]
)
def test_cooldown_ends_after_its_duration(ago: timedelta, in_cooldown: bool) -> None:
    account = ACCOUNT.model_copy(update={"closed_at": {BTC: NOW - ago, ETH: NOW}})
    [decision] = select([sig()], account)
    assert (decision.reason is R.COOLDOWN) is in_cooldown


def test_unlisted_symbol_with_low_scores_says_not_listed() -> None:
    [decision] = select([sig(symbol="NEWUSDT", week="0")])
    assert decision.reason is R.NOT_LISTED


def test_paused_account_skips_every_signal_with_its_reason() -> None:
    account = ACCOUNT.model_copy(update={"paused": "maintenance"})
    decisions = select([sig("1"), sig("2", ETH), sig("3", "NEWUSDT", week="0")], account)
    assert [d.reason for d in decisions] == [R.ACCOUNT_PAUSED] * 3
    assert all("maintenance" in d.detail for d in decisions)


def test_two_signals_for_one_symbol_keep_the_best_ranked() -> None:
    decisions = by_id(
        select(
            [
                sig("a", BTC, week="0.6"),
                sig("b", BTC, week="0.9", action=SignalAction.SELL),
                sig("c", BTC, week="0.9", month="0.5"),
            ]
        )
    )
    assert decisions["b"].selected
    assert decisions["a"].reason is R.DUPLICATE_SYMBOL_IN_WAVE
    assert decisions["c"].reason is R.DUPLICATE_SYMBOL_IN_WAVE
    assert "svc/b" in decisions["a"].detail


def test_a_filtered_signal_does_not_hide_a_valid_one_on_its_symbol() -> None:
    decisions = by_id(select([sig("a", BTC, week="0.9", month="0.1"), sig("b", BTC, week="0.6")]))
    assert decisions["a"].reason is R.BELOW_SCORE_MONTH
    assert decisions["b"].selected


def test_ranking_by_week_then_month_then_id() -> None:
    decisions = select(
        [
            sig("3", BTC, week="0.7", month="0.5"),
            sig("2", ETH, week="0.7", month="0.5"),
            sig("1", SOL, week="0.7", month="0.6"),
            sig("0", DOGE, week="0.9", month="0.4"),
        ]
    )
    assert [(d.signal.signal_id, d.rank) for d in decisions] == [
        ("0", 1),
        ("1", 2),
        ("2", 3),
        ("3", 4),
    ]


def test_numerically_equal_scores_tie_on_id() -> None:
    decisions = select([sig("b", BTC, week="0.70"), sig("a", ETH, week="0.7")])
    assert [d.signal.signal_id for d in decisions] == ["a", "b"]


def test_selected_come_first_then_filtered() -> None:
    decisions = select([sig("z", "NEWUSDT"), sig("y", BTC), sig("x", ETH, week="0")])
    assert [(d.signal.signal_id, d.selected) for d in decisions] == [
        ("y", True),
        ("x", False),
        ("z", False),
    ]


@pytest.mark.parametrize(
    "rules_update, account_update, reason",
    [
        ({"max_open_positions": 4}, {"open_positions": 2}, R.MAX_OPEN_POSITIONS),
        ({"max_new_per_wave": 2}, {}, R.MAX_NEW_PER_WAVE),
        ({"max_exposure": D(5000)}, {"exposure": D(3000)}, R.MAX_EXPOSURE),
    ],
)
def test_each_cap_filters_the_lowest_ranked(
    rules_update: dict[str, object], account_update: dict[str, object], reason: FilterReason
) -> None:
    signals = [sig(str(i), s, week=f"0.{9 - i}") for i, s in enumerate((BTC, ETH, SOL, DOGE))]
    decisions = by_id(
        select(
            signals,
            ACCOUNT.model_copy(update=account_update),
            RULES.model_copy(update=rules_update),
        )
    )
    assert [decisions[i].rank for i in "0123"] == [1, 2, None, None]
    assert decisions["2"].reason is reason
    assert decisions["3"].reason is reason


def test_full_account_selects_nothing() -> None:
    account = ACCOUNT.model_copy(update={"open_positions": 10})
    decisions = select([sig("1", BTC), sig("2", ETH)], account)
    assert [d.reason for d in decisions] == [R.MAX_OPEN_POSITIONS] * 2


def test_exposure_exactly_at_the_limit_is_allowed() -> None:
    account = ACCOUNT.model_copy(update={"exposure": D(9000)})
    decisions = by_id(select([sig("1", BTC), sig("2", ETH, week="0.6")], account))
    assert decisions["1"].selected
    assert decisions["2"].reason is R.MAX_EXPOSURE


def test_empty_wave() -> None:
    assert select([]) == []


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        select_wave([sig()], ACCOUNT, RULES, exchange=EXCHANGE, now=NOW.replace(tzinfo=None))


def test_rules_refuse_negative_limits() -> None:
    with pytest.raises(ValueError):
        WaveRules.model_validate({**RULES.model_dump(), "max_new_per_wave": -1})


# --- properties ----------------------------------------------------------------

scores = st.decimals(min_value="-0.5", max_value=1, places=2, allow_nan=False, allow_infinity=False)
minimums = st.decimals(
    min_value=-1, max_value="0.3", places=1, allow_nan=False, allow_infinity=False
)
# Mostly actions that open a position, so that waves select something.
ACTIONS = (SignalAction.BUY, SignalAction.SELL) * 4 + (SignalAction.HOLD, SignalAction.CLOSE)


@st.composite
def waves(draw: st.DrawFn) -> tuple[list[Signal], AccountView, WaveRules]:
    n = draw(st.integers(min_value=0, max_value=15))
    ids = draw(
        st.lists(st.text("abcdef0123", min_size=1, max_size=4), min_size=n, max_size=n, unique=True)
    )
    signals = [
        sig(
            i,
            draw(st.sampled_from((*SYMBOLS, *SYMBOLS, "NEWUSDT"))),
            action=draw(st.sampled_from(ACTIONS)),
            week=draw(scores),
            month=draw(scores),
            exchange=draw(st.sampled_from((EXCHANGE,) * 7 + (ExchangeId.BYBIT,))),
        )
        for i in ids
    ]
    open_symbols = draw(st.frozensets(st.sampled_from(SYMBOLS), max_size=2))
    account = AccountView(
        listed=frozenset(SYMBOLS),
        open_symbols=open_symbols,
        open_positions=len(open_symbols) + draw(st.integers(0, 2)),
        exposure=D(draw(st.integers(0, 8))) * 500,
        closed_at={
            s: NOW - timedelta(minutes=m)
            for s, m in draw(
                st.dictionaries(st.sampled_from(SYMBOLS), st.integers(0, 120), max_size=3)
            ).items()
        },
        stoplist=draw(st.frozensets(st.sampled_from(SYMBOLS), max_size=2)),
        paused=draw(st.sampled_from((None,) * 9 + ("operator",))),
    )
    rules = WaveRules(
        min_score_week=draw(minimums),
        min_score_month=draw(minimums),
        max_open_positions=draw(st.integers(0, 15)),
        max_new_per_wave=draw(st.integers(0, 5)),
        max_exposure=D(draw(st.integers(0, 20))) * 1000,
        notional_per_position=D(draw(st.sampled_from((0, 500, 1000, 2500)))),
        cooldown=timedelta(minutes=draw(st.integers(0, 90))),
    )
    return signals, account, rules


@PROPERTY_SETTINGS
@given(waves())
def test_every_signal_gets_exactly_one_decision(
    wave: tuple[list[Signal], AccountView, WaveRules],
) -> None:
    signals, account, rules = wave
    decisions = select(signals, account, rules)
    assert Counter(d.signal.signal_id for d in decisions) == Counter(s.signal_id for s in signals)
    for d in decisions:
        assert d.selected == (d.reason is None) == (d.rank is not None)
        assert d.detail


@PROPERTY_SETTINGS
@given(waves())
def test_limits_are_never_exceeded(wave: tuple[list[Signal], AccountView, WaveRules]) -> None:
    signals, account, rules = wave
    chosen = [d for d in select(signals, account, rules) if d.selected]
    n = len(chosen)
    assert n <= rules.max_new_per_wave
    assert account.open_positions + n <= rules.max_open_positions or n == 0
    assert account.exposure + n * rules.notional_per_position <= rules.max_exposure or n == 0
    assert [d.rank for d in chosen] == list(range(1, n + 1))


@PROPERTY_SETTINGS
@given(waves())
def test_selected_symbols_are_free(wave: tuple[list[Signal], AccountView, WaveRules]) -> None:
    signals, account, rules = wave
    chosen = [d.signal for d in select(signals, account, rules) if d.selected]
    symbols = [s.symbol for s in chosen]
    assert len(symbols) == len(set(symbols))
    for s in chosen:
        assert s.symbol in account.listed
        assert s.symbol not in account.open_symbols
        assert s.symbol not in account.stoplist
        closed = account.closed_at.get(s.symbol)
        assert closed is None or NOW >= closed + rules.cooldown
        assert s.exchange is EXCHANGE
        assert s.side is not None
        assert s.score_week >= rules.min_score_week
        assert s.score_month >= rules.min_score_month


@PROPERTY_SETTINGS
@given(waves(), st.randoms(use_true_random=False))
def test_decisions_do_not_depend_on_arrival_order(
    wave: tuple[list[Signal], AccountView, WaveRules], rnd: random.Random
) -> None:
    signals, account, rules = wave
    shuffled = list(signals)
    rnd.shuffle(shuffled)
    assert select(shuffled, account, rules) == select(signals, account, rules)


@PROPERTY_SETTINGS
@given(waves())
def test_ranking_is_by_scores_then_id(wave: tuple[list[Signal], AccountView, WaveRules]) -> None:
    signals, account, rules = wave
    chosen = [d.signal for d in select(signals, account, rules) if d.selected]
    keys = [(-s.score_week, -s.score_month, s.signal_id) for s in chosen]
    assert keys == sorted(keys)


@PROPERTY_SETTINGS
@given(waves())
def test_paused_account_selects_nothing(wave: tuple[list[Signal], AccountView, WaveRules]) -> None:
    signals, account, rules = wave
    paused = account.model_copy(update={"paused": "insufficient balance"})
    decisions = select(signals, paused, rules)
    assert len(decisions) == len(signals)
    assert all(d.reason is R.ACCOUNT_PAUSED and not d.selected for d in decisions)


@PROPERTY_SETTINGS
@given(waves())
def test_a_cap_filters_every_lower_ranked_survivor(
    wave: tuple[list[Signal], AccountView, WaveRules],
) -> None:
    signals, account, rules = wave
    caps = {R.MAX_OPEN_POSITIONS, R.MAX_NEW_PER_WAVE, R.MAX_EXPOSURE}
    decisions = select(signals, account, rules)
    capped = [d for d in decisions if d.reason in caps]
    # Once one cap is hit, every lower-ranked candidate is capped by the same one.
    assert len({d.reason for d in capped}) <= 1
    if capped:
        worst_selected = min(
            (d.signal for d in decisions if d.selected),
            key=lambda s: (s.score_week, s.score_month),
            default=None,
        )
        best_capped = max(capped, key=lambda d: (d.signal.score_week, d.signal.score_month))
        if worst_selected is not None:
            assert (worst_selected.score_week, worst_selected.score_month) >= (
                best_capped.signal.score_week,
                best_capped.signal.score_month,
            )
