"""Scriptable fault injection for the REST layer.

A :class:`FaultRule` matches requests by ``"METHOD /path"`` glob and optional
symbol, and applies one effect:

* ``latency``        sleep ``latency_ms`` before handling
* ``error``          reply ``{"code": code, "msg": msg}`` with HTTP ``status`` (default 400)
* ``http_status``    reply a bare HTTP ``status`` (5xx) with a text body
* ``rate_limit``     reply 429 -1003 (or 418 when ``status=418``) with ``Retry-After``;
  the 418's "banned until" and ``Retry-After`` say when the rule ends (60 s when
  it has no ``duration_ms``)
* ``maintenance``    reply 503 ``System is under maintenance.``
* ``drop_response``  execute the request, then close the connection without a reply
* ``delay_response`` execute the request, then wait ``latency_ms`` before replying
  (use a delay longer than the client's timeout for an ambiguous outcome)

``param`` narrows a rule to requests carrying that parameter (e.g. ``triggerPrice``:
only Bybit's conditional orders, which share ``POST /v5/order/create`` with entries),
or, written ``!name``, to requests without it (``!triggerPrice``: only plain orders).

``count`` limits how many requests a rule hits (None = unlimited) and
``duration_ms`` how long it lives (wall clock); ``probability`` uses a seeded RNG.
"""

from __future__ import annotations

import fnmatch
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from simulator.clock import wall_ms

PRE_KINDS = ("latency", "error", "http_status", "rate_limit", "maintenance")
POST_KINDS = ("drop_response", "delay_response")
KINDS = PRE_KINDS + POST_KINDS


@dataclass(slots=True)
class FaultRule:
    """One fault. See the module docstring for the meaning of ``kind``."""

    kind: str
    endpoint: str = "*"
    symbol: str | None = None
    param: str | None = None
    count: int | None = None
    duration_ms: int | None = None
    latency_ms: int = 0
    code: int = -1000
    msg: str = "An unknown error occured while processing the request."
    status: int = 400
    probability: float = 1.0  # float ok: not money
    id: int = 0
    created_ms: int = field(default_factory=wall_ms)
    hits: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {KINDS}")

    def expired(self, now_ms: int) -> bool:
        if self.count is not None and self.count <= 0:
            return True
        return self.duration_ms is not None and now_ms >= self.created_ms + self.duration_ms

    def left_ms(self, now_ms: int) -> int | None:
        """How long a fault bounded by `duration_ms` lasts from `now_ms`; None if unbounded
        in time."""
        if self.duration_ms is None:
            return None
        return max(self.created_ms + self.duration_ms - now_ms, 0)

    def matches(
        self,
        method: str,
        path: str,
        symbol: str | None,
        params: Mapping[str, Any] | None = None,
    ) -> bool:
        pattern = self.endpoint
        target = f"{method} {path}" if " " in pattern else path
        if not fnmatch.fnmatchcase(target, pattern):
            return False
        if self.param is not None:
            wanted = not self.param.startswith("!")
            if (self.param.lstrip("!") in (params or {})) is not wanted:
                return False
        return self.symbol is None or self.symbol == symbol

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FaultInjector:
    """Holds the active rules; consulted by the REST layer for every request."""

    def __init__(self, seed: int = 0) -> None:
        self.rules: list[FaultRule] = []
        self._next_id = 1
        self._rng = random.Random(seed)

    def add(self, rule: FaultRule) -> FaultRule:
        rule.id = self._next_id
        self._next_id += 1
        self.rules.append(rule)
        return rule

    def remove(self, rule_id: int) -> bool:
        before = len(self.rules)
        self.rules = [r for r in self.rules if r.id != rule_id]
        return len(self.rules) != before

    def clear(self) -> None:
        self.rules.clear()

    def take(
        self,
        method: str,
        path: str,
        symbol: str | None,
        kinds: tuple[str, ...],
        params: Mapping[str, Any] | None = None,
    ) -> list[FaultRule]:
        """Rules of ``kinds`` that apply to this request (its ``params`` for rules with a
        ``param``); consumes one ``count`` each."""
        if not self.rules:
            return []
        now = wall_ms()
        self.rules = [r for r in self.rules if not r.expired(now)]
        out = []
        for rule in self.rules:
            if rule.kind not in kinds or not rule.matches(method, path, symbol, params):
                continue
            if rule.probability < 1.0 and self._rng.random() >= rule.probability:  # float ok
                continue
            if rule.count is not None:
                rule.count -= 1
            rule.hits += 1
            out.append(rule)
        return out
