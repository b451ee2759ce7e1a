"""The trailing stop tests of `test_position_trailing`, run on Bybit (v5 linear, paper venue).

The same tests, imported; only the exchange differs: this module's `sim` serves
the Bybit venue, so the stack's account is a `bybit` one and every position is
trailed (new stop first, then the old one cancelled) through ccxt `bybit`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from simulator.server import PaperExchange
from tests.workflows.harness import bybit_sim
from tests.workflows.test_position_trailing import *  # noqa: F403  (the tests themselves)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sim() -> AsyncIterator[PaperExchange]:
    async with bybit_sim() as exchange:
        yield exchange
