"""Temporal workflows. Orchestration only: every decision comes from `domain/`."""

from __future__ import annotations

from typing import Any

# Every workflow class the worker registers; each workflow module appends itself here.
ALL_WORKFLOWS: list[type[Any]] = []
