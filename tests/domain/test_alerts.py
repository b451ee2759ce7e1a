"""Alert conditions: grouping, escalation, reminders, resolution, routing, text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.alerts import (
    AlertChannel,
    AlertPolicy,
    AlertRaised,
    MessageKind,
    at_deadline,
    condition_key,
    condition_workflow_id,
    fold_raise,
    message_text,
    next_deadline,
    open_condition,
    routed,
    watch_turns,
)
from domain.types import Severity

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
POLICY = AlertPolicy(remind_every=timedelta(minutes=15), quiet_after=timedelta(minutes=30))
CONDITION = condition_key("position unprotected", "pos-1")


def raised(
    n: int,
    *,
    minutes: float = 0,
    severity: Severity = Severity.CRITICAL,
    resolvable: bool = True,
    resolution: bool = False,
) -> AlertRaised:
    return AlertRaised(
        event_id=f"pos-1/{n}",
        severity=severity,
        title="position unprotected",
        body=f"raise {n}",
        condition=CONDITION,
        raised_at=T0 + timedelta(minutes=minutes),
        position_id="pos-1",
        resolvable=resolvable,
        resolution=resolution,
    )


def test_the_first_raise_is_sent_at_once_with_a_stable_id() -> None:
    state, message = open_condition(raised(1))
    assert message is not None and message.kind is MessageKind.RAISED
    assert message.message_id == "pos-1/1/raised"
    assert message.severity is Severity.CRITICAL and not state.resolved
    again, same = open_condition(raised(1))
    assert same == message and again == state  # pure: the same history, the same message


def test_repeats_are_folded_and_a_row_seen_twice_counts_once() -> None:
    state, _ = open_condition(raised(1))
    for n in (2, 3, 3, 2):
        state, message = fold_raise(state, raised(n, minutes=n))
        assert message is None
    assert state.repeats == 2 and state.raised_total == 3


def test_a_resolvable_condition_is_reminded_while_open_then_resolved() -> None:
    state, _ = open_condition(raised(1))
    assert next_deadline(state, POLICY) == T0 + POLICY.remind_every
    state, early = at_deadline(state, T0 + timedelta(minutes=14), POLICY)
    assert early is None
    state, _ = fold_raise(state, raised(2, minutes=14))  # raised again: still open
    state, reminder = at_deadline(state, T0 + timedelta(minutes=15), POLICY)
    assert reminder is not None and reminder.kind is MessageKind.REMINDER
    assert reminder.message_id == "pos-1/1/reminder-1" and reminder.repeats == 1
    # no repeat since: still reminded (the raiser said it will tell the end)
    state, second = at_deadline(state, T0 + timedelta(minutes=30), POLICY)
    assert second is not None and second.message_id == "pos-1/1/reminder-2"
    assert second.repeats == 0
    state, done = fold_raise(state, raised(9, minutes=61, severity=Severity.INFO, resolution=True))
    assert done is not None and done.kind is MessageKind.RESOLVED and state.resolved
    assert done.severity is Severity.CRITICAL  # it goes where the raise went
    assert done.message_id == "pos-1/1/resolved"
    assert fold_raise(state, raised(10, minutes=62)) == (state, None)


def test_a_resolvable_condition_whose_raiser_went_quiet_is_closed_without_a_word() -> None:
    """Its raiser ended without resolving it: reminders stop; nobody is told it is
    resolved, since nobody knows."""
    state, _ = open_condition(raised(1))
    state, _ = at_deadline(state, T0 + POLICY.remind_every, POLICY)
    assert next_deadline(state, POLICY) == T0 + POLICY.quiet_after
    state, message = at_deadline(state, T0 + POLICY.quiet_after, POLICY)
    assert message is None and state.resolved


def test_a_condition_raised_once_is_not_reminded_and_closes_quietly() -> None:
    """A state raised once (a pause): one message; its silence proves nothing."""
    state, _ = open_condition(raised(1, severity=Severity.ERROR, resolvable=False))
    assert next_deadline(state, POLICY) == T0 + POLICY.quiet_after
    state, none = at_deadline(state, T0 + timedelta(minutes=20), POLICY)
    assert none is None and not state.resolved
    state, none = at_deadline(state, T0 + timedelta(minutes=30), POLICY)
    assert none is None and state.resolved


def test_a_repeated_condition_nobody_resolves_is_reminded_then_closes() -> None:
    state, _ = open_condition(raised(1, severity=Severity.ERROR, resolvable=False))
    state, _ = fold_raise(state, raised(2, minutes=5, severity=Severity.ERROR, resolvable=False))
    assert next_deadline(state, POLICY) == T0 + POLICY.remind_every
    state, reminder = at_deadline(state, T0 + POLICY.remind_every, POLICY)
    assert reminder is not None and reminder.repeats == 1
    assert next_deadline(state, POLICY) == T0 + timedelta(minutes=5) + POLICY.quiet_after


def test_a_higher_severity_is_sent_at_once() -> None:
    state, _ = open_condition(raised(1, severity=Severity.WARNING, resolvable=False))
    state, message = fold_raise(state, raised(2, minutes=1, severity=Severity.CRITICAL))
    assert message is not None and message.kind is MessageKind.ESCALATED
    assert message.severity is Severity.CRITICAL and state.severity is Severity.CRITICAL
    assert state.resolvable  # the higher raise promised a resolution


def test_a_resolution_first_opens_nothing() -> None:
    state, message = open_condition(raised(1, resolution=True))
    assert message is None and state.resolved


@pytest.mark.parametrize(
    ("severity", "expected"),
    [
        (Severity.INFO, []),
        (Severity.WARNING, ["all"]),
        (Severity.ERROR, ["all", "pager"]),
        (Severity.CRITICAL, ["all", "pager"]),
    ],
)
def test_routing_by_minimum_severity(severity: Severity, expected: list[str]) -> None:
    minimums = {"all": Severity.WARNING, "pager": Severity.ERROR}
    assert routed(severity, minimums) == expected


def test_condition_workflow_ids_stay_short_and_distinct() -> None:
    assert condition_workflow_id(CONDITION) == f"alert/{CONDITION}"
    long_a, long_b = "x" * 500 + "a", "x" * 500 + "b"
    ida, idb = condition_workflow_id(long_a), condition_workflow_id(long_b)
    assert ida != idb and len(ida) < 260


def test_text_says_what_how_bad_and_since_when() -> None:
    state, message = open_condition(raised(1))
    assert message is not None
    text = message_text(message)
    assert text.splitlines()[0] == "[posguard] CRITICAL: position unprotected"
    assert "pos-1" in text
    _, reminder = at_deadline(state, T0 + POLICY.remind_every, POLICY)
    assert reminder is not None
    assert "open since 2026-12-02 12:00:00 UTC" in message_text(reminder)


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"kind": "telegram", "token": "t"}, "telegram needs token and chat_id"),
        ({"kind": "slack"}, "slack needs url"),
        ({"kind": "webhook"}, "webhook needs url"),
    ],
)
def test_a_channel_without_its_address_is_refused(fields: dict[str, str], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        AlertChannel.model_validate({"name": "c", **fields})


AGAIN = timedelta(minutes=5)


@pytest.mark.parametrize(
    ("raised_at", "down", "back", "expected"),
    [
        ({}, ["a"], [], (["a"], [])),  # newly down: raised
        ({"a": T0}, ["a"], [], ([], [])),  # still down, not due yet: silent
        ({"a": T0 - AGAIN}, ["a"], [], (["a"], [])),  # still down and due: raised again
        ({"a": T0}, [], ["a"], ([], ["a"])),  # seen right again: resolved
        ({}, [], ["a"], ([], [])),  # right and never raised: nothing
        ({"a": T0}, [], [], ([], [])),  # not looked at (unknown): nothing
        ({"a": T0}, ["a"], ["a"], ([], [])),  # contradictory view: down wins, not resolved
        ({"b": T0}, ["a", "c"], ["b"], (["a", "c"], ["b"])),
    ],
)
def test_a_watch_raises_the_new_repeats_the_due_and_resolves_the_recovered(
    raised_at: dict[str, datetime],
    down: list[str],
    back: list[str],
    expected: tuple[list[str], list[str]],
) -> None:
    assert watch_turns(raised_at, down, back, T0, AGAIN) == expected
