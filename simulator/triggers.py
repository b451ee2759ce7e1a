"""Trigger levels kept in heaps so a price tick that crosses nothing is O(1).

A :class:`TriggerBook` holds two heaps per book: *rise* entries fire when the
price goes to or above their level, *fall* entries when it goes to or below.
Removal is lazy: cancelled ids are dropped from ``_live`` and skipped when they
surface, and the heaps are compacted once dead entries dominate.
"""

from __future__ import annotations

import heapq
from decimal import Decimal


class TriggerBook:
    """Pending trigger levels for one (symbol, price kind).

    Contract: :meth:`pop_crossed` returns each live id at most once, in the
    order the levels would be crossed by a price moving to ``price``.
    """

    __slots__ = ("_dead", "_fall", "_live", "_rise", "_seq")

    def __init__(self) -> None:
        self._rise: list[tuple[Decimal, int, int]] = []  # (level, seq, id)
        self._fall: list[tuple[Decimal, int, int]] = []  # (-level, seq, id)
        # id -> seq of its current entry; older entries of a re-added id are dead
        self._live: dict[int, int] = {}
        self._seq = 0
        self._dead = 0

    def __len__(self) -> int:
        return len(self._live)

    def add(self, item_id: int, level: Decimal, rises: bool) -> None:
        """Register ``item_id`` to fire when price >= level (rises) or <= level."""
        self._seq += 1
        if rises:
            heapq.heappush(self._rise, (level, self._seq, item_id))
        else:
            heapq.heappush(self._fall, (-level, self._seq, item_id))
        if item_id in self._live:
            self._dead += 1  # the previous entry of this id is now dead
        self._live[item_id] = self._seq

    def move(self, item_id: int, level: Decimal, rises: bool) -> None:
        """Re-register a live ``item_id`` at a new level (its old entry dies)."""
        self.add(item_id, level, rises)

    def remove(self, item_id: int) -> None:
        """Forget ``item_id`` (no-op when unknown)."""
        if item_id in self._live:
            del self._live[item_id]
            self._dead += 1
            if self._dead > 64 and self._dead > 2 * len(self._live):
                self._compact()

    def would_fire(self, price: Decimal) -> bool:
        """Cheap check used on the hot path: does any entry (live or dead) cross?"""
        rise = self._rise
        fall = self._fall
        return bool((rise and rise[0][0] <= price) or (fall and -fall[0][0] >= price))

    def pop_crossed(self, price: Decimal) -> list[int]:
        """Remove and return the live ids whose level ``price`` reaches."""
        out: list[int] = []
        rise = self._rise
        live = self._live
        while rise and rise[0][0] <= price:
            _, seq, item_id = heapq.heappop(rise)
            if live.get(item_id) == seq:
                del live[item_id]
                out.append(item_id)
            else:
                self._dead -= 1
        fall = self._fall
        while fall and -fall[0][0] >= price:
            _, seq, item_id = heapq.heappop(fall)
            if live.get(item_id) == seq:
                del live[item_id]
                out.append(item_id)
            else:
                self._dead -= 1
        return out

    def _compact(self) -> None:
        live = self._live
        self._rise = [e for e in self._rise if live.get(e[2]) == e[1]]
        self._fall = [e for e in self._fall if live.get(e[2]) == e[1]]
        heapq.heapify(self._rise)
        heapq.heapify(self._fall)
        self._dead = 0
