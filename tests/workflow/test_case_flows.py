"""Whole cases over weeks of virtual time: the exact charges and messages a customer sees."""

from __future__ import annotations

import asyncio

import pytest

from dunning.models import CardUpdated, InvoicePaid, Stage
from tests.helpers.case_harness import CaseRunner, failure


async def test_recovers_on_the_third_retry(time_env):
    async with CaseRunner(time_env) as runner:
        runner.payments.script_card("pm_card_customer", ["insufficient_funds", "insufficient_funds", None])
        case = await runner.open(record_as="recovered_on_third_retry")
        status = await case.result()
        key = f"{status.case_id}/in_1"

        assert status.stage is Stage.RECOVERED
        assert case.charges() == [
            (1.0, "in_1", f"{key}/1", "declined"),
            (3.0, "in_1", f"{key}/2", "declined"),
            (5.0, "in_1", f"{key}/3", "succeeded"),
        ]
        assert await case.sent() == [
            (0.0, "email", "payment_failed"),
            (0.0, "in_app", "payment_failed"),
            (3.0, "email", "reminder"),
            (3.0, "sms", "reminder"),
            (5.0, "email", "recovered"),
        ]
        assert [m.to for m in runner.outbox.messages] == ["ada@example.com"] * 2 + ["+15555550123", "ada@example.com"]
        assert status.access.value == "active" and status.banner_template is None
        assert runner.payments.access_log == []


async def test_hard_decline_waits_for_a_new_card_then_charges_it_at_once(time_env):
    async with CaseRunner(time_env) as runner:
        case = await runner.open(failure(decline_code="expired_card"), record_as="hard_decline_then_card_update")
        await case.wait_days(2)
        status = await case.status()
        assert status.stage is Stage.AWAITING_PAYMENT_METHOD
        assert status.decline_category.value == "hard"
        assert case.charges() == []  # an expired card is never retried

        await case.signal("card_updated", CardUpdated(payment_method_id="pm_card_visa", event_id="evt_pm"))
        status = await case.result()
        charges = case.charges()
        assert [(inv, key, st) for _, inv, key, st in charges] == [("in_1", f"{status.case_id}/in_1/1", "succeeded")]
        assert charges[0][0] == pytest.approx(2.0, abs=0.01)  # within seconds of the card update
        assert status.stage is Stage.RECOVERED
        assert [(c, t) for _, c, t in await case.sent()] == [
            ("email", "payment_failed"),
            ("in_app", "payment_failed"),
            ("email", "recovered"),
        ]


async def test_card_update_mid_sleep_retries_at_once_not_at_the_next_slot(time_env):
    async with CaseRunner(time_env) as runner:
        runner.payments.script_card("pm_card_customer", ["insufficient_funds"])
        case = await runner.open()
        await case.wait_days(1.5)
        assert [c[0] for c in case.charges()] == [1.0]
        await case.signal("card_updated", CardUpdated(payment_method_id="pm_card_new", event_id="evt_pm2"))
        status = await case.result()
        assert status.stage is Stage.RECOVERED
        assert [(d, st) for d, _, _, st in case.charges()] == [(1.0, "declined"), (1.5, "succeeded")]
        assert case.payments.charges[-1].payment_method_id == "pm_card_new"


async def test_payment_elsewhere_mid_ladder_stops_everything(time_env):
    async with CaseRunner(time_env) as runner:
        runner.payments.script_card("pm_card_customer", ["insufficient_funds"] * 10)
        case = await runner.open()
        await case.wait_days(4)
        runner.payments.paid_invoices.add("in_1")
        await case.signal("invoice_paid", InvoicePaid(invoice_id="in_1", event_id="evt_paid"))
        status = await case.result()
        assert status.stage is Stage.RECOVERED
        assert [d for d, *_ in case.charges()] == [1.0, 3.0]
        assert [(d, c, t) for d, c, t in await case.sent()] == [
            (0.0, "email", "payment_failed"),
            (0.0, "in_app", "payment_failed"),
            (3.0, "email", "reminder"),
            (3.0, "sms", "reminder"),
            (4.0, "email", "recovered"),
        ]
        await case.wait_days(30)
        assert len(case.charges()) == 2 and len(runner.outbox.messages) == 4


async def test_authentication_required_asks_the_customer_and_never_retries_off_session(time_env):
    async with CaseRunner(time_env) as runner:
        case = await runner.open(failure(decline_code=None, failure_code="authentication_required"))
        await case.wait_days(4)
        status = await case.status()
        assert status.stage is Stage.AWAITING_PAYMENT_METHOD
        assert status.decline_category.value == "authentication"
        assert case.charges() == []
        assert (0.0, "email", "payment_failed") in await case.sent()
        runner.payments.paid_invoices.add("in_1")  # the customer confirmed on the hosted page
        await case.signal("invoice_paid", InvoicePaid(invoice_id="in_1"))
        assert (await case.result()).stage is Stage.RECOVERED


