"""Alerts that reach a person: conditions, grouping, reminders and resolution.

Every alert posguard raises is a row of the `alerts` table, written in the same
transaction as its event (the outbox). Alerts of one *condition* (the same title
about the same position or account) are grouped: the first is sent at once; its
repeats are folded into a reminder every `remind_every`; the condition ends with a
"resolved" message when its raiser says so. A condition not raised again for
`quiet_after` is closed without a message: silence does not prove that a state
such as a pause is over, so only a raiser ever says "resolved".

Everything here is pure: `AlertWorkflow` folds raises and deadlines through these
functions, so the same history always yields the same messages and message ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from domain.types import Severity

SEVERITY_RANK = {s: i for i, s in enumerate(Severity)}
# How many event ids a condition remembers to drop a raise delivered twice.
SEEN_KEPT = 200
# Temporal's workflow id limit is 1000 bytes; longer conditions are hashed.
CONDITION_ID_MAX = 200

ChannelKind = Literal["telegram", "slack", "webhook"]


TELEGRAM_API = "https://api.telegram.org"


class AlertChannel(BaseModel):
    """Where messages go (settings `[[alert_channels]]`); secrets are SecretStr.

    telegram: `token` (the bot's) and `chat_id`; `url` is the Bot API base.
    slack: `url`, the incoming webhook (it is itself the secret).
    webhook: `url`; posguard POSTs the message as JSON with an `Idempotency-Key`.
    `per_minute` caps the channel's messages; more wait their turn.
    """

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1, max_length=60, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: ChannelKind
    url: SecretStr | None = None
    token: SecretStr | None = None
    chat_id: str | None = None
    min_severity: Severity = Severity.WARNING
    per_minute: int = Field(default=20, ge=1, le=6000)

    @model_validator(mode="after")
    def _complete(self) -> AlertChannel:
        if self.kind == "telegram" and (self.token is None or not self.chat_id):
            raise ValueError(f"alert channel {self.name!r}: telegram needs token and chat_id")
        if self.kind != "telegram" and self.url is None:
            raise ValueError(f"alert channel {self.name!r}: {self.kind} needs url")
        return self


def alert_task_queue(channel: str) -> str:
    """The task queue of one channel's deliveries: its rate limit is the server's."""
    return f"posguard-alerts-{channel}"


class MessageKind(StrEnum):
    """What a message says about its condition."""

    RAISED = "raised"
    ESCALATED = "escalated"  # raised again at a higher severity: sent at once
    REMINDER = "reminder"
    RESOLVED = "resolved"


class AlertPolicy(BaseModel):
    """When repeats are reminded, and when a quiet condition is closed."""

    model_config = ConfigDict(frozen=True)

    remind_every: timedelta = timedelta(minutes=15)
    quiet_after: timedelta = timedelta(minutes=30)


class AlertRaised(BaseModel):
    """One alert row as the condition's workflow receives it.

    `resolvable`: the raiser promises a resolution (`resolution=True` row of the same
    condition) and raises it again while it lasts; such a condition is reminded
    while open, repeats or not. `resolution`: this row ends the condition.
    """

    model_config = ConfigDict(frozen=True)

    event_id: str
    severity: Severity
    title: str
    body: str
    condition: str
    raised_at: datetime
    position_id: str | None = None
    resolvable: bool = False
    resolution: bool = False


class AlertMessage(BaseModel):
    """One message to deliver; `message_id` is stable across retries and replays."""

    model_config = ConfigDict(frozen=True)

    message_id: str
    kind: MessageKind
    severity: Severity
    title: str
    body: str
    condition: str
    at: datetime
    opened_at: datetime
    position_id: str | None = None
    # Raises folded into this message (a reminder's repeats since the last message).
    repeats: int = 0
    raised_total: int = 1


class ConditionState(BaseModel):
    """An open condition: what was sent, and what was raised since."""

    model_config = ConfigDict(frozen=True)

    condition: str
    title: str
    body: str
    severity: Severity
    first_event_id: str
    position_id: str | None
    opened_at: datetime
    last_raised_at: datetime
    last_sent_at: datetime
    resolvable: bool
    repeats: int = 0  # raised since the last message
    raised_total: int = 1
    reminders: int = 0
    escalations: int = 0
    resolved: bool = False
    seen: tuple[str, ...] = Field(default=())


def condition_key(title: str, position_id: str | None = None, scope: str | None = None) -> str:
    """The grouping key of an alert: its title about one position (or scope)."""
    about = position_id or scope
    return f"{about}: {title}" if about else title


def condition_workflow_id(condition: str) -> str:
    """`alert/{condition}`; a condition too long for a workflow id is shortened
    with a hash of the whole, so two conditions never share a workflow."""
    if len(condition.encode()) <= CONDITION_ID_MAX:
        return f"alert/{condition}"
    digest = hashlib.sha256(condition.encode()).hexdigest()[:16]
    return f"alert/{condition.encode()[:CONDITION_ID_MAX].decode(errors='ignore')}~{digest}"


def _message(
    state: ConditionState, kind: MessageKind, at: datetime, **extra: object
) -> AlertMessage:
    suffix = {
        MessageKind.RAISED: "raised",
        MessageKind.ESCALATED: f"escalated-{state.escalations}",
        MessageKind.REMINDER: f"reminder-{state.reminders}",
        MessageKind.RESOLVED: "resolved",
    }[kind]
    fields: dict[str, object] = {
        "message_id": f"{state.first_event_id}/{suffix}",
        "kind": kind,
        "severity": state.severity,
        "title": state.title,
        "body": state.body,
        "condition": state.condition,
        "at": at,
        "opened_at": state.opened_at,
        "position_id": state.position_id,
        "repeats": state.repeats,
        "raised_total": state.raised_total,
    }
    fields.update(extra)
    return AlertMessage.model_validate(fields)


def open_condition(first: AlertRaised) -> tuple[ConditionState, AlertMessage | None]:
    """A new condition from its first raise, and the message sent at once.

    A resolution arriving first (its raise was already resolved in an earlier
    condition workflow) opens nothing and sends nothing.
    """
    state = ConditionState(
        condition=first.condition,
        title=first.title,
        body=first.body,
        severity=first.severity,
        first_event_id=first.event_id,
        position_id=first.position_id,
        opened_at=first.raised_at,
        last_raised_at=first.raised_at,
        last_sent_at=first.raised_at,
        resolvable=first.resolvable,
        seen=(first.event_id,),
        resolved=first.resolution,
    )
    if first.resolution:
        return state, None
    return state, _message(state, MessageKind.RAISED, first.raised_at)


def fold_raise(
    state: ConditionState, raised: AlertRaised
) -> tuple[ConditionState, AlertMessage | None]:
    """Fold one more row of the condition in; the message due at once, if any.

    A row seen before changes nothing. A resolution ends the condition with a
    "resolved" message. A raise at a higher severity is sent at once (escalated);
    any other raise is counted for the next reminder.
    """
    if raised.event_id in state.seen or state.resolved:
        return state, None
    seen = (*state.seen, raised.event_id)[-SEEN_KEPT:]
    if raised.resolution:
        done = state.model_copy(update={"seen": seen, "resolved": True})
        return done, _message(done, MessageKind.RESOLVED, raised.raised_at, body=raised.body)
    update: dict[str, object] = {
        "seen": seen,
        "last_raised_at": max(state.last_raised_at, raised.raised_at),
        "raised_total": state.raised_total + 1,
        "body": raised.body,
        "resolvable": state.resolvable or raised.resolvable,
    }
    if SEVERITY_RANK[raised.severity] > SEVERITY_RANK[state.severity]:
        update |= {
            "severity": raised.severity,
            "escalations": state.escalations + 1,
            "repeats": 0,
            "last_sent_at": raised.raised_at,
        }
        escalated = state.model_copy(update=update)
        return escalated, _message(
            escalated, MessageKind.ESCALATED, raised.raised_at, repeats=state.repeats + 1
        )
    return state.model_copy(update=update | {"repeats": state.repeats + 1}), None


def next_deadline(state: ConditionState, policy: AlertPolicy) -> datetime:
    """When the condition next needs a look: its reminder, or its quiet close."""
    quiet = state.last_raised_at + policy.quiet_after
    if state.resolvable or state.repeats:
        return min(state.last_sent_at + policy.remind_every, quiet)
    return quiet


def at_deadline(
    state: ConditionState, now: datetime, policy: AlertPolicy
) -> tuple[ConditionState, AlertMessage | None]:
    """The reminder due at `now`, if any; or the condition closed, quiet.

    A resolvable condition is reminded every `remind_every` while open; any other
    only when it was raised again since its last message. A condition not raised
    for `quiet_after` is closed without a message (`resolved`, with no "resolved"
    sent): a raiser that keeps a condition open raises it again well within that
    time (a position without its stop does, every protection round), and one
    that raised a state (a pause) said all there was to say; a later raise opens
    the condition again with a new first message.
    """
    if state.resolved:
        return state, None
    if now >= state.last_raised_at + policy.quiet_after:
        return state.model_copy(update={"resolved": True}), None
    if now >= state.last_sent_at + policy.remind_every and (state.repeats or state.resolvable):
        reminded = state.model_copy(update={"reminders": state.reminders + 1})
        message = _message(reminded, MessageKind.REMINDER, now)
        return reminded.model_copy(update={"repeats": 0, "last_sent_at": now}), message
    return state, None


def routed(severity: Severity, minimums: dict[str, Severity]) -> list[str]:
    """The channels (by name) whose minimum severity `severity` reaches, in order."""
    rank = SEVERITY_RANK[severity]
    return [name for name, least in minimums.items() if rank >= SEVERITY_RANK[least]]


# The one condition whose messages cannot be claimed and recorded in the database,
# because it is the database that is down (workers.dependency_alerts.DatabaseAlerts).
DATABASE_DOWN_TITLE = "postgresql unreachable"


def recorded(message: AlertMessage) -> bool:
    """Whether `message`'s delivery is claimed and recorded in the database (so never
    sent twice); False only for the database's own outage, sent unrecorded."""
    return message.title != DATABASE_DOWN_TITLE


