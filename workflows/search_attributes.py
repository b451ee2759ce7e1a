"""Search attributes that make positions findable in the Temporal Web UI and CLI.

Registered on the dev server at start (`--search-attribute`) and by tests.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

ACCOUNT = SearchAttributeKey.for_keyword("Account")
EXCHANGE = SearchAttributeKey.for_keyword("Exchange")
SYMBOL = SearchAttributeKey.for_keyword("Symbol")
POSITION_STATE = SearchAttributeKey.for_keyword("PositionState")

ALL_KEYS = (ACCOUNT, EXCHANGE, SYMBOL, POSITION_STATE)
