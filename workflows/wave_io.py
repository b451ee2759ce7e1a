"""The wave workflow's input: which wave, and how its positions are opened."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from domain.types import ExchangeId
from domain.wave_io import PositionTemplate
from domain.waves import WaveRules
from workflows.position_io import PositionConfig


class WaveInput(BaseModel):
    """One account's wave of one period (settings `[waves]`, built by the ingest).

    The wave collects signals for `window` after its first one, then selects.
    Selected signals become PositionWorkflows on `position_task_queue`, sized and
    protected by `template`, configured by `position_config`. New entries pause
    while the free balance is below `min_free_balance`.
    """

    model_config = ConfigDict(frozen=True)

    account: str
    exchange: ExchangeId
    period_start: AwareDatetime
    window: timedelta = Field(default=timedelta(seconds=5), ge=timedelta(0))
    rules: WaveRules
    template: PositionTemplate
    min_free_balance: Decimal = Decimal(0)
    position_task_queue: str
    position_config: PositionConfig
    call_timeout: timedelta = timedelta(seconds=30)
    # The account trades in hedge mode: a long and a short on one symbol are two
    # positions, each its own workflow (`domain.position.position_workflow_id`).
    hedge_mode: bool = False
