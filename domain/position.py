"""The position: its state machine, what to open, and the state a workflow persists.

`PositionSnapshot` is the whole durable state of a `PositionWorkflow`: it is
carried across continue-as-new as is. Its methods are pure and return a new
snapshot; timestamps are passed in by the caller (``workflow.now()``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from domain.market import Amount, Price, Quantity
from domain.orders import Fill, OrderRef
from domain.sizing import SizingRequest, StopRule, TakeProfitRule
from domain.symbols import canonical
from domain.trailing import TrailingRule
from domain.types import ExchangeId, Side

# --- state machine -------------------------------------------------------------


class PositionState(StrEnum):
    """Lifecycle state of one position (also the `PositionState` search attribute)."""

    PENDING_ENTRY = "pending_entry"
    ENTRY_PLACED = "entry_placed"
    PENDING_SL = "pending_sl"
    ACTIVE = "active"
    CLOSING = "closing"
    CLOSED = "closed"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"  # needs intervention; still protected by an emergency stop


_S = PositionState
ALLOWED_TRANSITIONS: Mapping[PositionState, frozenset[PositionState]] = MappingProxyType(
    {
        # entry refused or never filled → rolled_back; outcome unresolvable → failed
        _S.PENDING_ENTRY: frozenset({_S.ENTRY_PLACED, _S.ROLLED_BACK, _S.FAILED}),
        _S.ENTRY_PLACED: frozenset({_S.PENDING_SL, _S.ROLLED_BACK, _S.FAILED}),
        # stop placed → active; stop impossible → closing (close at market);
        # even the emergency stop path exhausted or taken → failed
        # ... and an adoption that finds nothing to adopt (the position went before
        # its workflow read it) or is cancelled before it adopted → rolled_back
        _S.PENDING_SL: frozenset({_S.ACTIVE, _S.CLOSING, _S.FAILED, _S.ROLLED_BACK}),
        # stop found missing or qty changed → pending_sl (re-protect); a position
        # already gone on the exchange (stop filled, liquidation) → closed
        _S.ACTIVE: frozenset({_S.PENDING_SL, _S.CLOSING, _S.CLOSED, _S.FAILED}),
        # a close after a failed stop is a rollback; otherwise closed
        _S.CLOSING: frozenset({_S.CLOSED, _S.ROLLED_BACK, _S.FAILED}),
        # the real stop finally placed, or the position closed
        _S.FAILED: frozenset({_S.ACTIVE, _S.CLOSING, _S.CLOSED}),
        _S.CLOSED: frozenset(),
        _S.ROLLED_BACK: frozenset(),
    }
)

_TERMINAL = frozenset({_S.CLOSED, _S.ROLLED_BACK})
# pending_entry is not here: an ambiguous entry placement is resolved by a
# client-id lookup before the workflow leaves pending_entry.
_OPEN_ON_EXCHANGE = frozenset({_S.ENTRY_PLACED, _S.PENDING_SL, _S.ACTIVE, _S.CLOSING, _S.FAILED})


class IllegalTransition(ValueError):
    """A state change the position state machine does not allow."""

    def __init__(self, from_state: PositionState, to_state: PositionState) -> None:
        super().__init__(f"illegal position transition {from_state} -> {to_state}")
        self.from_state = from_state
        self.to_state = to_state


def transition(state: PositionState, to: PositionState) -> PositionState:
    """`to` if `state -> to` is allowed, else raise IllegalTransition (self-moves too)."""
    if to not in ALLOWED_TRANSITIONS[state]:
        raise IllegalTransition(state, to)
    return to


def is_terminal(state: PositionState) -> bool:
    """True when the position's lifecycle is over (the workflow may complete)."""
    return state in _TERMINAL


def is_open_on_exchange(state: PositionState) -> bool:
    """True when the exchange holds, or may hold, quantity this position owns."""
    return state in _OPEN_ON_EXCHANGE


