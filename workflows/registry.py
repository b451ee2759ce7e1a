"""Every workflow class a posguard worker registers."""

from __future__ import annotations

from typing import Any

from workflows.position import PositionWorkflow

ALL_WORKFLOWS: list[type[Any]] = [PositionWorkflow]
