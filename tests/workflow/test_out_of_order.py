"""Events out of order, on the time-skipping server: what the customer hears must not depend on
the order Stripe happened to deliver in."""

from __future__ import annotations

import asyncio

from dunning.models import InvoicePaid, Stage
from tests.helpers.case_harness import CaseRunner


async def test_invoice_paid_by_hand_before_the_failure_reached_us_says_nothing(time_env):
    """`invoice.paid` overtook the older `invoice.payment_failed`: the case opens, finds the invoice
    paid before any message and before any charge, and closes without writing to the customer."""
    async with CaseRunner(time_env) as runner:
        runner.payments.paid_invoices.add("in_1")
        case = await runner.open(record_as="paid_elsewhere_before_any_message")
        status = await case.result()

        assert status.stage is Stage.RECOVERED
        assert runner.payments.successful_charges == []
        assert runner.outbox.messages == []
        assert [(n.template, n.status) for n in status.notifications] == [
            ("payment_failed", "skipped"),
            ("payment_failed", "skipped"),
        ]
        assert status.timeline[-1].detail == "recovered: the customer had not been told of a problem"


async def test_paid_after_a_message_still_gets_its_thank_you(time_env):
    """The same ending after the customer was written to: the thank-you goes out, once."""
    async with CaseRunner(time_env) as runner:
        case = await runner.open()
        await case.wait_days(0.5)
        await case.signal("invoice_paid", InvoicePaid(invoice_id="in_1", event_id="evt_paid"))
        await case.signal("invoice_paid", InvoicePaid(invoice_id="in_1", event_id="evt_paid"))
        status = await case.result()

        assert status.stage is Stage.RECOVERED
        assert [(c, t) for _, c, t in await case.sent()] == [
            ("email", "payment_failed"),
            ("in_app", "payment_failed"),
            ("email", "recovered"),
        ]


async def test_paid_between_two_channels_of_a_step_stops_the_rest_of_the_step(time_env):
    """`invoice.paid` arrives while the day-3 reminder e-mail is in flight: the e-mail had been
    checked and goes, but the SMS of the same step must not be sent to a customer who has paid."""
    async with CaseRunner(time_env) as runner:
        runner.payments.script_card("pm_card_customer", ["insufficient_funds", "insufficient_funds"])
        case = await runner.open(record_as="paid_between_channels_of_a_step")
        await case.wait_days(2.5)
        runner.outbox.gate = asyncio.Event()  # hold the day-3 reminder e-mail in flight
        clock = asyncio.create_task(case.wait_days(1))  # let virtual time reach day 3
        await asyncio.wait_for(runner.outbox.waiting_at_gate.wait(), timeout=20)
        runner.payments.paid_invoices.add("in_1")
        await case.signal("invoice_paid", InvoicePaid(invoice_id="in_1", event_id="evt_paid_by_hand"))
        runner.outbox.gate.set()
        status = await asyncio.wait_for(case.result(), timeout=20)
        clock.cancel()

        assert status.stage is Stage.RECOVERED
        reminder = [(n.channel.value, n.status, n.reason) for n in status.notifications if n.template == "reminder"]
        assert reminder == [("email", "sent", None), ("sms", "skipped", "invoice already paid")]
        assert [m.channel for m in runner.outbox.messages].count("sms") == 0
        assert [t for _, _, t in await case.sent()][-1] == "recovered"  # we wrote to them: thank them
