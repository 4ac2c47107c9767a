"""`dunning setup-temporal`, the deployments' one-shot job, against the real Temporal dev server.

Each test gets a namespace of its own on one dev server started without our search attributes,
so what the job finds is what a fresh cluster gives it. The command runs in its own process,
exactly as compose and the Kubernetes Job run it, and answers by exit code and one line.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest_asyncio
from google.protobuf.duration_pb2 import Duration
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from dunning import contract
from tests.helpers import binary, eventually

ROOT = Path(__file__).resolve().parents[2]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def bare_server() -> AsyncIterator[Client]:
    """A dev server that knows none of our search attributes (as a cluster fresh from Helm)."""
    env = await WorkflowEnvironment.start_local(dev_server_existing_path=binary("temporal"), dev_server_log_level="error")
    try:
        yield env.client
    finally:
        await env.shutdown()


async def create_namespace(client: Client, name: str) -> None:
    await client.workflow_service.register_namespace(
        RegisterNamespaceRequest(
            namespace=name, workflow_execution_retention_period=Duration(seconds=int(timedelta(days=30).total_seconds()))
        )
    )


async def registered(client: Client, namespace: str) -> dict[str, str]:
    listed = await client.operator_service.list_search_attributes(ListSearchAttributesRequest(namespace=namespace))
    return {name: IndexedValueType.Name(kind) for name, kind in listed.custom_attributes.items()}


def contract_types() -> dict[str, str]:
    return {key.name: f"INDEXED_VALUE_TYPE_{key.indexed_value_type.name}" for key in contract.SEARCH_ATTRIBUTES}


async def start_setup(client: Client, namespace: str, *args: str) -> asyncio.subprocess.Process:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")},
        "TEMPORAL_ADDRESS": client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": namespace,
    }
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "starter.cli.app",
        "setup-temporal",
        "--interval",
        "0.5",
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def finish(proc: asyncio.subprocess.Process, timeout: float = 90) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, out.decode(), err.decode()


async def setup(client: Client, namespace: str, *args: str) -> tuple[int, str, str]:
    return await finish(await start_setup(client, namespace, *args))


async def test_it_registers_the_contract_and_a_second_run_changes_nothing(bare_server: Client) -> None:
    namespace = f"setup-twice-{uuid.uuid4().hex[:8]}"
    await create_namespace(bare_server, namespace)

    code, out, err = await setup(bare_server, namespace)
    assert code == 0, err
    assert "already there: none" in out
    assert await registered(bare_server, namespace) == contract_types()

    code, out, err = await setup(bare_server, namespace)
    assert code == 0, err
    assert "created none" in out
    assert await registered(bare_server, namespace) == contract_types()


async def test_it_waits_for_a_namespace_that_appears_late(bare_server: Client) -> None:
    namespace = f"setup-late-{uuid.uuid4().hex[:8]}"
    proc = await start_setup(bare_server, namespace, "--timeout", "60")
    await asyncio.sleep(3)
    assert proc.returncode is None, "the job gave up instead of waiting for the namespace"
    await create_namespace(bare_server, namespace)

    code, out, err = await finish(proc)

    assert code == 0, err
    assert f"namespace {namespace!r} does not exist yet" in err
    assert await registered(bare_server, namespace) == contract_types()


async def test_it_gives_up_in_one_line_when_the_namespace_never_comes(bare_server: Client) -> None:
    namespace = f"setup-never-{uuid.uuid4().hex[:8]}"
    code, _, err = await setup(bare_server, namespace, "--timeout", "2")
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert "gave up after 2 s" in last and "does not exist yet" in last


async def test_it_refuses_an_attribute_registered_with_another_type(bare_server: Client) -> None:
    namespace = f"setup-clash-{uuid.uuid4().hex[:8]}"
    await create_namespace(bare_server, namespace)
    await bare_server.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=namespace, search_attributes={contract.DUNNING_STAGE.name: IndexedValueType.INDEXED_VALUE_TYPE_INT}
        )
    )
    await eventually(lambda: registered(bare_server, namespace), what="the clashing attribute to be listed")

    code, _, err = await setup(bare_server, namespace)

    assert code == 1
    assert "DunningStage is registered as INDEXED_VALUE_TYPE_INT" in err
    assert await registered(bare_server, namespace) == {"DunningStage": "INDEXED_VALUE_TYPE_INT"}
