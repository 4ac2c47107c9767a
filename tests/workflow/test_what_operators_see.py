"""What the operator sees from the first moment, and how a case ends when Stripe ended it."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest
from temporalio.client import Client

from activities.sandbox import SandboxPayments
from dunning import contract
from dunning.models import AccessState, CardUpdated, CustomerProfile, Pause, Resume, Stage, SubscriptionCanceled
from tests.helpers.case_harness import CaseRunner, failure


async def search_attributes(client: Client, workflow_id: str) -> dict[str, object]:
    """The case's search attributes as the server holds them, decoded by hand: the time-skipping
    server keeps an unset Datetime as a null payload, which the SDK's typed decoding refuses."""
    described = await client.workflow_service.describe_workflow_execution(
        DescribeWorkflowExecutionRequest(namespace=client.namespace, execution=WorkflowExecution(workflow_id=workflow_id))
    )
    fields = described.workflow_execution_info.search_attributes.indexed_fields
    return {name: json.loads(payload.data) for name, payload in fields.items() if payload.data != b"null"}


class StripeSlowForCustomers(SandboxPayments):
    """Stripe does not answer the customer lookup until released (an outage, as the case sees it)."""

    def __init__(self) -> None:
        super().__init__()
        self.answer = asyncio.Event()

    async def get_customer(self, customer_id: str) -> CustomerProfile:
        await self.answer.wait()
        return await super().get_customer(customer_id)


async def test_a_new_case_is_in_the_stage_filter_before_stripe_answers(time_env):
    stripe = StripeSlowForCustomers()
    async with CaseRunner(time_env, payments=stripe) as runner:
        case = await runner.open()
        for _ in range(100):  # the first workflow task, in real time (no time is skipped here)
            attributes = await search_attributes(time_env.client, case.handle.id)
            if contract.DUNNING_STAGE.name in attributes:
                break
            await asyncio.sleep(0.05)
        assert attributes[contract.DUNNING_STAGE.name] == "retrying"
        assert attributes[contract.CUSTOMER_ID.name] == "cus_1"
        assert attributes[contract.AMOUNT_DUE.name] == 4900
        assert contract.NEXT_ACTION_AT.name not in attributes  # nothing planned before the customer is known
        status = await case.status()
        assert status.stage is Stage.RETRYING and case.charges() == [] and runner.outbox.messages == []
        stripe.answer.set()
        await case.idle()


async def test_a_subscription_canceled_by_stripes_own_dunning_closes_the_case_canceled(time_env):
    async with CaseRunner(time_env) as runner:
        runner.payments.script_card("pm_card_customer", ["insufficient_funds"] * 10)
        case = await runner.open(record_as="canceled_by_stripe_dunning")
        await case.wait_days(2)
        await case.signal(
            contract.Signal.SUBSCRIPTION_CANCELED,
            SubscriptionCanceled(cancellation_reason="payment_failed", event_id="evt_deleted"),
        )
        status = await case.result()
        assert status.stage is Stage.CANCELED
        assert "canceled by Stripe after failed payments" in status.timeline[-2].detail
        assert [d for d, *_ in case.charges()] == [1.0]
        assert len(runner.outbox.messages) == 1  # the first email only: Stripe told the customer
        assert runner.payments.access_log == []  # nothing left to cancel


async def test_an_unknown_policy_is_said_on_the_timeline(time_env):
    async with CaseRunner(time_env) as runner:
        case = await runner.open(requested_policy="gentle-typo")
        status = await case.status()
        assert status.policy == "default"
        entry = status.timeline[0]
        assert entry.event == "policy_unknown"
        assert "'gentle-typo'" in entry.detail and "using 'default'" in entry.detail
        await case.idle()


async def test_a_card_update_during_a_pause_waits_for_resume_then_charges_at_once(time_env):
    async with CaseRunner(time_env) as runner:
        runner.payments.script_card("pm_card_customer", ["insufficient_funds"] * 10)
        case = await runner.open()
        await case.wait_days(0.5)
        await case.signal(contract.Signal.PAUSE, Pause(reason="disputed"))
        await case.signal(contract.Signal.CARD_UPDATED, CardUpdated(payment_method_id="pm_new", event_id="evt_pm"))
        await case.wait_days(5)
        assert case.charges() == []
        sent_before = len(runner.outbox.messages)
        await case.signal(contract.Signal.RESUME, Resume())
        await case.wait_days(0.001)
        charges = case.charges()
        assert len(charges) == 1 and charges[0][3] == "succeeded"
        assert abs(charges[0][0] - 5.5) < 0.01  # at resume, not at the next slot
        assert runner.payments.charges[0].payment_method_id == "pm_new"
        status = await case.result()
        assert status.stage is Stage.RECOVERED
        assert len(runner.outbox.messages) == sent_before + 1  # the thank-you only
        assert timedelta(0) < status.timeline[-1].at - status.opened_at


async def test_a_failure_dated_1970_does_not_fast_forward_the_case(time_env):
    async with CaseRunner(time_env) as runner:
        runner.payments.script_card("pm_card_customer", ["insufficient_funds"] * 10)
        case = await runner.open(
            failure(occurred_at=datetime(1970, 1, 1, tzinfo=UTC)), record_as="failure_dated_1970"
        )
        await case.idle()
        status = await case.status()
        assert status.stage is Stage.RETRYING and status.access is AccessState.GRACE
        assert case.day(status.grace_ends_at) == 14.0  # counted from now
        assert [e.event for e in status.timeline][:2] == ["failure_time_clamped", "payment_failed"]
        assert {(d, t) for d, _, t in await case.sent()} == {(0.0, "payment_failed")}  # the first message, nothing skipped
        assert case.charges() == []  # the first retry waits its day
        await case.signal(contract.Signal.SUBSCRIPTION_CANCELED, SubscriptionCanceled(reason="test over"))
        await case.result()


async def test_an_invoice_of_another_customer_never_joins_the_case(time_env):
    async with CaseRunner(time_env) as runner:
        case = await runner.open(record_as="another_customers_invoice")
        await case.idle()
        await case.signal(
            contract.Signal.PAYMENT_FAILED, failure("in_other", customer_id="cus_intruder", event_id="evt_x")
        )
        await case.wait_days(0.01)
        status = await case.status()
        assert [i.invoice_id for i in status.invoices] == ["in_1"] and status.amount_due == 4900
        assert status.timeline[-1].event == "failure_refused" and "cus_intruder" in status.timeline[-1].detail
        await case.signal(contract.Signal.SUBSCRIPTION_CANCELED, SubscriptionCanceled(reason="test over"))
        await case.result()
