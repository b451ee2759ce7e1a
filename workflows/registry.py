"""Every workflow class a posguard worker registers."""

from __future__ import annotations

from typing import Any

from workflows.alert import AlertWorkflow
from workflows.position import PositionWorkflow
from workflows.reconcile import ReconcileWorkflow
from workflows.wave import WaveWorkflow

ALL_WORKFLOWS: list[type[Any]] = [
    PositionWorkflow,
    ReconcileWorkflow,
    WaveWorkflow,
    AlertWorkflow,
]
