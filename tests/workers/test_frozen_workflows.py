"""A workflow whose task Temporal holds as started past any timeout (workers.frozen_workflows),
on the real dev server and the real store.

The server's lost timeout (issue 16, finding A) cannot be caused on purpose; what the
watch sees of it can: a workflow task taken by a poller that never answers, on a run
whose task timeout is long enough that the server does not time it out within the
test. The watch, told a task is frozen after 2 s, alerts on it and resets the run to
its last completed task; the signal the frozen task held is applied again and the
workflow runs on to its end on a live worker.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType as EventType_
from temporalio.api.enums.v1 import TaskQueueKind
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import PollWorkflowTaskQueueRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.store.repository import Store
from domain.events import EventType
from domain.position import position_workflow_id
from tests.waiting import until
from tests.workers.watch_alerts import alert_rows
from workers.frozen_workflows import RESET_REASON, FrozenWorkflows, frozen_title

SIGNALLED = EventType_.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
TASK_COMPLETED = EventType_.EVENT_TYPE_WORKFLOW_TASK_COMPLETED


@workflow.defn(name="TestFrozenPosition")
class Pokeable:
    """Ends once poked twice."""

    def __init__(self) -> None:
        self.pokes = 0

    @workflow.signal
    def poke(self) -> None:
        self.pokes += 1

    @workflow.run
    async def run(self) -> int:
        await workflow.wait_condition(lambda: self.pokes >= 2)
        return self.pokes


def worker(client: Client, queue: str) -> Worker:
    return Worker(
        client, task_queue=queue, workflows=[Pokeable], workflow_runner=UnsandboxedWorkflowRunner()
    )


@pytest.mark.parametrize("reset", [True, False])
async def test_a_frozen_workflow_is_alerted_and_reset(
    temporal_env: WorkflowEnvironment, store: Store, reset: bool
) -> None:
    client = temporal_env.client
    queue = f"frozen-{uuid.uuid4().hex[:8]}"
    workflow_id = position_workflow_id(f"acct{uuid.uuid4().hex[:6]}", "binanceusdm", "BTCUSDT")
    title = frozen_title(workflow_id)
    async with worker(client, queue):
        handle = await client.start_workflow(
            Pokeable.run, id=workflow_id, task_queue=queue, task_timeout=timedelta(seconds=60)
        )
        await handle.signal(Pokeable.poke)

        async def first_poke_done() -> bool:  # a task completed after it: a reset point
            events = (await handle.fetch_history()).events
            signalled = [e.event_id for e in events if e.event_type == SIGNALLED]
            return bool(signalled) and any(
                e.event_type == TASK_COMPLETED and e.event_id > signalled[0] for e in events
            )

        await until(first_poke_done, "the first poke's task completed")
    # The worker is gone; the next task is taken by a poller that never answers.
    await handle.signal(Pokeable.poke)
    held = await client.workflow_service.poll_workflow_task_queue(
        PollWorkflowTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=queue, kind=TaskQueueKind.TASK_QUEUE_KIND_NORMAL),
            identity="a worker that died holding the task",
        )
    )
    assert held.workflow_execution.workflow_id == workflow_id
    watch = FrozenWorkflows(client, store, queue, frozen_after=timedelta(seconds=2), reset=reset)
    try:
        async with worker(client, queue):
            assert await watch.look() == []  # started just now: not frozen yet
            await asyncio.sleep(2.5)
            [frozen] = await watch.look()
            assert frozen.workflow_id == workflow_id and frozen.run_id == handle.result_run_id
            [(resolution, severity, body)] = await alert_rows(store, title)
            assert not resolution and severity == "critical"
            assert "neither trailed, replaced nor closed" in body
            event = await store.pool.fetchrow(
                "SELECT payload FROM events WHERE type = $1 "
                "AND payload->>'error_type' = 'WorkflowTaskFrozen' "
                "AND payload->'context'->>'workflow_id' = $2",
                EventType.CRITICAL_ERROR.value,
                workflow_id,
            )
            assert event is not None
            if not reset:
                assert "temporal workflow reset" in body and "--type LastWorkflowTask" in body
                assert watch.resets == 0
                assert (await handle.describe()).run_id == handle.result_run_id
                return
            assert "Reset to its last completed task" in body and watch.resets == 1
            # The new run replays to the first poke, gets the second again, and ends.
            current = client.get_workflow_handle(workflow_id)
            assert await asyncio.wait_for(current.result(), 30) == 2
            described = await current.describe()
            assert described.run_id != handle.result_run_id
            old = await client.get_workflow_handle(
                workflow_id, run_id=handle.result_run_id
            ).describe()
            assert old.status is not None and old.status.name == "TERMINATED"
            history = await client.get_workflow_handle(
                workflow_id, run_id=described.run_id
            ).fetch_history()
            assert any(
                RESET_REASON in e.workflow_task_failed_event_attributes.failure.message
                for e in history.events
                if e.HasField("workflow_task_failed_event_attributes")
            )

            async def resolved() -> bool:
                await watch.look()
                return len(await alert_rows(store, title)) == 2

            await until(resolved, "the frozen workflow's resolution")
            assert [r[0] for r in await alert_rows(store, title)] == [False, True]
            assert watch.raised == {}
    finally:
        if not reset:
            await client.get_workflow_handle(workflow_id).terminate("test over")
