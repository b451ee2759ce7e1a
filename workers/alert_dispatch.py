"""The alert dispatcher: hands each new `alerts` row to its condition's workflow.

Runs in every worker process. It LISTENs on `posguard_alerts` (a trigger notifies
on every insert) and looks at least every `dispatch_poll` as well, so a missed
notification only delays an alert. Each row not yet dispatched is signal-with-
started into `AlertWorkflow` `alert/{condition}`, then marked dispatched. Two
dispatchers handing the same row over, or one handing it twice after a crash,
is harmless: the workflow drops a row it has seen, and a message already sent to
a channel is not sent again (`alert_deliveries`).

With no channel configured, rows are marked dispatched without a workflow: an
alert then lives in the table, the event log and the worker's log only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from temporalio.client import Client

from activities.store.alert_rows import LISTEN_CHANNEL, mark_dispatched, pending_alerts
from activities.store.repository import Store
from domain.alerts import condition_workflow_id
from workers.settings import Settings
from workflows.alert import RAISE_ALERT, AlertWorkflow, AlertWorkflowInput

log = logging.getLogger("posguard.alerts")
FAILURE_PAUSE_S = 1.0  # float ok: seconds before a failed dispatch is tried again


def alert_input(settings: Settings) -> AlertWorkflowInput:
    """A condition workflow's input from settings (no secret: channel names only)."""
    a = settings.alerts
    return AlertWorkflowInput(
        channels={c.name: c.min_severity for c in settings.alert_channels},
        policy=a.policy(),
        delivery_attempts=a.delivery_attempts,
        delivery_first_retry=a.delivery_first_retry,
        delivery_max_retry=a.delivery_max_retry,
        delivery_timeout=a.delivery_timeout,
    )


async def dispatch_once(client: Client, store: Store, settings: Settings) -> int:
    """Hand every pending row over; returns how many rows were handed."""
    handed = 0
    while True:
        rows = await pending_alerts(store)
        if not rows:
            return handed
        if settings.alert_channels:
            inp = alert_input(settings)
            for _, raised in rows:
                await client.start_workflow(
                    AlertWorkflow.run,
                    inp,
                    id=condition_workflow_id(raised.condition),
                    task_queue=settings.task_queue,
                    start_signal=RAISE_ALERT,
                    start_signal_args=[raised],
                )
        await mark_dispatched(store, [row_id for row_id, _ in rows])
        handed += len(rows)


async def run_alert_dispatch(
    client: Client, store: Store, settings: Settings, stop: asyncio.Event
) -> None:
    """Dispatch until `stop` is set; a failure (database, Temporal) is logged and
    the loop carries on after a pause, so alerts are delayed, never dropped."""
    wake = asyncio.Event()

    def notified(*_: Any) -> None:
        wake.set()

    poll_s = settings.alerts.dispatch_poll.total_seconds()
    listening: Any = None
    while not stop.is_set():
        try:
            if listening is None:
                listening = await store.pool.acquire()
                await listening.add_listener(LISTEN_CHANNEL, notified)
            wake.clear()
            handed = await dispatch_once(client, store, settings)
            if handed:
                log.info("handed %d alert(s) to their conditions", handed)
        except Exception as exc:  # kept alive: alerts must not stop for good
            log.warning("alert dispatch failed (%s: %s); retrying", type(exc).__name__, exc)
            if listening is not None:
                with contextlib.suppress(Exception):
                    await listening.remove_listener(LISTEN_CHANNEL, notified)
                with contextlib.suppress(Exception):
                    await store.pool.release(listening)
                listening = None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FAILURE_PAUSE_S)
            continue
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
        await asyncio.wait(waits, timeout=poll_s, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
    if listening is not None:
        with contextlib.suppress(Exception):
            await listening.remove_listener(LISTEN_CHANNEL, notified)
        with contextlib.suppress(Exception):
            await store.pool.release(listening)
