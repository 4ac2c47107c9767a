"""Runs whole cases on the time-skipping server against the sandbox backends.

A test drives a case like Stripe and an operator would (signals, update), lets
virtual weeks pass, and reads back what the customer and Stripe saw: every charge
with its idempotency key and every message with its channel and template, each
stamped with the day of the case it happened on.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import WorkflowExecutionStatus
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest
from temporalio.client import WorkflowHandle, WorkflowHistory
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.sandbox import MemoryConsentStore, SandboxOutbox, SandboxPayments
from dunning.models import CaseStatus, DunningInput, PaymentFailed
from dunning.policy import Policy
from tests.helpers.workers import new_worker
from workflows.dunning_workflow import DunningWorkflow

HISTORIES = Path(__file__).resolve().parents[1] / "histories"
#: Histories are recorded as `{scenario}.{RECORDING_TAG}.json`: the tag names the newest patch,
#: so a new path is recorded beside the old files, which stay for the replay tests.
RECORDING_TAG = "card_budget"
#: Timer durations differ by the milliseconds a test's own steps take.
TIMER_TOLERANCE = timedelta(seconds=2)


def timer_durations(history: WorkflowHistory) -> list[timedelta]:
    return [
        event.timer_started_event_attributes.start_to_fire_timeout.ToTimedelta()
        for event in history.events
        if event.HasField("timer_started_event_attributes")
    ]


def assert_timers_match_recordings(scenario: str, fresh: WorkflowHistory) -> None:
    """A fresh run's timers last as long as in every recorded history of the scenario.

    The Replayer only notices a changed command, not a timer that moved: a refactor that sleeps
    a day less replays fine and breaks every running case's schedule. This catches it.
    """
    recordings = sorted([*HISTORIES.glob(f"{scenario}.json"), *HISTORIES.glob(f"{scenario}.*.json")])
    assert recordings, f"no recorded history for {scenario}: record one (README, 'Changing the workflow')"
    now = timer_durations(fresh)
    for path in recordings:
        then = timer_durations(WorkflowHistory.from_json(fresh.workflow_id, path.read_text()))
        moved = len(now) != len(then) or any(abs(a - b) > TIMER_TOLERANCE for a, b in zip(now, then, strict=True))
        assert not moved, f"{path.name}: timers {[str(d) for d in then]} now run {[str(d) for d in now]}"

TEST_POLICY = {
    "name": "default",
    "retry_after": ["P1D", "P3D", "P5D", "P7D", "P10D", "P14D"],
    "retry_local_hour": None,
    "max_attempts_per_card_30d": 10,
    "grace": "P14D",
    "cancel_after_suspension": "P30D",
    "quiet_hours": None,
    "min_gap_between_messages": "PT20H",
    "notify": [
        {"at": "PT0S", "channels": ["email", "in_app"], "template": "payment_failed"},
        {"at": "P3D", "channels": ["email", "sms"], "template": "reminder"},
        {"at": "P10D", "channels": ["email", "sms", "in_app"], "template": "final_notice"},
        {"on": "suspended", "channels": ["email"], "template": "suspended"},
        {"on": "recovered", "channels": ["email"], "template": "recovered"},
        {"on": "canceled", "channels": ["email"], "template": "canceled"},
    ],
}


def make_policy(**overrides: object) -> Policy:
    return Policy.model_validate({**TEST_POLICY, **overrides})


@dataclass
class Case:
    env: WorkflowEnvironment
    handle: WorkflowHandle
    payments: SandboxPayments
    outbox: SandboxOutbox
    opened_at: datetime | None = None
    record_as: str | None = None

    async def status(self) -> CaseStatus:
        return await self.handle.query("status", result_type=CaseStatus)

    async def idle(self) -> None:
        """Until the case sleeps on a timer with no activity in flight, in real time: the
        time-skipping server stops skipping time for good when an activity outlives its case."""
        while (await self.status()).next_action_at is None:
            await asyncio.sleep(0.02)
        await settle([self.handle])

    async def wait_days(self, days: float) -> None:
        await self.env.sleep(timedelta(days=days))

    async def signal(self, name: str, payload: object) -> None:
        await self.handle.signal(name, payload)

    async def result(self) -> CaseStatus:
        status = await self.handle.result()
        if self.record_as:
            history = await self.handle.fetch_history()
            if os.environ.get("DUNNING_RECORD_HISTORIES") == "1":
                (HISTORIES / f"{self.record_as}.{RECORDING_TAG}.json").write_text(history.to_json())
            else:
                assert_timers_match_recordings(self.record_as, history)
        return status

    def day(self, at: datetime) -> float:
        """Days since the case opened, rounded to the hour."""
        assert self.opened_at is not None
        return round((at - self.opened_at).total_seconds() / 86400, 2)

    def charges(self) -> list[tuple[float, str, str, str]]:
        """(day, invoice, idempotency key, result status) of every charge Stripe received."""
        return [(self.day(c.at), c.invoice_id, c.idempotency_key, c.result.status) for c in self.payments.charges]

    async def messages(self) -> list[tuple[float, str, str, str]]:
        """(day, channel, template, status) of every message the case sent or tried."""
        status = await self.status()
        return [(self.day(n.at), n.channel.value, n.template, n.status) for n in status.notifications]

    async def sent(self) -> list[tuple[float, str, str]]:
        return [(d, c, t) for d, c, t, st in await self.messages() if st == "sent"]


async def settle(handles: list[WorkflowHandle], timeout: float = 10.0) -> None:
    """Until no open case among `handles` has an activity in flight (a ledger record started as
    the case went to sleep), in real time: a test that ends then leaves no activity behind."""
    deadline = asyncio.get_running_loop().time() + timeout
    for handle in handles:
        while asyncio.get_running_loop().time() < deadline:
            try:
                # The raw call: the SDK's describe() can't decode the test server's Datetime attributes.
                description = await handle._client.workflow_service.describe_workflow_execution(
                    DescribeWorkflowExecutionRequest(
                        namespace=handle._client.namespace, execution=WorkflowExecution(workflow_id=handle.id)
                    )
                )
            except RPCError:
                break
            running = description.workflow_execution_info.status == WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_RUNNING
            if not running or not description.pending_activities:
                break
            await asyncio.sleep(0.02)


def failure(invoice_id: str = "in_1", amount: int = 4900, currency: str = "eur", **kw: object) -> PaymentFailed:
    defaults = {
        "decline_code": "insufficient_funds",
        "failure_code": "card_declined",
        "payment_method_id": "pm_card_customer",
        "event_id": f"evt_failed_{invoice_id}",
    }
    return PaymentFailed(invoice_id=invoice_id, amount_due=amount, currency=currency, **{**defaults, **kw})


class CaseRunner:
    """Owns one worker on a fresh task queue; `open` starts a case the way the webhook API does.

    `outbox` and `consent` replace the sandbox ones; other keyword arguments go to `new_worker`
    (email, sms, message_defaults, Worker options).
    """

    def __init__(
        self,
        env: WorkflowEnvironment,
        payments: SandboxPayments | None = None,
        *,
        outbox: SandboxOutbox | None = None,
        consent: object = None,
        **worker_options: object,
    ) -> None:
        self.env = env
        self.payments = payments or SandboxPayments()
        self.outbox = outbox if outbox is not None else SandboxOutbox()
        self.consent = consent if consent is not None else MemoryConsentStore()
        self.handles: list[WorkflowHandle] = []
        self.worker = new_worker(
            env.client, payments=self.payments, outbox=self.outbox, consent=self.consent, **worker_options
        )
        self.task_queue = self.worker.task_queue

    async def __aenter__(self) -> CaseRunner:
        await self.worker.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await settle(self.handles)
        # The worker stops first, so no activity in flight outlives its case (the time-skipping
        # server then stops skipping time for good); then cases left open are ended, or they
        # would block time skipping for later tests (no worker polls their queue).
        await self.worker.__aexit__(*exc)
        for handle in self.handles:
            try:
                await handle.terminate("test finished")
            except RPCError:
                pass  # already closed

    async def open(
        self,
        first_failure: PaymentFailed | None = None,
        policy: Policy | None = None,
        customer_id: str = "cus_1",
        subscription_id: str | None = None,
        history_event_limit: int = 10_000,
        record_as: str | None = None,
        requested_policy: str | None = None,
        experiment: str | None = None,
        arm: str | None = None,
    ) -> Case:
        """Start a case like the webhook API does; `record_as` names its history for replay tests
        (written when DUNNING_RECORD_HISTORIES=1)."""
        subscription_id = subscription_id or f"sub_{uuid.uuid4().hex[:10]}"
        if customer_id not in self.payments.customers:
            self.payments.add_customer(customer_id, name="Ada Lovelace", email="ada@example.com", phone="+15555550123")
        handle = await self.env.client.start_workflow(
            DunningWorkflow.run,
            DunningInput(
                subscription_id=subscription_id,
                customer_id=customer_id,
                policy=policy or make_policy(),
                history_event_limit=history_event_limit,
                requested_policy=requested_policy,
                experiment=experiment,
                arm=arm,
            ),
            id=f"dunning-{subscription_id}",
            task_queue=self.task_queue,
            start_signal="payment_failed",
            start_signal_args=[first_failure or failure()],
        )
        self.handles.append(handle)
        case = Case(self.env, handle, self.payments, self.outbox, record_as=record_as)
        case.opened_at = (await case.status()).opened_at
        return case
