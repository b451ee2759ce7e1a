"""A position's chart: its mark, its stop and its entry over time.

Pure. The stop and the entry are read from the position's recorded events (the
levels the exchange acknowledged, at the moment each was recorded); the mark from
the dashboard's own samples (`workers.dashboard.marks`) and the prices the gate
recorded when they left the position's band (`price_band_crossed`). Times are whole
UTC seconds, as the chart library takes them: a level changed twice within one
second is drawn a second late rather than lost; marks keep one a second.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal

from domain.events import Event, EventType
from workers.dashboard.models import ChartData, ChartPoint, Level

# The stop's level from each event that puts one on the exchange, by payload field.
_STOP_SET: dict[EventType, str] = {
    EventType.SL_PLACED: "trigger_price",
    EventType.PROTECTION_STOP_SET: "stop_price",
    EventType.EMERGENCY_STOP_PLACED: "stop_price",
    EventType.POSITION_ACTIVE: "stop_price",
    EventType.TRAILING_ACTIVATED: "new_stop",
    EventType.TRAILING_STOP_MOVED: "new_stop",
    EventType.TRAILING_BREAKEVEN: "new_stop",
}
# The entry's (average) price from each event that tells it.
_ENTRY_SET: dict[EventType, str] = {
    EventType.ENTRY_ORDER_FILLED: "average_price",
    EventType.POSITION_ACTIVE: "entry_price",
    EventType.POSITION_ADOPTED: "entry_price",
}
# No stop from here on: it went missing, or it (or the position) ended.
_STOP_GONE = frozenset(
    {
        EventType.STOP_MISSING_DETECTED,
        EventType.STOP_TRIGGERED,
        EventType.POSITION_CLOSED,
        EventType.POSITION_ROLLED_BACK,
    }
)
_POSITION_OVER = frozenset({EventType.POSITION_CLOSED, EventType.POSITION_ROLLED_BACK})


def _second(at: datetime) -> int:
    return int(at.timestamp())


def _price(payload: dict[str, object], key: str) -> Decimal | None:
    value = payload.get(key)
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except ArithmeticError:
        return None


class _Line:
    """A level that holds from one point to the next; None: no level (a gap).

    Times strictly increase, as the chart library needs: a point that would fall at or
    before the last one is drawn one second after it, so a level that changed twice
    within a second still shows both values (a second late) instead of losing one.
    """

    def __init__(self) -> None:
        self.points: list[tuple[int, Decimal | None]] = []
        self.last: Decimal | None = None

    def _at(self, t: int) -> int:
        return t if not self.points or t > self.points[-1][0] else self.points[-1][0] + 1

    def set(self, t: int, value: Decimal) -> None:
        if self.points and self.points[-1][1] is None and t <= self.points[-1][0]:
            self.points.pop()  # a gap of no length: the new level follows the old at once
        self.points.append((self._at(t), value))
        self.last = value

    def end(self, t: int) -> None:
        """No level from `t` on: the last one is drawn up to `t`, then a gap."""
        if self.last is None:
            return
        t = self._at(t)
        self.points += [(t, self.last), (t + 1, None)]
        self.last = None

    def extend(self, t: int) -> None:
        """The current level still holds at `t` (drawn up to the chart's right edge)."""
        if self.last is not None and t > self.points[-1][0]:
            self.points.append((t, self.last))

    def sorted(self) -> list[tuple[int, Decimal | None]]:
        out = list(self.points)
        while out and out[-1][1] is None:  # a gap at the end draws nothing
            out.pop()
        return out


def _chart_points(line: Iterable[tuple[int, Decimal | None]]) -> list[ChartPoint]:
    # The one place a price becomes a float: the chart library draws numbers.
    return [ChartPoint(time=t, value=None if v is None else float(v)) for t, v in line]


def build_chart(
    events: Sequence[Event],
    marks: Sequence[tuple[datetime, Decimal]],
    *,
    now: datetime,
    is_open: bool,
) -> ChartData:
    """The chart of one position from its events (oldest first) and its sampled marks.

    While the position `is_open`, the stop and entry lines reach `now` (or the last
    mark, when later); once it is over they end at its close.
    """
    stop, entry = _Line(), _Line()
    mark: dict[int, Decimal] = {}
    levels: list[Level] = []
    for event in events:
        t = _second(event.occurred_at)
        payload = event.payload
        stop_key = _STOP_SET.get(event.type)
        if stop_key is not None:
            level = _price(payload, stop_key)
            if level is not None and level != stop.last:
                stop.set(t, level)
                levels.append(Level(time=t, value=level))
        entry_key = _ENTRY_SET.get(event.type)
        if entry_key is not None:
            price = _price(payload, entry_key)
            if price is not None and price != entry.last:
                entry.set(t, price)
        if event.type is EventType.PRICE_BAND_CROSSED:
            price = _price(payload, "price")
            if price is not None:
                mark[t] = price
        if event.type in _STOP_GONE:
            if stop.last is not None:
                levels.append(Level(time=t, value=None))
            stop.end(t)
        if event.type in _POSITION_OVER:
            entry.end(t)
    for at, price in marks:
        mark[_second(at)] = price
    if is_open:
        right = max([_second(now), *mark])
        stop.extend(right)
        entry.extend(right)
    return ChartData(
        mark=_chart_points(sorted(mark.items())),
        stop=_chart_points(stop.sorted()),
        entry=_chart_points(entry.sorted()),
        stop_levels=levels,
    )
