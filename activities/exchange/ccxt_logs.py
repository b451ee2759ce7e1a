"""ccxt's request log, scrubbed.

Every ccxt client logs each request and response at DEBUG on the logger
`ccxt.base.exchange`: the URL (a signed GET's signature in its query), the headers
(the API key) and the body (a signed POST's signature). A process run at DEBUG would
write them all to its logs. A filter on that logger rewrites each record through
`domain.errors.scrub` before any handler sees it.
"""

from __future__ import annotations

import logging

from domain.errors import scrub

CCXT_LOGGER = "ccxt.base.exchange"


class ScrubbedRecords(logging.Filter):
    """Replaces a record's message by its scrubbed text (and drops its arguments)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub(record.getMessage())
        record.args = None
        return True


def scrub_ccxt_logs() -> None:
    """Install the filter on ccxt's logger once per process."""
    logger = logging.getLogger(CCXT_LOGGER)
    if not any(isinstance(f, ScrubbedRecords) for f in logger.filters):
        logger.addFilter(ScrubbedRecords())
