"""Shared trading vocabulary: sides, exchanges, severities.

Everything in `domain/` is pure: no I/O, no clock, no randomness. Prices and
quantities are always `Decimal`.
"""

from __future__ import annotations

from enum import StrEnum


class Side(StrEnum):
    """Direction of a position."""

    LONG = "long"
    SHORT = "short"

    @property
    def entry_order_side(self) -> OrderSide:
        """The order side that opens this position (buy for long)."""
        return OrderSide.BUY if self is Side.LONG else OrderSide.SELL

    @property
    def exit_order_side(self) -> OrderSide:
        """The order side that reduces or closes this position (sell for long)."""
        return OrderSide.SELL if self is Side.LONG else OrderSide.BUY

    @property
    def sign(self) -> int:
        """+1 for long, -1 for short: PnL = sign * (exit - entry) * qty."""
        return 1 if self is Side.LONG else -1


class OrderSide(StrEnum):
    """Side of a single order as the exchange sees it."""

    BUY = "buy"
    SELL = "sell"


class ExchangeId(StrEnum):
    """Exchanges posguard trades on; values are ccxt class names."""

    BINANCE_USDM = "binanceusdm"
    BYBIT = "bybit"


class Severity(StrEnum):
    """Severity of a recorded event; CRITICAL means a human must look now."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"
