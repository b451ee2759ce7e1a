"""Waiting in tests: on the condition itself, never on the clock.

A test that needs something to be true (a state, a row, an order, a worker that
polls) polls for exactly that. The only clock is `PATIENCE_S`, a safety net so a
broken test fails with a message naming what it waited for instead of hanging CI
for ever; it is minutes on purpose, because a loaded machine may make the suite
slower but must never make it red. `POSGUARD_TEST_PATIENCE_S` overrides it.

A poll that talks to Temporal may meet a transient RPC error on a busy machine
(the connection dropped, a deadline passed while the server was starved); it is
retried until patience runs out, and only then raised.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from temporalio.service import RetryConfig, RPCError, RPCStatusCode

PATIENCE_S = float(os.environ.get("POSGUARD_TEST_PATIENCE_S", "180"))  # float ok: seconds
# The tests' Temporal clients retry a request that failed for want of time (the
# connection broke, the server was starved: "transport error" on a busy machine) for
# as long as a test waits for anything, instead of the SDK's default 10 s.
PATIENT = RetryConfig(max_elapsed_time_millis=int(PATIENCE_S * 1000), max_retries=1000)
POLL_S = 0.05  # float ok: seconds between two looks

# Codes a request may end with when the server or the connection is merely slow.
TRANSIENT = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.UNKNOWN,  # "transport error": the channel broke under load
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.CANCELLED,
    }
)

T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    """An RPC error that says "slow", not "wrong": the channel or the server was
    starved, or the workflow's last task timed out and is being retried (a query or
    an update is refused meanwhile with "Workflow Task in failed state")."""
    if not isinstance(exc, RPCError):
        return False
    if exc.status in TRANSIENT:
        return True
    task_retried = "Workflow Task in failed state" in exc.message
    return exc.status is RPCStatusCode.FAILED_PRECONDITION and task_retried


async def _value(probe: Callable[[], Any]) -> Any:
    value = probe()
    return await value if inspect.isawaitable(value) else value


async def poll(
    probe: Callable[[], Awaitable[T] | T],
    done: Callable[[T], bool],
    what: str,
    *,
    seconds: float = PATIENCE_S,  # float ok
    interval: float = POLL_S,  # float ok
) -> T:
    """Call `probe` until `done(value)`; return that value.

    Fails (AssertionError naming `what` and the last value) when `seconds` pass
    first; a transient RPC error counts as "not yet", the last one is raised if
    nothing else was ever seen.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    seen = False
    last: Any = None
    error: BaseException | None = None
    while True:
        try:
            last = await _value(probe)
            seen, error = True, None
            if done(last):
                return last  # type: ignore[no-any-return]
        except RPCError as exc:
            if not is_transient(exc):
                raise
            error = exc
        if loop.time() > deadline:
            if error is not None and not seen:
                raise error
            shown = repr(last)
            shown = shown if len(shown) <= 2000 else shown[:2000] + "..."
            detail = f"; last error {error!r}" if error is not None else ""
            raise AssertionError(
                f"timed out after {seconds:g} s waiting for {what}; last seen {shown}{detail}"
            )
        await asyncio.sleep(interval)


async def until(
    check: Callable[[], Awaitable[bool] | bool],
    what: str,
    *,
    seconds: float = PATIENCE_S,  # float ok
    interval: float = POLL_S,  # float ok
) -> None:
    """Wait until `check()` (plain or async) is true; see `poll`."""
    await poll(check, bool, what, seconds=seconds, interval=interval)


async def started(
    ready: asyncio.Event, task: asyncio.Task[Any], what: str, *, seconds: float = PATIENCE_S
) -> None:  # float ok
    """Wait until `ready` is set by `task` (e.g. `run_worker(..., ready=...)`).

    A task that ends first re-raises its error here, so a failed start fails the
    test at once, naming the error instead of a timeout.
    """
    waiter = asyncio.ensure_future(ready.wait())
    try:
        await asyncio.wait({waiter, task}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if ready.is_set():
        return
    if task.done():
        task.result()
        raise AssertionError(f"{what} ended before it was ready")
    raise AssertionError(f"timed out after {seconds:g} s waiting for {what} to start")
