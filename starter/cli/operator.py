"""What an operator does to cases, as plain async functions over a Temporal client.

The CLI renders these; the demo and tests call them directly. Everything goes through the
contract: visibility queries on the search attributes, the `status` query, the signals and
the `retry_now` update of `DunningWorkflow`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
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


class Ignored(RuntimeError):
    """The case would ignore this signal (already paused, not paused, closed): nothing was changed.
    Not an error, not a success: the CLI exits 3 so a script can tell."""


#: How long a command waits for the case to show what a signal or an update did.
CONFIRM_SECONDS = 5.0


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
    recovered_amount: int | None = None  # from the recovery ledger, when the CLI can read it


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


@dataclass
class SignalOutcome:
    """What a signal did, as the case itself reports it (the `status` query before and after).

    `after` is None when no worker answered the status query: the signal is stored in the case's
    history and acted on when a worker runs, but nobody can say yet what it changed."""

    workflow_id: str
    before: CaseStatus | None
    after: CaseStatus | None


async def _describe_open(handle: WorkflowHandle, action: str) -> None:
    try:
        desc = await handle.describe()
    except RPCError as err:
        if _not_found(err):
            raise CaseNotFound(f"no case {handle.id}") from err
        raise
    if desc.status != WorkflowExecutionStatus.RUNNING:
        outcome = desc.typed_search_attributes.get(contract.DUNNING_OUTCOME)
        status_name = desc.status.name.lower() if desc.status else "unknown"
        why = f"{outcome}, {status_name}" if outcome else status_name
        raise Rejected(f"case {handle.id} is closed ({why}); nothing to {action}")


async def _status_or_none(handle: WorkflowHandle) -> CaseStatus | None:
    """The case's status, or None when no worker answers (the case is then only in history)."""
    try:
        return await handle.query(contract.QUERY_STATUS, result_type=CaseStatus, rpc_timeout=timedelta(seconds=5))
    except RPCError as err:
        if err.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED, RPCStatusCode.FAILED_PRECONDITION):
            return None
        if _not_found(err):
            raise CaseNotFound(f"no case {handle.id}") from err
        raise


def _recorded(status: CaseStatus, event: str) -> int:
    return sum(1 for entry in status.timeline if entry.event == event)


async def _signal_open_case(
    client: Client,
    case_or_subscription: str,
    signal: contract.Signal,
    arg: object,
    *,
    records: str,
    ignored_because: Callable[[CaseStatus], str | None],
) -> SignalOutcome:
    """Send `signal` only when the case would act on it, and wait until it shows it did.

    `ignored_because(status)` says why the case would ignore the signal (the rules of
    `dunning.case.Case` for it); `records` is the timeline event the case writes when it acts.
    A signal the case would ignore is not sent: `Ignored` says why. A race (someone else paused
    it a moment earlier) is caught after sending: the case records nothing and is reported as
    having ignored it."""
    action = signal.value.replace("_", " ")
    handle = _handle(client, case_or_subscription)
    await _describe_open(handle, action)
    before = await _status_or_none(handle)
    if before is not None and (why := ignored_because(before)):
        raise Ignored(f"{handle.id}: {why}; nothing sent")
    try:
        await handle.signal(signal.value, arg)
    except RPCError as err:
        if _not_found(err):  # closed since we looked
            raise Rejected(f"case {handle.id} closed meanwhile; nothing to {action}") from err
        raise
    if before is None:
        return SignalOutcome(handle.id, None, None)
    deadline = asyncio.get_running_loop().time() + CONFIRM_SECONDS
    while True:
        after = await _status_or_none(handle)
        if after is None or _recorded(after, records) > _recorded(before, records):
            return SignalOutcome(handle.id, before, after)
        if asyncio.get_running_loop().time() > deadline:
            why = ignored_because(after)
            raise Ignored(f"{handle.id}: the case ignored the signal{': ' + why if why else ''}")
        await asyncio.sleep(0.2)


def _pause_ignored(status: CaseStatus) -> str | None:
    if status.outcome:
        return f"the case is closing ({status.outcome.value})"
    if status.paused:
        return f"the case is already paused ({status.pause_reason or 'no reason given'})"
    return None


def _resume_ignored(status: CaseStatus) -> str | None:
    if status.outcome:
        return f"the case is closing ({status.outcome.value})"
    if not status.paused:
        return "the case is not paused"
    return None


def _extend_ignored(status: CaseStatus) -> str | None:
    return f"the case is closing ({status.outcome.value})" if status.outcome else None


async def pause(client: Client, case_or_subscription: str, reason: str) -> SignalOutcome:
    return await _signal_open_case(
        client,
        case_or_subscription,
        contract.Signal.PAUSE,
        Pause(reason=reason),
        records="paused",
        ignored_because=_pause_ignored,
    )


async def resume(client: Client, case_or_subscription: str, reason: str) -> SignalOutcome:
    return await _signal_open_case(
        client,
        case_or_subscription,
        contract.Signal.RESUME,
        Resume(reason=reason),
        records="resumed",
        ignored_because=_resume_ignored,
    )


async def extend_grace(client: Client, case_or_subscription: str, days: int, reason: str) -> SignalOutcome:
    return await _signal_open_case(
        client,
        case_or_subscription,
        contract.Signal.EXTEND_GRACE,
        ExtendGrace(days=days, reason=reason),
        records="grace_extended",
        ignored_because=_extend_ignored,
    )


@dataclass
class RetryOutcome:
    """The update's result, and the stage the case is in once it has settled the charge (the
    update answers as soon as the charges return; a paid case closes `recovered` right after)."""

    result: RetryNowResult
    stage: str


async def retry_now(client: Client, case_or_subscription: str, reason: str) -> RetryOutcome:
    handle = _handle(client, case_or_subscription)
    # A closed case has no validator left to ask: Temporal answers "not found" to the update.
    # Say why it refuses instead, in the validator's words.
    await _describe_open(handle, "retry")
    try:
        result = await handle.execute_update(
            contract.UPDATE_RETRY_NOW, RetryNow(reason=reason), result_type=RetryNowResult
        )
    except WorkflowUpdateFailedError as err:
        cause = err.cause
        message = getattr(cause, "message", None) or str(cause or err)
        raise Rejected(message) from err
    except RPCError as err:
        if _not_found(err):  # closed between the look and the update
            await _describe_open(handle, "retry")
            raise CaseNotFound(f"no open case {handle.id}") from err
        raise
    return RetryOutcome(result, await _settled_stage(handle, result))


async def _settled_stage(handle: WorkflowHandle, result: RetryNowResult) -> str:
    """The case's stage once it has acted on the charge results: when every invoice was paid the
    case closes `recovered` a moment after the update returned."""
    paid = bool(result.results) and all(r.status == "succeeded" for r in result.results)
    stage = result.stage.value
    deadline = asyncio.get_running_loop().time() + CONFIRM_SECONDS
    while True:
        try:
            desc = await handle.describe()
        except RPCError:
            return stage
        outcome = desc.typed_search_attributes.get(contract.DUNNING_OUTCOME)
        if outcome:
            return outcome
        if desc.status != WorkflowExecutionStatus.RUNNING:
            return desc.status.name.lower() if desc.status else stage
        status = await _status_or_none(handle)
        if status is not None:
            stage = status.outcome.value if status.outcome else status.stage.value
            if not paid or status.outcome or not status.outstanding_invoices:
                return stage
        if asyncio.get_running_loop().time() > deadline:
            return stage
        await asyncio.sleep(0.2)


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
