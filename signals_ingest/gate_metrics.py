"""Prometheus metrics of the market-data process (docs/metrics.md).

The gate and its streams already count what they do (`GateCounters`, the feeds'
and user streams' attributes); `GateCollector` reads those at scrape time, so the
tick path pays nothing for metrics. The one histogram, crossing → band answered,
is observed by the gate itself: the answer comes after the stop move it caused.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

WAKE_SECONDS = Histogram(
    "posguard_gate_wake_seconds",
    "From a band crossing to the position's answer (any stop move it caused is done)",
    ["gate"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

# counter name -> (GateCounters field, help)
_GATE_COUNTERS = {
    "posguard_gate_ticks": ("ticks", "Mark-price ticks received"),
    "posguard_gate_quiet_ticks": ("ticks_quiet", "Ticks inside every band (fast path)"),
    "posguard_gate_crossings": ("crossings", "Positions found outside their band"),
    "posguard_gate_coalesced_ticks": ("coalesced", "Ticks folded into a wake-up in flight"),
    "posguard_gate_wake_retries": ("retries", "Wake-ups sent again after an error"),
}
_WAKEUPS = {"answered": "wakeups_answered", "gone": "wakeups_gone", "error": "wake_errors"}


class _Source(Protocol):
    name: str
    gate: Any
    feed: Any


class _UserStream(Protocol):
    account: str
    connected: bool
    reconnects: int
    notifications: int


class GateCollector(Collector):
    """The gates, feeds and user streams of one process, read at scrape time."""

    def __init__(
        self,
        sources: Callable[[], Sequence[_Source]],
        streams: Callable[[], Sequence[_UserStream]] = lambda: (),
    ) -> None:
        self._sources = sources
        self._streams = streams

    def collect(self) -> Iterator[Metric]:
        sources = list(self._sources())
        for name, (field, doc) in _GATE_COUNTERS.items():
            family = CounterMetricFamily(name, doc, labels=["gate"])
            for src in sources:
                family.add_metric([src.name], getattr(src.gate.counters, field))
            yield family
        wakeups = CounterMetricFamily(
            "posguard_gate_wakeups", "Wake-ups of positions by outcome", labels=["gate", "outcome"]
        )
        in_flight = GaugeMetricFamily(
            "posguard_gate_in_flight", "Positions with a wake-up in flight", labels=["gate"]
        )
        positions = GaugeMetricFamily(
            "posguard_gate_positions", "Positions the gate watches", labels=["gate"]
        )
        lag = GaugeMetricFamily(
            "posguard_feed_lag_seconds",
            "Age of the latest mark price per symbol (now minus its exchange time)",
            labels=["gate", "symbol"],
        )
        connected = GaugeMetricFamily(
            "posguard_feed_connected", "1 while the mark-price stream is up", labels=["gate"]
        )
        reconnects = CounterMetricFamily(
            "posguard_feed_reconnects", "Mark-price stream reconnections", labels=["gate"]
        )
        now_ms = time.time() * 1000  # float ok: an age in seconds
        for src in sources:
            for outcome, field in _WAKEUPS.items():
                wakeups.add_metric([src.name, outcome], getattr(src.gate.counters, field))
            in_flight.add_metric([src.name], src.gate.in_flight)
            positions.add_metric([src.name], len(src.gate))
            for symbol, at_ms in src.gate.last_ticks().items():
                if at_ms is not None:
                    lag.add_metric([src.name, symbol], max(0.0, (now_ms - at_ms) / 1000))
            connected.add_metric([src.name], 1 if src.feed.connected else 0)
            reconnects.add_metric([src.name], src.feed.reconnects)
        yield from (wakeups, in_flight, positions, lag, connected, reconnects)
        streams = list(self._streams())
        up = GaugeMetricFamily(
            "posguard_user_stream_connected",
            "1 while an account's user-data stream is up",
            labels=["account"],
        )
        again = CounterMetricFamily(
            "posguard_user_stream_reconnects",
            "User-data stream reconnections",
            labels=["account"],
        )
        for stream in streams:
            up.add_metric([stream.account], 1 if stream.connected else 0)
            again.add_metric([stream.account], stream.reconnects)
        yield from (up, again)
