"""From stored signals to their waves: signal-with-start, and nothing left undecided.

`WaveFeed` is a `SignalClient`'s sink. Each new valid signal (already stored) goes
to the wave of each account its service feeds: ``wave/{account}/{period start}``,
started if need be and signalled in the same call (signal-with-start), so the
first signal of a wave creates it and the others join it. A wave that already
ended is refused by Temporal (id reuse: reject): the signal came too late for its
wave, and that is recorded as its decision (`wave_closed`).

While Temporal cannot be reached, the call is retried with backoff and the sink
does not return, so the client stops reading the socket (backpressure): nothing
is dropped. A signal stored just before a crash of the ingest is found again by
`sweep`, which hands every stored signal without a decision to its wave (at start
and then periodically). So every stored valid signal ends with one decision per
account: its wave's, or `wave_closed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel
from temporalio.client import Client
from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError

from activities.store.repository import Store
from activities.store.wave_rows import record_late, undecided_signals
from domain.records import SignalRecord
from domain.signals import Signal, SignalAction, wave_start
from domain.types import ExchangeId
from domain.wave_io import (
    ADD_SIGNALS,
    SIGNALS_PER_MESSAGE,
    WAVE_WORKFLOW_TYPE,
    WaveSignals,
    wave_workflow_id,
)

__all__ = ["WaveFeed", "WaveInputOf", "signal_of_record"]

log = logging.getLogger("posguard.waves")

_ACCOUNT = SearchAttributeKey.for_keyword("Account")

WaveInputOf = Callable[[str, datetime], BaseModel]
"""`wave_input(account, period_start)`: the WaveWorkflow's input for a new wave."""


def signal_of_record(rec: SignalRecord) -> Signal | None:
    """The signal a stored valid row holds (None for a row that is not one)."""
    if rec.status == "rejected" or rec.signal_id is None or rec.exchange is None:
        return None
    if rec.symbol is None or rec.action is None or rec.signal_at is None:
        return None
    if rec.score_week is None or rec.score_month is None:
        return None
    return Signal(
        service=rec.service,
        signal_id=rec.signal_id,
        exchange=ExchangeId(rec.exchange),
        symbol=rec.symbol,
        action=SignalAction(rec.action),
        score_week=rec.score_week,
        score_month=rec.score_month,
        at=rec.signal_at,
        received_at=rec.received_at,
    )


class WaveFeed:
    """Hands one service's stored signals to their accounts' waves (module docstring)."""

    def __init__(
        self,
        client: Client,
        store: Store,
        *,
        service: str,
        accounts: Sequence[str],
        wave_period: timedelta,
        task_queue: str,
        wave_input: WaveInputOf,
        retry_initial: timedelta = timedelta(milliseconds=200),
        retry_max: timedelta = timedelta(seconds=10),
    ) -> None:
        self._client = client
        self._store = store
        self.service = service
        self.accounts = list(accounts)
        self._period = wave_period
        self._task_queue = task_queue
        self._wave_input = wave_input
        self._retry_initial_s = retry_initial.total_seconds()  # float ok: seconds
        self._retry_max_s = retry_max.total_seconds()  # float ok: seconds
        self.delivered = 0
        self.late = 0

    async def __call__(self, signals: list[Signal]) -> None:
        """The sink: deliver each signal to its wave in every account (returns when all are)."""
        groups: dict[tuple[str, datetime], list[Signal]] = {}
        for signal in signals:
            period = wave_start(signal.at, self._period)
            for account in self.accounts:
                groups.setdefault((account, period), []).append(signal)
        for (account, period), group in groups.items():
            for k in range(0, len(group), SIGNALS_PER_MESSAGE):
                await self._deliver(account, period, group[k : k + SIGNALS_PER_MESSAGE])

    async def _deliver(self, account: str, period: datetime, signals: list[Signal]) -> None:
        """Signal-with-start the wave, retried until Temporal answers; a closed wave's
        signals are recorded `wave_closed`."""
        wave_id = wave_workflow_id(account, period)
        attempt = 0
        while True:
            try:
                await self._client.start_workflow(
                    WAVE_WORKFLOW_TYPE,
                    self._wave_input(account, period),
                    id=wave_id,
                    task_queue=self._task_queue,
                    id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                    start_signal=ADD_SIGNALS,
                    start_signal_args=[WaveSignals(signals=signals)],
                    search_attributes=TypedSearchAttributes(
                        [SearchAttributePair(_ACCOUNT, account)]
                    ),
                    static_summary=f"wave of {period.isoformat()} for {account}",
                )
                self.delivered += len(signals)
                return
            except WorkflowAlreadyStartedError:
                await self._closed(account, wave_id, signals)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempt += 1
                delay = min(self._retry_max_s, self._retry_initial_s * 2 ** min(attempt, 20))
                log.warning(
                    "%s: cannot hand %d signals to %s (attempt %d, %r); retrying in %.1f s",
                    self.service,
                    len(signals),
                    wave_id,
                    attempt,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # jitter

    async def _closed(self, account: str, wave_id: str, signals: list[Signal]) -> None:
        """Record `wave_closed` for signals that reached an ended wave (retried until stored)."""
        self.late += len(signals)
        while True:
            try:
                await record_late(self._store, account, wave_id, signals, datetime.now(UTC))
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s: cannot record %d late signals (%r)", wave_id, len(signals), exc)
                await asyncio.sleep(1)

    async def sweep(self, *, horizon: timedelta, settle: timedelta) -> int:
        """Hand every stored valid signal of this service with no decision to its wave.

        Looks at signals received within `horizon`, except the last `settle` (those
        are still on their way through the sink). Returns how many were handed on.
        """
        now = datetime.now(UTC)
        handed = 0
        for account in self.accounts:
            rows = await undecided_signals(
                self._store, account, [self.service], now - horizon, now - settle
            )
            signals = [s for s in (signal_of_record(r) for r in rows) if s is not None]
            if not signals:
                continue
            log.info(
                "%s: %d stored signals without a decision for %s",
                self.service,
                len(signals),
                account,
            )
            groups: dict[datetime, list[Signal]] = {}
            for s in signals:
                groups.setdefault(wave_start(s.at, self._period), []).append(s)
            for period, group in groups.items():
                for k in range(0, len(group), SIGNALS_PER_MESSAGE):
                    await self._deliver(account, period, group[k : k + SIGNALS_PER_MESSAGE])
            handed += len(signals)
        return handed

    async def run_sweeps(
        self, stop: asyncio.Event, *, every: timedelta | None, horizon: timedelta, settle: timedelta
    ) -> None:
        """`sweep` now, then every `every` until `stop` (once only when `every` is None)."""
        while not stop.is_set():
            try:
                await self.sweep(horizon=horizon, settle=settle)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next sweep tries again
                log.warning("%s: sweep failed: %r", self.service, exc)
            if every is None:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every.total_seconds())
