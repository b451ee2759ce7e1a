"""Pure decisions of the stop-loss saga and of reactions to exchange reports.

The workflow executes; these functions decide. A position is never left
unprotected silently: placing the stop is retried, then the position is closed
at market, then an emergency stop at a wider distance is tried, and when all of
that failed a critical alert is raised and the whole round starts again after a
growing delay — forever, until something works or an operator steps in.

Each saga attempt is the *final* outcome of one placement activity (Temporal has
already retried transient errors, and the activity resolved duplicate client ids
and ambiguous outcomes by looking the order up).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

from domain.errors import ErrorType
from domain.market import MarketFilters, Quantity, stop_price_for
from domain.position import CloseReason, PositionState, is_open_on_exchange, is_terminal
from domain.sizing import stop_from_percent
from domain.types import Severity, Side

# --- the stop-loss saga ----------------------------------------------------------


class ProtectionStep(StrEnum):
    """One way of protecting a position, in the order the saga tries them."""

    PLACE_STOP = "place_stop"
    CLOSE_AT_MARKET = "close_at_market"
    PLACE_EMERGENCY_STOP = "place_emergency_stop"


_ROUND = (
    ProtectionStep.PLACE_STOP,
    ProtectionStep.CLOSE_AT_MARKET,
    ProtectionStep.PLACE_EMERGENCY_STOP,
)


class ActionKind(StrEnum):
    """What the workflow does next. The first three are steps; the rest end the saga."""

    PLACE_STOP = "place_stop"
    CLOSE_AT_MARKET = "close_at_market"
    PLACE_EMERGENCY_STOP = "place_emergency_stop"
    PROTECTED = "protected"  # stop on the exchange → active
    CLOSED = "closed"  # position closed at market → rolled_back / closed
    EMERGENCY_PROTECTED = "emergency_protected"  # only the emergency stop → failed
    RECONCILE = "reconcile"  # the position is not what we think: read it first


class ActionReason(StrEnum):
    """Why the action was chosen (recorded in the event)."""

    START = "start"
    RETRY = "retry"
    STOP_FAILED = "stop_failed"
    STOP_WOULD_TRIGGER = "stop_would_trigger"
    CLOSE_FAILED = "close_failed"
    ALL_FAILED = "all_failed"
    SUCCEEDED = "succeeded"
    POSITION_CHANGED = "position_changed"


class ProtectionAction(BaseModel):
    """The saga's decision: do `kind` after `delay`, raising `alert` if set."""

    model_config = ConfigDict(frozen=True)

    kind: ActionKind
    reason: ActionReason
    delay: timedelta = timedelta(0)
    alert: Severity | None = None

    @property
    def is_final(self) -> bool:
        """True when the saga is over (no further step to execute)."""
        return self.kind not in _STEP_KINDS


_STEP_ACTIONS = {
    ProtectionStep.PLACE_STOP: ActionKind.PLACE_STOP,
    ProtectionStep.CLOSE_AT_MARKET: ActionKind.CLOSE_AT_MARKET,
    ProtectionStep.PLACE_EMERGENCY_STOP: ActionKind.PLACE_EMERGENCY_STOP,
}
_STEP_KINDS = frozenset(_STEP_ACTIONS.values())
_ON_SUCCESS = {
    ProtectionStep.PLACE_STOP: (ActionKind.PROTECTED, None),
    ProtectionStep.CLOSE_AT_MARKET: (ActionKind.CLOSED, None),
    ProtectionStep.PLACE_EMERGENCY_STOP: (ActionKind.EMERGENCY_PROTECTED, Severity.ERROR),
}
# Entering the next step: why, and how loudly.
_ESCALATION = {
    ProtectionStep.CLOSE_AT_MARKET: (ActionReason.STOP_FAILED, Severity.WARNING),
    ProtectionStep.PLACE_EMERGENCY_STOP: (ActionReason.CLOSE_FAILED, Severity.ERROR),
}
# Worth repeating the same step: transient errors, and a duplicate client id
# (the placement activity resolves it by looking the order up).
_REPEATABLE = frozenset(
    {t for t in ErrorType if t.retryable} | {ErrorType.DUPLICATE_CLIENT_ORDER_ID}
)


