"""Market definitions (symbols and their filters) for the simulated USD-M venue."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

ORDER_TYPES: tuple[str, ...] = (
    "LIMIT",
    "MARKET",
    "STOP",
    "STOP_MARKET",
    "TAKE_PROFIT",
    "TAKE_PROFIT_MARKET",
    "TRAILING_STOP_MARKET",
)


@dataclass(frozen=True, slots=True)
class Market:
    """A linear USDT-margined perpetual with Binance's filters.

    Contract: every price the engine produces for this market is a multiple of
    ``tick_size`` and every quantity a multiple of ``step_size``.
    """

    symbol: str
    base: str
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    min_notional: Decimal
    initial_price: Decimal
    quote: str = "USDT"
    max_leverage: int = 125
    order_types: tuple[str, ...] = field(default=ORDER_TYPES)

    @property
    def price_precision(self) -> int:
        return max(0, -self.tick_size.normalize().as_tuple().exponent)  # type: ignore[operator]

    @property
    def qty_precision(self) -> int:
        return max(0, -self.step_size.normalize().as_tuple().exponent)  # type: ignore[operator]

    def round_price(self, price: Decimal) -> Decimal:
        """Nearest multiple of tick_size (half-even), never below one tick."""
        ticks = (price / self.tick_size).to_integral_value()
        if ticks < 1:
            ticks = Decimal(1)
        return (ticks * self.tick_size).quantize(self.tick_size)

    def floor_qty(self, qty: Decimal) -> Decimal:
        """Largest multiple of step_size <= qty."""
        steps = (qty / self.step_size).to_integral_value(rounding="ROUND_FLOOR")
        return (steps * self.step_size).quantize(self.step_size)

    def is_tick_multiple(self, price: Decimal) -> bool:
        return price % self.tick_size == 0

    def is_step_multiple(self, qty: Decimal) -> bool:
        return qty % self.step_size == 0


def _m(
    symbol: str, tick: str, step: str, min_notional: str, price: str, max_qty: str = "1000000"
) -> Market:
    return Market(
        symbol=symbol,
        base=symbol.removesuffix("USDT"),
        tick_size=Decimal(tick),
        step_size=Decimal(step),
        min_qty=Decimal(step),
        max_qty=Decimal(max_qty),
        min_notional=Decimal(min_notional),
        initial_price=Decimal(price),
    )


DEFAULT_MARKETS: tuple[Market, ...] = (
    _m("BTCUSDT", "0.10", "0.001", "100", "95000.00", "1000"),
    _m("ETHUSDT", "0.01", "0.001", "20", "3500.00", "10000"),
    _m("SOLUSDT", "0.010", "0.01", "5", "200.000"),
    _m("BNBUSDT", "0.010", "0.01", "5", "600.000"),
    _m("XRPUSDT", "0.0001", "0.1", "5", "2.5000", "10000000"),
    _m("DOGEUSDT", "0.00001", "1", "5", "0.35000", "50000000"),
)


def generic_market(symbol: str, price: Decimal = Decimal("1.0000")) -> Market:
    """A market for an extra symbol with middle-of-the-road filters."""
    symbol = symbol.upper()
    if not symbol.endswith("USDT"):
        symbol += "USDT"
    return _m(symbol, "0.0001", "0.1", "5", str(price))


def build_markets(extra: list[str] | None = None) -> dict[str, Market]:
    """Default markets plus ``extra`` symbols (e.g. ``["ADAUSDT"]``), keyed by id."""
    markets = {m.symbol: m for m in DEFAULT_MARKETS}
    for sym in extra or []:
        s = sym.upper().replace("/", "").split(":")[0]
        if not s.endswith("USDT"):
            s += "USDT"
        if s not in markets:
            markets[s] = generic_market(s)
    return markets
