"""Alerts on a process's dependencies (workers.dependency_alerts), on the real store:
raised once when a part goes down, raised again while it stays down, resolved once
when it answers; PostgreSQL never (its alert could not be written while it is down)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from activities.store.repository import Store
from domain.health import HealthReport, PartView
from workers import dependency_alerts
from workers.dependency_alerts import DependencyAlerts


def report(*parts: tuple[str, str]) -> HealthReport:
    views = [
        PartView(name=name, status=status, age_s=45.0 if status == "down" else 0.1)
        for name, status in parts
    ]
    down = [v.name for v in views if v.status == "down"]
    return HealthReport(
        process="gate", status="unhealthy" if down else "ok", down=down, parts=views
    )


async def rows(store: Store, part: str) -> list[tuple[bool, str]]:
    found = await store.pool.fetch(
        "SELECT resolution, severity FROM alerts WHERE title = $1 ORDER BY id",
        f"{part} unreachable",
    )
    return [(r["resolution"], r["severity"]) for r in found]


async def test_a_part_down_is_raised_once_then_resolved_once(store: Store) -> None:
    part = f"user-stream:acct{uuid.uuid4().hex[:6]}"
    alerts = DependencyAlerts(store, "gate")
    for _ in range(3):
        await alerts.observe(report((part, "down"), ("postgresql", "down")))
    assert await rows(store, part) == [(False, "error")]  # within RAISE_AGAIN_EVERY: once
    for _ in range(2):
        await alerts.observe(report((part, "ok")))
    assert await rows(store, part) == [(False, "error"), (True, "info")]
    assert await rows(store, "postgresql") == []
    kinds = await store.pool.fetch(
        """SELECT e.type FROM events e JOIN alerts a USING (event_id)
           WHERE a.title = $1 ORDER BY a.id""",
        f"{part} unreachable",
    )
    assert [k["type"] for k in kinds] == ["critical_error", "alert_resolved"]


async def test_a_part_that_stays_down_is_raised_again(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dependency_alerts, "RAISE_AGAIN_EVERY", timedelta(0))
    part = f"signal-service:svc{uuid.uuid4().hex[:6]}"
    alerts = DependencyAlerts(store, "ingest")
    await alerts.observe(report((part, "down")))
    await alerts.observe(report((part, "down")))
    await alerts.observe(report((part, "unknown")))  # neither down nor back: nothing
    await alerts.observe(report((part, "ok")))
    assert [r for r, _ in await rows(store, part)] == [False, False, True]