def watch_turns(
    raised: Mapping[str, datetime],
    down: Collection[str],
    back: Collection[str],
    now: datetime,
    again_every: timedelta,
) -> tuple[list[str], list[str]]:
    """What a watching raiser writes now, as (to raise, to resolve).

    `raised` maps each condition it holds open to its latest raise; `down` is what
    it sees wrong now, `back` what it sees right again. A thing newly down is
    raised; one still down is raised again once `again_every` has passed, so its
    condition outlives `quiet_after` for as long as it lasts. A raised thing seen
    right again is resolved. Anything else (unknown, or not looked at) changes
    nothing.
    """
    to_raise = sorted(k for k in down if k not in raised or now - raised[k] >= again_every)
    to_resolve = sorted(k for k in back if k in raised and k not in down)
    return to_raise, to_resolve


_HEADLINE = {
    MessageKind.RAISED: "{sev}: {title}",
    MessageKind.ESCALATED: "{sev} (escalated): {title}",
    MessageKind.REMINDER: "still open, {sev}: {title}",
    MessageKind.RESOLVED: "resolved: {title}",
}


def message_text(message: AlertMessage) -> str:
    """The message as plain text for a person (Telegram, Slack).

    First line: what and how bad; then the detail; then how often and since when.
    """
    head = _HEADLINE[message.kind].format(sev=message.severity.value.upper(), title=message.title)
    lines = [f"[posguard] {head}", message.body]
    if message.position_id:
        lines.append(f"position: {message.position_id}")
    since = message.opened_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    if message.kind is MessageKind.REMINDER:
        lines.append(f"raised {message.repeats} more times; open since {since}")
    elif message.kind is MessageKind.RESOLVED:
        lines.append(f"open since {since}, raised {message.raised_total} times")
    return "\n".join(lines)


class DeliveryRequest(BaseModel):
    """Deliver `message` to the channel named `channel` (activity input)."""

    model_config = ConfigDict(frozen=True)

    message: AlertMessage
    channel: str


class DeliveryFailure(BaseModel):
    """Record that `channel` never took `message` (activity input); how many tries
    were made is the store's count of them."""

    model_config = ConfigDict(frozen=True)

    message: AlertMessage
    channel: str
    error: str
