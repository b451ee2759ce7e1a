"""Alerts on workflows whose task keeps failing (docs/alerts.md).

A workflow task that fails (a bug in workflow code, a non-deterministic change
deployed over running histories) is retried by Temporal for ever, and meanwhile
the workflow runs none of its code: a position's stop stays where it is on the
exchange, but nothing trails, replaces or closes it. Temporal marks such a run
with the `TemporalReportedProblems` search attribute once its task has failed or
timed out `system.numConsecutiveWorkflowTaskProblemsToTriggerSearchAttribute`
times in a row (posguard's embedded server: 2; a server's default: 5), and clears
it at the next task that completes.

The worker asks for the marked runs of its task queue every `[health] probe_every`.
Each one gets a resolvable alert titled "workflow task keeps failing: <id>"
(critical for a position, an error otherwise) with its CRITICAL_ERROR event, raised
again every `RAISE_AGAIN_EVERY` while it lasts, and resolved once the mark is gone.
Several workers of one queue seeing the same run share one condition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from prometheus_client.core import GaugeMetricFamily, Metric
from temporalio.api.enums.v1 import EventType as HistoryEventType
from temporalio.api.workflowservice.v1 import GetWorkflowExecutionHistoryReverseRequest
from temporalio.client import Client

from activities.store.repository import Store
from domain.alerts import condition_key, watch_turns
from domain.errors import scrub
from domain.events import AlertResolved, CriticalError, EventType, make_event
from domain.position import parse_position_workflow_id
from domain.types import Severity
from workers.dependency_alerts import RAISE_AGAIN_EVERY, record_watch_alert

log = logging.getLogger("posguard.stuck")

PROBLEMS = "TemporalReportedProblems"


def stuck_title(workflow_id: str) -> str:
    """The alert's title (and grouping key) for the run of `workflow_id`."""
    return f"workflow task keeps failing: {workflow_id}"


def stuck_query(task_queue: str) -> str:
    """Visibility query for the running workflows of `task_queue` Temporal marked."""
    return f"{PROBLEMS} IS NOT NULL AND ExecutionStatus = 'Running' AND TaskQueue = '{task_queue}'"


async def position_id_of(store: Store, workflow_id: str) -> str | None:
    """The latest position row of a position workflow, for an alert about it; None for
    another workflow, or when the store cannot say (the alert goes out without it)."""
    if parse_position_workflow_id(workflow_id) is None:
        return None
    with contextlib.suppress(Exception):
        found = await store.pool.fetchval(
            "SELECT id FROM positions WHERE workflow_id = $1 ORDER BY created_at DESC LIMIT 1",
            workflow_id,
        )
        return None if found is None else str(found)
    return None


