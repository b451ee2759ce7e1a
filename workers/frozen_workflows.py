"""Frees workflows whose task Temporal holds as started past any timeout (docs/alerts.md).

A workflow task that its worker does not complete within the run's task timeout
(10 s) is timed out by Temporal and scheduled again. From its 4th attempt that
timeout is lengthened by a back-off (up to `history.workflowTaskRetryMaxInterval`,
10 minutes on a server left at its default), and the dev server has been seen to
keep a task started past its timeout across its restarts (issue 16, finding A).
Meanwhile the task stays STARTED, signals queue behind it, and the workflow runs
none of its code. For a position that means its stop stays where it is
on the exchange, but nothing trails, replaces or closes it, and an operator's close
waits for ever.

The worker lists the running workflows of its task queue every fifth of
`[health] frozen_after` (1 minute by default) and describes each. One whose pending
task has been STARTED for longer than `frozen_after` (5 minutes: no worker takes that
long over one task, so its holder is gone or stuck) is frozen. Then:
- a resolvable alert "workflow task frozen: <id>" (critical for a position, an error
  otherwise) with its CRITICAL_ERROR event;
- with `[health] reset_frozen` (the default), the run is reset to its last completed
  workflow task, as `temporal workflow reset --type LastWorkflowTask` does: a new run
  of the same workflow id replays the history up to there and goes on, the signals
  received since are applied again, and what the dropped part of the history had
  asked of the exchange is asked again under the same client ids; each such order
  was journaled before it was first sent, so it is looked up first and found, never
  sent twice (docs/safety.md, "Never the same entry twice");
- the alert is resolved once the workflow is seen running its tasks again.

Several workers of one queue may see the same frozen run: the reset's request id
names the run and its task, so Temporal makes one reset of it, and a run that is no
longer the workflow's current one is left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType as HistoryEventType
from temporalio.api.enums.v1 import PendingWorkflowTaskState
from temporalio.api.workflowservice.v1 import (
    GetWorkflowExecutionHistoryReverseRequest,
    ResetWorkflowExecutionRequest,
)
from temporalio.client import Client

from activities.store.repository import Store
from domain.alerts import condition_key, watch_turns
from domain.errors import scrub
from domain.events import AlertResolved, CriticalError, EventType, make_event
from domain.health import task_frozen
from domain.position import parse_position_workflow_id
from domain.types import Severity
from workers.dependency_alerts import RAISE_AGAIN_EVERY, record_watch_alert
from workers.failing_activities import (
    FailingActivity,
    FailingActivityAlerts,
    failing_activities,
)
from workers.stuck_workflows import position_id_of

log = logging.getLogger("posguard.frozen")

RESET_REASON = "posguard: workflow task frozen"
# At most this many workflows described at once (each one request to Temporal).
DESCRIBE_AT_ONCE = 8


def frozen_title(workflow_id: str) -> str:
    """The alert's title (and grouping key) for the run of `workflow_id`."""
    return f"workflow task frozen: {workflow_id}"


def running_query(task_queue: str) -> str:
    """Visibility query for the running workflows of `task_queue`."""
    return f"ExecutionStatus = 'Running' AND TaskQueue = '{task_queue}'"


@dataclass(frozen=True)
class FrozenRun:
    """A run whose workflow task Temporal holds as started past `frozen_after`."""

    workflow_id: str
    run_id: str
    started: datetime
    attempt: int


@dataclass(frozen=True)
class Reset:
    """What a reset did: the event it went back to and the new run. `by_other`: the
    run was no longer current (another worker reset it; its alert says so)."""

    to_event: int
    new_run_id: str
    by_other: bool = False


