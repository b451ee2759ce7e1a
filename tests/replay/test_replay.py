"""Replay every committed history against today's workflows.

Each history is replayed by a Replayer with every workflow a worker registers
(`workflows.registry.ALL_WORKFLOWS`), so each file finds its own type.
A change to a workflow that would break runs already in flight (a command
added, removed or reordered without `workflow.patched`) makes the replay raise,
so it fails here rather than in production. The histories were recorded from
real runs by tests/replay/record_histories.py (see tests/histories/README.md).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from tests.replay.altered import PositionWorkflowSubclassed, PositionWorkflowWithExtraCall
from workers.temporal import DATA_CONVERTER
from workers.worker import workflow_runner
from workflows.registry import ALL_WORKFLOWS

with workflow.unsafe.imports_passed_through():
    from activities.store.activities import StoreActivities
    from domain.reconcile import AccountState
    from domain.reconcile_io import ReconcileInput, ReconcileReport, StoredRequest
    from domain.signals import Signal
    from domain.wave_io import WaveResult
    from domain.waves import Decision
    from workflows.reconcile import ReconcileWorkflow
    from workflows.wave import WaveWorkflow
    from workflows.wave_io import WaveInput

HISTORIES = Path(__file__).resolve().parents[1] / "histories"
FILES = sorted(HISTORIES.glob("*.json"))
# The shapes that must always be covered (more files are welcome).
REQUIRED = {
    "happy_path_long",
    "operator_close",
    "operator_close_ended_with_reason",  # CloseReason set (patch close-reason-attribute)
    "adopt",
    "rollback_stop_beyond_mark",
    "rollback_stop_unplaceable",
    "continue_as_new_run2",
    "trailing_long",
    "trailing_long_bybit",  # the stop moved in place (exchange.amend_stop), never a second
    "reconcile_pass",  # ReconcileWorkflow: adoption, zombie cancel, phantom row, foreign order
    "wave",  # WaveWorkflow: selection, two positions started as children, the rest filtered
    "unprotected_alerted",  # the unprotected alert resolved (patch alert-resolution);
    # each round's stop and emergency stop under an id of its kind (patch stop-id-per-kind)
    "unprotected_alerted_reused_stop_id",  # the same, recorded before stop-id-per-kind
    "alert_condition",  # AlertWorkflow: raised, reminded, resolved
}


def load(path: Path) -> WorkflowHistory:
    """The history in `path`; the workflow id comes from its start event when recorded."""
    data = json.loads(path.read_text())
    started = data["events"][0].get("workflowExecutionStartedEventAttributes", {})
    return WorkflowHistory.from_json(started.get("workflowId") or f"replay/{path.stem}", data)


def replayer(*workflows: type) -> Replayer:
    """Replayer configured as the production worker (same workflows, converter and
    sandbox); `workflows` instead of the worker's, to replay an altered one."""
    return Replayer(
        workflows=list(workflows or ALL_WORKFLOWS),
        data_converter=DATA_CONVERTER,
        workflow_runner=workflow_runner(),
    )


def test_the_committed_histories_cover_every_shape() -> None:
    assert REQUIRED <= {f.stem for f in FILES}, f"missing histories in {HISTORIES}"


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
async def test_history_replays_without_nondeterminism(path: Path) -> None:
    history = load(path)
    assert len(history.events) > 20, "a real run, not a stub"
    await replayer().replay_workflow(history)


@pytest.mark.parametrize("name", ["happy_path_long", "adopt"])
async def test_an_unpatched_change_fails_the_replay(name: str) -> None:
    """The replay test bites: one extra activity call in `_begin` is caught."""
    history = load(HISTORIES / f"{name}.json")
    await replayer(PositionWorkflowSubclassed).replay_workflow(history)  # control: no change
    with pytest.raises(NondeterminismError, match="Nondeterminism"):
        await replayer(PositionWorkflowWithExtraCall).replay_workflow(history)


# Defined here, so not sandboxed (the sandbox would re-import this test module): the
# sandboxed replay of the real class is test_history_replays_without_nondeterminism's.
@workflow.defn(name="ReconcileWorkflow", sandboxed=False)
class ReconcileWorkflowSubclassed(ReconcileWorkflow):
    """ReconcileWorkflow subclassed with no change: the control of the test below."""

    @workflow.run
    async def run(self, inp: ReconcileInput) -> ReconcileReport:
        return await super().run(inp)


@workflow.defn(name="ReconcileWorkflow", sandboxed=False)
class ReconcileWorkflowReadingTheStoreTwice(ReconcileWorkflow):
    """ReconcileWorkflow with one unpatched activity call before it reads the exchange."""

    @workflow.run
    async def run(self, inp: ReconcileInput) -> ReconcileReport:
        return await super().run(inp)

    async def _read(self, inp: ReconcileInput) -> AccountState:
        await self._activity(
            StoreActivities.open_positions,
            StoredRequest(account=inp.account, exchange=inp.exchange),
            summary="an extra read",
        )
        return await super()._read(inp)


async def test_the_reconcile_pass_replays_and_an_unpatched_change_fails_it() -> None:
    history = load(HISTORIES / "reconcile_pass.json")
    assert history.events[0].workflow_execution_started_event_attributes.workflow_type.name == (
        "ReconcileWorkflow"
    )
    await replayer(ReconcileWorkflowSubclassed).replay_workflow(history)  # control: no change
    with pytest.raises(NondeterminismError, match="Nondeterminism"):
        await replayer(ReconcileWorkflowReadingTheStoreTwice).replay_workflow(history)


@workflow.defn(name="WaveWorkflow", sandboxed=False)
class WaveWorkflowSubclassed(WaveWorkflow):
    """WaveWorkflow subclassed with no change: the control of the test below."""

    @workflow.run
    async def run(self, inp: WaveInput) -> WaveResult:
        return await super().run(inp)


@workflow.defn(name="WaveWorkflow", sandboxed=False)
class WaveWorkflowDecidingTwice(WaveWorkflow):
    """WaveWorkflow that reads the account twice before it selects (unpatched)."""

    @workflow.run
    async def run(self, inp: WaveInput) -> WaveResult:
        return await super().run(inp)

    async def _decide(self, inp: WaveInput, signals: Sequence[Signal]) -> list[Decision]:
        await super()._decide(inp, signals)
        return await super()._decide(inp, signals)


async def test_the_wave_replays_and_an_unpatched_change_fails_it() -> None:
    history = load(HISTORIES / "wave.json")
    assert history.events[0].workflow_execution_started_event_attributes.workflow_type.name == (
        "WaveWorkflow"
    )
    await replayer(WaveWorkflowSubclassed).replay_workflow(history)  # control: no change
    with pytest.raises(NondeterminismError, match="Nondeterminism"):
        await replayer(WaveWorkflowDecidingTwice).replay_workflow(history)