class StuckWorkflowAlerts:
    """Raises and resolves "workflow task keeps failing" for one task queue."""

    def __init__(self, client: Client, store: Store, task_queue: str) -> None:
        self.client = client
        self.store = store
        self.task_queue = task_queue
        self.raised: dict[str, tuple[datetime, datetime]] = {}  # id -> (first, latest raise)
        self.stuck: dict[str, list[str]] | None = None  # as last seen; None: never seen
        self._tag = f"worker/{socket.gethostname()}/{os.getpid()}"

    async def look(self) -> None:
        """List the marked runs once; raise the new ones (and the lasting ones again
        when due), resolve the ones no longer marked. Temporal unreachable: nothing
        changes (its own "temporal unreachable" alert says so); a write that fails
        is tried again at the next look."""
        try:
            found: dict[str, list[str]] = {}
            async for run in self.client.list_workflows(stuck_query(self.task_queue)):
                found[run.id] = [str(p) for p in run.search_attributes.get(PROBLEMS, [])]
        except Exception as exc:  # unreachable or refused: next look
            log.warning("could not list stuck workflows: %s", scrub(str(exc)))
            return
        self.stuck = found
        now = datetime.now(UTC)
        to_raise, to_resolve = watch_turns(
            {wid: latest for wid, (_, latest) in self.raised.items()},
            down=list(found),
            back=[wid for wid in self.raised if wid not in found],
            now=now,
            again_every=RAISE_AGAIN_EVERY,
        )
        for wid in to_raise:
            await self._write(wid, found[wid], raised=True)
        for wid in to_resolve:
            await self._write(wid, [], raised=False)

    async def run(self, stop: asyncio.Event, every: timedelta) -> None:
        """`look()` now and every `every` until `stop` is set."""
        while not stop.is_set():
            await self.look()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every.total_seconds())

    async def _last_failure(self, workflow_id: str) -> str | None:
        """The message of the run's latest failed workflow task, if it can be read."""
        request = GetWorkflowExecutionHistoryReverseRequest(
            namespace=self.client.namespace, maximum_page_size=50
        )
        request.execution.workflow_id = workflow_id
        try:
            response = await self.client.workflow_service.get_workflow_execution_history_reverse(
                request
            )
        except Exception:  # the alert goes out without it
            return None
        for event in response.history.events:
            if event.event_type == HistoryEventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
                return scrub(event.workflow_task_failed_event_attributes.failure.message)
        return None

    async def _position_id(self, workflow_id: str) -> str | None:
        return await position_id_of(self.store, workflow_id)

    async def _write(self, workflow_id: str, problems: list[str], *, raised: bool) -> None:
        now = datetime.now(UTC)
        title = stuck_title(workflow_id)
        position_id = await self._position_id(workflow_id)
        payload: CriticalError | AlertResolved
        if raised:
            failure = await self._last_failure(workflow_id)
            is_position = parse_position_workflow_id(workflow_id) is not None
            body = (
                f"Temporal reports {', '.join(problems) or 'repeated task problems'} for "
                f"{workflow_id}; it runs none of its code until its task completes"
                + (
                    ": its stop stays on the exchange but is neither trailed, replaced nor closed"
                    if is_position
                    else ""
                )
                + (f". Last failure: {failure}" if failure else "")
                + f". Look: temporal workflow describe -w '{workflow_id}'"
            )
            kind = EventType.CRITICAL_ERROR
            payload = CriticalError(
                error_type="WorkflowTaskFailing",
                message=body,
                context={"workflow_id": workflow_id, "problems": ",".join(problems)},
            )
            severity = Severity.CRITICAL if is_position else Severity.ERROR
        else:
            since = self.raised[workflow_id][0]
            body = f"{workflow_id} completes its tasks again (failing since {since:%H:%M:%S} UTC)"
            kind = EventType.ALERT_RESOLVED
            payload = AlertResolved(
                condition=condition_key(title, position_id), title=title, body=body
            )
            severity = Severity.INFO
        event = make_event(
            kind,
            payload,
            event_id=f"stuck/{self._tag}/{workflow_id}/{now.isoformat()}",
            occurred_at=now,
            severity=severity,
            position_id=position_id,
        )
        try:
            await record_watch_alert(
                self.store, event, title, body, raised=raised, position_id=position_id
            )
        except Exception as exc:  # the database may be down: next look
            log.warning("alert on %s not written yet: %r", workflow_id, exc)
            return
        if raised:
            first = self.raised.get(workflow_id, (now, now))[0]
            self.raised[workflow_id] = (first, now)
            log.error("%s", body)
        else:
            del self.raised[workflow_id]
            log.warning("%s", body)


class StuckCollector:
    """`posguard_workflows_stuck`: the runs of the worker's queue Temporal marks."""

    def __init__(self, alerts: StuckWorkflowAlerts) -> None:
        self.alerts = alerts

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "posguard_workflows_stuck",
            "Running workflows of this worker's task queue whose task keeps failing "
            "(TemporalReportedProblems), as last looked",
            labels=["task_queue"],
        )
        if self.alerts.stuck is not None:
            gauge.add_metric([self.alerts.task_queue], len(self.alerts.stuck))
        yield gauge
