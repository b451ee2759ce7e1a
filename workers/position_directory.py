"""The worker's `PositionDirectory`: position workflows through its Temporal client.

Used by the reconciler's activities (activities/reconcile.py). Every answer about
one workflow comes from the workflow itself (a query that Temporal rejects when
the workflow is not open), never from visibility alone, which may lag.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowQueryRejectedError
from temporalio.common import QueryRejectCondition
from temporalio.service import RPCError, RPCStatusCode

from domain.position import (
    PositionSpec,
    PositionState,
    parse_position_workflow_id,
    spec_workflow_id,
)
from domain.position_messages import EXCHANGE_UPDATE_SIGNAL, ExchangeUpdate
from domain.reconcile import ListedWorkflow, Owner
from domain.reconcile_io import AdoptResult
from workers.positions import PositionAlreadyOpen, start_position
from workflows.position import PositionWorkflow
from workflows.position_io import WORKFLOW_TYPE, PositionConfig, PositionView
from workflows.search_attributes import POSITION_STATE

QUERY_TIMEOUT = timedelta(seconds=5)


class TemporalPositionDirectory:
    """Position workflows of the cluster `client` reaches, on `task_queue`.

    `config_of(account)` is the PositionConfig an adopted position is started with.
    """

    def __init__(
        self,
        client: Client,
        *,
        task_queue: str,
        config_of: Callable[[str], PositionConfig],
        query_timeout: timedelta = QUERY_TIMEOUT,
    ) -> None:
        self._client = client
        self._task_queue = task_queue
        self._config_of = config_of
        self._query_timeout = query_timeout

    async def listed(self, account: str) -> list[ListedWorkflow]:
        """The account's running position workflows, by search attribute, with their state."""
        query = (
            f'WorkflowType="{WORKFLOW_TYPE}" AND ExecutionStatus="Running" AND Account="{account}"'
        )
        found: list[ListedWorkflow] = []
        async for wf in self._client.list_workflows(query):
            key = parse_position_workflow_id(wf.id)
            if key is None:
                continue
            state = wf.typed_search_attributes.get(POSITION_STATE)
            known = state is not None and state in {s.value for s in PositionState}
            found.append(
                ListedWorkflow(
                    workflow_id=wf.id,
                    symbol=key.symbol,
                    state=PositionState(state) if state is not None and known else None,
                )
            )
        return found

    async def owner(self, workflow_id: str) -> Owner | None:
        """The workflow's own answer; None when it does not run (or never did)."""
        key = parse_position_workflow_id(workflow_id)
        if key is None:
            return None
        handle = self._client.get_workflow_handle_for(PositionWorkflow.run, workflow_id)
        try:
            view: PositionView = await handle.query(
                PositionWorkflow.state,
                reject_condition=QueryRejectCondition.NOT_OPEN,
                rpc_timeout=self._query_timeout,
            )
        except WorkflowQueryRejectedError:
            return None  # it ended
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return None
            return await self._unanswered(workflow_id, key.symbol)
        except Exception:
            return await self._unanswered(workflow_id, key.symbol)
        chain = view.position_id[len(workflow_id) + 1 :]
        snap = view.snapshot
        return Owner(
            workflow_id=workflow_id,
            symbol=key.symbol,
            chain=chain or None,
            side=view.spec.side,
            state=snap.state,
            qty=snap.qty,
            stop_client_order_id=snap.stop.client_order_id if snap.stop is not None else None,
        )

    async def _unanswered(self, workflow_id: str, symbol: str) -> Owner | None:
        """A query that failed: running but silent (judged later), or not running."""
        desc = await self._client.get_workflow_handle(workflow_id).describe()
        if desc.status is not WorkflowExecutionStatus.RUNNING:
            return None
        return Owner(workflow_id=workflow_id, symbol=symbol, answered=False)

    async def signal_look(self, workflow_id: str, detail: str) -> bool:
        """`exchange_update` from the reconciler; False when the workflow does not run."""
        try:
            await self._client.get_workflow_handle(workflow_id).signal(
                EXCHANGE_UPDATE_SIGNAL, ExchangeUpdate(source="reconciler", detail=detail[:500])
            )
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                return False
            raise
        return True

    async def adopt(self, spec: PositionSpec) -> AdoptResult:
        """Start the adopting workflow; `started` False when one already runs for the key."""
        try:
            handle = await start_position(
                self._client,
                spec,
                task_queue=self._task_queue,
                config=self._config_of(spec.account),
            )
        except PositionAlreadyOpen:
            return AdoptResult(workflow_id=spec_workflow_id(spec), started=False)
        return AdoptResult(workflow_id=handle.id, started=True)