class ProtectionPolicy(BaseModel):
    """Attempts per step and delays; delays double per failure up to `max_delay`."""

    model_config = ConfigDict(frozen=True)

    stop_attempts: int = Field(default=3, ge=1)
    close_attempts: int = Field(default=2, ge=1)
    emergency_attempts: int = Field(default=2, ge=1)
    retry_delay: timedelta = Field(default=timedelta(seconds=1), gt=timedelta(0))
    round_delay: timedelta = Field(default=timedelta(seconds=30), gt=timedelta(0))
    max_delay: timedelta = Field(default=timedelta(minutes=5), gt=timedelta(0))

    def attempts(self, step: ProtectionStep) -> int:
        """How many failed attempts of `step` before moving on."""
        return {
            ProtectionStep.PLACE_STOP: self.stop_attempts,
            ProtectionStep.CLOSE_AT_MARKET: self.close_attempts,
            ProtectionStep.PLACE_EMERGENCY_STOP: self.emergency_attempts,
        }[step]

    def backoff(self, base: timedelta, n: int) -> timedelta:
        """`base * 2**(n-1)`, capped at `max_delay` (n >= 1)."""
        return min(base * (1 << min(max(n - 1, 0), 30)), self.max_delay)


class ProtectionAttempt(BaseModel):
    """The outcome of one saga step: `error` None means it succeeded."""

    model_config = ConfigDict(frozen=True)

    step: ProtectionStep
    error: ErrorType | None = None


class ProtectionProgress(BaseModel):
    """Where the saga stands: the step to run, its failures so far, rounds completed.

    Bounded, so it can be persisted across continue-as-new instead of the history.
    """

    model_config = ConfigDict(frozen=True)

    step: ProtectionStep = ProtectionStep.PLACE_STOP
    failures: int = Field(default=0, ge=0)
    rounds: int = Field(default=0, ge=0)
    done: bool = False

    @model_validator(mode="after")
    def _sane(self) -> ProtectionProgress:
        if self.done and self.failures:
            raise ValueError("a finished saga has no pending failures")
        return self


def start_protection() -> tuple[ProtectionProgress, ProtectionAction]:
    """The saga's first step: place the stop now."""
    return ProtectionProgress(), ProtectionAction(
        kind=ActionKind.PLACE_STOP, reason=ActionReason.START
    )


def _finish(
    kind: ActionKind, reason: ActionReason, alert: Severity | None
) -> tuple[ProtectionProgress, ProtectionAction]:
    return ProtectionProgress(done=True), ProtectionAction(kind=kind, reason=reason, alert=alert)


def advance(
    progress: ProtectionProgress, attempt: ProtectionAttempt, policy: ProtectionPolicy
) -> tuple[ProtectionProgress, ProtectionAction]:
    """Fold one attempt's outcome into the saga; return the new progress and next action.

    Rules, in order:
    1. success ends the saga (stop → PROTECTED, close → CLOSED, emergency stop →
       EMERGENCY_PROTECTED with an ERROR alert: the position needs intervention);
    2. ReduceOnlyRejected → RECONCILE: the exchange holds less than we think;
    3. OrderImmediatelyFillable on the stop → close at market at once: the mark is
       already beyond the stop, the trader's loss limit is exceeded;
    4. a transient error (or duplicate id) repeats the step with backoff until the
       step's attempts are used up; a permanent error moves on at once;
    5. moving on goes stop → close → emergency stop → (CRITICAL alert, delay) →
       stop again, round after round.
    """
    if progress.done:
        raise ValueError("the protection saga is already finished")
    if attempt.step is not progress.step:
        raise ValueError(f"attempt of {attempt.step} while the saga is at {progress.step}")
    error = attempt.error
    if error is None:
        kind, alert = _ON_SUCCESS[attempt.step]
        return _finish(kind, ActionReason.SUCCEEDED, alert)
    if error is ErrorType.REDUCE_ONLY_REJECTED:
        return _finish(ActionKind.RECONCILE, ActionReason.POSITION_CHANGED, Severity.WARNING)
    if error is ErrorType.ORDER_IMMEDIATELY_FILLABLE and attempt.step is ProtectionStep.PLACE_STOP:
        return _enter(
            progress,
            ProtectionStep.CLOSE_AT_MARKET,
            ActionReason.STOP_WOULD_TRIGGER,
            Severity.WARNING,
            timedelta(0),
        )
    failures = progress.failures + 1
    if error in _REPEATABLE and failures < policy.attempts(attempt.step):
        delay = policy.backoff(policy.retry_delay, failures)
        action = ProtectionAction(
            kind=_STEP_ACTIONS[attempt.step], reason=ActionReason.RETRY, delay=delay
        )
        return progress.model_copy(update={"failures": failures}), action
    index = _ROUND.index(attempt.step)
    if index + 1 < len(_ROUND):
        nxt = _ROUND[index + 1]
        reason, alert = _ESCALATION[nxt]
        return _enter(progress, nxt, reason, alert, timedelta(0))
    rounds = progress.rounds + 1
    next_round = ProtectionProgress(rounds=rounds)
    delay = policy.backoff(policy.round_delay, rounds)
    action = ProtectionAction(
        kind=ActionKind.PLACE_STOP,
        reason=ActionReason.ALL_FAILED,
        delay=delay,
        alert=Severity.CRITICAL,
    )
    return next_round, action


