"""Search attributes that make positions findable in the Temporal Web UI and CLI.

Registered on the dev server at start (`--search-attribute`) and by tests.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

ACCOUNT = SearchAttributeKey.for_keyword("Account")
EXCHANGE = SearchAttributeKey.for_keyword("Exchange")
SYMBOL = SearchAttributeKey.for_keyword("Symbol")
POSITION_STATE = SearchAttributeKey.for_keyword("PositionState")
# How an ended position ended (its CloseReason: stop_filled, operator, rolled back's
# entry_not_filled...), so the Web UI's list tells a rolled-back run from a close.
CLOSE_REASON = SearchAttributeKey.for_keyword("CloseReason")

ALL_KEYS = (ACCOUNT, EXCHANGE, SYMBOL, POSITION_STATE, CLOSE_REASON)
