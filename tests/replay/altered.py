"""A deliberately altered PositionWorkflow, to prove the replay test catches changes.

It reads the mark price before it loads the symbol's filters: a new command where the
recorded histories have none, exactly the kind of unpatched change that breaks
every running position on deploy.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.position import PositionWorkflow
    from workflows.position_io import CloseResult, PositionInput


@workflow.defn(name="PositionWorkflow")
class PositionWorkflowWithExtraCall(PositionWorkflow):
    """PositionWorkflow plus one unpatched activity call before the filters are loaded."""

    @workflow.run
    async def run(self, inp: PositionInput) -> CloseResult:
        return await super().run(inp)

    async def _load_filters(self) -> None:
        await self._mark_price()
        await super()._load_filters()


@workflow.defn(name="PositionWorkflow")
class PositionWorkflowSubclassed(PositionWorkflow):
    """PositionWorkflow subclassed with no change: the control for the test above."""

    @workflow.run
    async def run(self, inp: PositionInput) -> CloseResult:
        return await super().run(inp)