def initial_state(adopt: bool) -> PositionState:
    """Where a new workflow starts: an adopted position must be protected first."""
    return _S.PENDING_SL if adopt else _S.PENDING_ENTRY


class CloseReason(StrEnum):
    """Why a position ended."""

    STOP_FILLED = "stop_filled"
    EMERGENCY_STOP_FILLED = "emergency_stop_filled"
    TAKE_PROFIT = "take_profit"
    OPERATOR = "operator"
    EXTERNAL = "external"  # closed outside posguard
    LIQUIDATION = "liquidation"
    MAX_AGE = "max_age"
    STOP_UNPLACEABLE = "stop_unplaceable"  # rollback: the stop could not be placed
    STOP_BEYOND_MARK = "stop_beyond_mark"  # first stop would trigger at once (-2021)
    ENTRY_NOT_FILLED = "entry_not_filled"
    UNSIZABLE = "unsizable"
    # the exchange refused to open it before any order existed (unknown symbol,
    # no permission, or unreachable for the whole opening phase)
    REJECTED = "rejected"


# --- what to open --------------------------------------------------------------

Percent = Annotated[Price, Field(lt=100)]


class PositionSpec(BaseModel):
    """What to open (or adopt) and how to protect it; the workflow's fixed input.

    `emergency_stop_percent` is the wider distance, measured from the reference
    price at the time, used when the normal stop cannot be placed. In adopt mode
    there is no sizing: the quantity is what the exchange holds.
    """

    model_config = ConfigDict(frozen=True)

    account: str = Field(min_length=1)
    exchange: ExchangeId
    symbol: str
    side: Side
    sizing: SizingRequest | None = None
    stop: StopRule
    emergency_stop_percent: Percent
    take_profit: TakeProfitRule | None = None
    trailing: TrailingRule | None = None
    max_age: timedelta | None = Field(default=None, gt=timedelta(0))
    adopt: bool = False
    signal_id: str | None = None
    # The account trades in hedge mode: this position is one side of its symbol,
    # and its workflow id names the side (`spec_workflow_id`).
    hedge_mode: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> PositionSpec:
        if self.symbol != canonical(self.symbol):
            raise ValueError(f"symbol must be canonical ({canonical(self.symbol)!r})")
        if (self.sizing is None) != self.adopt:
            raise ValueError("sizing is required to open, and meaningless when adopting")
        if self.stop.percent is not None and self.emergency_stop_percent <= self.stop.percent:
            raise ValueError("the emergency stop must be wider than the stop")
        return self


def position_workflow_id(
    account: str, exchange: ExchangeId | str, symbol: str, hedge_side: Side | None = None
) -> str:
    """The one workflow id per position slot of an account.

    One-way mode (`hedge_side` None): one position per (account, exchange, symbol),
    `position/{account}/{exchange}/{symbol}`. Hedge mode: a long and a short may be
    held on one symbol, each its own workflow, `.../{symbol}/long` and `.../short`.
    Starting a second open workflow with an id is refused by Temporal, so two live
    positions on one slot are impossible by construction. Client order ids hash it
    (domain.client_ids), so the reconciler can tell whose an order is.
    """
    base = f"position/{account}/{ExchangeId(exchange).value}/{symbol}"
    return base if hedge_side is None else f"{base}/{hedge_side.value}"


def spec_workflow_id(spec: PositionSpec) -> str:
    """The workflow id of the position `spec` opens or adopts (`position_workflow_id`,
    with its side on a hedge-mode account)."""
    hedge_side = spec.side if spec.hedge_mode else None
    return position_workflow_id(spec.account, spec.exchange, spec.symbol, hedge_side)


class PositionKey(BaseModel):
    """The parts of a position workflow id (see `position_workflow_id`);
    `hedge_side` is set for a hedge-mode position only."""

    model_config = ConfigDict(frozen=True)

    account: str
    exchange: str
    symbol: str
    hedge_side: Side | None = None