class FrozenWorkflows:
    """Finds, alerts on and (with `reset`) frees the frozen runs of one task queue."""

    def __init__(
        self,
        client: Client,
        store: Store,
        task_queue: str,
        *,
        frozen_after: timedelta,
        reset: bool = True,
        failing: FailingActivityAlerts | None = None,
    ) -> None:
        self.client = client
        # the same descriptions, read for activities that keep failing
        self.failing = failing
        self._failing_seen: dict[str, list[FailingActivity]] = {}
        self.store = store
        self.task_queue = task_queue
        self.frozen_after = frozen_after
        self.reset = reset
        self.raised: dict[str, tuple[datetime, datetime]] = {}  # id -> (first, latest raise)
        self.resets = 0
        # raises whose write failed (the database down): written at the next look
        self._unwritten: dict[str, tuple[FrozenRun, Reset | None]] = {}
        self._tag = f"worker/{socket.gethostname()}/{os.getpid()}"

    @property
    def every(self) -> timedelta:
        """How often `run` looks: a fifth of `frozen_after`."""
        return self.frozen_after / 5

    async def look(self) -> list[FrozenRun]:
        """Describe the queue's running workflows once; alert on (and reset) the frozen
        ones, resolve the ones seen running again. Returns the frozen runs found.
        A frozen run is reset at every look that finds it (a reset Temporal refused is
        tried again). Temporal unreachable: nothing changes; a write that fails is
        tried again at the next look."""
        for wid, (run, reset) in list(self._unwritten.items()):
            del self._unwritten[wid]
            await self._write(wid, run, reset, raised=True)
        try:
            ids = [
                run.id async for run in self.client.list_workflows(running_query(self.task_queue))
            ]
        except Exception as exc:  # unreachable or refused: next look
            log.warning("could not list running workflows: %s", scrub(str(exc)))
            return []
        limit = asyncio.Semaphore(DESCRIBE_AT_ONCE)
        now = datetime.now(UTC)

        async def one(workflow_id: str) -> FrozenRun | bool | None:
            async with limit:
                return await self._frozen(workflow_id, now)

        self._failing_seen = {}
        found = await asyncio.gather(*(one(i) for i in ids))
        if self.failing is not None:
            seen = self._failing_seen
            failing = [f for fs in seen.values() for f in fs]
            await self.failing.turn(failing, looked=set(seen), running=set(ids))
        frozen = [f for f in found if isinstance(f, FrozenRun)]
        # False: seen and not frozen; None: could not be described (changes nothing)
        fine = [i for i, f in zip(ids, found, strict=True) if f is False]
        gone = [i for i in self.raised if i not in ids]  # ended, or not running here
        by_id = {f.workflow_id: f for f in frozen}
        resets: dict[str, Reset] = {}
        for run in frozen if self.reset else []:
            reset = await self._reset(run)
            if reset is not None and reset.by_other:
                del by_id[run.workflow_id]  # the worker that reset it says so
            elif reset is not None:
                resets[run.workflow_id] = reset
        to_raise, to_resolve = watch_turns(
            {wid: latest for wid, (_, latest) in self.raised.items()},
            down=list(by_id),
            back=fine + gone,
            now=now,
            again_every=RAISE_AGAIN_EVERY,
        )
        for wid in sorted({*to_raise, *resets}):  # every reset is written when made
            await self._write(wid, by_id[wid], resets.get(wid), raised=True)
        for wid in to_resolve:
            await self._write(wid, None, None, raised=False)
        return frozen

    async def run(self, stop: asyncio.Event) -> None:
        """`look()` now and every `every` until `stop` is set."""
        while not stop.is_set():
            await self.look()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every.total_seconds())

    async def _frozen(self, workflow_id: str, now: datetime) -> FrozenRun | bool | None:
        """The run's frozen task, False if it is not frozen, None if it cannot be told."""
        try:
            described = await self.client.get_workflow_handle(workflow_id).describe()
        except Exception:  # ended meanwhile, or Temporal busy: next look
            return None
        if described.status is not None and described.status.name != "RUNNING":
            return False
        self._failing_seen[workflow_id] = failing_activities(workflow_id, described)
        pending = described.raw_description.pending_workflow_task
        started = (
            pending.started_time.ToDatetime(tzinfo=UTC)
            if pending.HasField("started_time")
            else None
        )
        is_started = pending.state == PendingWorkflowTaskState.PENDING_WORKFLOW_TASK_STATE_STARTED
        if not task_frozen(started if is_started else None, now, self.frozen_after):
            return False
        assert started is not None
        return FrozenRun(workflow_id, described.run_id, started, pending.attempt)

    async def _last_completed_task(self, run: FrozenRun) -> int | None:
        """The event id of the run's last completed workflow task, if any."""
        request = GetWorkflowExecutionHistoryReverseRequest(
            namespace=self.client.namespace,
            execution=WorkflowExecution(workflow_id=run.workflow_id, run_id=run.run_id),
            maximum_page_size=200,
        )
        while True:
            response = await self.client.workflow_service.get_workflow_execution_history_reverse(
                request
            )
            for event in response.history.events:
                if event.event_type == HistoryEventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                    return int(event.event_id)
            if not response.next_page_token:
                return None
            request.next_page_token = response.next_page_token

    async def _reset(self, run: FrozenRun) -> Reset | None:
        """Reset `run` to its last completed task; None if it could not be (no task
        ever completed, Temporal refused); `by_other` if it is no longer the current
        run (reset by another worker, or continued as new)."""
        try:
            current = await self.client.get_workflow_handle(run.workflow_id).describe()
            if current.run_id != run.run_id:
                return Reset(to_event=0, new_run_id=current.run_id, by_other=True)
            to_event = await self._last_completed_task(run)
            if to_event is None:
                return None
            response = await self.client.workflow_service.reset_workflow_execution(
                ResetWorkflowExecutionRequest(
                    namespace=self.client.namespace,
                    workflow_execution=WorkflowExecution(
                        workflow_id=run.workflow_id, run_id=run.run_id
                    ),
                    reason=f"{RESET_REASON} (started {run.started:%H:%M:%S} UTC, "
                    f"attempt {run.attempt})",
                    workflow_task_finish_event_id=to_event,
                    # one reset of this run's frozen task, whichever worker asks
                    request_id=str(
                        uuid.uuid5(uuid.NAMESPACE_URL, f"{run.run_id}/{run.started.isoformat()}")
                    ),
                    identity=self._tag,
                )
            )
        except Exception as exc:
            log.error("could not reset frozen %s: %s", run.workflow_id, scrub(str(exc)))
            return None
        self.resets += 1
        return Reset(to_event=to_event, new_run_id=response.run_id)

    async def _write(
        self, workflow_id: str, run: FrozenRun | None, reset: Reset | None, *, raised: bool
    ) -> None:
        now = datetime.now(UTC)
        title = frozen_title(workflow_id)
        position_id = await position_id_of(self.store, workflow_id)
        payload: CriticalError | AlertResolved
        if raised:
            assert run is not None
            is_position = parse_position_workflow_id(workflow_id) is not None
            body = (
                f"Temporal has held {workflow_id}'s workflow task as started since "
                f"{run.started:%H:%M:%S} UTC (attempt {run.attempt}), past any timeout; "
                "the workflow runs none of its code"
                + (
                    ": its stop stays on the exchange but is neither trailed, replaced nor closed"
                    if is_position
                    else ""
                )
                + (
                    f". Reset to its last completed task (event {reset.to_event}); "
                    f"new run {reset.new_run_id}"
                    if reset is not None
                    else f". Free it: temporal workflow reset -w '{workflow_id}' "
                    "--type LastWorkflowTask --reason frozen"
                )
            )
            payload = CriticalError(
                error_type="WorkflowTaskFrozen",
                message=body,
                context={
                    "workflow_id": workflow_id,
                    "run_id": run.run_id,
                    "attempt": str(run.attempt),
                    "reset_to_event": "" if reset is None else str(reset.to_event),
                    "new_run_id": "" if reset is None else reset.new_run_id,
                },
            )
            kind = EventType.CRITICAL_ERROR
            severity = Severity.CRITICAL if is_position else Severity.ERROR
        else:
            since = self.raised[workflow_id][0]
            body = f"{workflow_id} runs its tasks again (frozen since {since:%H:%M:%S} UTC)"
            kind = EventType.ALERT_RESOLVED
            payload = AlertResolved(
                condition=condition_key(title, position_id), title=title, body=body
            )
            severity = Severity.INFO
        event = make_event(
            kind,
            payload,
            event_id=f"frozen/{self._tag}/{workflow_id}/{now.isoformat()}",
            occurred_at=now,
            severity=severity,
            position_id=position_id,
        )
        try:
            await record_watch_alert(
                self.store, event, title, body, raised=raised, position_id=position_id
            )
        except Exception as exc:  # the database may be down: next look
            log.warning("alert on %s not written yet: %r (%s)", workflow_id, exc, body)
            if raised:
                assert run is not None
                self._unwritten[workflow_id] = (run, reset)
            return
        if raised:
            first = self.raised.get(workflow_id, (now, now))[0]
            self.raised[workflow_id] = (first, now)
            log.error("%s", body)
        else:
            del self.raised[workflow_id]
            log.warning("%s", body)
