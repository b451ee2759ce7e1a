"""The Temporal Schedules posguard keeps: one `reconcile/{account}` per exchange account.

`apply_schedules` creates each one or updates it to the settings, idempotently
(the worker calls it at start, and `posguard schedules apply`); a Schedule an
operator paused stays paused. Passes can also be asked for at once
(`trigger_reconcile`: the user stream, `posguard reconcile`); a pass asked for
while one runs is run right after it, never beside it.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleDescription,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

from domain.reconcile_io import ReconcileInput, ReconcileReport, reconcile_schedule_id
from domain.types import ExchangeId
from workers.settings import AccountSettings, Settings
from workflows.position_io import exchange_task_queue
from workflows.reconcile import ReconcileWorkflow

NOTE = (
    "posguard account reconciliation (docs/reconcile.md). Pausing it stops the "
    "checks for phantoms, untracked positions, missing stops and zombie orders."
)


def reconcile_input(
    settings: Settings, account: AccountSettings, *, dry_run: bool = False
) -> ReconcileInput:
    """The input of a pass over `account` under `settings`."""
    return ReconcileInput(
        account=account.name,
        exchange=ExchangeId(account.exchange),
        exchange_task_queue=exchange_task_queue(account.name),
        policy=settings.reconcile.policy(),
        adoption=settings.reconcile.adoption(settings.trailing),
        dry_run=dry_run,
        call_timeout=settings.reconcile.call_timeout,
        hedge_mode=account.hedge_mode,
    )


def reconcile_schedule(settings: Settings, account: AccountSettings) -> Schedule:
    """The Schedule of `account`'s passes: every `reconcile.every`, overlap SKIP."""
    every = settings.reconcile.every or timedelta(seconds=30)
    schedule_id = reconcile_schedule_id(account.name)
    return Schedule(
        action=ScheduleActionStartWorkflow(
            ReconcileWorkflow.run,
            reconcile_input(settings, account),
            id=f"{schedule_id}/pass",
            task_queue=settings.task_queue,
            execution_timeout=settings.reconcile.pass_timeout,
            static_summary=f"reconcile {account.name} ({account.exchange})",
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(
            overlap=ScheduleOverlapPolicy.SKIP, catchup_window=max(every, timedelta(minutes=1))
        ),
        state=ScheduleState(note=NOTE),
    )


async def apply_schedules(client: Client, settings: Settings) -> list[str]:
    """Create or update every account's reconcile Schedule; their ids.

    Does nothing when `reconcile.every` is unset. An existing Schedule gets the
    new action, spec and policy, and keeps its paused state and note.
    """
    if not settings.reconcile.scheduled:
        return []
    ids: list[str] = []
    for account in settings.accounts:
        schedule = reconcile_schedule(settings, account)
        schedule_id = reconcile_schedule_id(account.name)
        try:
            await client.create_schedule(schedule_id, schedule)
        except ScheduleAlreadyRunningError:

            def update(current: ScheduleUpdateInput, wanted: Schedule = schedule) -> ScheduleUpdate:
                state = current.description.schedule.state
                wanted.state = ScheduleState(note=state.note or NOTE, paused=state.paused)
                return ScheduleUpdate(schedule=wanted)

            await client.get_schedule_handle(schedule_id).update(update)
        ids.append(schedule_id)
    return ids


@dataclass(frozen=True)
class ScheduleRow:
    """One Schedule as `posguard schedules` shows it."""

    schedule_id: str
    paused: bool
    every: timedelta | None
    last_run: datetime | None
    last_workflow_id: str | None
    next_run: datetime | None
    note: str


async def list_schedules(client: Client) -> list[ScheduleRow]:
    """Every reconcile Schedule of the namespace, with its last and next run."""
    rows: list[ScheduleRow] = []
    async for listed in await client.list_schedules():
        if not listed.id.startswith("reconcile/"):
            continue
        desc = await client.get_schedule_handle(listed.id).describe()
        info = desc.info
        recent = info.recent_actions[-1] if info.recent_actions else None
        intervals = desc.schedule.spec.intervals
        last_id = None
        if recent is not None and hasattr(recent.action, "workflow_id"):
            last_id = recent.action.workflow_id
        rows.append(
            ScheduleRow(
                schedule_id=listed.id,
                paused=desc.schedule.state.paused,
                every=intervals[0].every if intervals else None,
                last_run=recent.started_at if recent is not None else None,
                last_workflow_id=last_id,
                next_run=info.next_action_times[0] if info.next_action_times else None,
                note=desc.schedule.state.note or "",
            )
        )
    return sorted(rows, key=lambda r: r.schedule_id)


async def trigger_reconcile(client: Client, account: str) -> set[str]:
    """Ask for a pass over `account` now (run after the current one if one runs).

    Returns the ids of the passes that had started before, for `wait_for_triggered_pass`.
    """
    handle = client.get_schedule_handle(reconcile_schedule_id(account))
    known = _pass_ids(await handle.describe())
    await handle.trigger(overlap=ScheduleOverlapPolicy.BUFFER_ONE)
    return known


def _pass_ids(desc: ScheduleDescription) -> set[str]:
    actions = [*desc.info.running_actions, *(a.action for a in desc.info.recent_actions)]
    return {a.workflow_id for a in actions if isinstance(a, ScheduleActionExecutionStartWorkflow)}


async def wait_for_triggered_pass(client: Client, account: str, known: set[str]) -> ReconcileReport:
    """The report of the first pass of `account`'s Schedule not in `known`.

    Any pass that starts after the request read the account after it, so the first
    new one answers it (the triggered one, or a scheduled one that came first).
    """
    handle = client.get_schedule_handle(reconcile_schedule_id(account))
    while True:
        fresh = sorted(_pass_ids(await handle.describe()) - known)
        if fresh:
            wf = client.get_workflow_handle(fresh[0], result_type=ReconcileReport)
            report: ReconcileReport = await wf.result()
            return report
        await asyncio.sleep(0.2)


async def run_pass(
    client: Client, settings: Settings, account: AccountSettings, *, dry_run: bool
) -> ReconcileReport:
    """Run one pass outside the Schedule and wait for its report (the dry run's way)."""
    workflow_id = f"{reconcile_schedule_id(account.name)}/{'dry-run' if dry_run else 'now'}/"
    return await client.execute_workflow(
        ReconcileWorkflow.run,
        reconcile_input(settings, account, dry_run=dry_run),
        id=workflow_id + uuid.uuid4().hex[:12],
        task_queue=settings.task_queue,
        execution_timeout=settings.reconcile.pass_timeout,
    )


async def delete_schedule(client: Client, account: str) -> bool:
    """Delete `account`'s reconcile Schedule; False when there was none."""
    try:
        await client.get_schedule_handle(reconcile_schedule_id(account)).delete()
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True
