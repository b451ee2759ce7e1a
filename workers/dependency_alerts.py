"""Alerts on what a process depends on: raised when a part goes down, resolved when
it answers again (docs/alerts.md, docs/health.md).

The worker hands every health report here; the gate and the ingest run
`alert_on_reports` over theirs (their feeds, user streams, signal services). A part
newly *down* (past its `[health] max_age`) gets a resolvable error alert, with its
CRITICAL_ERROR event, titled "<part> unreachable" and grouped by that title, so
several workers seeing the same exchange down make one condition. It is raised
again every `RAISE_AGAIN_EVERY` while it stays down, so the condition stays open (a
condition not raised for `[alerts] quiet_after` closes quietly). A part seen *ok*
again gets the resolution row (and ALERT_RESOLVED), and people get "resolved".

PostgreSQL's own outage cannot go through the `alerts` table: `DatabaseAlerts` hands
the worker's raises straight to the condition's workflow in Temporal, whose messages
are sent unrecorded (`domain.alerts.recorded`). The outage itself is recorded as
`db_connection_lost` / `db_connection_recovered` once the database is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from temporalio.client import Client

from activities.store.repository import Store
from domain.alerts import (
    AlertRaised,
    condition_key,
    condition_workflow_id,
    watch_turns,
)
from domain.errors import scrub
from domain.events import AlertResolved, CriticalError, Event, EventType, make_event
from domain.health import HealthReport, PartView
from domain.records import AlertRecord, StoreBatch
from domain.types import Severity
from workers.settings import Settings

log = logging.getLogger("posguard.health")

UNWATCHED = frozenset({"postgresql"})
RAISE_AGAIN_EVERY = timedelta(minutes=5)


def unreachable_title(part: str) -> str:
    """The alert's title (and grouping key) for `part`."""
    return f"{part} unreachable"


class PartAlerts:
    """Turns a process's health reports into raises and resolutions of "<part>
    unreachable" for the parts it `watches`; a subclass says how one is handed on
    (`_hand`: True once done, False to try again with the next report)."""

    def __init__(self, process: str) -> None:
        self.process = process
        self.raised: dict[str, tuple[datetime, datetime]] = {}  # part -> (first, latest raise)
        self._tag = f"{process}/{socket.gethostname()}/{os.getpid()}"

    def watches(self, part: str) -> bool:
        raise NotImplementedError

    async def observe(self, report: HealthReport) -> None:
        """Raise what went down (again while it stays down), resolve what came back."""
        watched = {p.name: p for p in report.parts if self.watches(p.name)}
        to_raise, to_resolve = watch_turns(
            {name: latest for name, (_, latest) in self.raised.items()},
            down=[n for n, p in watched.items() if p.status == "down"],
            back=[n for n, p in watched.items() if p.status == "ok"],
            now=datetime.now(UTC),
            again_every=RAISE_AGAIN_EVERY,
        )
        for name in to_raise:
            await self._turn(watched[name], raised=True)
        for name in to_resolve:
            await self._turn(watched[name], raised=False)

    def _body(self, part: PartView, *, raised: bool) -> str:
        if raised:
            return (
                f"{self.process} has had no answer from {part.name} for "
                f"{part.age_s if part.age_s is not None else 'ever'} s"
                + (f"; last error: {part.error}" if part.error else "")
            )
        since = self.raised[part.name][0]
        return f"{part.name} answers {self.process} again (down since {since:%H:%M:%S} UTC)"

    async def _turn(self, part: PartView, *, raised: bool) -> None:
        now = datetime.now(UTC)
        title = unreachable_title(part.name)
        body = self._body(part, raised=raised)
        event_id = f"dependency/{self._tag}/{part.name}/{now.isoformat()}"
        if not await self._hand(part, title, body, event_id, now, raised=raised):
            return
        if raised:
            first = self.raised.get(part.name, (now, now))[0]
            self.raised[part.name] = (first, now)
            log.error("%s", body)
        else:
            del self.raised[part.name]
            log.warning("%s", body)

    async def _hand(
        self, part: PartView, title: str, body: str, event_id: str, now: datetime, *, raised: bool
    ) -> bool:
        raise NotImplementedError


