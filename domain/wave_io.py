"""What the ingest, the wave workflow and its activities say to each other.

A wave is one account's signals of one scoring period. Its workflow's id is
``wave/{account}/{period start}`` (`wave_workflow_id`); the ingest feeds it with
signal-with-start (`ADD_SIGNALS`, payload `WaveSignals`) and Temporal refuses a
second run of a closed wave (id reuse: reject), so a late signal is told, not
traded. Everything here is pure: identities, payloads, and the few decisions
around the selection (`account_view`, `pause_cause`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from domain.events import Event
from domain.position import Percent, PositionSpec, book_key
from domain.records import AccountPause, AlertRecord, DecisionRecord, WaveRecord
from domain.signals import Signal
from domain.sizing import SizingRequest, StopRule, TakeProfitRule
from domain.trailing import TrailingRule
from domain.types import ExchangeId, Side
from domain.waves import AccountView, WaveRules

WAVE_WORKFLOW_TYPE = "WaveWorkflow"
ADD_SIGNALS = "add_signals"
"""The wave workflow's signal: more signals of its wave (`WaveSignals`)."""

# One signal-with-start carries at most this many signals (~100 KB): far below
# Temporal's payload limit whatever a burst holds.
SIGNALS_PER_MESSAGE = 300


def wave_workflow_id(account: str, period_start: datetime) -> str:
    """``wave/{account}/{period start, UTC, to the second}``: one wave per account and period."""
    return f"wave/{account}/{period_start.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


def decision_event_id(row_id: str, account: str, kind: str) -> str:
    """The id of the event recording one account's decision about one signal row.

    Ids longer than an event id may be (200) are replaced by a digest: the id only
    has to be the same every time the same decision is written.
    """
    text = f"signal/{row_id}/{account}/{kind}"
    if len(text) <= 200:
        return text
    return f"signal/{hashlib.blake2b(text.encode(), digest_size=20).hexdigest()}/{kind}"


def signal_row_id(signal: Signal) -> str:
    """The `signals` row of a valid signal (`domain.records.signal_record` keys it so)."""
    return f"{signal.service}/{signal.signal_id}"


class WaveSignals(BaseModel):
    """More signals of one wave, already stored (the `add_signals` payload)."""

    model_config = ConfigDict(frozen=True)

    signals: list[Signal]


class PositionTemplate(BaseModel):
    """How a position a wave opens is sized and protected (settings `[waves]`)."""

    model_config = ConfigDict(frozen=True)

    sizing: SizingRequest
    stop: StopRule
    emergency_stop_percent: Percent
    take_profit: TakeProfitRule | None = None
    trailing: TrailingRule | None = None
    max_age: timedelta | None = None

    def spec(
        self, account: str, exchange: ExchangeId, signal: Signal, hedge_mode: bool = False
    ) -> PositionSpec:
        """The PositionSpec of a selected signal (its side from the action; `hedge_mode`:
        the account's)."""
        side = signal.side
        if side is None:
            raise ValueError(f"{signal.action} opens no position")
        return PositionSpec(
            account=account,
            exchange=exchange,
            symbol=signal.symbol,
            side=side,
            sizing=self.sizing,
            stop=self.stop,
            emergency_stop_percent=self.emergency_stop_percent,
            take_profit=self.take_profit,
            trailing=self.trailing,
            max_age=self.max_age,
            signal_id=signal_row_id(signal),
            hedge_mode=hedge_mode,
        )


class PauseCause(StrEnum):
    """Why the exchange side pauses an account's new entries. Stored: never rename."""

    KEY_INVALID = "key_invalid"
    INSUFFICIENT_BALANCE = "insufficient_balance"
    MAINTENANCE = "maintenance"


# ErrorType values (domain.errors) the exchange answers an account read with.
_PAUSING_ERRORS = {
    "AuthenticationError": PauseCause.KEY_INVALID,
    "PermissionDenied": PauseCause.KEY_INVALID,
    "InsufficientFunds": PauseCause.INSUFFICIENT_BALANCE,
    "ExchangeNotAvailable": PauseCause.MAINTENANCE,
}


def pause_cause(error_type: str | None) -> PauseCause | None:
    """The pause an error of the account read means; None for one that does not pause.

    A key the exchange refuses, funds it says are insufficient, or the exchange in
    maintenance (after the activity's retries) pause new entries until a later
    wave reads the account cleanly. Other failures (network, timeouts) only make
    this wave open nothing.
    """
    return None if error_type is None else _PAUSING_ERRORS.get(error_type)