def parse_position_workflow_id(workflow_id: str) -> PositionKey | None:
    """`position/<account>/<exchange>/<symbol>[/long|/short]` → its parts; None for any
    other id."""
    parts = workflow_id.split("/")
    if parts[0] != "position" or len(parts) not in (4, 5):
        return None
    hedge_side = None
    if len(parts) == 5:
        if parts[4] not in (Side.LONG.value, Side.SHORT.value):
            return None
        hedge_side = Side(parts[4])
    return PositionKey(account=parts[1], exchange=parts[2], symbol=parts[3], hedge_side=hedge_side)


def book_key(symbol: str, hedge_side: Side | None) -> str:
    """The key of one position slot of an account on the exchange: the symbol in
    one-way mode, ``SYMBOL:long`` / ``SYMBOL:short`` in hedge mode (a side given)."""
    return symbol if hedge_side is None else f"{symbol}:{hedge_side.value}"


# --- pnl -----------------------------------------------------------------------


def realised_pnl(
    side: Side, entry: Decimal, exit: Decimal, qty: Decimal, contract_size: Decimal = Decimal(1)
) -> Decimal:
    """Gross PnL in quote of closing `qty` contracts: sign * (exit - entry) * qty * size."""
    return side.sign * (exit - entry) * qty * contract_size


def average_price(fills: Iterable[Fill]) -> Decimal:
    """Quantity-weighted average price of `fills`; ValueError when there are none."""
    qty = Decimal(0)
    value = Decimal(0)
    for fill in fills:
        qty += fill.qty
        value += fill.qty * fill.price
    if qty == 0:
        raise ValueError("no fills to average")
    return value / qty


def total_fees(fills: Iterable[Fill]) -> Decimal:
    """Sum of the (quote-currency) fees of `fills`."""
    return sum((fill.fee for fill in fills), Decimal(0))


# --- persisted state -------------------------------------------------------------


