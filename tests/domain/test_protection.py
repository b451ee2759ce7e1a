"""The stop-loss saga and reactions to exchange reports, table-tested."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import ErrorType
from domain.market import MarketFilters
from domain.position import CloseReason, PositionState, is_terminal
from domain.protection import (
    ActionKind,
    ActionReason,
    CancelOutcome,
    MoveOutcome,
    ProtectionAction,
    ProtectionAttempt,
    ProtectionPolicy,
    ProtectionProgress,
    ProtectionStep,
    Reaction,
    ReactionKind,
    advance,
    emergency_stop_price,
    next_protection_action,
    on_cancel_failed,
    on_move_failed,
    on_position_observed,
    on_stop_filled,
    on_stop_missing,
    start_protection,
)
from domain.types import Severity, Side

E = ErrorType
P = ProtectionStep
K = ActionKind
POLICY = ProtectionPolicy(
    stop_attempts=3,
    close_attempts=2,
    emergency_attempts=2,
    retry_delay=timedelta(seconds=1),
    round_delay=timedelta(seconds=30),
    max_delay=timedelta(minutes=5),
)
NET = E.NETWORK
BAD = E.INVALID_ORDER


def attempts(*items: tuple[ProtectionStep, ErrorType | None]) -> list[ProtectionAttempt]:
    return [ProtectionAttempt(step=step, error=error) for step, error in items]


def act(
    kind: ActionKind, reason: ActionReason, delay: int = 0, alert: Severity | None = None
) -> ProtectionAction:
    return ProtectionAction(kind=kind, reason=reason, delay=timedelta(seconds=delay), alert=alert)


R = ActionReason
SAGA = [
    ("start", [], act(K.PLACE_STOP, R.START)),
    ("stop placed", [(P.PLACE_STOP, None)], act(K.PROTECTED, R.SUCCEEDED)),
    ("transient, retry with backoff", [(P.PLACE_STOP, NET)], act(K.PLACE_STOP, R.RETRY, 1)),
    ("second retry doubles", [(P.PLACE_STOP, NET)] * 2, act(K.PLACE_STOP, R.RETRY, 2)),
    (
        "retried then placed",
        [(P.PLACE_STOP, NET), (P.PLACE_STOP, None)],
        act(K.PROTECTED, R.SUCCEEDED),
    ),
    (
        "duplicate id: retry, the activity looks it up",
        [(P.PLACE_STOP, E.DUPLICATE_CLIENT_ORDER_ID)],
        act(K.PLACE_STOP, R.RETRY, 1),
    ),
    (
        "stop attempts used up: close at market",
        [(P.PLACE_STOP, NET)] * 3,
        act(K.CLOSE_AT_MARKET, R.STOP_FAILED, 0, Severity.WARNING),
    ),
    (
        "permanent error: close at once",
        [(P.PLACE_STOP, BAD)],
        act(K.CLOSE_AT_MARKET, R.STOP_FAILED, 0, Severity.WARNING),
    ),
    (
        "-2021 on the first stop: close at once",
        [(P.PLACE_STOP, E.ORDER_IMMEDIATELY_FILLABLE)],
        act(K.CLOSE_AT_MARKET, R.STOP_WOULD_TRIGGER, 0, Severity.WARNING),
    ),
    (
        "reduce-only rejected: reconcile",
        [(P.PLACE_STOP, E.REDUCE_ONLY_REJECTED)],
        act(K.RECONCILE, R.POSITION_CHANGED, 0, Severity.WARNING),
    ),
    (
        "closed at market",
        [(P.PLACE_STOP, BAD), (P.CLOSE_AT_MARKET, None)],
        act(K.CLOSED, R.SUCCEEDED),
    ),
    (
        "close retried",
        [(P.PLACE_STOP, BAD), (P.CLOSE_AT_MARKET, NET)],
        act(K.CLOSE_AT_MARKET, R.RETRY, 1),
    ),
    (
        "close failed: emergency stop",
        [(P.PLACE_STOP, BAD), (P.CLOSE_AT_MARKET, E.BAD_SYMBOL)],
        act(K.PLACE_EMERGENCY_STOP, R.CLOSE_FAILED, 0, Severity.ERROR),
    ),
    (
        "emergency stop placed: needs intervention",
        [(P.PLACE_STOP, BAD), (P.CLOSE_AT_MARKET, BAD), (P.PLACE_EMERGENCY_STOP, None)],
        act(K.EMERGENCY_PROTECTED, R.SUCCEEDED, 0, Severity.ERROR),
    ),
    (
        "-2021 on the emergency stop is a plain failure",
        [
            (P.PLACE_STOP, BAD),
            (P.CLOSE_AT_MARKET, BAD),
            (P.PLACE_EMERGENCY_STOP, E.ORDER_IMMEDIATELY_FILLABLE),
        ],
        act(K.PLACE_STOP, R.ALL_FAILED, 30, Severity.CRITICAL),
    ),
    (
        "everything failed: critical, new round after a delay",
        [(P.PLACE_STOP, BAD), (P.CLOSE_AT_MARKET, BAD), (P.PLACE_EMERGENCY_STOP, BAD)],
        act(K.PLACE_STOP, R.ALL_FAILED, 30, Severity.CRITICAL),
    ),
    (
        "second round fails too: longer delay",
        [(P.PLACE_STOP, BAD), (P.CLOSE_AT_MARKET, BAD), (P.PLACE_EMERGENCY_STOP, BAD)] * 2,
        act(K.PLACE_STOP, R.ALL_FAILED, 60, Severity.CRITICAL),
    ),
    (
        "a later round can still succeed",
        [
            (P.PLACE_STOP, BAD),
            (P.CLOSE_AT_MARKET, BAD),
            (P.PLACE_EMERGENCY_STOP, BAD),
            (P.PLACE_STOP, None),
        ],
        act(K.PROTECTED, R.SUCCEEDED),
    ),
    (
        "auth errors walk the whole saga",
        [(P.PLACE_STOP, E.AUTHENTICATION), (P.CLOSE_AT_MARKET, E.AUTHENTICATION)],
        act(K.PLACE_EMERGENCY_STOP, R.CLOSE_FAILED, 0, Severity.ERROR),
    ),
]


@pytest.mark.parametrize(
    ("history", "expected"), [(h, e) for _, h, e in SAGA], ids=[n for n, _, _ in SAGA]
)
def test_saga_table(
    history: list[tuple[ProtectionStep, ErrorType | None]], expected: ProtectionAction
) -> None:
    assert next_protection_action(attempts(*history), POLICY) == expected


def test_round_delay_is_capped() -> None:
    one_round = [(P.PLACE_STOP, BAD), (P.CLOSE_AT_MARKET, BAD), (P.PLACE_EMERGENCY_STOP, BAD)]
    action = next_protection_action(attempts(*(one_round * 20)), POLICY)
    assert action.delay == POLICY.max_delay
    assert action.alert is Severity.CRITICAL


def test_history_must_follow_the_saga() -> None:
    with pytest.raises(ValueError, match="saga is at"):
        next_protection_action(attempts((P.CLOSE_AT_MARKET, None)), POLICY)
    with pytest.raises(ValueError, match="finished"):
        next_protection_action(attempts((P.PLACE_STOP, None), (P.PLACE_STOP, None)), POLICY)


def test_progress_round_trips() -> None:
    progress, _ = start_protection()
    progress, _ = advance(progress, ProtectionAttempt(step=P.PLACE_STOP, error=NET), POLICY)
    assert progress == ProtectionProgress(step=P.PLACE_STOP, failures=1)
    assert ProtectionProgress.model_validate(progress.model_dump(mode="json")) == progress


errors = st.sampled_from([t for t in ErrorType if t is not E.REDUCE_ONLY_REJECTED])


@given(st.lists(errors, max_size=60))
def test_failures_never_end_the_saga(errs: list[ErrorType]) -> None:
    """Whatever fails, the saga keeps acting: it never gives up silently."""
    progress, action = start_protection()
    for error in errs:
        assert not action.is_final
        assert action.delay <= POLICY.max_delay
        step = ProtectionStep(action.kind.value)
        progress, action = advance(progress, ProtectionAttempt(step=step, error=error), POLICY)
    assert not action.is_final
    # the only alert-free actions are the start and plain retries
    if action.reason not in (R.START, R.RETRY):
        assert action.alert is not None


@given(st.lists(errors, max_size=40))
def test_success_of_any_step_ends_the_saga(errs: list[ErrorType]) -> None:
    progress, action = start_protection()
    for error in errs:
        progress, action = advance(
            progress, ProtectionAttempt(step=ProtectionStep(action.kind.value), error=error), POLICY
        )
    step = ProtectionStep(action.kind.value)
    progress, action = advance(progress, ProtectionAttempt(step=step), POLICY)
    assert action.is_final
    assert progress.done


@pytest.mark.parametrize("side", list(Side))
def test_emergency_stop_is_wider_and_snapped_away(side: Side) -> None:
    filters = MarketFilters(
        symbol="BTCUSDT", tick_size=D("0.1"), step_size=D("0.001"), min_qty=D("0.001")
    )
    price = emergency_stop_price(side, D("100.05"), D("5"), filters)
    assert price == (D("95.0") if side is Side.LONG else D("105.1"))


# --- trailing moves and cancels ----------------------------------------------------


@pytest.mark.parametrize("error", list(ErrorType))
def test_a_failed_move_keeps_the_old_stop(error: ErrorType) -> None:
    decision = on_move_failed(error)
    if error is E.REDUCE_ONLY_REJECTED:
        assert decision.outcome is MoveOutcome.RECONCILE
    else:
        assert decision.outcome is MoveOutcome.KEEP_OLD_STOP
    if error is E.ORDER_IMMEDIATELY_FILLABLE or error.retryable:
        assert decision.alert is None
    else:
        assert decision.alert is not None


@pytest.mark.parametrize("error", list(ErrorType))
@pytest.mark.parametrize("is_stop", [True, False])
def test_failed_cancel(error: ErrorType, is_stop: bool) -> None:
    outcome = on_cancel_failed(error, is_stop=is_stop)
    if error is E.ORDER_NOT_FOUND:
        assert outcome is (CancelOutcome.VERIFY if is_stop else CancelOutcome.DONE)
    elif error.retryable:
        assert outcome is CancelOutcome.RETRY
    else:
        assert outcome is CancelOutcome.ESCALATE


# --- reactions ----------------------------------------------------------------------

S = PositionState


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        (S.ACTIVE, ReactionKind.REPROTECT),
        (S.FAILED, ReactionKind.REPROTECT),
        (S.PENDING_SL, ReactionKind.NONE),
        (S.CLOSING, ReactionKind.NONE),
        (S.PENDING_ENTRY, ReactionKind.NONE),
        (S.ENTRY_PLACED, ReactionKind.NONE),
        (S.CLOSED, ReactionKind.NONE),
        (S.ROLLED_BACK, ReactionKind.NONE),
    ],
)
def test_stop_missing(state: PositionState, expected: ReactionKind) -> None:
    assert on_stop_missing(state).kind is expected


@pytest.mark.parametrize(
    ("state", "held", "filled", "emergency", "expected"),
    [
        (
            S.ACTIVE,
            "1",
            "1",
            False,
            Reaction(kind=ReactionKind.RECORD_CLOSE, close_reason=CloseReason.STOP_FILLED),
        ),
        (
            S.FAILED,
            "1",
            "1",
            True,
            Reaction(
                kind=ReactionKind.RECORD_CLOSE, close_reason=CloseReason.EMERGENCY_STOP_FILLED
            ),
        ),
        (
            S.ACTIVE,
            "1",
            "0.4",
            False,
            Reaction(kind=ReactionKind.RESIZE_STOP, qty=D("0.6"), alert=Severity.WARNING),
        ),
        (S.ACTIVE, "1", "0", False, Reaction(kind=ReactionKind.VERIFY_POSITION)),
        (S.CLOSED, "1", "1", False, Reaction(kind=ReactionKind.NONE)),
    ],
)
def test_stop_filled(
    state: PositionState, held: str, filled: str, emergency: bool, expected: Reaction
) -> None:
    assert on_stop_filled(state, D(held), D(filled), emergency=emergency) == expected


@pytest.mark.parametrize("side", list(Side))
@pytest.mark.parametrize(
    ("state", "held", "observed", "opposite", "liquidated", "expected"),
    [
        (S.ACTIVE, "1", "1", False, False, Reaction(kind=ReactionKind.NONE)),
        (
            S.ACTIVE,
            "1",
            "0",
            False,
            False,
            Reaction(
                kind=ReactionKind.RECORD_CLOSE,
                close_reason=CloseReason.EXTERNAL,
                alert=Severity.WARNING,
            ),
        ),
        (
            S.ACTIVE,
            "1",
            "0",
            False,
            True,
            Reaction(
                kind=ReactionKind.RECORD_CLOSE,
                close_reason=CloseReason.LIQUIDATION,
                alert=Severity.ERROR,
            ),
        ),
        (
            S.ACTIVE,
            "1",
            "0.5",
            False,
            False,
            Reaction(kind=ReactionKind.RESIZE_STOP, qty=D("0.5"), alert=Severity.WARNING),
        ),
        (
            S.ACTIVE,
            "1",
            "1.5",
            False,
            False,
            Reaction(kind=ReactionKind.RESIZE_STOP, qty=D("1.5"), alert=Severity.WARNING),
        ),
        (
            S.PENDING_SL,
            "1",
            "0.5",
            False,
            False,
            Reaction(kind=ReactionKind.RESIZE_STOP, qty=D("0.5"), alert=Severity.WARNING),
        ),
        (
            S.FAILED,
            "1",
            "0",
            False,
            False,
            Reaction(
                kind=ReactionKind.RECORD_CLOSE,
                close_reason=CloseReason.EXTERNAL,
                alert=Severity.WARNING,
            ),
        ),
        (
            S.ACTIVE,
            "1",
            "1",
            True,
            False,
            Reaction(kind=ReactionKind.INTERVENTION, alert=Severity.CRITICAL),
        ),
        (S.CLOSING, "1", "0", False, False, Reaction(kind=ReactionKind.RECORD_CLOSE)),
        (S.CLOSING, "1", "0.5", False, False, Reaction(kind=ReactionKind.NONE)),
        (S.PENDING_ENTRY, "0", "1", False, False, Reaction(kind=ReactionKind.NONE)),
        (S.ENTRY_PLACED, "0", "1", False, False, Reaction(kind=ReactionKind.NONE)),
        (S.CLOSED, "1", "1", False, False, Reaction(kind=ReactionKind.NONE)),
        (S.ROLLED_BACK, "0", "0", False, False, Reaction(kind=ReactionKind.NONE)),
    ],
)
def test_position_observed(
    side: Side,
    state: PositionState,
    held: str,
    observed: str,
    opposite: bool,
    liquidated: bool,
    expected: Reaction,
) -> None:
    observed_side = (Side.SHORT if side is Side.LONG else Side.LONG) if opposite else side
    got = on_position_observed(
        state, side, D(held), observed_side, D(observed), liquidated=liquidated
    )
    assert got == expected


@pytest.mark.parametrize("state", [s for s in PositionState if is_terminal(s)])
def test_terminal_positions_never_react(state: PositionState) -> None:
    assert on_stop_missing(state).kind is ReactionKind.NONE
    assert on_stop_filled(state, D("1"), D("1")).kind is ReactionKind.NONE
    assert (
        on_position_observed(state, Side.LONG, D("1"), Side.SHORT, D("3")).kind is ReactionKind.NONE
    )
