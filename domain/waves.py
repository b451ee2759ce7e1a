"""The selection of one wave: which of its signals open a position, and why not the others.

At a wave's deadline its workflow (workflows/wave.py) hands the wave's signals and
the account as it stands (`AccountView`) to `select_wave`, which returns exactly
one `Decision` per signal: selected (with its rank) or filtered (with one
`FilterReason`, stored in the database, and a detail a trader can read). Pure: no
I/O, no clock (`now` is passed in); property-tested over random waves.

The steps, in order:

1. the account: a paused account selects nothing, every signal says why
   (`account_paused`); its open positions stay managed elsewhere;
2. per signal, first reason wins: wrong exchange, older than `max_signal_age`,
   action that opens nothing (HOLD, CLOSE), score not finite, symbol not listed
   and trading, stoplisted, score_week below its minimum, score_month below its
   minimum, a position open or opening on the symbol, the symbol in its cooldown
   after a close;
3. per symbol: of two or more signals left for one symbol, the best ranked is kept
   (`duplicate_symbol_in_wave` for the others, whatever their direction);
4. ranking: score_week descending, then score_month descending, then signal_id
   (then the other fields) ascending: a total order, so nothing depends on the
   order the signals arrived in;
5. limits, in rank order: open positions per account (open and opening ones),
   new positions per wave, total notional exposure per account. A signal that
   would exceed a cap is filtered with that cap's reason, and so is every signal
   ranked below it (the caps only tighten as signals are selected).

Scores are the strength of the recommendation whatever its direction: a SELL with
score_week 0.8 is as strong as a BUY with 0.8, and both meet a minimum of 0.7.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from functools import cmp_to_key

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from domain.position import book_key
from domain.signals import Signal
from domain.types import ExchangeId


class WaveRules(BaseModel):
    """What a wave may open (settings `[waves]`).

    - `min_score_week`, `min_score_month`: a signal's scores must be at least these;
    - `max_open_positions`: per account, counting open and opening positions;
    - `max_new_per_wave`: positions one wave may start;
    - `max_exposure`: total notional per account, in the quote currency;
    - `notional_per_position`: the notional a new position is expected to take,
      counted against `max_exposure`;
    - `cooldown`: per symbol, after a position on it closed.
    """

    model_config = ConfigDict(frozen=True)

    min_score_week: Decimal
    min_score_month: Decimal
    max_open_positions: int = Field(ge=0)
    max_new_per_wave: int = Field(ge=0)
    max_exposure: Decimal = Field(ge=0)
    notional_per_position: Decimal = Field(ge=0)
    cooldown: timedelta = timedelta(0)
    # A signal older than this (by the service's own timestamp) at selection opens
    # nothing: a wave replayed after an outage is recorded, never traded late.
    max_signal_age: timedelta | None = None


class AccountView(BaseModel):
    """The account as one wave sees it, read just before selection.

    `listed`: symbols listed and trading on the account's exchange;
    `open_symbols`: the books (`domain.position.book_key`: the symbol, or on a
    `hedge_mode` account the symbol and side) with an open or opening position; `open_positions`
    their count (as the limit counts them); `exposure`: current total notional;
    `closed_at`: the last close per symbol; `stoplist`: symbols never to open;
    `paused`: why new entries are paused for the account (None if they are not).
    """

    model_config = ConfigDict(frozen=True)

    listed: frozenset[str]
    open_symbols: frozenset[str] = frozenset()
    open_positions: int = Field(default=0, ge=0)
    exposure: Decimal = Field(default=Decimal(0), ge=0)
    closed_at: dict[str, AwareDatetime] = Field(default_factory=dict)
    stoplist: frozenset[str] = frozenset()
    paused: str | None = None
    hedge_mode: bool = False


class FilterReason(StrEnum):
    """Why a signal opened nothing. Values are stored in the database: never rename."""

    ACCOUNT_PAUSED = "account_paused"
    WRONG_EXCHANGE = "wrong_exchange"
    ACTION_OPENS_NOTHING = "action_opens_nothing"
    INVALID_SCORE = "invalid_score"
    NOT_LISTED = "not_listed"
    STOPLISTED = "stoplisted"
    BELOW_SCORE_WEEK = "below_score_week"
    BELOW_SCORE_MONTH = "below_score_month"
    POSITION_OPEN = "position_open"
    COOLDOWN = "cooldown"
    DUPLICATE_SYMBOL_IN_WAVE = "duplicate_symbol_in_wave"
    MAX_OPEN_POSITIONS = "max_open_positions"
    MAX_NEW_PER_WAVE = "max_new_per_wave"
    MAX_EXPOSURE = "max_exposure"
    EXPIRED = "expired"
    # Not from `select_wave`: outcomes around it, recorded with the same column.
    ACCOUNT_UNREADABLE = "account_unreadable"  # the exchange or the store could not be read
    NOT_STARTED = "not_started"  # selected, but its workflow could not be started
    WAVE_CLOSED = "wave_closed"  # reached its wave after the selection


class Decision(BaseModel):
    """The one decision about one signal of a wave.

    Selected: `rank` is its place among the selected (1 = best), `reason` None.
    Filtered: `rank` None, `reason` why.
    """

    model_config = ConfigDict(frozen=True)

    signal: Signal
    selected: bool
    rank: int | None = None
    reason: FilterReason | None = None
    detail: str


def _identity(s: Signal) -> tuple[str, ...]:
    """A total, NaN-safe order over signals that differ in anything."""
    return (
        s.signal_id,
        s.service,
        s.symbol,
        s.action.value,
        s.exchange.value,
        s.at.isoformat(),
        s.received_at.isoformat(),
        str(s.score_week),
        str(s.score_month),
    )


def _by_rank(a: Signal, b: Signal) -> int:
    """Best first: score_week desc, score_month desc, then identity asc (finite scores only)."""
    for x, y in ((a.score_week, b.score_week), (a.score_month, b.score_month)):
        if x != y:
            return -1 if x > y else 1
    ia, ib = _identity(a), _identity(b)
    return (ia > ib) - (ia < ib)


def ranked(signals: Sequence[Signal]) -> list[Signal]:
    """`signals` best first (their scores must be finite)."""
    return sorted(signals, key=cmp_to_key(_by_rank))


def _signal_filter(
    signal: Signal,
    account: AccountView,
    rules: WaveRules,
    exchange: ExchangeId,
    now: datetime,
) -> tuple[FilterReason, str] | None:
    """The first per-signal reason not to open `signal`, or None if it may."""
    symbol = signal.symbol
    if signal.exchange is not exchange:
        return FilterReason.WRONG_EXCHANGE, f"signal for {signal.exchange}, account on {exchange}"
    if rules.max_signal_age is not None and now - signal.at > rules.max_signal_age:
        return (
            FilterReason.EXPIRED,
            f"signal of {signal.at.isoformat()} is older than {rules.max_signal_age} at selection",
        )
    if signal.side is None:
        return FilterReason.ACTION_OPENS_NOTHING, f"action {signal.action} opens no position"
    if not (signal.score_week.is_finite() and signal.score_month.is_finite()):
        return (
            FilterReason.INVALID_SCORE,
            f"scores not finite: week {signal.score_week}, month {signal.score_month}",
        )
    if symbol not in account.listed:
        return FilterReason.NOT_LISTED, f"{symbol} is not listed and trading on {exchange}"
    if symbol in account.stoplist:
        return FilterReason.STOPLISTED, f"{symbol} is on the stoplist"
    if signal.score_week < rules.min_score_week:
        return (
            FilterReason.BELOW_SCORE_WEEK,
            f"score_week {signal.score_week} < minimum {rules.min_score_week}",
        )
    if signal.score_month < rules.min_score_month:
        return (
            FilterReason.BELOW_SCORE_MONTH,
            f"score_month {signal.score_month} < minimum {rules.min_score_month}",
        )
    if book_key(symbol, signal.side if account.hedge_mode else None) in account.open_symbols:
        held = f"a {signal.side.value} position" if account.hedge_mode else "a position"
        return FilterReason.POSITION_OPEN, f"{held} on {symbol} is open or opening"
    closed = account.closed_at.get(symbol)
    if closed is not None and now < closed + rules.cooldown:
        return (
            FilterReason.COOLDOWN,
            f"{symbol} closed at {closed.isoformat()}, cooldown {rules.cooldown} "
            f"until {(closed + rules.cooldown).isoformat()}",
        )
    return None


def _cap_hit(
    account: AccountView, rules: WaveRules, selected: int
) -> tuple[FilterReason, str] | None:
    """The first cap one more position (after `selected` of this wave) would exceed."""
    if account.open_positions + selected + 1 > rules.max_open_positions:
        return (
            FilterReason.MAX_OPEN_POSITIONS,
            f"{account.open_positions} open + {selected} selected in this wave: "
            f"at the limit of {rules.max_open_positions} open positions",
        )
    if selected + 1 > rules.max_new_per_wave:
        return (
            FilterReason.MAX_NEW_PER_WAVE,
            f"{selected} selected in this wave: at the limit of {rules.max_new_per_wave}",
        )
    after = account.exposure + (selected + 1) * rules.notional_per_position
    if after > rules.max_exposure:
        return (
            FilterReason.MAX_EXPOSURE,
            f"exposure {account.exposure} + {selected + 1} x {rules.notional_per_position} "
            f"= {after} > limit {rules.max_exposure}",
        )
    return None


def select_wave(
    signals: Sequence[Signal],
    account: AccountView,
    rules: WaveRules,
    *,
    exchange: ExchangeId,
    now: datetime,
) -> list[Decision]:
    """One decision per signal of the wave: the selected ones by rank, then the filtered.

    Guarantees (property-tested):
    - every signal gets exactly one decision, and a signal's decision (and the
      whole list) does not depend on the order of `signals`;
    - open positions + selected <= max_open_positions, selected <= max_new_per_wave,
      exposure + selected x notional_per_position <= max_exposure;
    - at most one selected per symbol, none on a symbol open, opening, stoplisted,
      unlisted or in cooldown;
    - a paused account selects nothing, and every signal says `account_paused`.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    filtered: list[Decision] = []

    def drop(signal: Signal, reason: FilterReason, detail: str) -> None:
        filtered.append(Decision(signal=signal, selected=False, reason=reason, detail=detail))

    if account.paused is not None:
        for signal in signals:
            drop(signal, FilterReason.ACCOUNT_PAUSED, f"new entries paused: {account.paused}")
        return sorted(filtered, key=lambda d: _identity(d.signal))

    candidates: list[Signal] = []
    for signal in signals:
        found = _signal_filter(signal, account, rules, exchange, now)
        if found is None:
            candidates.append(signal)
        else:
            drop(signal, *found)

    best: dict[str, Signal] = {}
    survivors: list[Signal] = []
    for signal in ranked(candidates):
        kept = best.get(signal.symbol)
        if kept is None:
            best[signal.symbol] = signal
            survivors.append(signal)
        else:
            drop(
                signal,
                FilterReason.DUPLICATE_SYMBOL_IN_WAVE,
                f"{signal.symbol} has a better ranked signal in this wave: "
                f"{kept.service}/{kept.signal_id}",
            )

    selected: list[Decision] = []
    for signal in survivors:
        hit = _cap_hit(account, rules, len(selected))
        if hit is None:
            rank = len(selected) + 1
            selected.append(
                Decision(
                    signal=signal,
                    selected=True,
                    rank=rank,
                    detail=f"rank {rank}: {signal.action} {signal.symbol}, score_week "
                    f"{signal.score_week}, score_month {signal.score_month}",
                )
            )
        else:
            drop(signal, *hit)
    return selected + sorted(filtered, key=lambda d: _identity(d.signal))
