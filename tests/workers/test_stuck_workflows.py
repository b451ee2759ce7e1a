"""A workflow whose task keeps failing (workers.stuck_workflows), on the real dev server
and the real store: Temporal marks the run (TemporalReportedProblems, after 2 failed
tasks on the embedded server), the worker's watch writes one critical alert naming
the failure, counts it in /metrics, and resolves it once the run completes a task."""

from __future__ import annotations

import uuid

from prometheus_client import CollectorRegistry, generate_latest
from temporalio import workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities.store.repository import Store
from domain.events import EventType
from domain.position import position_workflow_id
from tests.waiting import until
from tests.workers.watch_alerts import alert_rows
from workers.stuck_workflows import StuckCollector, StuckWorkflowAlerts, stuck_title

# The "deployed code": broken until the test fixes it (an unsandboxed worker reads it).
BROKEN = {"on": True}


@workflow.defn(name="TestBrokenPosition")
class BrokenPosition:
    @workflow.run
    async def run(self) -> None:
        if BROKEN["on"]:
            raise RuntimeError("a bug deployed in workflow code")
        await workflow.wait_condition(lambda: False)


async def test_a_workflow_whose_task_keeps_failing_is_alerted_then_resolved(
    temporal_env: WorkflowEnvironment, store: Store
) -> None:
    client = temporal_env.client
    queue = f"stuck-{uuid.uuid4().hex[:8]}"
    workflow_id = position_workflow_id(f"acct{uuid.uuid4().hex[:6]}", "binanceusdm", "BTCUSDT")
    title = stuck_title(workflow_id)
    watch = StuckWorkflowAlerts(client, store, queue)
    registry = CollectorRegistry()
    registry.register(StuckCollector(watch))
    BROKEN["on"] = True
    async with Worker(
        client,
        task_queue=queue,
        workflows=[BrokenPosition],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        handle = await client.start_workflow(BrokenPosition.run, id=workflow_id, task_queue=queue)
        try:

            async def raised() -> bool:
                await watch.look()
                return bool(await alert_rows(store, title))

            await until(raised, "the stuck workflow's alert")
            [(resolution, severity, body)] = await alert_rows(store, title)
            assert not resolution and severity == "critical"
            assert "a bug deployed in workflow code" in body
            assert "neither trailed, replaced nor closed" in body
            assert f"temporal workflow describe -w '{workflow_id}'" in body
            critical = await store.pool.fetchval(
                "SELECT count(*) FROM events WHERE type = $1 AND payload->>'error_type' = $2 "
                "AND payload->'context'->>'workflow_id' = $3",
                EventType.CRITICAL_ERROR.value,
                "WorkflowTaskFailing",
                workflow_id,
            )
            assert critical == 1
            page = generate_latest(registry).decode()
            assert f'posguard_workflows_stuck{{task_queue="{queue}"}} 1.0' in page

            await watch.look()  # still stuck: no second message before it is due
            assert len(await alert_rows(store, title)) == 1

            BROKEN["on"] = False  # the fix is deployed: the next task attempt completes

            async def resolved() -> bool:
                await watch.look()
                return len(await alert_rows(store, title)) == 2

            await until(resolved, "the stuck workflow's resolution")
            assert [r[0] for r in await alert_rows(store, title)] == [False, True]
            assert watch.stuck == {} and watch.raised == {}
            page = generate_latest(registry).decode()
            assert f'posguard_workflows_stuck{{task_queue="{queue}"}} 0.0' in page
        finally:
            BROKEN["on"] = False
            await handle.terminate("test over")
