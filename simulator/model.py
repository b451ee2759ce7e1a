"""Plain data records of the matching engine: orders, algo orders, fills, positions.

These are mutable dataclasses owned by :class:`simulator.engine.Engine`; callers
outside the engine must treat them as read-only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

ZERO = Decimal(0)

OPEN_ORDER_STATUSES = frozenset({"NEW", "PARTIALLY_FILLED"})


@dataclass(slots=True)
class Order:
    """A matching-engine order (MARKET or LIMIT), Binance field semantics."""

    order_id: int
    client_order_id: str
    symbol: str
    side: str  # "BUY" | "SELL"
    type: str  # "MARKET" | "LIMIT"
    orig_type: str  # type as placed; STOP_MARKET etc. when created by an algo order
    orig_qty: Decimal
    price: Decimal
    stop_price: Decimal
    reduce_only: bool
    close_position: bool
    time_in_force: str
    working_type: str
    time: int
    update_time: int
    source: str  # "api" | "algo" | "manual"
    status: str = "NEW"
    executed_qty: Decimal = ZERO
    cum_quote: Decimal = ZERO
    algo_id: int | None = None
    fill_ids: list[int] = field(default_factory=list)
    position_side: str = "BOTH"  # "BOTH" (one-way) | "LONG" | "SHORT" (hedge mode)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_ORDER_STATUSES

    @property
    def avg_price(self) -> Decimal:
        if self.executed_qty == 0:
            return ZERO
        return self.cum_quote / self.executed_qty


@dataclass(slots=True)
class AlgoOrder:
    """A conditional (algo) order as served by ``/fapi/v1/algoOrder``."""

    algo_id: int
    client_algo_id: str
    symbol: str
    side: str
    order_type: str  # "STOP_MARKET" | "TAKE_PROFIT_MARKET"
    quantity: Decimal | None  # None with closePosition
    trigger_price: Decimal
    reduce_only: bool
    close_position: bool
    working_type: str  # "MARK_PRICE" | "CONTRACT_PRICE"
    price_protect: bool
    create_time: int
    update_time: int
    source: str
    algo_status: str = "NEW"  # NEW, TRIGGERED, FINISHED, CANCELED, EXPIRED, REJECTED
    actual_order_id: int | None = None
    trigger_time: int = 0
    fail_reason: str = ""
    position_side: str = "BOTH"

    @property
    def is_open(self) -> bool:
        return self.algo_status == "NEW"

    @property
    def rises(self) -> bool:
        """True when the order fires on a price rise (buy stop, sell take-profit)."""
        return (self.side == "BUY") == (self.order_type in ("STOP_MARKET", "STOP"))


@dataclass(slots=True)
class Fill:
    """One execution (a Binance user trade)."""

    trade_id: int
    order_id: int
    symbol: str
    side: str
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    commission: Decimal
    realized_pnl: Decimal
    maker: bool
    time: int
    commission_asset: str = "USDT"
    position_side: str = "BOTH"


@dataclass(slots=True)
class Position:
    """A position of a symbol on one position side. ``amt`` is signed: > 0 long, < 0
    short. One-way mode uses the BOTH position; hedge mode a LONG (``amt >= 0``) and a
    SHORT (``amt <= 0``) one."""

    symbol: str
    amt: Decimal = ZERO
    entry_price: Decimal = ZERO
    realized_pnl: Decimal = ZERO  # cumulative, for ground truth
    leverage: int = 20
    margin_type: str = "CROSSED"  # "CROSSED" | "ISOLATED"
    update_time: int = 0
    position_side: str = "BOTH"


@dataclass(slots=True)
class Episode:
    """Ground-truth life of one position, from non-zero to zero (or a flip).

    ``unprotected_ms`` counts time with the position open and no open
    reduce-only/closePosition stop on the exit side.
    """

    episode_id: int
    symbol: str
    side: str  # "long" | "short"
    opened_ms: int
    closed_ms: int | None = None
    max_abs_qty: Decimal = ZERO
    unprotected_ms: int = 0
    unprotected_since: int | None = None
    # most protective stops open at once on the exit side during the episode
    max_stops: int = 0
    position_side: str = "BOTH"  # LONG/SHORT: an episode of one side in hedge mode

    def unprotected_at(self, now_ms: int) -> int:
        """Unprotected time up to ``now_ms`` (includes the running interval)."""
        if self.unprotected_since is None:
            return self.unprotected_ms
        end = self.closed_ms if self.closed_ms is not None else now_ms
        return self.unprotected_ms + max(0, end - self.unprotected_since)


@dataclass(slots=True)
class Income:
    """A balance change that is not a trade (harsh market): a funding payment
    (``FUNDING_FEE``) or the margin a liquidation takes (``INSURANCE_CLEAR``).
    ``amount`` is signed: negative is paid by the account."""

    income_id: int
    symbol: str
    income_type: str  # "FUNDING_FEE" | "INSURANCE_CLEAR"
    amount: Decimal
    time: int
    rate: Decimal = ZERO  # funding rate
    mark: Decimal = ZERO  # mark price used
    qty: Decimal = ZERO  # signed position amount at funding time
    position_side: str = "BOTH"


@dataclass(frozen=True, slots=True)
class FundingSettlement:
    """One funding settlement (harsh market): every symbol settled at ``time`` at the
    funding ``rate`` (one rate for all symbols), ``marks`` each symbol's mark price
    then. The market's funding-rate history (Binance ``GET /fapi/v1/fundingRate``,
    Bybit ``GET /v5/market/funding/history``), kept whether or not a position paid."""

    time: int
    rate: Decimal
    marks: dict[str, Decimal]
