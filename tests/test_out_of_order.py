"""Events out of order, on the time-skipping server: what the customer hears must not depend on
the order Stripe happened to deliver in."""

from __future__ import annotations

from dunning.models import InvoicePaid, Stage
from tests.case_harness import CaseRunner


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