async def test_suspension_then_reinstatement_by_a_new_card(time_env):
    async with CaseRunner(time_env) as runner:
        runner.payments.script_card("pm_card_customer", ["insufficient_funds"] * 10)
        case = await runner.open(record_as="suspended_then_reinstated")
        await case.wait_days(15)
        status = await case.status()
        assert status.stage is Stage.SUSPENDED and status.access.value == "suspended"
        assert [(a, case.day(at)) for a, _, at in runner.payments.access_log] == [("suspend", 14.0)]
        assert [d for d, *_ in case.charges()] == [1.0, 3.0, 5.0, 7.0, 10.0, 14.0]
        assert (14.0, "email", "suspended") in await case.sent()

        await case.wait_days(5)
        await case.signal("card_updated", CardUpdated(payment_method_id="pm_card_visa"))
        status = await case.result()
        assert status.stage is Stage.RECOVERED and status.access.value == "active"
        assert [(a, case.day(at)) for a, _, at in runner.payments.access_log] == [
            ("suspend", 14.0),
            ("restore", 20.0),
        ]
        assert (await case.sent())[-1] == (20.0, "email", "recovered")


async def test_cancellation_at_the_end_of_the_road(time_env):
    async with CaseRunner(time_env) as runner:
        runner.payments.script_card("pm_card_customer", ["insufficient_funds"] * 10)
        case = await runner.open(record_as="canceled_at_the_end")
        status = await case.result()
        assert status.stage is Stage.CANCELED
        assert [(a, case.day(at)) for a, _, at in runner.payments.access_log] == [
            ("suspend", 14.0),
            ("cancel", 44.0),
        ]
        assert [(d, c, t) for d, c, t in await case.sent()] == [
            (0.0, "email", "payment_failed"),
            (0.0, "in_app", "payment_failed"),
            (3.0, "email", "reminder"),
            (3.0, "sms", "reminder"),
            (10.0, "email", "final_notice"),
            (10.0, "sms", "final_notice"),
            (10.0, "in_app", "final_notice"),
            (14.0, "email", "suspended"),
            (44.0, "email", "canceled"),
        ]
        assert len(case.charges()) == 6


async def test_customer_cancels_and_the_case_stops_at_once(time_env):
    from dunning.models import SubscriptionCanceled

    async with CaseRunner(time_env) as runner:
        runner.payments.script_card("pm_card_customer", ["insufficient_funds"] * 10)
        case = await runner.open(record_as="closed_by_customer")
        await case.wait_days(2)
        await case.signal("subscription_canceled", SubscriptionCanceled(reason="customer left"))
        status = await case.result()
        assert status.stage is Stage.CLOSED_BY_CUSTOMER
        assert [d for d, *_ in case.charges()] == [1.0]
        assert len(runner.outbox.messages) == 1  # only the first email; nothing after
        assert runner.payments.access_log == []


async def test_operator_pause_resume_and_extend_grace_move_the_schedule(time_env):
    from dunning.models import ExtendGrace, Pause, Resume

    async with CaseRunner(time_env) as runner:
        runner.payments.script_card("pm_card_customer", ["insufficient_funds"] * 10)
        case = await runner.open(record_as="paused_resumed_extended")
        await case.wait_days(2)
        await case.signal("pause", Pause(reason="disputed"))
        await case.wait_days(10)
        status = await case.status()
        assert status.stage is Stage.PAUSED and status.pause_reason == "disputed"
        assert status.next_action_at is None
        assert [d for d, *_ in case.charges()] == [1.0]  # nothing during the pause

        await case.signal("resume", Resume())
        await case.signal("extend_grace", ExtendGrace(days=7, reason="asked for time"))
        await case.wait_days(0.01)
        status = await case.status()
        assert status.stage is Stage.RETRYING
        assert case.day(status.grace_ends_at) == 14.0 + 10 + 7

        status = await case.result()
        assert [d for d, *_ in case.charges()] == [1.0, 13.0, 15.0, 17.0, 20.0, 24.0]
        assert ("suspend", 31.0) in [(a, case.day(at)) for a, _, at in runner.payments.access_log]
        assert status.stage is Stage.CANCELED


