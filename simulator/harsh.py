"""The harsh market: switches that make the paper exchange behave like a real one
under stress. Every switch is off by default, so a calm market stays exactly as
it was; :func:`harsh_preset` turns everything on (the chaos suite's market).

What each switch copies from the real venues is described in docs/simulator.md
("Harsh market"). In short:

* ``price_series``: separate last, index and mark prices. A price set through
  ``set_price`` (admin API, price path) is the *last* (traded) price; the index
  follows it with a lag (``index_follow``) and the mark is the index plus a
  premium (``basis_bps``), so mark and index part from last in a fast move (the
  basis widens in stress) and a wick in last barely moves them. The book's
  spread widens with the size of the latest moves (``spread_bps``,
  ``stress_spread``). Stops trigger on their own price (Binance ``workingType``,
  Bybit ``triggerBy``).
* ``price_protect``: Binance ``priceProtect=TRUE`` stops do not trigger while
  mark and last differ by more than the symbol's ``triggerProtect``.
* ``depth_slippage``: market fills walk a simple book: best bid/ask around last,
  plus an impact growing with the order's notional, plus (for a triggered stop)
  a share of how far the price gapped past the trigger.
* ``liquidation``: isolated and cross liquidation at the maintenance margin, with
  Binance's ``autoclose-`` order / Bybit's ``BustTrade``; the margin is lost.
* ``funding``: funding every ``funding_interval_ms`` (8 h) on open positions.
* ``algo_lifecycle``: Binance conditional orders pass through TRIGGERING (for
  ``triggering_ms``) before TRIGGERED, and close-position stops whose position
  closed become EXPIRED (not CANCELED).
* ``listen_key_expiry`` / ``stream_cut_ms``: listen keys expire on the simulated
  clock (``listenKeyExpired`` event), and every stream is cut after
  ``stream_cut_ms`` of simulated time (Binance and Bybit cut at 24 h).

All amounts are Decimal.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from decimal import Decimal
from typing import Any

from simulator.markets import Market

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
FUNDING_INTERVAL_MS = 8 * HOUR_MS
BPS = Decimal(10000)


def maint_margin_ratio(m: Market) -> Decimal:
    """Maintenance margin ratio of the first bracket (what leverageBracket reports)."""
    return Decimal("0.004") if m.symbol in ("BTCUSDT", "ETHUSDT") else Decimal("0.01")


@dataclass(slots=True)
class HarshConfig:
    """Switches of the harsh market; see the module docstring and docs/simulator.md."""

    # 1. separate last / index / mark
    price_series: bool = False
    index_follow: Decimal = Decimal("0.5")  # share of the last-index gap closed per update
    basis_bps: Decimal = Decimal("5")  # mark premium over the index
    spread_bps: Decimal = Decimal("2")  # calm bid-ask spread around last
    stress_spread: Decimal = Decimal("0.2")  # extra half-spread (bps) per bp of stress
    stress_decay: Decimal = Decimal("0.5")  # stress kept per update (the rest fades)
    price_protect: bool = False
    trigger_protect: Decimal = Decimal("0.05")  # exchangeInfo triggerProtect
    # 2. gaps and slippage
    depth_slippage: bool = False
    depth_usdt_per_bps: Decimal = Decimal("100000")  # book notional per bp of impact
    gap_slippage: Decimal = Decimal("0.1")  # share of the gap past the trigger added
    # 3. liquidation
    liquidation: bool = False
    # 4. funding
    funding: bool = False
    funding_rate: Decimal = Decimal("0.0001")
    funding_interval_ms: int = FUNDING_INTERVAL_MS
    # 5. Binance algo order lifecycle
    algo_lifecycle: bool = False
    triggering_ms: int = 0
    # 6. streams
    listen_key_expiry: bool = False
    listen_key_ttl_ms: int = HOUR_MS
    stream_cut_ms: int = 0  # 0: never; Binance/Bybit: 24 h

    @property
    def any_on(self) -> bool:
        return (
            self.price_series
            or self.price_protect
            or self.depth_slippage
            or self.liquidation
            or self.funding
            or self.algo_lifecycle
            or self.listen_key_expiry
            or self.stream_cut_ms > 0
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = str(v) if isinstance(v, Decimal) else v
        return out

    def update(self, **changes: Any) -> None:
        """Set fields from JSON-ish values (strings/numbers parsed into Decimal,
        ``"true"``/``"false"`` into bool). Unknown names raise ValueError."""
        names = {f.name for f in fields(self)}
        for k, v in changes.items():
            if k not in names:
                raise ValueError(f"unknown harsh field {k!r}")
            current = getattr(self, k)
            if isinstance(current, bool):
                if isinstance(v, str):
                    v = v.strip().lower() in ("1", "true", "yes", "on")
                setattr(self, k, bool(v))
            elif isinstance(current, int):
                setattr(self, k, int(v))
            else:
                setattr(self, k, Decimal(str(v)))


def harsh_preset(**overrides: Any) -> HarshConfig:
    """Everything on, with the real venues' figures (24 h stream cut, 1 h listen key,
    8 h funding at 0.01%, 5% triggerProtect); ``overrides`` change single fields."""
    cfg = HarshConfig(
        price_series=True,
        price_protect=True,
        depth_slippage=True,
        liquidation=True,
        funding=True,
        algo_lifecycle=True,
        listen_key_expiry=True,
        stream_cut_ms=DAY_MS,
    )
    cfg.update(**overrides)
    return cfg


PRESETS = ("calm", "harsh")


def preset(name: str, **overrides: Any) -> HarshConfig:
    """``"calm"`` (everything off) or ``"harsh"`` (everything on)."""
    if name == "calm":
        cfg = HarshConfig()
        cfg.update(**overrides)
        return cfg
    if name == "harsh":
        return harsh_preset(**overrides)
    raise ValueError(f"unknown preset {name!r}; expected one of {PRESETS}")


def copy(cfg: HarshConfig) -> HarshConfig:
    return replace(cfg)