class DependencyAlerts(PartAlerts):
    """Every part but PostgreSQL, written as alert rows with their events."""

    def __init__(self, store: Store, process: str) -> None:
        super().__init__(process)
        self.store = store

    def watches(self, part: str) -> bool:
        return part not in UNWATCHED

    async def _hand(
        self, part: PartView, title: str, body: str, event_id: str, now: datetime, *, raised: bool
    ) -> bool:
        payload: CriticalError | AlertResolved
        if raised:
            kind = EventType.CRITICAL_ERROR
            payload = CriticalError(
                error_type="DependencyDown", message=body, context={"part": part.name}
            )
        else:
            kind = EventType.ALERT_RESOLVED
            payload = AlertResolved(condition=condition_key(title), title=title, body=body)
        severity = Severity.ERROR if raised else Severity.INFO
        event = make_event(kind, payload, event_id=event_id, occurred_at=now, severity=severity)
        try:
            await record_watch_alert(self.store, event, title, body, raised=raised)
        except Exception as exc:  # the database may be down too: next report
            log.warning("alert on %s not written yet: %r", part.name, exc)
            return False
        return True


class DatabaseAlerts(PartAlerts):
    """The worker's PostgreSQL outage as an alert, without the database: each raise
    (and the resolution) is signal-with-started into the condition's AlertWorkflow,
    as the dispatcher does with a row. Temporal unreachable too: tried again with
    the next report."""

    def __init__(self, client: Client, settings: Settings, process: str = "worker") -> None:
        super().__init__(process)
        self.client = client
        self.settings = settings

    def watches(self, part: str) -> bool:
        return part == "postgresql"

    def _body(self, part: PartView, *, raised: bool) -> str:
        body = super()._body(part, raised=raised)
        if raised:
            body += (
                ". Positions keep their stops; their events wait (Temporal retries every "
                "write); this alert is in no table"
            )
        return body

    async def _hand(
        self, part: PartView, title: str, body: str, event_id: str, now: datetime, *, raised: bool
    ) -> bool:
        from workers.alert_dispatch import alert_input
        from workflows.alert import RAISE_ALERT, AlertWorkflow

        alert = AlertRaised(
            event_id=event_id,
            severity=Severity.ERROR if raised else Severity.INFO,
            title=title,
            body=body,
            condition=condition_key(title),
            raised_at=now,
            resolvable=True,
            resolution=not raised,
        )
        try:
            await self.client.start_workflow(
                AlertWorkflow.run,
                alert_input(self.settings),
                id=condition_workflow_id(alert.condition),
                task_queue=self.settings.task_queue,
                start_signal=RAISE_ALERT,
                start_signal_args=[alert],
            )
        except Exception as exc:  # Temporal unreachable too: next report
            log.warning("alert on %s not handed over yet: %s", part.name, scrub(str(exc)))
            return False
        return True


async def record_watch_alert(
    store: Store,
    event: Event,
    title: str,
    body: str,
    *,
    raised: bool,
    position_id: str | None = None,
) -> None:
    """Write a watch's raise (or resolution) of the resolvable condition `title`
    about `position_id`: its event and its `alerts` row, in one transaction."""
    await store.apply(
        StoreBatch(
            events=[event],
            alerts=[
                AlertRecord(
                    event_id=event.event_id,
                    severity=event.severity,
                    title=title,
                    body=body,
                    position_id=position_id,
                    condition=condition_key(title, position_id),
                    resolvable=True,
                    resolution=not raised,
                )
            ],
        )
    )


async def alert_on_reports(
    report: Callable[[], HealthReport],
    alerts: DependencyAlerts,
    stop: asyncio.Event,
    every: timedelta,
) -> None:
    """Hand `report()` to `alerts` every `every` until `stop` is set."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every.total_seconds())
        if not stop.is_set():
            await alerts.observe(report())
