"""The shared state and identity of a position workflow's parts."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from domain.client_ids import OrderStep, client_order_id
    from domain.market import MarketFilters
    from domain.orders import (
        OrderRef,
    )
    from domain.position import (
        PositionSnapshot,
        PositionSpec,
    )
    from domain.records import AlertRecord, FillRecord, OrderRecord
    from domain.trailing import (
        StopMove,
        TrailingRule,
        TrailingState,
    )
    from workflows.position_io import (
        CloseRequest,
        PositionConfig,
    )


class PositionBase:
    """The state every part of the position workflow shares (set in `__init__`)."""

    spec: PositionSpec
    cfg: PositionConfig
    s: PositionSnapshot
    filters: MarketFilters | None
    stale: list[OrderRef]
    runs: int
    revision: int
    trailing_rule: TrailingRule | None
    trail: TrailingState | None
    measured_callback: Decimal | None
    measured_at: datetime | None
    pending_move: StopMove | None
    draining: bool
    close_request: CloseRequest | None
    look_requested: bool
    placing: set[str]
    cancelling: list[str]
    outbox: list[Any]
    order_rows: list[OrderRecord]
    fill_rows: list[FillRecord]
    alerts: list[AlertRecord]
    writes: list[workflow.ActivityHandle[int]]
    flushed: PositionSnapshot | None

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
        seq, self.s = self.s.allocate_order_seq()
        return client_order_id(self.workflow_id, self.chain, step, seq)

    def _filters(self) -> MarketFilters:
        assert self.filters is not None
        return self.filters
