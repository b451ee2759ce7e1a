"""What goes in and out of a reconcile pass and its activities (all pydantic, all Decimal).

Shared by `workflows/reconcile.py`, its activities and the CLI; the decisions
themselves are in `domain/reconcile.py`.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from domain.position import PositionSpec
from domain.reconcile import Finding, FindingMemo, ListedWorkflow, Owner, ReconcilePolicy
from domain.sizing import StopRule
from domain.trailing import TrailingRule
from domain.types import ExchangeId

RECONCILE_WORKFLOW_TYPE = "ReconcileWorkflow"


def reconcile_schedule_id(account: str) -> str:
    """The id of the account's reconcile Schedule (and the prefix of its passes' ids)."""
    return f"reconcile/{account}"


class Adoption(BaseModel):
    """How an adopted position is protected: its stop, emergency stop and trailing."""

    model_config = ConfigDict(frozen=True)

    stop: StopRule = StopRule(percent=Decimal(2))
    emergency_stop_percent: Decimal = Field(default=Decimal(5), gt=0, lt=100)
    trailing: TrailingRule | None = None


class ReconcileInput(BaseModel):
    """One pass over one exchange account.

    `dry_run`: decide and report, change nothing (no order, signal, start, row or
    event). `memory`: the findings remembered from the previous pass; a pass run
    by the Schedule takes it from the previous pass's result instead. `hedge_mode`:
    the account trades in hedge mode (`AccountSettings.hedge_mode`): its positions
    are judged, read and adopted per side (`domain.reconcile`).
    """

    model_config = ConfigDict(frozen=True)

    account: str
    exchange: ExchangeId
    exchange_task_queue: str
    policy: ReconcilePolicy = ReconcilePolicy()
    adoption: Adoption = Adoption()
    dry_run: bool = False
    memory: dict[str, FindingMemo] = Field(default_factory=dict)
    # How long one activity attempt may take: an attempt lost with a crashed worker
    # is given to another one after this long.
    call_timeout: timedelta = Field(default=timedelta(seconds=30), gt=timedelta(0))
    # Inputs from before hedge mode decode as one-way.
    hedge_mode: bool = False


class Outcome(StrEnum):
    """What came of a finding's action in this pass."""

    DONE = "done"  # signalled, adopted, cancelled, closed
    ALREADY = "already"  # nothing to do any more (owned meanwhile, gone, closed)
    FAILED = "failed"
    REPORTED = "reported"  # the action is REPORT
    DRY_RUN = "dry_run"  # decided, not done


class FindingOutcome(BaseModel):
    """One finding of a pass, what was done and how it went."""

    model_config = ConfigDict(frozen=True)

    finding: Finding
    outcome: Outcome
    detail: str | None = None
    passes: int = 1


class ReconcileReport(BaseModel):
    """A pass's result: its findings and the memory the next pass starts from."""

    model_config = ConfigDict(frozen=True)

    account: str
    exchange: ExchangeId
    started_at: AwareDatetime
    finished_at: AwareDatetime
    dry_run: bool = False
    # Why the pass could not read the account (nothing was decided), else None.
    error: str | None = None
    positions: int = 0
    orders: int = 0
    owners: int = 0
    findings: list[FindingOutcome] = Field(default_factory=list)
    # Findings not listed (foreign orders' reports beyond the first few hundred).
    findings_omitted: int = 0
    memory: dict[str, FindingMemo] = Field(default_factory=dict)


# --- activity requests ------------------------------------------------------------------


class OwnersRequest(BaseModel):
    """The position workflows of the account: `reconcile.listed` lists the running
    ones (visibility); `reconcile.owners` asks the workflow of each of `symbols`
    directly (its `state` query), so nothing done rests on visibility's lag; with
    `hedge_mode`, both workflows of each symbol (its long's and its short's)."""

    model_config = ConfigDict(frozen=True)

    account: str
    exchange: ExchangeId
    symbols: list[str] = Field(default_factory=list)
    hedge_mode: bool = False


class ListedResult(BaseModel):
    """The account's running position workflows as visibility lists them."""

    model_config = ConfigDict(frozen=True)

    workflows: list[ListedWorkflow] = Field(default_factory=list)


class OwnersResult(BaseModel):
    """The running position workflows, as they answered."""

    model_config = ConfigDict(frozen=True)

    owners: list[Owner] = Field(default_factory=list)


class SignalOwnerRequest(BaseModel):
    """Tell a position workflow to look at the exchange now (`exchange_update`)."""

    model_config = ConfigDict(frozen=True)

    workflow_id: str
    detail: str


class AdoptRequest(BaseModel):
    """Start a PositionWorkflow in adopt mode for `spec` (conflict policy: fail)."""

    model_config = ConfigDict(frozen=True)

    spec: PositionSpec


class AdoptResult(BaseModel):
    """`started` False: a workflow already ran for the key (nothing was started)."""

    model_config = ConfigDict(frozen=True)

    workflow_id: str
    started: bool


class ClosePhantomRequest(BaseModel):
    """Close a store row as phantom, unless it was written since `revision`."""

    model_config = ConfigDict(frozen=True)

    position_id: str
    revision: int
    reason: str
    at: AwareDatetime


class StoredRequest(BaseModel):
    """The store's open position rows of one account."""

    model_config = ConfigDict(frozen=True)

    account: str
    exchange: ExchangeId
