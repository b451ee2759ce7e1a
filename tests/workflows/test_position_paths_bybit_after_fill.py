"""The stop saga of `test_position_paths` on Bybit, for an account whose stop follows
the fill (`stop_with_entry = false`): refused, overtaken by the mark, everything
failing. On Bybit the saga also runs whenever a position's stop must be placed
again; the entries of `test_position_paths_bybit` carry theirs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from simulator.server import PaperExchange
from tests.workflows.harness import bybit_sim
from tests.workflows.test_position_paths import (  # noqa: F401  (the tests themselves)
    test_everything_fails_raises_critical_and_retries_until_recovery,
    test_rollback_close_fails_then_emergency_stop_protects,
    test_stop_rejected_three_times_rolls_back_to_flat,
    test_stop_that_would_trigger_immediately_closes_at_market,
)


@pytest.fixture(scope="module")
def account_options() -> dict[str, Any]:
    return {"stop_with_entry": False}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sim() -> AsyncIterator[PaperExchange]:
    async with bybit_sim() as exchange:
        yield exchange
