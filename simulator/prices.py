"""Price sources: CSV replay and seeded synthetic paths.

A price source answers :meth:`PriceSource.updates_until` with the price
updates that became due ``elapsed_ms`` after the source started. The server
calls it from its tick loop; tests call it directly. Output prices are
``Decimal`` multiples of each market's tick size.

A price set through the admin API is pinned: the server drops the source's
updates of that symbol (or of every symbol while the walk is paused) until it
is released, then :func:`rebase` makes a synthetic path go on from the price
the symbol was left at instead of jumping back to where its own walk had got.
"""

from __future__ import annotations

import csv
import math
import random
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Protocol

from simulator.markets import Market

SCENARIOS = ("random_walk", "jumps", "flash_crash", "slow_grind", "flat", "wicks")


class PriceSource(Protocol):
    """Produces ``(symbol, price)`` updates as simulated time passes."""

    def updates_until(self, elapsed_ms: int) -> list[tuple[str, Decimal]]: ...


@dataclass(frozen=True, slots=True)
class PathParams:
    """Parameters of a synthetic path; per-step fractions (not annualised)."""

    drift: float = 0.0  # float ok: model parameter, converted to Decimal per step
    volatility: float = 0.0005  # float ok
    jump_probability: float = 0.002  # float ok
    jump_size: float = 0.02  # float ok
    crash_at_step: int = 30
    crash_depth: float = 0.15  # float ok
    crash_steps: int = 5
    recovery_steps: int = 60
    grind: float = -0.0002  # float ok: per-step relative move of the slow grind
    # "wicks": a random walk with gaps (jump_probability/jump_size, the walk goes on
    # from there) and wicks (one step out by wick_size, back the next step)
    wick_probability: float = 0.01  # float ok
    wick_size: float = 0.03  # float ok


class SyntheticPath:
    """Seeded synthetic prices, one step every ``step_ms`` for every market.

    Contract: the same markets, seed, scenario and params give the same
    sequence of updates; each symbol uses its own ``random.Random``.
    """

    def __init__(
        self,
        markets: dict[str, Market],
        seed: int = 0,
        scenario: str = "random_walk",
        step_ms: int = 1000,
        params: PathParams | None = None,
        start_prices: dict[str, Decimal] | None = None,
    ) -> None:
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {scenario!r}; expected one of {SCENARIOS}")
        if step_ms <= 0:
            raise ValueError("step_ms must be positive")
        self.markets = markets
        self.scenario = scenario
        self.step_ms = step_ms
        self.params = params or PathParams()
        self._rngs = {s: random.Random(f"{seed}:{s}") for s in markets}
        self._price = {s: (start_prices or {}).get(s, m.initial_price) for s, m in markets.items()}
        self._anchor = dict(self._price)
        self._wick_back: dict[str, Decimal] = {}  # "wicks": where a wick returns to
        self._step = 0

    def _factor(self, symbol: str) -> float:  # float ok: relative move, rounded below
        p = self.params
        rng = self._rngs[symbol]
        z = rng.gauss(0.0, 1.0)
        move = p.drift + p.volatility * z
        if self.scenario in ("jumps", "wicks") and rng.random() < p.jump_probability:
            move += p.jump_size if rng.random() < 0.5 else -p.jump_size
        elif self.scenario == "slow_grind":
            move = p.grind + p.volatility * 0.2 * z
        elif self.scenario == "flat":
            move = 0.0
        elif self.scenario == "flash_crash":
            s = self._step
            start, mid = p.crash_at_step, p.crash_at_step + p.crash_steps
            if start <= s < mid:
                move = -(1 - (1 - p.crash_depth) ** (1 / p.crash_steps))
            elif mid <= s < mid + p.recovery_steps:
                move = (1 / (1 - p.crash_depth)) ** (1 / p.recovery_steps) - 1 + p.volatility * z
        return math.exp(move) if self.scenario != "flash_crash" else 1 + move

    def step(self) -> list[tuple[str, Decimal]]:
        """Advance every symbol by one step and return the new prices."""
        out = []
        for symbol, m in self.markets.items():
            if self.scenario == "wicks" and symbol in self._wick_back:
                price = self._wick_back.pop(symbol)  # the wick's way back
                self._price[symbol] = price
                out.append((symbol, price))
                continue
            if (
                self.scenario == "wicks"
                and self._rngs[symbol].random() < self.params.wick_probability
            ):
                rng = self._rngs[symbol]
                size = self.params.wick_size * (1 if rng.random() < 0.5 else -1)  # float ok
                self._wick_back[symbol] = self._price[symbol]
                factor = Decimal(repr(round(1 + size, 12)))  # float ok: -> Decimal
                price = m.round_price(self._price[symbol] * factor)
                out.append((symbol, price))  # _price stays: the walk goes on from before
                continue
            factor = Decimal(repr(round(self._factor(symbol), 12)))  # float ok: -> Decimal
            price = m.round_price(self._price[symbol] * factor)
            self._price[symbol] = price
            out.append((symbol, price))
        self._step += 1
        return out

    def updates_until(self, elapsed_ms: int) -> list[tuple[str, Decimal]]:
        out: list[tuple[str, Decimal]] = []
        while (self._step + 1) * self.step_ms <= elapsed_ms:
            out.extend(self.step())
        return out

    def rebase(self, symbol: str, price: Decimal) -> None:
        """Go on from ``price`` for ``symbol`` (after a pinned price is released)."""
        if symbol in self._price:
            self._price[symbol] = self.markets[symbol].round_price(price)
            self._wick_back.pop(symbol, None)