class PositionSnapshot(BaseModel):
    """Everything a PositionWorkflow must remember, across continue-as-new.

    `qty` is the quantity currently held; `entered_qty`/`exited_qty` accumulate
    fills and `entry_value`/`exit_value` their exact sum of qty * price, from which
    the average prices are derived (never re-averaged, so no rounding compounds).
    `order_seq` feeds client order ids and `event_seq` event ids: each is
    allocated once and never reused. `fill_ids` de-duplicates fills reported twice.
    """

    model_config = ConfigDict(frozen=True)

    state: PositionState
    qty: Quantity = Decimal(0)
    entered_qty: Quantity = Decimal(0)
    entry_value: Quantity = Decimal(0)
    avg_entry_price: Price | None = None
    exited_qty: Quantity = Decimal(0)
    exit_value: Quantity = Decimal(0)
    avg_exit_price: Price | None = None
    entry_order: OrderRef | None = None
    stop: OrderRef | None = None
    emergency_stop: OrderRef | None = None
    take_profit: OrderRef | None = None
    realised_pnl: Amount = Decimal(0)
    fees: Amount = Decimal(0)
    # Funding received (+) or paid (-) while the position was held, booked at its close.
    funding: Amount = Decimal(0)
    close_reason: CloseReason | None = None
    order_seq: int = Field(default=0, ge=0)
    event_seq: int = Field(default=0, ge=0)
    highest_price: Price | None = None
    lowest_price: Price | None = None
    fill_ids: tuple[str, ...] = ()
    opened_at: AwareDatetime | None = None
    stop_moved_at: AwareDatetime | None = None
    updated_at: AwareDatetime | None = None
    closed_at: AwareDatetime | None = None

    @property
    def stop_price(self) -> Decimal | None:
        """Trigger price of the live stop, if any."""
        return None if self.stop is None else self.stop.trigger_price

    @property
    def net_pnl(self) -> Decimal:
        """Realised PnL after fees and funding."""
        return self.realised_pnl - self.fees + self.funding

    def advance(self, to: PositionState, at: datetime) -> PositionSnapshot:
        """Snapshot in state `to` (IllegalTransition if not allowed), stamped `at`."""
        new_state = transition(self.state, to)
        update: dict[str, object] = {"state": new_state, "updated_at": at}
        if is_terminal(new_state):
            update["closed_at"] = at
        return self.model_copy(update=update)

    def allocate_order_seq(self) -> tuple[int, PositionSnapshot]:
        """Next order sequence number and the snapshot that has consumed it."""
        return self.order_seq, self.model_copy(update={"order_seq": self.order_seq + 1})

    def allocate_event_seq(self) -> tuple[int, PositionSnapshot]:
        """Next event sequence number and the snapshot that has consumed it."""
        return self.event_seq, self.model_copy(update={"event_seq": self.event_seq + 1})

    def observe_price(self, price: Decimal) -> PositionSnapshot:
        """Snapshot with the highest/lowest price seen extended by `price`."""
        high = price if self.highest_price is None else max(self.highest_price, price)
        low = price if self.lowest_price is None else min(self.lowest_price, price)
        if high == self.highest_price and low == self.lowest_price:
            return self
        return self.model_copy(update={"highest_price": high, "lowest_price": low})

    def _new_fills(self, fills: Iterable[Fill]) -> list[Fill]:
        seen = set(self.fill_ids)
        fresh: list[Fill] = []
        for fill in fills:
            if fill.trade_id not in seen:
                seen.add(fill.trade_id)
                fresh.append(fill)
        return fresh

    def apply_entry_fills(self, fills: Iterable[Fill], at: datetime) -> PositionSnapshot:
        """Snapshot with entry `fills` added: qty, weighted entry price, fees.

        Fills already applied (same trade id) are ignored.
        """
        fresh = self._new_fills(fills)
        if not fresh:
            return self
        added = sum((f.qty for f in fresh), Decimal(0))
        value = self.entry_value + sum((f.qty * f.price for f in fresh), Decimal(0))
        entered = self.entered_qty + added
        return self.model_copy(
            update={
                "qty": self.qty + added,
                "entered_qty": entered,
                "entry_value": value,
                "avg_entry_price": value / entered,
                "fees": self.fees + total_fees(fresh),
                "fill_ids": self.fill_ids + tuple(f.trade_id for f in fresh),
                "opened_at": self.opened_at or at,
                "updated_at": at,
            }
        )

    def apply_exit_fills(
        self,
        side: Side,
        fills: Iterable[Fill],
        at: datetime,
        contract_size: Decimal = Decimal(1),
    ) -> PositionSnapshot:
        """Snapshot with exit `fills` applied: qty down, realised PnL and fees up.

        Raises ValueError if there is no entry price or the fills exceed the held
        quantity (a reduce-only order cannot do that: our records are wrong).
        """
        fresh = self._new_fills(fills)
        if not fresh:
            return self
        if self.avg_entry_price is None:
            raise ValueError("exit fills on a position without an entry price")
        removed = sum((f.qty for f in fresh), Decimal(0))
        if removed > self.qty:
            raise ValueError(f"exit fills {removed} exceed the held quantity {self.qty}")
        entry = self.avg_entry_price
        pnl = sum(
            (realised_pnl(side, entry, f.price, f.qty, contract_size) for f in fresh), Decimal(0)
        )
        value = self.exit_value + sum((f.qty * f.price for f in fresh), Decimal(0))
        exited = self.exited_qty + removed
        return self.model_copy(
            update={
                "qty": self.qty - removed,
                "exited_qty": exited,
                "exit_value": value,
                "avg_exit_price": value / exited,
                "realised_pnl": self.realised_pnl + pnl,
                "fees": self.fees + total_fees(fresh),
                "fill_ids": self.fill_ids + tuple(f.trade_id for f in fresh),
                "updated_at": at,
            }
        )

    def with_funding(self, funding: Decimal) -> PositionSnapshot:
        """Snapshot with the funding received (+) or paid (-) while it was held."""
        return self.model_copy(update={"funding": funding})

    def adopt(self, qty: Decimal, entry_price: Decimal, at: datetime) -> PositionSnapshot:
        """Snapshot of a position found on the exchange: `qty` held at `entry_price`."""
        if self.entered_qty != 0:
            raise ValueError("only a position with no recorded entry can be adopted")
        if qty <= 0 or entry_price <= 0:
            raise ValueError("an adopted position needs a positive qty and entry price")
        return self.model_copy(
            update={
                "qty": qty,
                "entered_qty": qty,
                "entry_value": qty * entry_price,
                "avg_entry_price": entry_price,
                "opened_at": self.opened_at or at,
                "updated_at": at,
            }
        )

    def with_exchange_qty(self, qty: Decimal, at: datetime) -> PositionSnapshot:
        """Snapshot holding `qty` as the exchange reports after a change made outside.

        PnL of quantity removed outside posguard is unknown here and not booked.
        """
        if qty < 0:
            raise ValueError("qty must not be negative")
        return self.model_copy(update={"qty": qty, "updated_at": at})

    def with_stop(self, stop: OrderRef | None, at: datetime) -> PositionSnapshot:
        """Snapshot whose live stop is `stop` (None: no stop), stamped as a stop move."""
        return self.model_copy(update={"stop": stop, "stop_moved_at": at, "updated_at": at})

    def with_entry_order(self, entry: OrderRef) -> PositionSnapshot:
        """Snapshot that remembers `entry` as its entry order (id chosen, or exchange id known)."""
        return self.model_copy(update={"entry_order": entry})

    def with_emergency_stop(self, ref: OrderRef | None) -> PositionSnapshot:
        """Snapshot whose live emergency stop is `ref` (None: none)."""
        return self.model_copy(update={"emergency_stop": ref})

    def with_take_profit(self, ref: OrderRef | None) -> PositionSnapshot:
        """Snapshot whose resting take-profit is `ref` (None: none)."""
        return self.model_copy(update={"take_profit": ref})

    def without_exit_orders(self) -> PositionSnapshot:
        """Snapshot with no stop, emergency stop or take-profit remembered (all final)."""
        return self.model_copy(update={"stop": None, "emergency_stop": None, "take_profit": None})

    def exit_order_gone(self, client_order_id: str) -> PositionSnapshot:
        """Snapshot that forgets whichever exit order has `client_order_id`."""
        update: dict[str, object] = {}
        for field in ("stop", "emergency_stop", "take_profit"):
            ref = getattr(self, field)
            if ref is not None and ref.client_order_id == client_order_id:
                update[field] = None
        return self.model_copy(update=update) if update else self

    @property
    def exit_orders(self) -> tuple[OrderRef, ...]:
        """The live exit orders: stop, emergency stop, take-profit (those that exist)."""
        return tuple(r for r in (self.stop, self.emergency_stop, self.take_profit) if r is not None)

    def with_close_reason(self, reason: CloseReason) -> PositionSnapshot:
        """Snapshot that will be booked as closed for `reason`."""
        return self.model_copy(update={"close_reason": reason})

    def book_fees(self, fills: Iterable[Fill]) -> PositionSnapshot:
        """Snapshot with the fees of `fills` added, each trade at most once.

        For executions whose quantity and price are already booked (an entry booked
        from the order's aggregate fill): only their fees are new.
        """
        fresh = self._new_fills(fills)
        if not fresh:
            return self
        return self.model_copy(
            update={
                "fees": self.fees + total_fees(fresh),
                "fill_ids": self.fill_ids + tuple(f.trade_id for f in fresh),
            }
        )
