"""`Case.message_context` for the thank-you: did the customer sort it out, or did a retry simply go through?

The recovered message thanks the customer "for sorting this out" only when they did something:
a new card (charged at once), or a payment made outside the case (elsewhere, or on their page).
"""

from __future__ import annotations

from dunning.case import ChargeRound
from dunning.models import CardUpdated, InvoicePaid
from tests.unit.test_case_rules import DAY, T0, after_first_email, charge, failure, opened, succeeded


def test_a_scheduled_retry_that_went_through_is_not_the_customer_acting() -> None:
    case = after_first_email(opened())
    action = case.next_action(T0 + DAY)
    assert isinstance(action, ChargeRound) and action.trigger.startswith("scheduled retry")
    charge(case, T0 + DAY, succeeded(), trigger=action.trigger)
    context = case.message_context(T0 + DAY)
    assert context["customer_acted"] is False
    assert (context["amount_paid"], context["amount_due"]) == (4900, 0)


def test_a_charge_on_a_new_card_is_the_customer_acting() -> None:
    case = after_first_email(opened())
    assert case.card_updated(CardUpdated(payment_method_id="pm_new", event_id="evt_card"), T0 + DAY / 2)
    action = case.next_action(T0 + DAY / 2)
    assert isinstance(action, ChargeRound)
    charge(case, T0 + DAY / 2, succeeded(), trigger=action.trigger)
    assert case.message_context(T0 + DAY / 2)["customer_acted"] is True


def test_an_invoice_paid_outside_the_case_is_the_customer_acting() -> None:
    case = after_first_email(opened())
    assert not case.message_context(T0)["customer_acted"]  # nothing paid yet
    assert case.invoice_paid(InvoicePaid(invoice_id="in_1", event_id="evt_paid"), T0 + DAY / 2)
    assert case.message_context(T0 + DAY / 2)["customer_acted"] is True


def test_an_operator_retry_is_not_the_customer_acting() -> None:
    case = after_first_email(opened())
    charge(case, T0 + DAY / 2, succeeded(), trigger="operator: asked on the phone")
    assert case.message_context(T0 + DAY / 2)["customer_acted"] is False


def test_one_invoice_paid_by_the_customer_among_several_counts() -> None:
    case = after_first_email(opened())
    assert case.payment_failed(failure("in_2", amount_due=2500), T0 + DAY / 4)
    charge(case, T0 + DAY, succeeded("in_1"), trigger="scheduled retry 1/6")
    assert not case.message_context(T0 + DAY)["customer_acted"]
    assert case.invoice_paid(InvoicePaid(invoice_id="in_2", event_id="evt_paid_2"), T0 + DAY)
    assert case.message_context(T0 + DAY)["customer_acted"] is True
