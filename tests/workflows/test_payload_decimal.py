"""Decimals travel through a real workflow and a real activity exactly."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.testing import WorkflowEnvironment

from workers.settings import Settings
from workers.worker import build_worker


class Quote(BaseModel):
    price: Decimal
    quantity: Decimal


@activity.defn
async def double_quantity(q: Quote) -> Quote:
    return Quote(price=q.price, quantity=q.quantity * 2)


@workflow.defn(sandboxed=False)
class EchoQuoteWorkflow:
    @workflow.run
    async def run(self, q: Quote) -> Quote:
        return await workflow.execute_activity(
            double_quantity, q, start_to_close_timeout=timedelta(seconds=10)
        )


async def test_decimal_with_18_places_round_trips_through_a_workflow(
    temporal_env: WorkflowEnvironment,
) -> None:
    settings = Settings(task_queue=f"decimal-{uuid.uuid4()}")
    q = Quote(
        price=Decimal("98765432109876.123456789012345678"), quantity=Decimal("0.5" + "0" * 16 + "1")
    )
    worker = build_worker(
        temporal_env.client, settings, [double_quantity], workflows=[EchoQuoteWorkflow]
    )
    async with worker:
        out = await temporal_env.client.execute_workflow(
            EchoQuoteWorkflow.run,
            q,
            id=f"decimal-{uuid.uuid4()}",
            task_queue=settings.task_queue,
            result_type=Quote,
        )
    assert out.price == q.price and str(out.price) == "98765432109876.123456789012345678"
    assert out.quantity == Decimal("1.000000000000000002")
