"""Connecting to Temporal with the data converter every posguard process shares."""

from __future__ import annotations

import asyncio

from temporalio.client import Client, Interceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime

# Pydantic v2 encodes Decimal as a string and parses it back exactly, so every
# price and quantity in a workflow payload round-trips without loss.
DATA_CONVERTER = pydantic_data_converter


class UnreachableError(RuntimeError):
    """A server posguard needs did not answer in time."""


async def connect(
    address: str,
    namespace: str = "default",
    *,
    timeout_s: int = 15,
    runtime: Runtime | None = None,
    interceptors: list[Interceptor] | None = None,
) -> Client:
    """Connect to Temporal, retrying until `timeout_s`; raises `UnreachableError`.

    `runtime`: the SDK runtime (default: the process's default one);
    `interceptors`: e.g. `workers.tracing.tracing_interceptors(...)`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last: Exception | None = None
    while loop.time() < deadline:
        try:
            return await Client.connect(
                address,
                namespace=namespace,
                data_converter=DATA_CONVERTER,
                runtime=runtime,
                interceptors=interceptors or [],
            )
        except Exception as exc:  # the SDK raises RuntimeError for every connect failure
            last = exc
            await asyncio.sleep(0.5)
    raise UnreachableError(f"cannot reach Temporal at {address}: {last}")
