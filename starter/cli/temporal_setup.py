"""`dunning setup-temporal`: the contract's search attributes in the namespace before the first case.

The one-shot job of every deployment (compose's `temporal-setup`, the Kubernetes Job) runs it.
It waits for what another job makes (the server up, the namespace created by Temporal's own
namespace job, or by hand on Temporal Cloud) instead of racing it, and it is idempotent: an
attribute already registered with the same type is left alone, so it can run at every deploy.
The list comes from `dunning.contract.SEARCH_ATTRIBUTES`; no deployment file repeats it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from dunning import contract
from runtime.temporal import TemporalUnreachable

#: Answers that mean "not yet": the server is starting, or the namespace job has not run yet.
NOT_YET = {RPCStatusCode.UNAVAILABLE, RPCStatusCode.NOT_FOUND, RPCStatusCode.DEADLINE_EXCEEDED}


class SetupError(RuntimeError):
    """The namespace cannot take the contract's search attributes: one line saying why."""


@dataclass
class SetupReport:
    namespace: str
    created: list[str] = field(default_factory=list)
    already_there: list[str] = field(default_factory=list)


def wanted() -> dict[str, IndexedValueType.ValueType]:
    """The contract's search attributes as the operator service names their types."""
    return {
        key.name: IndexedValueType.Value(f"INDEXED_VALUE_TYPE_{key.indexed_value_type.name}")
        for key in contract.SEARCH_ATTRIBUTES
    }


async def _registered(client: Client) -> dict[str, IndexedValueType.ValueType]:
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    return dict(listed.custom_attributes)


def _as_flags(names: dict[str, IndexedValueType.ValueType]) -> str:
    return ", ".join(f"{name}={kind}" for name, kind in contract.search_attribute_types().items() if name in names)


async def _register(client: Client, report: SetupReport) -> None:
    have = await _registered(client)
    clashing = {
        name: (IndexedValueType.Name(have[name]), IndexedValueType.Name(kind))
        for name, kind in wanted().items()
        if name in have and have[name] != kind
    }
    if clashing:
        name, (found, needed) = next(iter(sorted(clashing.items())))
        raise SetupError(
            f"search attribute {name} is registered as {found} in namespace {client.namespace!r}, the "
            f"contract needs {needed}; a type cannot change: remove it (temporal operator search-attribute "
            f"remove) or use a new namespace"
        )
    missing = {name: kind for name, kind in wanted().items() if name not in have}
    report.already_there = sorted(set(wanted()) - set(missing))
    if not missing:
        return
    try:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )
    except RPCError as err:
        if err.status is RPCStatusCode.ALREADY_EXISTS:  # another job got there first: check again
            return await _register(client, report)
        if err.status in (RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNIMPLEMENTED):
            raise SetupError(
                f"Temporal refused to add search attributes ({err.status.name}: {err.message}); on Temporal "
                f"Cloud add them with tcld or the Cloud UI: {_as_flags(missing)}"
            ) from err
        raise
    report.created = sorted(missing)


async def setup_temporal(
    connect: Callable[[], Awaitable[Client]],
    *,
    timeout: float,
    interval: float,
    say: Callable[[str], None],
) -> SetupReport:
    """Wait (up to `timeout` seconds, trying every `interval`) for Temporal and the namespace, then
    register what the contract needs and is missing. Raises `SetupError` when time runs out or the
    namespace holds an attribute of another type."""
    deadline = time.monotonic() + timeout
    client: Client | None = None
    while True:
        try:
            client = client or await connect()
            await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=client.namespace))
            report = SetupReport(namespace=client.namespace)
            await _register(client, report)
            return report
        except TemporalUnreachable as err:
            reason = str(err)
        except RPCError as err:
            if err.status not in NOT_YET:
                raise
            reason = (
                f"namespace {client.namespace!r} does not exist yet"
                if client is not None and err.status is RPCStatusCode.NOT_FOUND
                else f"Temporal is not ready ({err.status.name}: {err.message})"
            )
        if time.monotonic() + interval > deadline:
            raise SetupError(f"gave up after {timeout:g} s: {reason}")
        say(f"waiting: {reason}")
        await asyncio.sleep(interval)