def _enter(
    progress: ProtectionProgress,
    step: ProtectionStep,
    reason: ActionReason,
    alert: Severity | None,
    delay: timedelta,
) -> tuple[ProtectionProgress, ProtectionAction]:
    new = ProtectionProgress(step=step, rounds=progress.rounds)
    return new, ProtectionAction(kind=_STEP_ACTIONS[step], reason=reason, delay=delay, alert=alert)


def next_protection_action(
    history: Sequence[ProtectionAttempt], policy: ProtectionPolicy
) -> ProtectionAction:
    """The next action given the whole attempt history (a fold of `advance`).

    Raises ValueError for a history that does not follow the saga's own actions.
    """
    progress, action = start_protection()
    for attempt in history:
        progress, action = advance(progress, attempt, policy)
    return action


def emergency_stop_price(
    side: Side, reference: Decimal, percent: Decimal, filters: MarketFilters
) -> Decimal:
    """Emergency stop `percent` from `reference` (the current mark), snapped away from it."""
    return stop_price_for(side, stop_from_percent(side, reference, percent), filters)


# --- trailing moves and cancels -----------------------------------------------------


class MoveOutcome(StrEnum):
    """What to do when placing a tighter stop (a trailing move) failed."""

    KEEP_OLD_STOP = "keep_old_stop"  # the old, looser stop still protects; retry on next price
    RECONCILE = "reconcile"


class MoveDecision(BaseModel):
    """Decision after a failed stop move."""

    model_config = ConfigDict(frozen=True)

    outcome: MoveOutcome
    alert: Severity | None = None


def on_move_failed(error: ErrorType) -> MoveDecision:
    """React to a failed placement of the new stop of a trailing move.

    The new stop is placed before the old one is cancelled, so the old stop is
    still live: keep it and recompute the move from the next price. -2021 (the
    new level is already crossed) is routine in a fast market, so no alert.
    """
    if error is ErrorType.REDUCE_ONLY_REJECTED:
        return MoveDecision(outcome=MoveOutcome.RECONCILE, alert=Severity.WARNING)
    if error is ErrorType.ORDER_IMMEDIATELY_FILLABLE or error.retryable:
        return MoveDecision(outcome=MoveOutcome.KEEP_OLD_STOP)
    if error in (ErrorType.AUTHENTICATION, ErrorType.PERMISSION_DENIED):
        return MoveDecision(outcome=MoveOutcome.KEEP_OLD_STOP, alert=Severity.ERROR)
    return MoveDecision(outcome=MoveOutcome.KEEP_OLD_STOP, alert=Severity.WARNING)


class CancelOutcome(StrEnum):
    """What to do when cancelling an order failed."""

    DONE = "done"  # the order no longer exists
    VERIFY = "verify"  # gone, but a stop may have filled: look it up
    RETRY = "retry"
    ESCALATE = "escalate"  # alert; the reconciler will find the leftover


