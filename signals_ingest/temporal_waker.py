"""Temporal side of the price gate: the `wake` callable, and rebuilding bands after a restart.

- `TemporalWaker(client)(workflow_id, tick)` sends the workflow's `price` update and
  returns its new `BandView`; "workflow not found / already completed" (and "the
  workflow completed before the update did") become `None`, which the gate reads as
  "position gone". Every other error propagates: the gate retries it with backoff.
- `load_bands(client)` lists the running position workflows (visibility) and queries
  `band` on each; `sync_gate(gate, client)` applies that to a gate: adds the new
  positions primed (the next tick of their symbol wakes them regardless of band),
  optionally refreshes the bands of idle known ones, and forgets positions that are
  no longer running.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from temporalio.client import Client, WorkflowQueryFailedError, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from domain.position import PositionKey, parse_position_workflow_id
from domain.position_messages import (
    BAND_QUERY,
    LEGACY_BAND_QUERY,
    PRICE_UPDATE,
    BandView,
    PriceTick,
)
from signals_ingest.price_gate import PriceGate
from workflows.position_io import WORKFLOW_TYPE

__all__ = [
    "PositionKey",
    "SyncResult",
    "TemporalWaker",
    "is_gone",
    "load_bands",
    "parse_position_workflow_id",
    "query_band",
    "running_query",
    "sync_gate",
]

log = logging.getLogger("posguard.price_gate")

# Type of the update failure when the workflow completed between accepting the update
# and answering it (server-side message "Workflow Update failed because the Workflow
# completed before the Update completed").
_COMPLETED_BEFORE_UPDATE = "AcceptedUpdateCompletedWorkflow"


def is_gone(exc: BaseException) -> bool:
    """True if `exc` means the workflow is closed or does not exist (not transient)."""
    if isinstance(exc, RPCError):
        # "workflow not found for ID", "workflow execution already completed"
        return exc.status == RPCStatusCode.NOT_FOUND
    if isinstance(exc, WorkflowUpdateFailedError):
        cause = exc.cause
        return isinstance(cause, ApplicationError) and cause.type == _COMPLETED_BEFORE_UPDATE
    return False


class TemporalWaker:
    """`wake` for `PriceGate`: the `price` update of the position's workflow.

    The update goes to the workflow id's current run (no run id), so a
    continue-as-new in between is transparent. `timeout` bounds one call; a timeout
    raises (the gate backs off and retries, a late delivery is harmless because the
    workflow only folds the price into its best/worst price and answers its band).
    """

    def __init__(
        self,
        client: Client,
        *,
        update: str = PRICE_UPDATE,
        timeout: timedelta = timedelta(seconds=30),
    ) -> None:
        self.client = client
        self.update = update
        self.timeout = timeout

    async def __call__(self, workflow_id: str, tick: PriceTick) -> BandView | None:
        handle = self.client.get_workflow_handle(workflow_id)
        try:
            return await asyncio.wait_for(
                handle.execute_update(
                    self.update, tick, result_type=BandView, rpc_timeout=self.timeout
                ),
                self.timeout.total_seconds(),  # float ok: seconds
            )
        except Exception as exc:
            if is_gone(exc):
                return None
            raise


def running_query(workflow_type: str = WORKFLOW_TYPE) -> str:
    """Visibility query of the running workflows of `workflow_type`."""
    return f'WorkflowType="{workflow_type}" AND ExecutionStatus="Running"'


async def list_running(
    client: Client,
    *,
    workflow_type: str = WORKFLOW_TYPE,
    select: Callable[[str], bool] | None = None,
) -> list[str]:
    """Ids of the running workflows of `workflow_type` that `select` accepts."""
    ids: list[str] = []
    async for wf in client.list_workflows(running_query(workflow_type)):
        if select is None or select(wf.id):
            ids.append(wf.id)
    return ids


async def query_band(
    client: Client, workflow_id: str, timeout: timedelta = timedelta(seconds=10)
) -> BandView | None:
    """The `band` query of one position workflow; None if it is gone or did not answer."""
    handle = client.get_workflow_handle(workflow_id)
    name = BAND_QUERY
    try:
        try:
            return await asyncio.wait_for(
                handle.query(name, result_type=BandView, rpc_timeout=timeout),
                timeout.total_seconds(),  # float ok: seconds
            )
        except WorkflowQueryFailedError as exc:
            if "known queries" not in str(exc):
                raise
            # A worker of the release before the rename: the query's old name.
            name = LEGACY_BAND_QUERY
            return await asyncio.wait_for(
                handle.query(name, result_type=BandView, rpc_timeout=timeout),
                timeout.total_seconds(),  # float ok: seconds
            )
    except Exception as exc:
        if is_gone(exc):
            return None
        # No worker answering, a workflow without the query, ...: skipped this time,
        # the next sync tries again.
        log.warning("band query of %s failed: %r", workflow_id, exc)
        return None


async def load_bands(
    client: Client,
    *,
    workflow_type: str = WORKFLOW_TYPE,
    select: Callable[[str], bool] | None = None,
    ids: list[str] | None = None,
    concurrency: int = 16,
    timeout: timedelta = timedelta(seconds=10),
) -> list[BandView]:
    """The bands of all running position workflows (or of `ids`), queried in parallel.

    Workflows that do not answer within `timeout` are left out (logged).
    """
    if ids is None:
        ids = await list_running(client, workflow_type=workflow_type, select=select)
    sem = asyncio.Semaphore(concurrency)

    async def one(wid: str) -> BandView | None:
        async with sem:
            return await query_band(client, wid, timeout)

    views = await asyncio.gather(*(one(w) for w in ids))
    return [v for v in views if v is not None]


@dataclass(frozen=True)
class SyncResult:
    added: int
    refreshed: int
    removed: int
    running: int


async def sync_gate(
    gate: PriceGate,
    client: Client,
    *,
    workflow_type: str = WORKFLOW_TYPE,
    select: Callable[[str], bool] | None = None,
    refresh: bool = False,
    prime: bool = True,
    timeout: timedelta = timedelta(seconds=10),
) -> SyncResult:
    """Bring `gate` in line with the running position workflows.

    New positions are added with `prime` (their symbol's next tick wakes them once,
    whatever their band). With `refresh`, the bands of known positions without a
    wake-up in flight are re-read too (a workflow's band can change by its own
    timer); a read that a wake-up's answer overtook is dropped, since that answer
    is the newer band. Known positions that are no longer running are forgotten.
    """
    # Only positions known before the listing may be forgotten for missing from it: one
    # added meanwhile (from its order stream) may not be visible in the listing yet.
    known_before = set(gate.workflow_ids())
    running = await list_running(client, workflow_type=workflow_type, select=select)
    running_set = set(running)
    new = [w for w in running if w not in gate]
    known = [w for w in running if w in gate and not gate.is_in_flight(w)] if refresh else []
    # A wake-up answered while the query ran brought a newer band than the query's.
    answers_before = {w: gate.answers(w) for w in known}
    views = await load_bands(client, ids=new + known, timeout=timeout)
    added = refreshed = 0
    new_set = set(new)
    for view in views:
        if view.workflow_id in new_set:
            if view.workflow_id in gate:
                continue  # added meanwhile: its band came from a fresher source
            gate.apply(view, prime=prime)
            added += view.open
        elif (
            view.workflow_id in gate
            and not gate.is_in_flight(view.workflow_id)
            and gate.answers(view.workflow_id) == answers_before.get(view.workflow_id)
        ):
            gate.apply(view)
            refreshed += 1
    removed = 0
    for wid in gate.workflow_ids():
        if wid in known_before and wid not in running_set and gate.remove(wid):
            removed += 1
    return SyncResult(added=added, refreshed=refreshed, removed=removed, running=len(running))
