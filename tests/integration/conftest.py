"""Fixtures shared by the integration tests: the crash worlds of test_crash.py (`crash`
on Binance, `venue_crash` on each exchange)."""

from tests.integration.test_crash import crash, venue_crash  # noqa: F401 - fixtures, used by name
