"""A PositionWorkflow with a bug in its look, for tests/workflows/test_position_net.py.

A module of its own with nothing but workflow imports (all passed through), so the
workflow sandbox that re-imports it loads no test machinery.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.position import PositionWorkflow
    from workflows.position_io import CloseResult, PositionInput


@workflow.defn(name="PositionWorkflow")
class PositionWorkflowWithBrokenLook(PositionWorkflow):
    """PositionWorkflow whose first two looks raise, as a bug would."""

    @workflow.run
    async def run(self, inp: PositionInput) -> CloseResult:
        return await super().run(inp)

    async def _look(self) -> None:
        self.broken_looks = getattr(self, "broken_looks", 0) + 1
        if self.broken_looks <= 2:
            raise RuntimeError("a bug in the look")
        await super()._look()
