"""Replay every committed history against today's PositionWorkflow.

A change to the workflow that would break positions already running (a command
added, removed or reordered without `workflow.patched`) makes the replay raise,
so it fails here rather than in production. The histories were recorded from
real runs by tests/replay/record_histories.py (see tests/histories/README.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from tests.replay.altered import PositionWorkflowSubclassed, PositionWorkflowWithExtraCall
from workers.temporal import DATA_CONVERTER
from workers.worker import workflow_runner
from workflows.position import PositionWorkflow

HISTORIES = Path(__file__).resolve().parents[1] / "histories"
FILES = sorted(HISTORIES.glob("*.json"))
# The shapes that must always be covered (more files are welcome).
REQUIRED = {
    "happy_path_long",
    "operator_close",
    "adopt",
    "rollback_stop_beyond_mark",
    "rollback_stop_unplaceable",
    "continue_as_new_run2",
    "trailing_long",
}


def load(path: Path) -> WorkflowHistory:
    """The history in `path`; the workflow id comes from its start event when recorded."""
    data = json.loads(path.read_text())
    started = data["events"][0].get("workflowExecutionStartedEventAttributes", {})
    return WorkflowHistory.from_json(started.get("workflowId") or f"replay/{path.stem}", data)


def replayer(workflow: type = PositionWorkflow) -> Replayer:
    """Replayer configured as the production worker (same converter and sandbox)."""
    return Replayer(
        workflows=[workflow], data_converter=DATA_CONVERTER, workflow_runner=workflow_runner()
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
