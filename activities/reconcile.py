"""Activities of the account reconciler that talk to Temporal about position workflows.

Which position workflows run (visibility, then each one asked directly, so no
decision rests on visibility's lag), telling one to look at the exchange now,
and starting one in adopt mode. Temporal itself is reached through a
`PositionDirectory`, which the worker implements with its client
(`workers/position_directory.py`): this module imports neither the client nor
the workflows, so `workflows/reconcile.py` can reference its methods by
definition.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from temporalio import activity

from domain.position import PositionSpec, position_workflow_id
from domain.reconcile import ListedWorkflow, Owner
from domain.reconcile_io import (
    AdoptRequest,
    AdoptResult,
    ListedResult,
    OwnersRequest,
    OwnersResult,
    SignalOwnerRequest,
)
from domain.types import Side


class PositionDirectory(Protocol):
    """The position workflows of the cluster, as the worker's Temporal client sees them."""

    async def listed(self, account: str) -> list[ListedWorkflow]:
        """The account's running position workflows with their state (visibility; may lag)."""
        ...

    async def owner(self, workflow_id: str) -> Owner | None:
        """The workflow as it answers its `state` query now; None when it does not run.

        A running workflow that does not answer in time is `Owner(answered=False)`.
        """
        ...

    async def signal_look(self, workflow_id: str, detail: str) -> bool:
        """Send `exchange_update` (source "reconciler"); False when it does not run."""
        ...

    async def adopt(self, spec: PositionSpec) -> AdoptResult:
        """Start the adopting workflow under `domain.position.spec_workflow_id(spec)`
        (its side's id on a hedge-mode account); `started` False when one runs for it."""
        ...


class ReconcileActivities:
    """The reconciler's Temporal-side activities over one `PositionDirectory`."""

    def __init__(self, directory: PositionDirectory, *, concurrency: int = 16) -> None:
        self._directory = directory
        self._concurrency = concurrency

    @activity.defn(name="reconcile.listed")
    async def listed(self, req: OwnersRequest) -> ListedResult:
        """The account's running position workflows, as visibility lists them (cheap)."""
        return ListedResult(workflows=await self._directory.listed(req.account))

    @activity.defn(name="reconcile.owners")
    async def owners(self, req: OwnersRequest) -> OwnersResult:
        """The position workflow of each of `req.symbols`, as it answers now (in hedge
        mode both of each symbol: its long's and its short's).

        Each is asked directly (strongly consistent): one just started, not yet
        visible, is found; one visibility still lists but that has ended is not.
        """
        sides: tuple[Side | None, ...] = (Side.LONG, Side.SHORT) if req.hedge_mode else (None,)
        ids = sorted(
            {
                position_workflow_id(req.account, req.exchange, s, side)
                for s in req.symbols
                for side in sides
            }
        )
        gate = asyncio.Semaphore(self._concurrency)

        async def ask(workflow_id: str) -> Owner | None:
            async with gate:
                return await self._directory.owner(workflow_id)

        answers = await asyncio.gather(*(ask(w) for w in ids))
        return OwnersResult(owners=[o for o in answers if o is not None])

    @activity.defn(name="reconcile.signal_owner")
    async def signal_owner(self, req: SignalOwnerRequest) -> bool:
        """Tell the owning workflow to look now; False when it no longer runs."""
        return await self._directory.signal_look(req.workflow_id, req.detail)

    @activity.defn(name="reconcile.adopt")
    async def adopt(self, req: AdoptRequest) -> AdoptResult:
        """Start a PositionWorkflow in adopt mode (id conflict: fail, so never twice)."""
        return await self._directory.adopt(req.spec)

    def all(self) -> list[Callable[..., Any]]:
        """Every activity method, for registration on a worker."""
        return [self.listed, self.owners, self.signal_owner, self.adopt]
