"""Position sizing and initial stop levels.

Sizing never rounds a quantity up: the quantity is floored to the step, capped by
the notional cap and max qty, then checked against the exchange filters. The
answer is either `Sized` or `NotSized` with the reason, never an exception for a
market-data reason.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from domain.market import (
    FilterViolation,
    MarketFilters,
    PositiveQuantity,
    Price,
    check_order,
    round_price_down,
    round_price_up,
    round_qty_down,
    stop_price_for,
)
from domain.types import Side

HUNDRED = Decimal(100)


class InvalidStop(ValueError):
    """A stop level that would not limit the loss (wrong side of the entry)."""


class SizingMode(StrEnum):
    """How the quantity is derived."""

    QUOTE = "quote"  # notional in quote currency: qty = amount / price
    RISK = "risk"  # loss at the stop in quote currency: qty = amount / |entry - stop|


class SizingRequest(BaseModel):
    """How big a position to open; `max_notional` caps the result (e.g. margin x leverage)."""

    model_config = ConfigDict(frozen=True)

    mode: SizingMode
    amount: Price
    max_notional: Price | None = None


class LevelRule(BaseModel):
    """A price level given as `percent` from the entry, or as an absolute `price`."""

    model_config = ConfigDict(frozen=True)

    percent: Annotated[Price, Field(lt=100)] | None = None
    price: Price | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> LevelRule:
        if (self.percent is None) == (self.price is None):
            raise ValueError("give exactly one of percent or price")
        return self


class StopRule(LevelRule):
    """Where the protective stop goes, on the losing side of the entry."""


class TakeProfitRule(LevelRule):
    """Where the take-profit goes, on the winning side of the entry."""


class CapReason(StrEnum):
    """Which limit reduced the quantity below the requested size."""

    MAX_NOTIONAL = "max_notional"
    MAX_QTY = "max_qty"


class Sized(BaseModel):
    """A quantity that passes the exchange filters at `price`."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["sized"] = "sized"
    qty: PositiveQuantity
    price: Price
    notional: Price
    capped_by: CapReason | None = None


class NotSized(BaseModel):
    """Why no position can be opened; `qty` is the (rounded) quantity that failed."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["not_sized"] = "not_sized"
    reason: FilterViolation | Literal["zero_stop_distance"]
    qty: Annotated[Decimal, Field(ge=0)]


SizingOutcome = Annotated[Sized | NotSized, Field(discriminator="kind")]


def stop_from_percent(side: Side, entry: Decimal, pct: Decimal) -> Decimal:
    """Raw (unsnapped) stop `pct` percent from `entry` on the losing side.

    Long: entry * (1 - pct/100); short: entry * (1 + pct/100).
    """
    if not 0 < pct < HUNDRED:
        raise InvalidStop(f"stop percent must be within (0, 100), got {pct}")
    return entry * (1 - side.sign * pct / HUNDRED)


def check_stop_side(side: Side, entry: Decimal, stop: Decimal) -> None:
    """Raise InvalidStop unless `stop` lies strictly on the losing side of `entry`."""
    if stop <= 0 or side.sign * (entry - stop) <= 0:
        raise InvalidStop(
            f"a {side} stop must be {'below' if side is Side.LONG else 'above'} "
            f"the entry {entry}, got {stop}"
        )


def stop_level(side: Side, entry: Decimal, rule: StopRule, filters: MarketFilters) -> Decimal:
    """Stop price for `rule` from `entry`, snapped away from the market.

    Raises InvalidStop when the level is not on the losing side of the entry.
    """
    if rule.price is not None:
        raw = rule.price
    elif rule.percent is not None:
        raw = stop_from_percent(side, entry, rule.percent)
    else:  # unreachable: StopRule requires exactly one
        raise InvalidStop("stop rule has neither percent nor price")
    stop = stop_price_for(side, raw, filters)
    check_stop_side(side, entry, stop)
    return stop


def take_profit_level(
    side: Side, entry: Decimal, rule: TakeProfitRule, filters: MarketFilters
) -> Decimal:
    """Take-profit price for `rule` from `entry`, snapped further from the entry.

    Rounding away from the entry means the target is never reached sooner than
    asked. Raises InvalidStop when the level is not on the winning side.
    """
    if rule.price is not None:
        raw = rule.price
    elif rule.percent is not None:
        raw = entry * (1 + side.sign * rule.percent / HUNDRED)
    else:  # unreachable: TakeProfitRule requires exactly one
        raise InvalidStop("take-profit rule has neither percent nor price")
    tick = filters.tick_size
    level = round_price_up(raw, tick) if side is Side.LONG else round_price_down(raw, tick)
    if level <= 0 or side.sign * (level - entry) <= 0:
        raise InvalidStop(
            f"a {side} take-profit must be on the winning side of {entry}, got {level}"
        )
    return level


def notional_cap(margin: Decimal, leverage: Decimal) -> Decimal:
    """Largest notional that `margin` supports at `leverage`."""
    if margin <= 0 or leverage <= 0:
        raise ValueError("margin and leverage must be positive")
    return margin * leverage


def _finish(
    raw_qty: Decimal, price: Decimal, filters: MarketFilters, max_notional: Decimal | None
) -> Sized | NotSized:
    capped_by: CapReason | None = None
    qty = raw_qty
    if max_notional is not None and filters.notional(qty, price) > max_notional:
        qty = max_notional / (price * filters.contract_size)
        capped_by = CapReason.MAX_NOTIONAL
    if filters.max_qty is not None and qty > filters.max_qty:
        qty = filters.max_qty
        capped_by = CapReason.MAX_QTY
    qty = round_qty_down(qty, filters.step_size)
    if qty <= 0:
        # less than one step: too small, whatever min_qty says
        return NotSized(reason=FilterViolation.BELOW_MIN_QTY, qty=Decimal(0))
    violation = check_order(qty, price, filters)
    if violation is not None:
        return NotSized(reason=violation, qty=qty)
    return Sized(qty=qty, price=price, notional=filters.notional(qty, price), capped_by=capped_by)


def size_by_quote(
    quote: Decimal, price: Decimal, filters: MarketFilters, max_notional: Decimal | None = None
) -> Sized | NotSized:
    """Quantity worth `quote` at `price`: quote / (price * contract_size), floored to the step."""
    if quote <= 0 or price <= 0:
        raise ValueError("quote and price must be positive")
    return _finish(quote / (price * filters.contract_size), price, filters, max_notional)


def size_by_risk(
    risk: Decimal,
    entry: Decimal,
    stop: Decimal,
    filters: MarketFilters,
    max_notional: Decimal | None = None,
) -> Sized | NotSized:
    """Quantity that loses about `risk` (never more) if stopped at `stop`.

    qty = risk / (|entry - stop| * contract_size), floored to the step. Fees and
    slippage are not included.
    """
    if risk <= 0 or entry <= 0:
        raise ValueError("risk and entry must be positive")
    distance = abs(entry - stop)
    if distance == 0:
        return NotSized(reason="zero_stop_distance", qty=Decimal(0))
    return _finish(risk / (distance * filters.contract_size), entry, filters, max_notional)


def size_position(
    request: SizingRequest, entry: Decimal, stop: Decimal, filters: MarketFilters
) -> Sized | NotSized:
    """Size per `request` at expected `entry` with the (snapped) `stop`."""
    if request.mode is SizingMode.QUOTE:
        return size_by_quote(request.amount, entry, filters, request.max_notional)
    return size_by_risk(request.amount, entry, stop, filters, request.max_notional)
