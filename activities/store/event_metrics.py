"""Prometheus metrics counted from the event log as it is written (docs/metrics.md).

Every event posguard records passes through `Store`; an event is counted once, by
the process that first inserted it, and only after its transaction committed (a
retried activity's repeat is not new, a rolled-back write is not counted). The sum
over processes is the account's total. Two latencies are measured per position:

- entry fill → stop: from the entry's first fill (the exchange's trade time, in
  `fills`) to the arrival in the log (`recorded_at`) of the position's first stop
  event: SL_PLACED, or PROTECTION_STOP_SET / EMERGENCY_STOP_PLACED when the
  first stop came only from a protection round. The
  workflow's own clock cannot measure it: the entry and the stop are placed in
  one workflow task, whose time does not move.
- crossing → move: PRICE_BAND_CROSSED → the TRAILING_STOP_MOVED it caused, on the
  workflow's clock (the update and the move's result are separate tasks). The
  gate's `posguard_gate_wake_seconds` is the same path on the wall clock.

What is not in the batch at hand is read from the database in the background, so
a metric never delays the write that caused it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Histogram

from domain.events import Event, EventType
from domain.records import AlertRecord

log = logging.getLogger("posguard.metrics")

# Seconds; a stop placed or moved in under 50 ms is as good as it gets, over a
# minute is an incident.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)

EVENTS = Counter(
    "posguard_events_total", "Events recorded (first insert only)", ["type", "severity"]
)
STOPS_PLACED = Counter(
    "posguard_stops_placed_total",
    "Stops placed: first stop, protection (re-placed) or emergency",
    ["account", "exchange", "kind"],
)
STOP_MOVES = Counter(
    "posguard_stop_moves_total", "Trailing stop moves done", ["account", "exchange"]
)
STOP_FAILURES = Counter(
    "posguard_stop_failures_total",
    "Stop placements or moves that failed: placement, move, protection or emergency",
    ["account", "exchange", "kind"],
)
RECONCILE_FINDINGS = Counter(
    "posguard_reconcile_findings_total",
    "Differences between the exchange and the records found by reconciliation",
    ["account", "exchange", "finding"],
)
SIGNAL_DECISIONS = Counter(
    "posguard_signal_decisions_total", "Signals selected or filtered by a wave", ["decision"]
)
ALERTS = Counter(
    "posguard_alerts_total", "Alerts raised (rows written; resolutions apart)", ["severity", "kind"]
)
FILL_TO_STOP = Histogram(
    "posguard_entry_fill_to_stop_seconds",
    "From the entry's fill to its stop placed, per the position's records",
    ["exchange"],
    buckets=LATENCY_BUCKETS,
)
CROSSING_TO_MOVE = Histogram(
    "posguard_crossing_to_move_seconds",
    "From a band crossing to the stop moved on it, per the position's records",
    ["exchange"],
    buckets=LATENCY_BUCKETS,
)

_PLACED = {
    EventType.SL_PLACED: "first",
    EventType.PROTECTION_STOP_SET: "protection",
    EventType.EMERGENCY_STOP_PLACED: "emergency",
}
_FAILED = {
    EventType.SL_PLACEMENT_FAILED: "placement",
    EventType.TRAILING_MOVE_FAILED: "move",
    EventType.PROTECTION_STOP_FAILED: "protection",
    EventType.EMERGENCY_STOP_FAILED: "emergency",
}
_FINDINGS = frozenset(
    {
        EventType.PHANTOM_DETECTED,
        EventType.UNTRACKED_DETECTED,
        EventType.QUANTITY_MISMATCH,
        EventType.ZOMBIE_DETECTED,
        EventType.FOREIGN_ORDER_DETECTED,
        EventType.STOP_MISSING_DETECTED,
    }
)
_DECISIONS = {EventType.SIGNAL_SELECTED: "selected", EventType.SIGNAL_FILTERED: "filtered"}
_STOP_EVENTS = (EventType.SL_PLACED, EventType.PROTECTION_STOP_SET, EventType.EMERGENCY_STOP_PLACED)
# The first entry fill of a position (exchange time), when a stop event reached the
# log, and whether it is the position's first (a position's event ids sort in order).
_FILL_TO_STOP_SQL = """
SELECT (SELECT min(f.filled_at) FROM fills f JOIN orders o USING (client_order_id)
        WHERE f.position_id = $1 AND o.kind = 'entry') AS filled,
       (SELECT recorded_at FROM events WHERE event_id = $2 AND occurred_at = $3) AS recorded,
       NOT EXISTS (SELECT 1 FROM events WHERE position_id = $1 AND event_id < $2
                   AND type = ANY($4::text[])) AS first
