"""AlertWorkflow: one alert condition, from its first message to "resolved".

Id `alert/{condition}` (`domain.alerts.condition_workflow_id`). The worker's
dispatcher reads each new `alerts` row and signal-with-starts the workflow of its
condition with it (`raise_alert`). The workflow folds the rows and its deadlines
through `domain.alerts`: the first raise is sent at once, a higher severity at
once, repeats as a reminder every `remind_every`, and the end as "resolved". Each
message goes to every channel whose minimum severity it reaches, as one
`alerts.deliver` activity on that channel's task queue (rate-limited there),
retried by Temporal; a message a channel never takes is recorded ALERT_FAILED.

Every activity outcome is a handled case: a delivery that fails for good is
recorded, a record that fails is logged, and the condition carries on.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

with workflow.unsafe.imports_passed_through():
    from activities.alerts.activities import AlertActivities
    from domain.alerts import (
        AlertMessage,
        AlertPolicy,
        AlertRaised,
        ConditionState,
        DeliveryFailure,
        DeliveryRequest,
        alert_task_queue,
        at_deadline,
        fold_raise,
        next_deadline,
        open_condition,
        recorded,
        routed,
    )
    from domain.types import Severity

RAISE_ALERT = "raise_alert"
# Continue-as-new well before Temporal's history suggestion.
MAX_HISTORY_EVENTS = 2000


class AlertWorkflowInput(BaseModel):
    """The channels (name → minimum severity), when to remind and resolve, how hard
    to try a delivery; `carried` is the condition after continue-as-new."""

    model_config = ConfigDict(frozen=True)

    channels: dict[str, Severity]
    policy: AlertPolicy = Field(default_factory=AlertPolicy)
    delivery_attempts: int = Field(default=8, ge=1)
    delivery_first_retry: timedelta = timedelta(seconds=1)
    delivery_max_retry: timedelta = timedelta(minutes=1)
    # One try's limit: a worker that dies mid-delivery is noticed after this long.
    delivery_timeout: timedelta = timedelta(seconds=30)
    carried: ConditionState | None = None
    inbox: list[AlertRaised] = Field(default_factory=list)


@workflow.defn(name="AlertWorkflow")
class AlertWorkflow:
    """One alert condition's messages to people (see the module docstring)."""

    def __init__(self) -> None:
        self._inbox: list[AlertRaised] = []
        self._state: ConditionState | None = None

    @workflow.signal(name=RAISE_ALERT)
    def raise_alert(self, raised: AlertRaised) -> None:
        """One more `alerts` row of this condition (a repeat is dropped)."""
        self._inbox.append(raised)

    @workflow.query(name="state")
    def state(self) -> ConditionState | None:
        """The condition: severity, repeats, reminders, whether it is resolved."""
        return self._state

    @workflow.run
    async def run(self, inp: AlertWorkflowInput) -> ConditionState | None:
        """Deliver the condition's messages until it is resolved."""
        self._inbox.extend(inp.inbox)
        self._state = inp.carried
        if self._state is None:
            await workflow.wait_condition(lambda: bool(self._inbox))
            first = self._inbox.pop(0)
            self._state, message = open_condition(first)
            await self._deliver(inp, message)
        while not self._state.resolved:
            if workflow.info().get_current_history_length() > MAX_HISTORY_EVENTS:
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    inp.model_copy(update={"carried": self._state, "inbox": self._inbox})
                )
            deadline = next_deadline(self._state, inp.policy)
            wait = max(deadline - workflow.now(), timedelta(0))
            try:
                await workflow.wait_condition(lambda: bool(self._inbox), timeout=wait)
            except TimeoutError:
                self._state, message = at_deadline(self._state, workflow.now(), inp.policy)
                await self._deliver(inp, message)
                continue
            while self._inbox and not self._state.resolved:
                self._state, message = fold_raise(self._state, self._inbox.pop(0))
                await self._deliver(inp, message)
        return self._state

    async def _deliver(self, inp: AlertWorkflowInput, message: AlertMessage | None) -> None:
        """Send `message` to each channel it reaches, at once; failures recorded."""
        if message is None:
            return
        channels = routed(message.severity, inp.channels)
        await asyncio.gather(*(self._deliver_to(inp, message, c) for c in channels))

    async def _deliver_to(
        self, inp: AlertWorkflowInput, message: AlertMessage, channel: str
    ) -> None:
        # The database's own outage cannot be claimed in it: sent unrecorded.
        deliver = (
            AlertActivities.deliver if recorded(message) else AlertActivities.deliver_unrecorded
        )
        try:
            await workflow.execute_activity_method(
                deliver,
                DeliveryRequest(message=message, channel=channel),
                task_queue=alert_task_queue(channel),
                start_to_close_timeout=inp.delivery_timeout,
                retry_policy=RetryPolicy(
                    initial_interval=inp.delivery_first_retry,
                    maximum_interval=inp.delivery_max_retry,
                    maximum_attempts=inp.delivery_attempts,
                ),
                summary=f"{message.kind.value} → {channel}",
            )
            return
        except ActivityError as exc:
            error = _reason(exc)
        try:
            await workflow.execute_activity_method(
                AlertActivities.record_failure,
                DeliveryFailure(message=message, channel=channel, error=error),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=1)),
                schedule_to_close_timeout=timedelta(hours=1),
            )
        except ActivityError as exc:
            workflow.logger.error(
                "alert %s to %s failed and could not be recorded: %s",
                message.message_id,
                channel,
                _reason(exc),
            )


def _reason(exc: FailureError) -> str:
    """The innermost failure's message (the channel's answer, never its URL)."""
    cause: BaseException | None = exc
    while isinstance(cause, FailureError) and cause.cause is not None:
        cause = cause.cause
    if isinstance(cause, ApplicationError) and cause.type:
        return f"{cause.type}: {cause.message}"
    return str(cause)