def on_cancel_failed(error: ErrorType, *, is_stop: bool) -> CancelOutcome:
    """React to a failed cancel. A leftover reduce-only stop is harmless (it can only
    reduce), so escalation is an alert, not an emergency."""
    if error is ErrorType.ORDER_NOT_FOUND:
        return CancelOutcome.VERIFY if is_stop else CancelOutcome.DONE
    if error.retryable:
        return CancelOutcome.RETRY
    return CancelOutcome.ESCALATE


# --- reactions to what the exchange reports ------------------------------------------


class ReactionKind(StrEnum):
    """What the workflow does about a report from the exchange or the reconciler."""

    NONE = "none"
    REPROTECT = "reprotect"  # run the stop-loss saga again
    RESIZE_STOP = "resize_stop"  # replace the stop with one for `qty`
    RECORD_CLOSE = "record_close"  # the position is gone: cancel leftovers, book the close
    VERIFY_POSITION = "verify_position"  # read the position before deciding
    INTERVENTION = "intervention"  # a human must look


class Reaction(BaseModel):
    """Decision on an exchange report; `qty` is the quantity to protect (RESIZE_STOP)."""

    model_config = ConfigDict(frozen=True)

    kind: ReactionKind
    qty: Quantity | None = None
    close_reason: CloseReason | None = None
    alert: Severity | None = None


_NOTHING = Reaction(kind=ReactionKind.NONE)
# States in which the position should have a live stop of ours.
_STOP_EXPECTED = frozenset({PositionState.ACTIVE, PositionState.FAILED})


def on_stop_missing(state: PositionState) -> Reaction:
    """Our stop is not on the exchange (and did not fill): protect again at once."""
    if state not in _STOP_EXPECTED:
        # pending_sl: the saga is running; closing: the close is under way
        return _NOTHING
    return Reaction(kind=ReactionKind.REPROTECT, alert=Severity.WARNING)


def on_stop_filled(
    state: PositionState, held_qty: Decimal, filled_qty: Decimal, *, emergency: bool = False
) -> Reaction:
    """Our stop (or emergency stop) filled `filled_qty` of the `held_qty` we hold.

    A full fill closes the position; a partial one leaves the rest unprotected
    (the stop is done), so the rest gets a new stop. An unknown fill (0: a Binance
    algo stop reports its execution on the triggered order) means read the position.
    """
    if is_terminal(state):
        return _NOTHING
    if filled_qty <= 0:
        return Reaction(kind=ReactionKind.VERIFY_POSITION)
    if filled_qty >= held_qty:
        reason = CloseReason.EMERGENCY_STOP_FILLED if emergency else CloseReason.STOP_FILLED
        return Reaction(kind=ReactionKind.RECORD_CLOSE, close_reason=reason)
    return Reaction(
        kind=ReactionKind.RESIZE_STOP, qty=held_qty - filled_qty, alert=Severity.WARNING
    )


def on_position_observed(
    state: PositionState,
    side: Side,
    held_qty: Decimal,
    observed_side: Side | None,
    observed_qty: Decimal,
    *,
    liquidated: bool = False,
) -> Reaction:
    """Compare the exchange's position (`observed_*`) with ours and decide.

    Before the entry has filled, the entry order (not the position) is the truth,
    so nothing is decided here. Gone → book the close (closing: ours completed;
    otherwise external or liquidation). Opposite side → intervention. Different
    size → a stop for the observed size.
    """
    if is_terminal(state) or not is_open_on_exchange(state) or state is PositionState.ENTRY_PLACED:
        return _NOTHING
    if observed_qty <= 0:
        if state is PositionState.CLOSING:
            return Reaction(kind=ReactionKind.RECORD_CLOSE)
        reason = CloseReason.LIQUIDATION if liquidated else CloseReason.EXTERNAL
        alert = Severity.ERROR if liquidated else Severity.WARNING
        return Reaction(kind=ReactionKind.RECORD_CLOSE, close_reason=reason, alert=alert)
    if observed_side is not None and observed_side is not side:
        return Reaction(kind=ReactionKind.INTERVENTION, alert=Severity.CRITICAL)
    if observed_qty == held_qty or state is PositionState.CLOSING:
        return _NOTHING
    return Reaction(kind=ReactionKind.RESIZE_STOP, qty=observed_qty, alert=Severity.WARNING)
