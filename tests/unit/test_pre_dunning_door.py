"""Pre-dunning's door without Temporal: what `invoice.upcoming` and `customer.source.expiring` ask
for (the webhook's pure `plan`), and which card a renewal charges, read from the Stripe fake with
the real SDK (`StripePayments.renewal_card`, `subscriptions_charging`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from pytest_httpserver import HTTPServer

from activities.stripe_backend import StripePayments
from fakes import stripe_api as sf
from fakes.stripe_api import FakeStripe
from starter.api import pre_dunning
from starter.api.routes.stripe_webhook import Ignore, plan

RENEWAL = 1_900_000_000  # 2030-03-17


def upcoming(**changes: object) -> dict:
    invoice = sf.upcoming_invoice(customer="cus_1", subscription="sub_1", renewal=RENEWAL, subscription_metadata={"dunning_policy": "high_value"})
    invoice.update(changes)
    return sf.event("invoice.upcoming", invoice, event_id="evt_up")


def test_invoice_upcoming_asks_for_the_renewal_of_its_subscription() -> None:
    action = plan(upcoming())
    assert action == pre_dunning.RenewalAhead(
        "sub_1", "cus_1", datetime.fromtimestamp(RENEWAL, UTC), "high_value", "evt_up", "invoice.upcoming"
    )
    later = plan(upcoming(next_payment_attempt=None, period_end=RENEWAL + 3600))
    assert isinstance(later, pre_dunning.RenewalAhead) and later.renewal_at.timestamp() == RENEWAL + 3600


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"parent": None}, "not for a subscription"),
        ({"next_payment_attempt": None, "period_end": None}, "no renewal date"),
        ({"next_payment_attempt": "soon", "period_end": True}, "no renewal date"),
        ({"customer": "cus_1' OR 1=1"}, "invoice.customer"),
    ],
)
def test_an_upcoming_invoice_we_cannot_use_is_ignored(changes: dict, why: str) -> None:
    action = plan(upcoming(**changes))
    assert isinstance(action, Ignore) and why in action.reason


def test_an_expiring_source_names_its_card() -> None:
    card = sf.resource("card", id="card_1", customer="cus_1", exp_month=3, exp_year=2030, last4="0005")
    action = plan(sf.event("customer.source.expiring", card, event_id="evt_src"))
    assert isinstance(action, pre_dunning.SourceExpiring)
    assert (action.customer_id, action.card.payment_method_id, action.card.exp_month, action.card.last4) == ("cus_1", "card_1", 3, "0005")
    for bad in ({"exp_month": 13}, {"exp_year": "2030"}, {"customer": None}):
        assert isinstance(plan(sf.event("customer.source.expiring", {**card, **bad})), Ignore)


@pytest.fixture
async def stripe(httpserver: HTTPServer) -> AsyncIterator[tuple[FakeStripe, StripePayments]]:
    fake = FakeStripe(httpserver)
    subscription = sf.subscription("sub_1", customer="cus_1", status="active", metadata={"dunning_policy": "high_value"})
    subscription["items"]["data"][0]["current_period_end"] = RENEWAL
    fake.add(
        sf.customer("cus_1", default_payment_method="pm_customer"),
        subscription,
        sf.payment_method("pm_customer", exp_month=2, exp_year=2030, last4="1111"),
        sf.payment_method("pm_subscription", exp_month=9, exp_year=2031, last4="2222"),
    )
    payments = StripePayments("sk_test_door", api_base=fake.base_url, timeout=2)
    yield fake, payments
    await payments.aclose()


async def test_the_renewal_charges_the_subscriptions_card_else_the_customers(stripe) -> None:
    fake, payments = stripe
    card = await payments.renewal_card("sub_1", "cus_1")
    assert card is not None and (card.payment_method_id, card.exp_month, card.exp_year, card.last4) == ("pm_customer", 2, 2030, "1111")
    fake.subscriptions["sub_1"]["default_payment_method"] = "pm_subscription"
    card = await payments.renewal_card("sub_1", "cus_1")
    assert card is not None and card.payment_method_id == "pm_subscription"


async def test_no_card_on_file_or_no_card_at_all_is_none(stripe) -> None:
    fake, payments = stripe
    fake.customers["cus_1"]["invoice_settings"]["default_payment_method"] = None
    assert await payments.renewal_card("sub_1", "cus_1") is None
    sepa = sf.payment_method("pm_sepa")
    sepa.update(type="sepa_debit", card=None)
    fake.add(sepa)
    fake.subscriptions["sub_1"]["default_payment_method"] = "pm_sepa"
    assert await payments.renewal_card("sub_1", "cus_1") is None


async def test_the_subscriptions_a_card_pays_and_when_they_renew(stripe) -> None:
    _, payments = stripe
    [renewing] = await payments.subscriptions_charging("cus_1", "pm_customer")
    assert renewing == ("sub_1", datetime.fromtimestamp(RENEWAL, UTC), "high_value")
    assert await payments.subscriptions_charging("cus_1", "pm_other") == []
