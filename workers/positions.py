"""Starting and addressing position workflows (used by the CLI, ingest and tests)."""

from __future__ import annotations

from temporalio.client import Client, WorkflowHandle
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError

from domain.position import PositionSpec, initial_state, spec_workflow_id
from domain.types import Side
from workflows.position import PositionWorkflow
from workflows.position_io import (
    CloseResult,
    PositionConfig,
    PositionInput,
    exchange_task_queue,
    position_workflow_id,
)
from workflows.search_attributes import ACCOUNT, EXCHANGE, POSITION_STATE, SYMBOL


class PositionAlreadyOpen(RuntimeError):
    """A position workflow for this (account, exchange, symbol) is still running."""


async def start_position(
    client: Client,
    spec: PositionSpec,
    *,
    task_queue: str,
    config: PositionConfig | None = None,
) -> WorkflowHandle[PositionWorkflow, CloseResult]:
    """Start the position's workflow; `PositionAlreadyOpen` if one is running for its key.

    The id is derived from (account, exchange, symbol, and the side on a hedge-mode
    account) and the conflict policy is FAIL, so Temporal itself refuses a duplicate
    position; a closed id may be reused (ALLOW_DUPLICATE), so the symbol can be
    traded again later.
    """
    workflow_id = spec_workflow_id(spec)
    cfg = config or PositionConfig(exchange_task_queue=exchange_task_queue(spec.account))
    try:
        return await client.start_workflow(
            PositionWorkflow.run,
            PositionInput(spec=spec, config=cfg),
            id=workflow_id,
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(ACCOUNT, spec.account),
                    SearchAttributePair(EXCHANGE, spec.exchange.value),
                    SearchAttributePair(SYMBOL, spec.symbol),
                    SearchAttributePair(POSITION_STATE, initial_state(spec.adopt).value),
                ]
            ),
            static_summary=f"{'adopted ' if spec.adopt else ''}{spec.side.value} {spec.symbol} "
            f"({spec.exchange.value})",
        )
    except WorkflowAlreadyStartedError as exc:
        raise PositionAlreadyOpen(f"a position on {workflow_id} is already open") from exc


def position_handle(
    client: Client, account: str, exchange: str, symbol: str, hedge_side: Side | None = None
) -> WorkflowHandle[PositionWorkflow, CloseResult]:
    """Handle of the latest run of the position workflow for this key (`hedge_side`:
    the side, on a hedge-mode account)."""
    return client.get_workflow_handle_for(
        PositionWorkflow.run, position_workflow_id(account, exchange, symbol, hedge_side)
    )
