"""A small workflow with the PositionWorkflow's price-gate contract, for tests and the bench.

`price` update (PriceTick → BandView) and `band` query, plus a `received` query that
lists every price the gate sent. It trails like a long position: band
`[stop, best + step]`; a tick at or above `best + step` raises `best` and the stop
(`best - distance`); a tick at or below the stop closes it (`open=False`, run ends).
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict
from temporalio import workflow
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

with workflow.unsafe.imports_passed_through():
    from domain.position_messages import LEGACY_BAND_QUERY, BandView, PriceTick

PROBE_WORKFLOW_TYPE = "GateProbeWorkflow"


class ProbeInput(BaseModel):
    model_config = ConfigDict(frozen=True)

    symbol: str
    best: Decimal
    distance: Decimal
    step: Decimal


@workflow.defn(name=PROBE_WORKFLOW_TYPE)
class GateProbeWorkflow:
    # @workflow.init: an update delivered in the first workflow task runs before
    # `run`, so the state must exist from the constructor on.
    @workflow.init
    def __init__(self, inp: ProbeInput) -> None:
        self.symbol = inp.symbol
        self.best = inp.best
        self.distance = inp.distance
        self.step = inp.step
        self.stop = inp.best - inp.distance
        self.closed = False
        self.finished = False
        self.prices: list[Decimal] = []

    @workflow.run
    async def run(self, inp: ProbeInput) -> list[Decimal]:
        await workflow.wait_condition(lambda: self.closed or self.finished)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.prices

    @workflow.update
    def price(self, tick: PriceTick) -> BandView:
        self.prices.append(tick.price)
        if tick.price <= self.stop:
            self.closed = True
        elif tick.price >= self.best + self.step:
            self.best = tick.price
            self.stop = max(self.stop, tick.price - self.distance)
        return self._band()

    # The query's name before it was `BAND_QUERY` ("wake_band"): the probe plays a worker
    # of that release, so the gate's tests cross its fallback to the old name.
    @workflow.query(name=LEGACY_BAND_QUERY)
    def band(self) -> BandView:
        return self._band()

    @workflow.query
    def received(self) -> list[Decimal]:
        return self.prices

    @workflow.signal
    def finish(self) -> None:
        self.finished = True

    def _band(self) -> BandView:
        return BandView(
            workflow_id=workflow.info().workflow_id,
            symbol=self.symbol,
            wake_below=self.stop,
            wake_above=self.best + self.step,
            open=not self.closed,
        )


def probe_runner() -> SandboxedWorkflowRunner:
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(
            "pydantic", "domain", "workflows"
        )
    )
