"""The events of one stored signal row: what the log says of every signal received.

A valid signal row has two events, `signal_received` and `signal_validated`; a
rejected one has one, `signal_rejected`. Each is a function of the row alone (id,
time, payload), so the same row always yields the same events: the store writes
them with the row, in the same transaction, and a repeat is refused by the log's key.

`events_of_record` is the contract; the store builds the same events inside
PostgreSQL on its hot path (`activities.store.repository.Store.store_signals`), and
a test compares the two for every kind of row.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

from domain.events import DEFAULT_SEVERITY, Event, EventType, unchecked_event
from domain.records import SignalRecord
from domain.signal_wire import MAX_RAW_CHARS
from domain.types import Severity

__all__ = [
    "SIGNAL_ROW_EVENTS",
    "events_of_record",
    "signal_event_id",
    "signal_event_ids",
]

SIGNAL_ROW_EVENTS: Final = frozenset(
    {EventType.SIGNAL_RECEIVED, EventType.SIGNAL_VALIDATED, EventType.SIGNAL_REJECTED}
)
"""The event types of signal rows (written only with their rows, or again from them)."""


def signal_event_id(row_id: str, kind: EventType) -> str:
    """The id of the `kind` event of one signal row: deterministic per row and kind.

    An id longer than an event id may be (200; a row id may be 301 characters) is
    replaced by a digest of it, as `domain.wave_io.decision_event_id` does.
    """
    text = f"signal/{row_id}/{kind.value}"
    if len(text) <= 200:
        return text
    return f"signal/{hashlib.blake2b(text.encode(), digest_size=20).hexdigest()}/{kind.value}"


def signal_event_ids(rec: SignalRecord) -> tuple[str, str | None]:
    """The ids of a row's events, in the order `events_of_record` builds them: a
    rejected row's one event (and None), or received then validated."""
    if rec.status == "rejected":
        return signal_event_id(rec.id, EventType.SIGNAL_REJECTED), None
    return (
        signal_event_id(rec.id, EventType.SIGNAL_RECEIVED),
        signal_event_id(rec.id, EventType.SIGNAL_VALIDATED),
    )


def events_of_record(rec: SignalRecord) -> list[Event]:
    """The events of one stored signal row, from the row alone (so they can be built
    again after a crash): rejected, or received and validated."""
    # Every field is built here from already validated values, so the events are
    # constructed without validation. The payloads are exactly what `make_event`
    # would store (SignalRejected / SignalReceived / SignalValidated dumped as
    # JSON); tests compare both ways.
    first, second = signal_event_ids(rec)
    if rec.status == "rejected":
        return [
            _record_event(
                first,
                EventType.SIGNAL_REJECTED,
                {"signal_id": rec.signal_id, "reason": rec.reason or "", "errors": []},
                rec,
                error_message=rec.reason,
            )
        ]
    assert second is not None
    return [
        _record_event(
            first,
            EventType.SIGNAL_RECEIVED,
            {
                "signal_id": rec.signal_id,
                "symbol": rec.symbol,
                "exchange": rec.exchange,
                "raw": {"text": rec.raw[:MAX_RAW_CHARS]},
            },
            rec,
        ),
        _record_event(
            second,
            EventType.SIGNAL_VALIDATED,
            {"signal_id": rec.signal_id, "wave_id": None},
            rec,
        ),
    ]


def _record_event(
    event_id: str, kind: EventType, payload: dict[str, Any], rec: SignalRecord, **extra: Any
) -> Event:
    # One signal row, one fact per kind: the id is the row's and the kind's.
    return unchecked_event(
        event_id=event_id,
        type=kind,
        occurred_at=rec.received_at,
        severity=DEFAULT_SEVERITY.get(kind, Severity.INFO),
        payload=payload,
        correlation_id=f"signal/{rec.id}",
        exchange=rec.exchange,
        symbol=rec.symbol,
        **extra,
    )
