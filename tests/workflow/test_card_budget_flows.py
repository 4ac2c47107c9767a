"""The card's budget across cases, and backup cards, in whole cases on the time-skipping server.

Two subscriptions (two customers even) on one card share the card's 30-day budget; a never-retry
decline in one case stops the other; a hard decline on the card on file makes the case try the
customer's other saved card before asking for a new one, and the thank-you says which card paid.
"""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowUpdateFailedError

from dunning.models import InvoicePaid, RetryNow, RetryNowResult, Stage
from tests.helpers.case_harness import CaseRunner, failure, make_policy

DAILY = ["P1D", "P2D", "P3D", "P4D", "P5D", "P6D", "P7D", "P8D"]


async def test_two_cases_on_one_card_never_exceed_the_cards_budget(time_env):
    async with CaseRunner(time_env) as runner:
        payments = runner.payments
        # One card number saved by two customers: two payment methods, one fingerprint.
        payments.add_card("pm_a", "cus_a", fingerprint="fp_shared")
        payments.add_card("pm_b", "cus_b", fingerprint="fp_shared")
        payments.script_card("pm_a", ["insufficient_funds"] * 20)
        payments.script_card("pm_b", ["insufficient_funds"] * 20)
        policy = make_policy(retry_after=DAILY, max_attempts_per_card_30d=3)
        a = await runner.open(
            failure("in_a", payment_method_id="pm_a"), policy, customer_id="cus_a", subscription_id="sub_a",
            record_as="card_budget_shared_by_two_cases",
        )
        b = await runner.open(failure("in_b", payment_method_id="pm_b"), policy, customer_id="cus_b", subscription_id="sub_b")
        await a.wait_days(12)
        await a.idle()
        await b.idle()

        # Eight scheduled retries each, sixteen in all: the card saw three.
        assert len(payments.charges) == 3
        for case in (a, b):
            status = await case.status()
            assert status.card_budget is not None and status.card_budget.left == 0
            assert set(status.card_budget.used_by) == {"dunning-sub_a", "dunning-sub_b"}
            assert status.card_budget_note and status.card_budget_note.startswith("Card budget spent: 3 of 3")
            assert sum(1 for a in status.attempts if a.attempt > 0) <= 3
            assert any(e.event == "charge_refused" for e in status.timeline) or len(status.attempts) > 1
        # The validator uses what the case learned (no I/O): refused, naming the cases.
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await b.handle.execute_update("retry_now", RetryNow(), result_type=RetryNowResult)
        assert "across cases" in str(refused.value.cause) and "dunning-sub_a" in str(refused.value.cause)

        for case, invoice in ((a, "in_a"), (b, "in_b")):
            payments.paid_invoices.add(invoice)
            await case.signal("invoice_paid", InvoicePaid(invoice_id=invoice))
        assert (await a.result()).stage is Stage.RECOVERED
        assert (await b.result()).stage is Stage.RECOVERED


async def test_a_stolen_card_in_one_case_stops_the_other_case_on_that_card(time_env):
    async with CaseRunner(time_env) as runner:
        payments = runner.payments
        payments.add_card("pm_a", "cus_a", fingerprint="fp_shared")
        payments.add_card("pm_b", "cus_b", fingerprint="fp_shared")
        payments.script_card("pm_a", ["stolen_card"])
        payments.script_card("pm_b", ["insufficient_funds"] * 5)
        a = await runner.open(
            failure("in_a", payment_method_id="pm_a"), customer_id="cus_a", subscription_id="sub_a",
            record_as="card_blocked_by_another_case",
        )
        await a.wait_days(1.5)
        assert (await a.status()).stage is Stage.AWAITING_PAYMENT_METHOD
        b = await runner.open(failure("in_b", payment_method_id="pm_b"), customer_id="cus_b", subscription_id="sub_b")
        await b.wait_days(1.5)
        await b.idle()

        status = await b.status()
        assert status.stage is Stage.AWAITING_PAYMENT_METHOD
        assert [c.payment_method_id for c in payments.charges] == ["pm_a"]  # pm_b never reached the card
        assert status.card_budget_note == "Card blocked for every case: stolen_card in dunning-sub_a"
        assert [a.attempt for a in status.attempts] == [0]  # a refusal is no attempt
        assert any(e.event == "charge_refused" and "stolen_card" in e.detail for e in status.timeline)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await b.handle.execute_update("retry_now", RetryNow(), result_type=RetryNowResult)
        assert "new payment method" in str(refused.value.cause)

        for case, invoice in ((a, "in_a"), (b, "in_b")):
            payments.paid_invoices.add(invoice)
            await case.signal("invoice_paid", InvoicePaid(invoice_id=invoice))
        assert (await a.result()).stage is Stage.RECOVERED
        await b.result()


async def test_a_hard_decline_tries_the_customers_backup_card_and_says_which_card_paid(time_env):
    async with CaseRunner(time_env) as runner:
        payments = runner.payments
        payments.add_card("pm_card_customer", "cus_1", brand="visa", last4="4242")
        payments.add_card("pm_expired", "cus_1", brand="amex", last4="0005", exp_month=1, exp_year=2020)
        payments.add_card("pm_backup", "cus_1", brand="mastercard", last4="4444")
        payments.script_card("pm_card_customer", ["lost_card"])
        case = await runner.open(policy=make_policy(try_backup_cards=True), record_as="backup_card_pays_after_hard_decline")
        status = await case.result()

        assert status.stage is Stage.RECOVERED
        assert [(day, c.payment_method_id, c.result.status) for day, c in zip((case.day(c.at) for c in payments.charges), payments.charges, strict=True)] == [
            (1.0, "pm_card_customer", "declined"),
            (1.0, "pm_backup", "succeeded"),
        ]
        assert [a.trigger for a in status.attempts] == ["stripe", "scheduled retry 1/6", "backup card"]
        assert any(e.event == "backup_card" and "Mastercard ending 4444" in e.detail for e in status.timeline)
        thanks = [m for m in runner.outbox.messages if "went through" in m.body]
        assert len(thanks) == 1 and "paid with your Mastercard ending 4444" in thanks[0].body


async def test_without_backup_cards_a_hard_decline_asks_for_a_new_card(time_env):
    async with CaseRunner(time_env) as runner:
        runner.payments.add_card("pm_backup", "cus_1", brand="mastercard", last4="4444")
        runner.payments.script_card("pm_card_customer", ["lost_card"])
        case = await runner.open()
        await case.wait_days(1.5)
        await case.idle()
        status = await case.status()
        assert status.stage is Stage.AWAITING_PAYMENT_METHOD
        assert [c.payment_method_id for c in runner.payments.charges] == ["pm_card_customer"]
