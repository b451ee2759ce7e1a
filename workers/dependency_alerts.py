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

PostgreSQL is left out: its alert could not be written while it is down. Its
outages are recorded as `db_connection_lost` / `db_connection_recovered`, and
`/health` and `posguard_records_up` show them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from activities.store.repository import Store
from domain.alerts import condition_key, watch_turns
from domain.events import AlertResolved, CriticalError, Event, EventType, make_event
from domain.health import HealthReport, PartView
from domain.records import AlertRecord, StoreBatch
from domain.types import Severity

log = logging.getLogger("posguard.health")

UNWATCHED = frozenset({"postgresql"})
RAISE_AGAIN_EVERY = timedelta(minutes=5)


def unreachable_title(part: str) -> str:
    """The alert's title (and grouping key) for `part`."""
    return f"{part} unreachable"


class DependencyAlerts:
    """Turns a process's health reports into raised and resolved alerts."""

    def __init__(self, store: Store, process: str) -> None:
        self.store = store
        self.process = process
        self.raised: dict[str, tuple[datetime, datetime]] = {}  # part -> (first, latest raise)
        self._tag = f"{process}/{socket.gethostname()}/{os.getpid()}"

    async def observe(self, report: HealthReport) -> None:
        """Raise what went down, resolve what came back; a write that fails is
        tried again with the next report."""
        watched = {p.name: p for p in report.parts if p.name not in UNWATCHED}
        to_raise, to_resolve = watch_turns(
            {name: latest for name, (_, latest) in self.raised.items()},
            down=[n for n, p in watched.items() if p.status == "down"],
            back=[n for n, p in watched.items() if p.status == "ok"],
            now=datetime.now(UTC),
            again_every=RAISE_AGAIN_EVERY,
        )
        for name in to_raise:
            await self._write(watched[name], raised=True)
        for name in to_resolve:
            await self._write(watched[name], raised=False)

    async def _write(self, part: PartView, *, raised: bool) -> None:
        now = datetime.now(UTC)
        title = unreachable_title(part.name)
        if raised:
            body = (
                f"{self.process} has had no answer from {part.name} for "
                f"{part.age_s if part.age_s is not None else 'ever'} s"
                + (f"; last error: {part.error}" if part.error else "")
            )
            kind = EventType.CRITICAL_ERROR
            payload: CriticalError | AlertResolved = CriticalError(
                error_type="DependencyDown", message=body, context={"part": part.name}
            )
            severity = Severity.ERROR
        else:
            since = self.raised[part.name][0]
            body = f"{part.name} answers {self.process} again (down since {since:%H:%M:%S} UTC)"
            kind = EventType.ALERT_RESOLVED
            payload = AlertResolved(condition=condition_key(title), title=title, body=body)
            severity = Severity.INFO
        event = make_event(
            kind,
            payload,
            event_id=f"dependency/{self._tag}/{part.name}/{now.isoformat()}",
            occurred_at=now,
            severity=severity,
        )
        try:
            await record_watch_alert(self.store, event, title, body, raised=raised)
        except Exception as exc:  # the database may be down too: next report
            log.warning("alert on %s not written yet: %r", part.name, exc)
            return
        if raised:
            first = self.raised.get(part.name, (now, now))[0]
            self.raised[part.name] = (first, now)
            log.error("%s", body)
        else:
            del self.raised[part.name]
            log.warning("%s", body)


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