"""
# The crossing a move answered: the latest one after the position's previous move.
_CROSSING_SQL = """
SELECT max(occurred_at) FROM events
WHERE position_id = $1 AND type = 'price_band_crossed' AND occurred_at <= $2
  AND occurred_at >= coalesce(
      (SELECT max(occurred_at) FROM events
       WHERE position_id = $1 AND type = 'trailing_stop_moved' AND occurred_at < $2),
      '-infinity')
"""

_lookups: set[asyncio.Task[None]] = set()
_FILL_LOOKUP_DELAYS_S = (0.0, 0.5, 2.0, 10.0)  # float ok: seconds


def count_events(events: Sequence[Event], pool: Any | None = None) -> None:
    """Count events just committed; `pool` (asyncpg) reads a latency's start when
    it is not in `events`."""
    for e in events:
        EVENTS.labels(e.type.value, e.severity.value).inc()
        account, exchange = e.account or "", e.exchange or ""
        if e.type in _PLACED:
            STOPS_PLACED.labels(account, exchange, _PLACED[e.type]).inc()
        elif e.type is EventType.TRAILING_STOP_MOVED:
            STOP_MOVES.labels(account, exchange).inc()
        elif e.type in _FAILED:
            STOP_FAILURES.labels(account, exchange, _FAILED[e.type]).inc()
        elif e.type in _FINDINGS:
            RECONCILE_FINDINGS.labels(account, exchange, e.type.value).inc()
        elif e.type in _DECISIONS:
            SIGNAL_DECISIONS.labels(_DECISIONS[e.type]).inc()
    _observe_latencies(events, pool)


def count_alerts(alerts: Sequence[AlertRecord]) -> None:
    """Count alert rows just committed."""
    for a in alerts:
        ALERTS.labels(a.severity.value, "resolution" if a.resolution else "raised").inc()


def _observe_latencies(events: Sequence[Event], pool: Any | None) -> None:
    for i, end in enumerate(events):
        if end.position_id is None:
            continue
        if end.type in _STOP_EVENTS and pool is not None:
            _in_background(_fill_to_stop(pool, end))
        elif end.type is EventType.TRAILING_STOP_MOVED:
            crossed = next(
                (
                    e.occurred_at
                    for e in reversed(events[:i])
                    if e.type is EventType.PRICE_BAND_CROSSED and e.position_id == end.position_id
                ),
                None,
            )
            if crossed is not None:
                _observe(CROSSING_TO_MOVE, end.exchange, crossed, end.occurred_at)
            elif pool is not None:
                _in_background(_crossing_to_move(pool, end))


def _in_background(work: Coroutine[Any, Any, None]) -> None:
    task = asyncio.get_running_loop().create_task(work)
    _lookups.add(task)
    task.add_done_callback(_lookups.discard)


def _observe(histogram: Histogram, exchange: str | None, start: datetime, end: datetime) -> None:
    if end >= start:
        histogram.labels(exchange or "").observe((end - start).total_seconds())  # float ok


async def _fill_to_stop(pool: Any, placed: Event) -> None:
    # The fill's row may be written by the workflow's next batch: look a few times.
    for delay_s in _FILL_LOOKUP_DELAYS_S:
        await asyncio.sleep(delay_s)
        try:
            row = await pool.fetchrow(
                _FILL_TO_STOP_SQL,
                placed.position_id,
                placed.event_id,
                placed.occurred_at,
                [t.value for t in _STOP_EVENTS],
            )
        except Exception as exc:  # a metric is never worth an error of its own
            log.debug("fill of %s not read: %r", placed.event_id, exc)
            return
        if row is None or not row["first"]:
            return
        if row["filled"] is not None and row["recorded"] is not None:
            _observe(FILL_TO_STOP, placed.exchange, row["filled"], row["recorded"])
            return


async def _crossing_to_move(pool: Any, moved: Event) -> None:
    try:
        crossed = await pool.fetchval(_CROSSING_SQL, moved.position_id, moved.occurred_at)
    except Exception as exc:  # a metric is never worth an error of its own
        log.debug("crossing of %s not read: %r", moved.event_id, exc)
        return
    if crossed is not None:
        _observe(CROSSING_TO_MOVE, moved.exchange, crossed, moved.occurred_at)