class EntryReadiness(BaseModel):
    """The exchange side of an account, read just before a selection.

    `listed`: linear perpetual symbols listed and trading; `free_balance`: the
    free margin balance in `quote` (None if the exchange does not say).
    """

    model_config = ConfigDict(frozen=True)

    listed: frozenset[str]
    quote: str = "USDT"
    free_balance: Decimal | None = None


class StoredOpen(BaseModel):
    """A position the store has open or opening: its symbol, side and notional (0 if
    not filled)."""

    model_config = ConfigDict(frozen=True)

    symbol: str
    side: Side | None = None
    notional: Decimal = Decimal(0)


class StoredAccount(BaseModel):
    """The store's side of an account, read just before a selection."""

    model_config = ConfigDict(frozen=True)

    open: list[StoredOpen] = Field(default_factory=list)
    closed_at: dict[str, AwareDatetime] = Field(default_factory=dict)
    stoplist: frozenset[str] = frozenset()
    pauses: list[AccountPause] = Field(default_factory=list)


def account_view(
    exchange: EntryReadiness,
    stored: StoredAccount,
    running: Iterable[str],
    rules: WaveRules,
    hedge_mode: bool = False,
) -> AccountView:
    """The account as `domain.waves.select_wave` sees it.

    Open positions are those the store has open and those with a running position
    workflow (`running`, their `domain.position.book_key`s: it knows of a position
    just started before its first row), each keyed by its book: the symbol, or on a
    hedge-mode account the symbol and side. Exposure is the stored notional, and
    `notional_per_position` for an open one not filled yet (it will be, or roll
    back). Paused: any pause row, the operator's first.
    """
    notional = {book_key(o.symbol, o.side if hedge_mode else None): o.notional for o in stored.open}
    open_symbols = set(notional) | set(running)
    exposure = sum(
        (notional.get(s) or rules.notional_per_position for s in open_symbols), Decimal(0)
    )
    pauses = sorted(stored.pauses, key=lambda p: p.source != "operator")
    paused = None
    if pauses:
        p = pauses[0]
        paused = f"{p.source}: {p.reason}" + (f" ({p.detail})" if p.detail else "")
    return AccountView(
        listed=exchange.listed,
        open_symbols=frozenset(open_symbols),
        open_positions=len(open_symbols),
        hedge_mode=hedge_mode,
        exposure=exposure,
        closed_at=dict(stored.closed_at),
        stoplist=stored.stoplist,
        paused=paused,
    )


def insufficient(exchange: EntryReadiness, min_free_balance: Decimal) -> bool:
    """True when the free balance is known and below what a new entry needs."""
    return exchange.free_balance is not None and exchange.free_balance < min_free_balance


class WaveResult(BaseModel):
    """What a wave did: counts by outcome and the positions it started."""

    model_config = ConfigDict(frozen=True)

    wave_id: str
    received: int
    opened: list[str] = Field(default_factory=list)
    outcomes: dict[str, int] = Field(default_factory=dict)
    late: int = 0
    duration_ms: int = 0


def outcome_counts(outcomes: Sequence[str]) -> dict[str, int]:
    """``{"opened": 3, "max_new_per_wave": 2}``: each outcome (or filter reason) counted."""
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o] = counts.get(o, 0) + 1
    return dict(sorted(counts.items()))


# --- activity requests ------------------------------------------------------------------


class WaveWrite(BaseModel):
    """One atomic write of a wave: its row (if given), decisions, events and alerts.

    Decisions are written once per (signal, account): a retried or repeated write
    keeps the first. Events are idempotent by id.
    """

    model_config = ConfigDict(frozen=True)

    wave: WaveRecord | None = None
    decisions: list[DecisionRecord] = Field(default_factory=list)
    events: list[Event] = Field(default_factory=list)
    alerts: list[AlertRecord] = Field(default_factory=list)


class AccountStateRequest(BaseModel):
    """The store's side of an account, with the closes of the last `cooldown`."""

    model_config = ConfigDict(frozen=True)

    account: str
    exchange: ExchangeId
    cooldown: timedelta = timedelta(0)


class ExchangePauseRequest(BaseModel):
    """Set (`cause`) or clear (None) the exchange's pause of an account's entries.

    `wave_id` names the wave that saw it (the event's and alert's id derive from
    it); the alert is raised only when the pause begins.
    """

    model_config = ConfigDict(frozen=True)

    account: str
    wave_id: str
    at: AwareDatetime
    cause: PauseCause | None = None
    detail: str = ""
