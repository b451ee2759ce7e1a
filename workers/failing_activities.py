"""Alerts on activities that keep failing for a reason no outage explains (docs/alerts.md).

Temporal retries a failed activity by its retry policy, and posguard's store writes
(and a few others) retry for ever: a write must land, and one the database refused
for a while lands once it is back. But a write that PostgreSQL refuses for what it
is (a constraint, a value out of range: `StoreRejected`), or an activity that raises
a bug's exception, fails the same way at every attempt. Nothing ends, nothing is
recorded, and nothing said so: the position's events and rows stop at that write
(the workflow goes on protecting it, and waits at its end for the write), or the
wave or pass waits.

The frozen-workflow watch describes every running workflow of its queue every fifth
of `[health] frozen_after`; each description lists the pending activities with
their attempt and last failure. One past `FAILING_AFTER_ATTEMPTS` attempts whose
last failure is not an outage's (`domain.health.OUTAGE_FAILURES`: the exchange or
PostgreSQL away, which their own alerts cover once for every workflow) gets an error
alert "activity keeps failing: <workflow id>: <activity type>" with a
`critical_error` event (`error_type` `ActivityKeepsFailing`), raised again every
`RAISE_AGAIN_EVERY` while it lasts and resolved once the activity is no longer
pending (it succeeded: a fixed worker deployed, or the data repaired) or the
workflow ended. The retry goes on: a fix deployed lets it land.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime

from temporalio.api.failure.v1 import Failure
from temporalio.client import WorkflowExecutionDescription

from activities.store.repository import Store
from domain.alerts import condition_key, watch_turns
from domain.errors import scrub
from domain.events import AlertResolved, CriticalError, EventType, make_event
from domain.health import FAILING_AFTER_ATTEMPTS, activity_failing
from domain.types import Severity
from workers.dependency_alerts import RAISE_AGAIN_EVERY, record_watch_alert
from workers.stuck_workflows import position_id_of

log = logging.getLogger("posguard.failing")


@dataclass(frozen=True)
class FailingActivity:
    """A pending activity past `FAILING_AFTER_ATTEMPTS` attempts, failing alike."""

    workflow_id: str
    activity_type: str
    attempt: int
    failure_type: str
    message: str

    @property
    def title(self) -> str:
        """The alert's title (and grouping key)."""
        return f"activity keeps failing: {self.workflow_id}: {self.activity_type}"


def failing_activities(
    workflow_id: str,
    described: WorkflowExecutionDescription,
    after_attempts: int = FAILING_AFTER_ATTEMPTS,
) -> list[FailingActivity]:
    """The pending activities of a described run that keep failing (see the module)."""
    found = []
    for pending in described.raw_description.pending_activities:
        failure = pending.last_failure if pending.HasField("last_failure") else None
        failure_type = None if failure is None else _failure_type(failure)
        if not activity_failing(pending.attempt, failure_type, after_attempts):
            continue
        assert failure is not None and failure_type is not None
        found.append(
            FailingActivity(
                workflow_id=workflow_id,
                activity_type=pending.activity_type.name,
                attempt=pending.attempt,
                failure_type=failure_type,
                message=scrub(failure.message)[:500],
            )
        )
    return found


class FailingActivityAlerts:
    """Raises and resolves the "activity keeps failing" alerts of one worker."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.raised: dict[str, tuple[datetime, datetime]] = {}  # title -> (first, latest)
        self.about: dict[str, str] = {}  # title -> its workflow id
        self._tag = f"worker/{socket.gethostname()}/{os.getpid()}"

    async def turn(
        self, failing: list[FailingActivity], looked: set[str], running: set[str]
    ) -> None:
        """One look's findings: `failing`, among the workflows `looked` at (described)
        of those `running`: raise the new ones (and the lasting ones again); resolve
        the raised ones of a workflow looked at and no longer failing so, or no longer
        running. A workflow that could not be described changes nothing."""
        now = datetime.now(UTC)
        by_title = {f.title: f for f in failing}
        back = [
            title
            for title, workflow_id in self.about.items()
            if title not in by_title and (workflow_id in looked or workflow_id not in running)
        ]
        to_raise, to_resolve = watch_turns(
            {t: latest for t, (_, latest) in self.raised.items()},
            down=list(by_title),
            back=back,
            now=now,
            again_every=RAISE_AGAIN_EVERY,
        )
        for title in to_raise:
            await self._write(title, by_title[title].workflow_id, by_title[title], now)
        for title in to_resolve:
            await self._write(title, self.about[title], None, now)

    async def _write(
        self, title: str, workflow_id: str, found: FailingActivity | None, now: datetime
    ) -> None:
        position_id = await position_id_of(self.store, workflow_id)
        payload: CriticalError | AlertResolved
        if found is not None:
            body = (
                f"{found.activity_type} of {workflow_id} has failed {found.attempt - 1} "
                f"times in a row ({found.failure_type}: {found.message}); it is retried, "
                "but fails alike: what it does waits (a store write: the records stop "
                "there). Fix the cause; the next retry then goes through."
            )
            payload = CriticalError(
                error_type="ActivityKeepsFailing",
                message=body,
                context={
                    "workflow_id": workflow_id,
                    "activity_type": found.activity_type,
                    "attempt": str(found.attempt),
                    "failure_type": found.failure_type,
                },
            )
            kind, severity = EventType.CRITICAL_ERROR, Severity.ERROR
        else:
            since = self.raised[title][0]
            body = f"{title}: no more (since {since:%H:%M:%S} UTC)"
            payload = AlertResolved(
                condition=condition_key(title, position_id), title=title, body=body
            )
            kind, severity = EventType.ALERT_RESOLVED, Severity.INFO
        event = make_event(
            kind,
            payload,
            event_id=f"failing/{self._tag}/{title}/{now.isoformat()}"[:200],
            occurred_at=now,
            severity=severity,
            position_id=position_id,
        )
        try:
            await record_watch_alert(
                self.store, event, title, body, raised=found is not None, position_id=position_id
            )
        except Exception as exc:  # the database may be down: the next look writes it
            log.warning("alert %r not written yet: %r", title, exc)
            return
        if found is not None:
            first = self.raised.get(title, (now, now))[0]
            self.raised[title] = (first, now)
            self.about[title] = workflow_id
            log.error("%s", body)
        else:
            del self.raised[title], self.about[title]
            log.warning("%s", body)


def _failure_type(failure: Failure) -> str:
    """An application failure's type; `Timeout` for a timeout; else the failure's kind."""
    if failure.HasField("application_failure_info"):
        return failure.application_failure_info.type or "ApplicationError"
    if failure.HasField("timeout_failure_info"):
        return "Timeout"
    return failure.WhichOneof("failure_info") or "unknown"
