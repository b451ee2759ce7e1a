"""The shared state and identity of a position workflow's parts."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from domain.client_ids import OrderStep, client_order_id
    from domain.managed_position import ManagedPosition
    from domain.market import MarketFilters
    from domain.position import PositionSnapshot, PositionSpec
    from domain.records import AlertRecord, FillRecord, OrderRecord
    from domain.trailing import StopMove, TrailingRule, TrailingState
    from workflows.position_io import PositionConfig


class PositionBase:
    """The state every part of the position workflow shares (set in `__init__`).

    `m` is the whole durable state, carried across continue-as-new as one value
    and changed only through its named methods. The rest is per run: messages
    half handled, store writes not yet sent, the user stream's echo filter.
    """

    spec: PositionSpec
    cfg: PositionConfig
    m: ManagedPosition
    pending_move: StopMove | None
    draining: bool
    placing: set[str]
    cancelling: list[str]
    outbox: list[Any]
    order_rows: list[OrderRecord]
    fill_rows: list[FillRecord]
    alerts: list[AlertRecord]
    writes: list[workflow.ActivityHandle[int]]
    flushed: ManagedPosition | None
    # The last mark price the gate told of, and when: shown in the run's details only.
    last_mark: tuple[Decimal, datetime] | None
    # When this run booked its entry's fill, on the exchange's clock (None: not this
    # run, or not told): where a stop-loss the entry came with may have fired since.
    entry_filled_at: datetime | None
    # The stop just placed (or taken) was found filled already: it closed the position.
    stop_found_filled: bool

    # --- reads of the durable state ---------------------------------------------------------

    @property
    def s(self) -> PositionSnapshot:
        """The position's snapshot (quantities, prices, live orders, state)."""
        return self.m.snapshot

    def _snap(self, snapshot: PositionSnapshot) -> None:
        """Take the snapshot a `PositionSnapshot` method returned."""
        self.m = self.m.with_snapshot(snapshot)

    @property
    def trail(self) -> TrailingState | None:
        return self.m.trailing

    @property
    def trailing_rule(self) -> TrailingRule | None:
        return self.m.trailing_rule

    @property
    def measured_callback(self) -> Decimal | None:
        return self.m.measured_callback_pct

    # --- identity ------------------------------------------------------------------------

    @property
    def workflow_id(self) -> str:
        return workflow.info().workflow_id

    @property
    def chain(self) -> str:
        # Stable across continue-as-new and unique per lifecycle of the same id.
        return workflow.info().first_execution_run_id

    @property
    def position_id(self) -> str:
        return f"{self.workflow_id}/{self.chain}"

    def _new_cid(self, step: OrderStep) -> str:
        seq, snapshot = self.s.allocate_order_seq()
        self._snap(snapshot)
        return client_order_id(self.workflow_id, self.chain, step, seq)

    def _filters(self) -> MarketFilters:
        assert self.m.filters is not None
        return self.m.filters
