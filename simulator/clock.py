"""Clocks driving the simulator: a manual one for tests, a real-time one for demos.

The engine only ever asks ``clock.now_ms()``; it never reads the host clock
itself, which is what makes runs reproducible.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Anything with ``now_ms() -> int`` (epoch milliseconds)."""

    def now_ms(self) -> int: ...


def wall_ms() -> int:
    """The host's real epoch time in milliseconds."""
    return time.time_ns() // 1_000_000


class ManualClock:
    """A clock that only moves when told to. Contract: ``now_ms`` never decreases."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._now = start_ms

    def now_ms(self) -> int:
        return self._now

    def advance(self, ms: int) -> int:
        """Move forward by ``ms`` (>= 0); returns the new time."""
        if ms < 0:
            raise ValueError("clock cannot go backwards")
        self._now += ms
        return self._now

    def set(self, ms: int) -> int:
        """Jump to ``ms`` (must not be in the past); returns the new time."""
        if ms < self._now:
            raise ValueError("clock cannot go backwards")
        self._now = ms
        return self._now


class RealClock:
    """Real time plus an offset that :meth:`advance` can push forward.

    Used by the server so that time flows naturally while tests and demos can
    still jump ahead (for example to accumulate unprotected time).
    """

    def __init__(self) -> None:
        self._offset = 0
        self._last = 0

    def now_ms(self) -> int:
        # Monotonic guard: the host clock may step back (NTP); simulated time must not.
        now = wall_ms() + self._offset
        if now < self._last:
            now = self._last
        self._last = now
        return now

    def advance(self, ms: int) -> int:
        if ms < 0:
            raise ValueError("clock cannot go backwards")
        self._offset += ms
        return self.now_ms()

    def set(self, ms: int) -> int:
        current = self.now_ms()
        if ms < current:
            raise ValueError("clock cannot go backwards")
        self._offset += ms - current
        return self.now_ms()
