"""The whole durable state of one managed position, as one immutable value.

A `PositionWorkflow` keeps exactly one `ManagedPosition` and hands it, as is, to
the next run at continue-as-new: nothing is copied field by field, so nothing can
be forgotten on the way (the way `look_requested` once was). Every change is a
named method returning a new value (nautilus_trader's `Position.apply` style);
workflow code never edits a field by hand.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from domain.market import MarketFilters
from domain.orders import OrderRef
from domain.position import CloseReason, PositionSnapshot, PositionState, initial_state
from domain.trailing import TrailingRule, TrailingState

# Room for this many store writes in one millisecond of workflow time before the
# revisions run ahead of the clock (they stay increasing either way).
REVISIONS_PER_MS = 1000


class ManagedPosition(BaseModel):
    """Snapshot of the position plus everything its workflow must remember.

    - `snapshot`: quantities, prices, live orders, state machine (`PositionSnapshot`).
    - `filters`: the symbol's trading filters, read once before the entry.
    - `stale_orders`: our orders that must be cancelled (a cancel failed, a move
      whose outcome is unknown, an order found under a reused client id).
    - `fills_due`: client ids of our orders that executed but whose fills could not
      be read yet; they are read again until known, and the position does not end
      before they are booked.
    - `close_requested`/`close_requested_by`: an accepted close not yet carried out.
    - `look_requested`: the exchange must be read again (stop, exit orders, position).
    - `runs`, `revision`: continue-as-new count; store rows' monotonic revision.
    - trailing: the rule, the machine's state, and the callback measured from
      volatility with the time of the measurement.
    - `last_error`: why it could not be opened or cannot make progress (for people).
    - `take_profit_retry`: a take-profit that failed transiently, placed again later.
    """

    model_config = ConfigDict(frozen=True)

    snapshot: PositionSnapshot
    filters: MarketFilters | None = None
    stale_orders: tuple[OrderRef, ...] = ()
    fills_due: tuple[str, ...] = ()
    close_requested: CloseReason | None = None
    close_requested_by: str | None = None
    look_requested: bool = False
    runs: int = Field(default=1, ge=1)
    revision: int = Field(default=0, ge=0)
    trailing_rule: TrailingRule | None = None
    trailing: TrailingState | None = None
    measured_callback_pct: Decimal | None = None
    measured_at: AwareDatetime | None = None
    # Why the position could not be opened or cannot make progress, for operators.
    last_error: str | None = None
    # A take-profit whose placement failed transiently: placed again (this client
    # id, looked up first) at the next look.
    take_profit_retry: str | None = None

    @classmethod
    def opening(cls, *, adopt: bool, trailing_rule: TrailingRule | None) -> ManagedPosition:
        """The state of a position about to be opened (or adopted)."""
        return cls(
            snapshot=PositionSnapshot(state=initial_state(adopt)), trailing_rule=trailing_rule
        )

    @property
    def state(self) -> PositionState:
        """The lifecycle state (of the snapshot)."""
        return self.snapshot.state

    # --- snapshot and filters ------------------------------------------------------------

    def with_snapshot(self, snapshot: PositionSnapshot) -> ManagedPosition:
        """The same position with its snapshot advanced (by a `PositionSnapshot` method)."""
        return self if snapshot is self.snapshot else self.model_copy(update={"snapshot": snapshot})

    def with_filters(self, filters: MarketFilters) -> ManagedPosition:
        """The symbol's trading filters are known."""
        return self.model_copy(update={"filters": filters})

    # --- orders to cancel, fills to read ---------------------------------------------------

    def stale_added(self, ref: OrderRef) -> ManagedPosition:
        """`ref` must be cancelled (once; a second report of the same order is ignored)."""
        if any(o.client_order_id == ref.client_order_id for o in self.stale_orders):
            return self
        return self.model_copy(update={"stale_orders": (*self.stale_orders, ref)})

    def stale_done(self, client_order_id: str) -> ManagedPosition:
        """The order with `client_order_id` is final: nothing left to cancel."""
        kept = tuple(o for o in self.stale_orders if o.client_order_id != client_order_id)
        return self.model_copy(update={"stale_orders": kept})

    def fills_unknown(self, client_order_id: str) -> ManagedPosition:
        """The fills of `client_order_id` could not be read: read them again later."""
        if client_order_id in self.fills_due:
            return self
        return self.model_copy(update={"fills_due": (*self.fills_due, client_order_id)})

    def fills_known(self, client_order_id: str) -> ManagedPosition:
        """The fills of `client_order_id` are booked."""
        kept = tuple(c for c in self.fills_due if c != client_order_id)
        return self.model_copy(update={"fills_due": kept})

    def error_noted(self, message: str) -> ManagedPosition:
        """Remember the latest reason the position could not proceed (shown to operators)."""
        return self.model_copy(update={"last_error": message[:500]})

    def take_profit_pending(self, client_order_id: str | None) -> ManagedPosition:
        """The take-profit to place again at the next look (None: nothing pending)."""
        return self.model_copy(update={"take_profit_retry": client_order_id})

    # --- requests ----------------------------------------------------------------------------

    def close_accepted(self, reason: CloseReason, requested_by: str | None) -> ManagedPosition:
        """A close was asked for (operator, max age...): carried out at the next step."""
        return self.model_copy(
            update={"close_requested": reason, "close_requested_by": requested_by}
        )

    def look_wanted(self) -> ManagedPosition:
        """Something may have changed on the exchange: read it again soon."""
        return self if self.look_requested else self.model_copy(update={"look_requested": True})

    def look_taken(self) -> ManagedPosition:
        """A look is starting: later reasons to look ask again."""
        return self.model_copy(update={"look_requested": False}) if self.look_requested else self

    # --- runs and store revisions ---------------------------------------------------------------

    def next_revision(self, now: datetime) -> tuple[int, ManagedPosition]:
        """The revision for the next store write at workflow time `now`, and the state
        that has used it: greater than every earlier one, and time-based (`now`'s Unix
        milliseconds times `REVISIONS_PER_MS`, or the last plus one when that is not
        greater). A run reset to an earlier point of its history writes again from a
        revision the dropped branch had used; every write of the new branch happens
        after the reset, so after every write of the old, and must win over them (the
        rows are upserted only by a revision not older than the stored one)."""
        revision = max(self.revision + 1, int(now.timestamp() * 1000) * REVISIONS_PER_MS)
        return revision, self.model_copy(update={"revision": revision})

    def next_run(self) -> ManagedPosition:
        """The state handed to the next run at continue-as-new."""
        return self.model_copy(update={"runs": self.runs + 1})

    # --- trailing ------------------------------------------------------------------------------

    def with_trailing_rule(self, rule: TrailingRule) -> ManagedPosition:
        """New trailing settings; a measurement made under another volatility rule is dropped."""
        update: dict[str, object] = {"trailing_rule": rule}
        old = self.trailing_rule
        if old is None or old.volatility != rule.volatility:
            update["measured_callback_pct"] = None
            update["measured_at"] = None
        return self.model_copy(update=update)

    def with_trailing(self, trailing: TrailingState | None) -> ManagedPosition:
        """The trailing machine's new state (None: trailing over)."""
        return self.model_copy(update={"trailing": trailing})

    def measurement_started(self, at: datetime) -> ManagedPosition:
        """A volatility measurement starts at `at` (the next one is due a refresh later)."""
        return self.model_copy(update={"measured_at": at})

    def callback_measured(self, callback_pct: Decimal) -> ManagedPosition:
        """The callback measured from volatility applies from now on."""
        return self.model_copy(update={"measured_callback_pct": callback_pct})
