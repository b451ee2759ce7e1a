"""The net under every step: a failure of the workflow's own code never fails or
freezes the position (docs/safety.md, rule 1).

A deliberately broken PositionWorkflow raises in its look, as a bug or an answer
nobody foresaw would. The position must stay running and protected, the failure
must reach a person as a critical alert, no workflow task may fail (a task that
fails on every replay is a frozen position), and the operator's close must work.
"""

from __future__ import annotations

import uuid
from typing import Any

from temporalio.api.enums.v1 import EventType as HistoryEventType
from temporalio.client import WorkflowExecutionStatus

from activities.store.activities import StoreActivities
from domain.position import CloseReason, PositionState
from domain.types import Side
from tests.workflows.broken_position import PositionWorkflowWithBrokenLook
from tests.workflows.harness import Stack, eventually, spec
from workers.positions import start_position
from workers.settings import Settings
from workers.worker import build_worker
from workflows.position import PositionWorkflow
from workflows.position_io import CloseRequest, CloseResult, ExchangeUpdate


async def test_a_bug_in_a_step_is_alerted_and_retried_never_fatal(stack: Stack) -> None:
    settings = Settings.model_validate(
        {**stack.settings.model_dump(), "task_queue": f"net-{uuid.uuid4().hex[:8]}"}
    )
    worker = build_worker(
        stack.client,
        settings,
        [StoreActivities(stack.store).apply],
        workflows=[PositionWorkflowWithBrokenLook],
    )
    async with worker:
        handle: Any = await start_position(
            stack.client,
            spec("ETHUSDT", Side.LONG),
            task_queue=settings.task_queue,
            config=stack.config,
        )
        view = await stack.wait_state(handle, PositionState.ACTIVE)
        await handle.signal(PositionWorkflow.exchange_update, ExchangeUpdate(source="test"))

        async def alerted() -> bool:
            events = await stack.store.events(position_id=view.position_id, limit=500)
            return any(
                e.type.value == "critical_error"
                and "a bug in the look" in str(e.payload.get("message"))
                for e in events
            )

        assert await eventually(alerted)
        assert (await handle.describe()).status is WorkflowExecutionStatus.RUNNING
        now = await stack.view(handle)
        assert now.snapshot.state is PositionState.ACTIVE
        assert now.last_error is not None and "a bug in the look" in now.last_error
        assert len(stack.open_stops("ETHUSDT")) == 1  # still protected
        result = await handle.execute_update(
            PositionWorkflow.close, CloseRequest(), result_type=CloseResult
        )
        assert result.state is PositionState.CLOSED and result.reason is CloseReason.OPERATOR
        await handle.result()  # ended, before its only worker goes away
        failed = [
            e
            async for e in handle.fetch_history_events()
            if e.event_type == HistoryEventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
        ]
        assert failed == []
    assert stack.position_amt("ETHUSDT") == 0
