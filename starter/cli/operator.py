"""What an operator does to cases, as plain async functions over a Temporal client.

The CLI renders these; the demo and tests call them directly. Everything goes through the
contract: visibility queries on the search attributes, the `status` query, the signals and
the `retry_now` update of `DunningWorkflow`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from dunning import contract
from dunning.models import CaseStatus, ExtendGrace, Pause, Resume, RetryNow, RetryNowResult


class CaseNotFound(LookupError):
    pass


class Rejected(RuntimeError):
    """The workflow refused an update (its validator said no) or a signal could not be delivered."""


def case_id(case_or_subscription: str) -> str:
    """`dunning-sub_123` or `sub_123` → the workflow id `dunning-sub_123`."""
    return contract.workflow_id(contract.subscription_of(case_or_subscription.strip()))


@dataclass
class CaseRow:
    """One line of `dunning list`: what visibility knows without asking the worker."""

    workflow_id: str
    run_id: str | None
    status: str
    stage: str | None
    customer_id: str | None
    subscription_id: str | None
    amount_due: int | None
    currency: str | None
    decline_category: str | None
    retry_attempts: int | None
    next_action_at: datetime | None
    outcome: str | None
    start_time: datetime | None


async def list_cases(client: Client, query: str, limit: int = 100) -> list[CaseRow]:
    rows: list[CaseRow] = []
    async for wf in client.list_workflows(query, limit=limit):
        attrs = wf.typed_search_attributes
        rows.append(
            CaseRow(
                workflow_id=wf.id,
                run_id=wf.run_id,
                status=wf.status.name if wf.status else "UNKNOWN",
                stage=attrs.get(contract.DUNNING_STAGE),
                customer_id=attrs.get(contract.CUSTOMER_ID),
                subscription_id=attrs.get(contract.SUBSCRIPTION_ID),
                amount_due=attrs.get(contract.AMOUNT_DUE),
                currency=attrs.get(contract.CURRENCY),
                decline_category=attrs.get(contract.DECLINE_CATEGORY),
                retry_attempts=attrs.get(contract.RETRY_ATTEMPTS),
                next_action_at=attrs.get(contract.NEXT_ACTION_AT),
                outcome=attrs.get(contract.DUNNING_OUTCOME),
                start_time=wf.start_time,
            )
        )
    return rows


def _handle(client: Client, case_or_subscription: str) -> WorkflowHandle:
    return client.get_workflow_handle(case_id(case_or_subscription))


def _not_found(err: RPCError) -> bool:
    return err.status == RPCStatusCode.NOT_FOUND


async def status(client: Client, case_or_subscription: str) -> CaseStatus:
    handle = _handle(client, case_or_subscription)
    try:
        return await handle.query(contract.QUERY_STATUS, result_type=CaseStatus, rpc_timeout=timedelta(seconds=10))
    except RPCError as err:
        if _not_found(err):
            raise CaseNotFound(f"no case {handle.id}") from err
        if err.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED, RPCStatusCode.FAILED_PRECONDITION):
            raise Rejected(
                f"no worker answered the status query of {handle.id} ({err.message}): is a worker running?"
            ) from err
        raise


async def _signal_open_case(client: Client, case_or_subscription: str, signal: contract.Signal, arg: object) -> str:
    handle = _handle(client, case_or_subscription)
    try:
        desc = await handle.describe()
    except RPCError as err:
        if _not_found(err):
            raise CaseNotFound(f"no case {handle.id}") from err
        raise
    if desc.status != WorkflowExecutionStatus.RUNNING:
        status_name = desc.status.name.lower() if desc.status else "unknown"
        raise Rejected(f"case {handle.id} is closed ({status_name}); nothing to {signal.value.replace('_', ' ')}")
    await handle.signal(signal.value, arg)
    return handle.id


async def pause(client: Client, case_or_subscription: str, reason: str) -> str:
    return await _signal_open_case(client, case_or_subscription, contract.Signal.PAUSE, Pause(reason=reason))


async def resume(client: Client, case_or_subscription: str, reason: str) -> str:
    return await _signal_open_case(client, case_or_subscription, contract.Signal.RESUME, Resume(reason=reason))


async def extend_grace(client: Client, case_or_subscription: str, days: int, reason: str) -> str:
    return await _signal_open_case(
        client, case_or_subscription, contract.Signal.EXTEND_GRACE, ExtendGrace(days=days, reason=reason)
    )


async def retry_now(client: Client, case_or_subscription: str, reason: str) -> RetryNowResult:
    handle = _handle(client, case_or_subscription)
    try:
        return await handle.execute_update(
            contract.UPDATE_RETRY_NOW, RetryNow(reason=reason), result_type=RetryNowResult
        )
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        message = getattr(cause, "message", None) or str(cause or err)
        raise Rejected(message) from err
    except RPCError as err:
        if _not_found(err):
            raise CaseNotFound(f"no open case {handle.id}") from err
        raise


async def pollers_from_host(client: Client, task_queue: str, hostname: str, within_seconds: float = 120) -> int:
    """How many workflow-task pollers on `task_queue` come from this host and were seen lately.

    The SDK's default worker identity is `pid@hostname`, so a container's worker shows up under
    the container's hostname: that is what the compose health check of the worker asks.
    """
    from datetime import UTC, datetime

    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    response = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    now = datetime.now(UTC)
    count = 0
    for poller in response.pollers:
        seen = poller.last_access_time.ToDatetime(tzinfo=UTC) if poller.HasField("last_access_time") else now
        if poller.identity.endswith(f"@{hostname}") and (now - seen).total_seconds() <= within_seconds:
            count += 1
    return count
