"""The time-skipping server runs timers instantly: a day-long wait takes no real time."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

from temporalio import workflow
from temporalio.testing import WorkflowEnvironment

from workers.settings import Settings
from workers.worker import build_worker


@workflow.defn(sandboxed=False)
class SleepADayWorkflow:
    @workflow.run
    async def run(self) -> str:
        await workflow.sleep(timedelta(days=1))
        return "woke"


async def test_a_day_long_timer_completes_at_once(time_skipping_env: WorkflowEnvironment) -> None:
    settings = Settings(task_queue=f"ts-{uuid.uuid4()}")
    started = time.monotonic()
    async with build_worker(time_skipping_env.client, settings, [], workflows=[SleepADayWorkflow]):
        result = await time_skipping_env.client.execute_workflow(
            SleepADayWorkflow.run, id=f"sleep-{uuid.uuid4()}", task_queue=settings.task_queue
        )
    assert result == "woke"
    assert time.monotonic() - started < 30
