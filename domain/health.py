"""Whether a process's dependencies are up, judged from when each last answered.

Each process keeps, per dependency (PostgreSQL, Temporal, an exchange account, the
market feed, a user stream, a signal service), when it last answered and when and
how it last failed. A part is *down* once it has not answered for longer than its
threshold and has failed since (a part never tried is not down: it is "unknown",
e.g. a user stream still connecting). A report names every part with its age and
the parts that are down; the process answers 503 when any is.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict

from domain.errors import RETRYABLE_TYPES, ErrorType


class PartState(BaseModel):
    """What a process knows of one dependency."""

    model_config = ConfigDict(frozen=True)

    name: str  # "postgresql", "temporal", "exchange:paper", "user-stream:paper", ...
    last_ok: datetime | None = None
    last_failure: datetime | None = None
    error: str | None = None
    max_age: timedelta = timedelta(seconds=30)
    detail: dict[str, object] = {}


class PartView(BaseModel):
    """One line of a health report."""

    name: str
    status: str  # "ok", "down" or "unknown"
    age_s: float | None  # float ok: seconds since it last answered, for people
    error: str | None = None
    detail: dict[str, object] = {}


class HealthReport(BaseModel):
    """A process's health: `status` "ok" or "unhealthy", the parts that are down."""

    process: str
    status: str
    down: list[str]
    parts: list[PartView]


def stream_part(
    name: str, connected: bool, down_for: timedelta | None, now: datetime, max_age: timedelta
) -> PartState:
    """A stream's part: up while connected; since it went down, failing (and down
    once that is longer than `max_age`); never connected nor failed: unknown."""
    if connected:
        return PartState(name=name, last_ok=now, max_age=max_age)
    if down_for is None:
        return PartState(name=name, max_age=max_age)
    since = now - down_for
    return PartState(
        name=name, last_ok=since, last_failure=since, error="disconnected", max_age=max_age
    )


def part_view(part: PartState, now: datetime) -> PartView:
    """The status of one part at `now` (see the module docstring)."""
    age = None if part.last_ok is None else max(timedelta(0), now - part.last_ok)
    failed_since = part.last_failure is not None and (
        part.last_ok is None or part.last_failure >= part.last_ok
    )
    if age is not None and age <= part.max_age:
        status = "ok"
    elif failed_since or age is not None:
        status = "down"
    else:
        status = "unknown"
    return PartView(
        name=part.name,
        status=status,
        age_s=None if age is None else round(age.total_seconds(), 3),  # float ok: display
        error=part.error if failed_since else None,
        detail=part.detail,
    )


def assess(process: str, parts: list[PartState], now: datetime) -> HealthReport:
    """The report of `process` at `now`: unhealthy when any part is down."""
    views = [part_view(p, now) for p in parts]
    down = [v.name for v in views if v.status == "down"]
    return HealthReport(
        process=process, status="unhealthy" if down else "ok", down=down, parts=views
    )


def task_frozen(started: datetime | None, now: datetime, after: timedelta) -> bool:
    """Whether a workflow task Temporal holds as started since `started` (None: no
    task started) is frozen: started more than `after` ago. No worker takes minutes
    over one task, so the one holding it is gone or stuck while Temporal waits out a
    timeout it lengthened, or lost (docs/alerts.md)."""
    return started is not None and now - started > after


# A pending activity failing alike past this many attempts keeps failing
# (workers/failing_activities.py): with posguard's retry policies, a minute and more.
FAILING_AFTER_ATTEMPTS = 10

# Failures that say a dependency is away (the exchange, PostgreSQL, Temporal): every
# workflow's activities fail so while it lasts, and the dependency's own alert says
# so once (docs/alerts.md); the activity goes through when it is back.
OUTAGE_FAILURES = frozenset(
    {t.value for t in RETRYABLE_TYPES if t is not ErrorType.UNEXPECTED}
    | {
        "StoreUnavailable",
        "ConnectionError",
        "ConnectionRefusedError",
        "ConnectionResetError",
        "ConnectionDoesNotExistError",
        "CannotConnectNowError",
        "TooManyConnectionsError",
        "InterfaceError",
        "OSError",
        "TimeoutError",
        "CancelledError",
    }
)


def activity_failing(attempt: int, failure_type: str | None, after_attempts: int) -> bool:
    """Whether a pending activity at `attempt` (Temporal's, from 1) whose last failure
    is of `failure_type` (None: it has not failed) keeps failing for a reason no
    outage explains: more than `after_attempts` attempts, the last one not an
    outage's (`OUTAGE_FAILURES`)."""
    return (
        failure_type is not None
        and attempt > after_attempts
        and failure_type not in OUTAGE_FAILURES
    )
