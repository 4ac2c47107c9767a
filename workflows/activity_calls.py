"""How both workflows call the contract's activities: the retry policy for provider outages,
the time windows, and the reason an activity finally failed, as the timeline says it.

A decline is a result and never reaches the retry policy; an outage (5xx, 429, timeout, our
database away) is retried with backoff for as long as the call's window allows.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from dunning.contract import ActivityDef

PROVIDER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=10),
    non_retryable_error_types=["ProviderRejected"],
)
CHARGE_WINDOW = timedelta(hours=12)
MESSAGE_WINDOW = timedelta(hours=6)
ACCESS_WINDOW = timedelta(days=1)
CUSTOMER_WINDOW = timedelta(hours=1)
CALL_TIMEOUT = timedelta(seconds=60)

ArgT = TypeVar("ArgT")
ResultT = TypeVar("ResultT")


async def call(activity: ActivityDef[ArgT, ResultT], arg: ArgT, *, window: timedelta, summary: str) -> ResultT:
    """Run one of the contract's activities; provider outages are retried within `window`."""
    result: ResultT = await workflow.execute_activity(
        activity.name,
        arg,
        result_type=activity.result_type,
        start_to_close_timeout=CALL_TIMEOUT,
        schedule_to_close_timeout=window,
        retry_policy=PROVIDER_RETRY,
        summary=summary,
    )
    return result


def cause(err: ActivityError) -> str:
    """The innermost reason an activity failed (the provider's words, not Temporal's wrapping)."""
    inner: BaseException | None = err.cause
    while inner is not None and getattr(inner, "cause", None) is not None:
        inner = inner.cause  # type: ignore[attr-defined]
    return str(inner or err)
