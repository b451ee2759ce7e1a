"""Judging a dependency from when it last answered (domain.health)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.health import PartState, assess, part_view, stream_part, task_frozen

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
AGE = timedelta(seconds=30)


def ago(seconds: float) -> datetime:  # float ok: test offsets
    return NOW - timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("last_ok", "last_failure", "status", "error_shown"),
    [
        (ago(1), None, "ok", False),
        (ago(1), ago(0.5), "ok", True),  # a blip: still up, the error shown
        (ago(31), ago(0.5), "down", True),
        (ago(31), None, "down", False),  # silent past the threshold is down too
        (None, ago(2), "down", True),  # never answered, has failed
        (None, None, "unknown", False),  # never tried
        (ago(10), ago(20), "ok", False),  # answered after the failure: error over
    ],
)
def test_a_part_is_down_once_its_last_answer_is_older_than_its_threshold(
    last_ok: datetime | None, last_failure: datetime | None, status: str, error_shown: bool
) -> None:
    part = PartState(
        name="exchange:paper",
        last_ok=last_ok,
        last_failure=last_failure,
        error="GET /fapi/v1/time: RequestTimeout",
        max_age=AGE,
    )
    view = part_view(part, NOW)
    assert view.status == status
    assert (view.error is not None) is error_shown
    assert view.age_s == (None if last_ok is None else (NOW - last_ok).total_seconds())


def test_a_report_names_the_parts_that_are_down() -> None:
    report = assess(
        "worker",
        [
            PartState(name="postgresql", last_ok=ago(1), max_age=AGE),
            PartState(name="exchange:a", last_ok=ago(40), last_failure=ago(1), max_age=AGE),
            PartState(name="exchange:b", max_age=AGE),
        ],
        NOW,
    )
    assert report.status == "unhealthy" and report.down == ["exchange:a"]
    assert assess("worker", [PartState(name="temporal", last_ok=NOW)], NOW).status == "ok"


def test_a_stream_is_up_while_connected_and_down_after_the_threshold() -> None:
    assert part_view(stream_part("s", True, None, NOW, AGE), NOW).status == "ok"
    assert part_view(stream_part("s", False, None, NOW, AGE), NOW).status == "unknown"
    brief = stream_part("s", False, timedelta(seconds=5), NOW, AGE)
    assert part_view(brief, NOW).status == "ok"  # down 5 s: not yet a page
    long = stream_part("s", False, timedelta(seconds=45), NOW, AGE)
    view = part_view(long, NOW)
    assert view.status == "down" and view.error == "disconnected" and view.age_s == 45


def test_a_task_is_frozen_only_when_started_longer_ago_than_the_bound() -> None:
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    after = timedelta(minutes=5)
    assert not task_frozen(None, now, after)  # none started (scheduled, or no task)
    assert not task_frozen(now - timedelta(seconds=9), now, after)  # within its timeout
    assert not task_frozen(now - after, now, after)
    assert task_frozen(now - after - timedelta(seconds=1), now, after)
