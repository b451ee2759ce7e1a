"""Running a benchmark's `main` to completion and leaving at once."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run `main`, then exit 0 without finalisation: the Temporal SDK's native runtime
    can abort the interpreter there ("PyGILState_Release: thread state ... must be
    current") after the figures are out."""
    asyncio.run(main())
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