class CsvReplay:
    """Replays ``timestamp,symbol,price`` rows at ``speed`` x real time.

    Timestamps are epoch ms; the first row's timestamp is time zero. A header
    row is allowed. Prices are parsed straight into Decimal and rounded to tick
    when the symbol is a known market; unknown symbols are skipped.
    """

    def __init__(
        self,
        path: str | Path,
        markets: dict[str, Market],
        speed: float = 1.0,  # float ok: replay speed factor, not money
    ) -> None:
        if speed <= 0:  # float ok
            raise ValueError("speed must be positive")
        self.markets = markets
        self.speed = speed
        rows: list[tuple[int, str, Decimal]] = []
        with open(path, newline="") as fh:
            for row in csv.reader(fh):
                if not row or not row[0].strip().lstrip("-").isdigit():
                    continue  # header or blank
                ts, sym, price = int(row[0]), row[1].strip().upper(), Decimal(row[2].strip())
                m = markets.get(sym)
                if m is None:
                    continue
                rows.append((ts, sym, m.round_price(price)))
        rows.sort(key=lambda r: r[0])
        self._rows = rows
        self._t0 = rows[0][0] if rows else 0
        self._i = 0

    @property
    def exhausted(self) -> bool:
        return self._i >= len(self._rows)

    def updates_until(self, elapsed_ms: int) -> list[tuple[str, Decimal]]:
        horizon = self._t0 + int(elapsed_ms * self.speed)  # float ok: time, not money
        out = []
        while self._i < len(self._rows) and self._rows[self._i][0] <= horizon:
            _, sym, price = self._rows[self._i]
            out.append((sym, price))
            self._i += 1
        return out


def rebase(source: PriceSource | None, symbol: str, price: Decimal) -> None:
    """Make ``source`` go on from ``price`` for ``symbol``, when it can: a synthetic
    path does; a CSV replay goes on with its recorded rows."""
    again = getattr(source, "rebase", None)
    if again is not None:
        again(symbol, price)


def make_source(
    spec: str | None, markets: dict[str, Market], seed: int, step_ms: int
) -> PriceSource | None:
    """Build a source from a CLI spec: ``None``/"none", a scenario name, or
    ``csv:PATH[@SPEED]`` (also any path ending in .csv)."""
    if spec is None or spec == "none":
        return None
    if spec.startswith("csv:") or spec.endswith(".csv"):
        body = spec.removeprefix("csv:")
        speed = 1.0  # float ok
        if "@" in body:
            body, s = body.rsplit("@", 1)
            speed = float(s)  # float ok
        return CsvReplay(body, markets, speed)
    return SyntheticPath(markets, seed=seed, scenario=spec, step_ms=step_ms)
