"""Request-weight accounting per IP per minute, with Binance's 429 -> 418 escalation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from simulator import errors
from simulator.clock import wall_ms


@dataclass(slots=True)
class _Bucket:
    minute: int = -1
    used: int = 0
    rejections: int = 0


class RateLimitError(errors.ApiError):
    """A 429/418 rejection carrying the ``Retry-After`` seconds to send."""

    def __init__(self, base: errors.ApiError, retry_after_s: int) -> None:
        super().__init__(base.code, base.msg, base.status)
        self.retry_after_s = retry_after_s


class WeightLimiter:
    """Counts request weight per IP in fixed one-minute windows (wall clock).

    Contract: :meth:`charge` returns the weight used in the current minute
    after adding ``weight``; once the limit would be exceeded it raises a 429
    (-1003); after ``ban_after`` such rejections in one minute the IP is banned
    for ``ban_ms`` and every request gets a 418 until then.
    """

    def __init__(
        self,
        limit: int = 2400,
        ban_after: int = 5,
        ban_ms: int = 120_000,
        now_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.limit = limit
        self.ban_after = ban_after
        self.ban_ms = ban_ms
        self._now = now_ms
        self._buckets: dict[str, _Bucket] = {}
        self._banned_until: dict[str, int] = {}

    def used(self, ip: str) -> int:
        b = self._buckets.get(ip)
        if b is None or b.minute != self._now() // 60_000:
            return 0
        return b.used

    def charge(self, ip: str, weight: int) -> int:
        now = self._now()
        until = self._banned_until.get(ip, 0)
        if until > now:
            raise RateLimitError(errors.banned(until), max(1, (until - now + 999) // 1000))
        minute = now // 60_000
        b = self._buckets.setdefault(ip, _Bucket())
        if b.minute != minute:
            b.minute, b.used, b.rejections = minute, 0, 0
        if b.used + weight > self.limit:
            b.rejections += 1
            if b.rejections > self.ban_after:
                until = now + self.ban_ms
                self._banned_until[ip] = until
                raise RateLimitError(errors.banned(until), max(1, self.ban_ms // 1000))
            retry = max(1, ((minute + 1) * 60_000 - now + 999) // 1000)
            raise RateLimitError(errors.too_many_requests(self.limit), retry)
        b.used += weight
        return b.used

    def reset(self) -> None:
        self._buckets.clear()
        self._banned_until.clear()