async def test_the_customer_cancels_on_their_page_and_the_case_cancels_in_stripe(time_env):
    from dunning.models import CancelReason, CustomerFeedback, SubscriptionCanceled

    async with CaseRunner(time_env) as runner:
        runner.payments.script_card("pm_card_customer", ["insufficient_funds"] * 10)
        case = await runner.open(record_as="canceled_on_the_customer_page")
        await case.wait_days(2)
        feedback = CustomerFeedback(reason=CancelReason.SWITCHING, comment="Moving to a competitor")
        canceled = SubscriptionCanceled(source="customer", feedback=feedback, event_id="page-cancel:link1")
        await case.signal("subscription_canceled", canceled)
        await case.signal("subscription_canceled", canceled)  # a double submit: once
        status = await case.result()
        assert status.stage is Stage.CLOSED_BY_CUSTOMER
        assert status.feedback == feedback
        # The case itself canceled the subscription in Stripe, once, and sent nothing more.
        assert [(action, sub) for action, sub, _ in runner.payments.access_log] == [("cancel", case.handle.id.removeprefix("dunning-"))]
        assert len(runner.outbox.messages) == 1
        assert any(e.event == "customer_canceled" and "switching: Moving to a competitor" in e.detail for e in status.timeline)


async def test_the_customer_takes_more_time_once_and_the_schedule_follows(time_env):
    from dunning.models import ExtendGrace

    async with CaseRunner(time_env) as runner:
        runner.payments.script_card("pm_card_customer", ["insufficient_funds"] * 10)
        case = await runner.open(record_as="more_time_on_the_customer_page")
        await case.wait_days(2)
        asked = ExtendGrace(source="customer", reason="asked on their page", request_id="page:link1:1")
        await case.signal("extend_grace", asked)
        await case.signal("extend_grace", asked)  # the same form twice: one extension
        await case.wait_days(0.01)
        status = await case.status()
        assert case.day(status.grace_ends_at) == 14.0 + 7
        assert (status.customer_extensions, status.self_service_grace_left) == (1, 0)
        # A second request (a new form) is over the policy's limit: refused, noted, nothing moves.
        await case.signal("extend_grace", ExtendGrace(source="customer", request_id="page:link1:2"))
        await case.wait_days(0.01)
        status = await case.status()
        assert case.day(status.grace_ends_at) == 14.0 + 7
        assert [e.event for e in status.timeline].count("grace_refused") == 1
        status = await case.result()
        assert ("suspend", 21.0) in [(a, case.day(at)) for a, _, at in runner.payments.access_log]


async def test_two_failed_invoices_are_charged_oldest_first_and_a_decline_ends_the_round(time_env):
    async with CaseRunner(time_env) as runner:
        runner.payments.script_card("pm_card_customer", ["insufficient_funds", None, None])
        case = await runner.open(failure("in_1", amount=4900), record_as="two_invoices")
        await case.wait_days(0.5)
        await case.signal("payment_failed", failure("in_2", amount=2500))
        await case.wait_days(0.1)
        status = await case.status()
        assert status.amount_due == 7400 and [i.invoice_id for i in status.outstanding_invoices] == ["in_1", "in_2"]

        status = await case.result()
        assert status.stage is Stage.RECOVERED
        assert [(d, inv, st) for d, inv, _, st in case.charges()] == [
            (1.0, "in_1", "declined"),  # in_2 is not charged in this round
            (3.0, "in_1", "succeeded"),
            (3.0, "in_2", "succeeded"),
        ]
        assert case.charges()[2][2] == f"{status.case_id}/in_2/1"


async def test_a_failure_arriving_while_the_case_closes_opens_the_next_case(time_env):
    async with CaseRunner(time_env) as runner:
        case = await runner.open()
        await case.wait_days(0.5)
        runner.outbox.gate = asyncio.Event()  # hold the thank-you note in flight
        runner.payments.paid_invoices.add("in_1")
        await case.signal("invoice_paid", InvoicePaid(invoice_id="in_1", event_id="evt_paid"))
        await runner.outbox.waiting_at_gate.wait()
        await case.signal("payment_failed", failure("in_2", event_id="evt_failed_next_month"))
        runner.outbox.gate.set()

        next_case = await case.result()  # follows the chain to the new case
        first_run = time_env.client.get_workflow_handle(case.handle.id, run_id=case.handle.result_run_id)
        history = await first_run.fetch_history()
        assert history.events[-1].HasField("workflow_execution_continued_as_new_event_attributes")
        assert next_case.stage is Stage.RECOVERED
        assert [i.invoice_id for i in next_case.invoices] == ["in_2"]
        assert [(inv, st) for _, inv, _, st in case.charges()] == [("in_2", "succeeded")]
