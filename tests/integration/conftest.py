"""Fixtures shared by the integration tests: the crash world of test_crash.py."""

from tests.integration.test_crash import crash  # noqa: F401 - a fixture, used by name
