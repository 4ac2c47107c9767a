"""The Stripe payments backend: the real `stripe` SDK over real HTTP to a loopback fake that
answers with Stripe's own JSON (fixtures3.json), errors included."""

from __future__ import annotations

import pytest
from pytest_httpserver import HTTPServer

from activities.backends import ProviderRejected, ProviderUnavailable
from activities.case_activities import PaymentActivities
from activities.stripe_backend import StripePayments
from dunning.models import AccessRequest, ChargeRequest, DeclineCategory
from fakes import stripe_api as sf
from fakes.stripe_api import FakeStripe, Reply
from runtime.card_budget import DatabaseCardBudget
from tests.helpers.database import sqlite_database

API_KEY = "sk_test_dunning_backend_0123456789"


@pytest.fixture
def fake(httpserver: HTTPServer) -> FakeStripe:
    fake = FakeStripe(httpserver)
    fake.add(sf.invoice("in_test_1"), sf.customer("cus_test_1"), sf.subscription("sub_test_1"))
    return fake


@pytest.fixture
async def backend(fake: FakeStripe):
    payments = StripePayments(API_KEY, api_base=fake.base_url, timeout=0.5)
    yield payments
    await payments.aclose()


def charge(attempt: int = 1, payment_method_id: str | None = None) -> ChargeRequest:
    return ChargeRequest(
        invoice_id="in_test_1",
        customer_id="cus_test_1",
        subscription_id="sub_test_1",
        attempt=attempt,
        idempotency_key=f"dunning-sub_test_1:in_test_1:{attempt}",
        payment_method_id=payment_method_id,
    )


# --- charging -------------------------------------------------------------------------


async def test_success_pays_off_session_with_the_idempotency_key(fake: FakeStripe, backend: StripePayments):
    result = await backend.charge_invoice(charge(payment_method_id="pm_card_new"))

    assert result.status == "succeeded"
    assert result.payment_method_id == "pm_card_new"
    # Re-read the invoice first, then pay it; the card that paid becomes the default for next month.
    assert [(r.method, r.path) for r in fake.requests] == [
        ("GET", "/v1/invoices/in_test_1"),
        ("POST", "/v1/invoices/in_test_1/pay"),
        ("POST", "/v1/subscriptions/sub_test_1"),
        ("POST", "/v1/customers/cus_test_1"),
    ]
    pay = fake.pay_requests[0]
    assert pay.form == {"off_session": "true", "payment_method": "pm_card_new"}
    assert pay.idempotency_key == "dunning-sub_test_1:in_test_1:1"
    assert pay.headers["Authorization"] == f"Bearer {API_KEY}"
    subscription, customer = fake.requests[2], fake.requests[3]
    assert subscription.form == {"default_payment_method": "pm_card_new"}
    assert customer.form == {"invoice_settings[default_payment_method]": "pm_card_new"}
    assert subscription.idempotency_key == "dunning-sub_test_1:in_test_1:1/default/subscription"
    assert fake.subscriptions["sub_test_1"]["default_payment_method"] == "pm_card_new"
    assert fake.customers["cus_test_1"]["invoice_settings"]["default_payment_method"] == "pm_card_new"


async def test_the_payment_stands_when_the_new_card_cannot_be_made_the_default(fake: FakeStripe, backend: StripePayments):
    del fake.subscriptions["sub_test_1"]  # Stripe answers 404: logged, the charge still succeeded
    result = await backend.charge_invoice(charge(payment_method_id="pm_card_new"))
    assert result.status == "succeeded"


async def test_without_a_card_stripe_uses_the_default_one(fake: FakeStripe, backend: StripePayments):
    result = await backend.charge_invoice(charge())
    assert result.status == "succeeded"
    assert fake.pay_requests[0].form == {"off_session": "true"}


async def test_legacy_card_source_is_paid_with_source(fake: FakeStripe, backend: StripePayments):
    await backend.charge_invoice(charge(payment_method_id="card_1Legacy"))
    assert fake.pay_requests[0].form == {"off_session": "true", "source": "card_1Legacy"}


@pytest.mark.parametrize(
    ("error", "category"),
    [
        (dict(decline_code="insufficient_funds", message="Your card has insufficient funds."), DeclineCategory.SOFT),
        (
            dict(decline_code="expired_card", code="expired_card", message="Your card has expired."),
            DeclineCategory.HARD,
        ),
        (dict(decline_code="generic_decline", advice_code="do_not_try_again"), DeclineCategory.HARD),
        (dict(decline_code="do_not_honor", advice_code="try_again_later"), DeclineCategory.SOFT),
        (dict(code="authentication_required", decline_code="authentication_required"), DeclineCategory.AUTHENTICATION),
        (
            dict(code="invoice_payment_intent_requires_action", message="This payment requires additional user action"),
            DeclineCategory.AUTHENTICATION,
        ),
    ],
    ids=[
        "soft-insufficient_funds",
        "hard-expired_card",
        "advice-do_not_try_again",
        "advice-try_again_later",
        "authentication_required",
        "requires_action",
    ],
)
async def test_a_402_is_a_declined_result(fake: FakeStripe, backend: StripePayments, error, category):
    body = sf.card_error(**error)
    fake.pay_script.append(Reply(402, body))

    result = await backend.charge_invoice(charge())

    expected = body["error"]
    assert result.status == "declined"
    assert result.category is category
    assert result.code == expected["code"]
    assert result.decline_code == expected.get("decline_code")
    assert result.advice_code == expected.get("advice_code")
    assert result.message == expected["message"]
    assert result.payment_method_id == "pm_card_old"
    assert result.payment_intent_id == "pi_for_in_test_1"
    assert fake.invoices["in_test_1"]["status"] == "open"


async def test_already_paid_invoice_is_not_charged(fake: FakeStripe, backend: StripePayments):
    fake.add(sf.invoice("in_test_1", status="paid"))
    result = await backend.charge_invoice(charge())
    assert result.status == "already_paid"
    assert fake.pay_requests == []


@pytest.mark.parametrize("status", ["void", "uncollectible"])
async def test_voided_invoice_is_not_charged(fake: FakeStripe, backend: StripePayments, status):
    fake.add(sf.invoice("in_test_1", status=status))
    result = await backend.charge_invoice(charge())
    assert result.status == "voided"
    assert fake.pay_requests == []


async def test_paid_elsewhere_between_read_and_pay_is_already_paid(fake: FakeStripe, backend: StripePayments):
    # The first read still sees it open; by the time the payment arrives it has been paid.
    fake.on_retrieve_invoice.append(Reply(200, sf.invoice("in_test_1")))
    fake.invoices["in_test_1"]["status"] = "paid"
    fake.pay_script.append(
        Reply(400, {"error": {"type": "invalid_request_error", "message": "Invoice is already paid"}})
    )
    result = await backend.charge_invoice(charge())
    assert result.status == "already_paid"
    assert len(fake.pay_requests) == 1


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_outages_are_retryable(fake: FakeStripe, backend: StripePayments, status):
    fake.pay_script.append(Reply(status, sf.api_error(status)))
    with pytest.raises(ProviderUnavailable, match=str(status) if status != 429 else "RateLimitError"):
        await backend.charge_invoice(charge())
    assert len(fake.pay_requests) == 1  # the SDK does not retry on its own: Temporal does


async def test_an_activity_retry_after_a_500_reuses_the_idempotency_key(fake: FakeStripe, backend: StripePayments):
    fake.pay_script.append(Reply(500, sf.api_error(500)))
    request = charge(attempt=2, payment_method_id="pm_card_new")

    with pytest.raises(ProviderUnavailable):
        await backend.charge_invoice(request)
    result = await backend.charge_invoice(request)  # what Temporal's retry does: the same input

    assert result.status == "succeeded"
    keys = [r.idempotency_key for r in fake.pay_requests]
    assert keys == ["dunning-sub_test_1:in_test_1:2"] * 2


async def test_a_retried_decline_is_replayed_not_charged_again(fake: FakeStripe, backend: StripePayments):
    fake.pay_script.append(Reply(402, sf.card_error(decline_code="insufficient_funds")))
    first = await backend.charge_invoice(charge())
    again = await backend.charge_invoice(charge())
    assert first == again
    assert [r.idempotency_key for r in fake.pay_requests] == ["dunning-sub_test_1:in_test_1:1"] * 2


async def test_timeout_is_retryable(fake: FakeStripe, fake_slow_backend: StripePayments):
    fake.pay_script.append(Reply(delay=0.6))
    with pytest.raises(ProviderUnavailable, match="APIConnectionError"):
        await fake_slow_backend.charge_invoice(charge())


@pytest.fixture
async def fake_slow_backend(fake: FakeStripe):
    payments = StripePayments(API_KEY, api_base=fake.base_url, timeout=0.2)
    yield payments
    await payments.aclose()


async def test_connection_refused_is_retryable(unused_tcp_port: int):
    payments = StripePayments(API_KEY, api_base=f"http://127.0.0.1:{unused_tcp_port}", timeout=0.5)
    with pytest.raises(ProviderUnavailable):
        await payments.charge_invoice(charge())
    await payments.aclose()


async def test_bad_api_key_is_not_retryable_and_leaks_no_secret(fake: FakeStripe, backend: StripePayments):
    fake.on_retrieve_invoice.append(Reply(401, sf.api_error(401)))
    with pytest.raises(ProviderRejected) as raised:
        await backend.charge_invoice(charge())
    assert "API key" in str(raised.value)
    assert API_KEY not in str(raised.value)
    assert "sk_test_****" not in str(raised.value)


async def test_missing_invoice_is_rejected_clearly(fake: FakeStripe, backend: StripePayments):
    request = charge().model_copy(update={"invoice_id": "in_missing"})
    with pytest.raises(ProviderRejected, match="resource_missing"):
        await backend.charge_invoice(request)


async def test_the_activity_makes_rejections_non_retryable(fake: FakeStripe, backend: StripePayments):
    from temporalio.exceptions import ApplicationError

    fake.on_retrieve_invoice.append(Reply(401, sf.api_error(401)))
    with pytest.raises(ApplicationError) as raised:
        await PaymentActivities(backend).charge_invoice(charge())
    assert raised.value.non_retryable
    assert raised.value.type == "ProviderRejected"


# --- reading --------------------------------------------------------------------------


async def test_invoice_is_open(fake: FakeStripe, backend: StripePayments):
    fake.add(sf.invoice("in_paid", status="paid"))
    assert await backend.invoice_is_open("in_test_1") is True
    assert await backend.invoice_is_open("in_paid") is False
    assert await backend.invoice_is_open("in_deleted") is False


async def test_get_customer_reads_profile_without_contact_details(fake: FakeStripe, backend: StripePayments):
    fake.add(
        sf.customer(
            "cus_test_1",
            preferred_locales=["fr-FR", "en"],
            metadata={"timezone": "Europe/Paris", "dunning_sms_opt_out": "true"},
            default_payment_method="pm_card_default",
        )
    )
    profile = await backend.get_customer("cus_test_1")
    assert profile.model_dump() == {
        "customer_id": "cus_test_1",
        "name": "Ada Lovelace",
        "locale": "fr_FR",
        "timezone": "Europe/Paris",
        "timezone_candidates": ["Europe/Paris"],
        "timezone_source": "metadata",
        "timezone_narrowed_by": [],
        "has_email": True,
        "has_phone": True,
        "sms_opted_out": True,
        "plan_name": None,
        "default_payment_method_id": "pm_card_default",
    }


async def test_get_customer_defaults(fake: FakeStripe, backend: StripePayments):
    fake.add(sf.customer("cus_bare", name=None, email=None, phone=None, default_payment_method=None))
    profile = await backend.get_customer("cus_bare")
    assert (profile.locale, profile.timezone, profile.has_email, profile.has_phone, profile.sms_opted_out) == (
        "en",
        None,
        False,
        False,
        False,
    )


async def test_get_contact(fake: FakeStripe, backend: StripePayments):
    contact = await backend.get_contact("cus_test_1")
    assert (contact.email, contact.phone, contact.name) == ("ada@example.com", "+15555550123", "Ada Lovelace")


async def test_update_link_is_a_payment_method_update_portal_session(fake: FakeStripe, backend: StripePayments):
    link = await backend.update_link("cus_test_1", "in_test_1")
    # The fake serves its portal sessions from itself (a page that expires like Stripe's).
    [session_id] = fake.portal_sessions
    assert link == f"{fake.base_url}/p/session/{session_id}"
    portal = fake.seen("POST", "/v1/billing_portal/sessions")[0]
    assert portal.form == {"customer": "cus_test_1", "flow_data[type]": "payment_method_update"}


async def test_update_link_falls_back_to_the_hosted_invoice(fake: FakeStripe, backend: StripePayments):
    fake.portal_enabled = False
    assert await backend.update_link("cus_test_1", "in_test_1") == "https://invoice.stripe.com/i/acct_test/in_test_1"
    with pytest.raises(ProviderRejected):
        await backend.update_link("cus_test_1", None)


# --- access ---------------------------------------------------------------------------


def access(reason: str = "grace period over") -> AccessRequest:
    return AccessRequest(customer_id="cus_test_1", subscription_id="sub_test_1", reason=reason)


async def test_suspend_and_restore(fake: FakeStripe, backend: StripePayments):
    await backend.suspend_access(access())
    sub = fake.subscriptions["sub_test_1"]
    assert sub["pause_collection"] == {"behavior": "void", "resumes_at": None}
    assert sub["metadata"]["dunning_access"] == "suspended"
    update = fake.seen("POST", "/v1/subscriptions/sub_test_1")[0]
    assert update.form["pause_collection[behavior]"] == "void"

    await backend.restore_access(access("card updated"))
    assert sub["pause_collection"] is None
    assert sub["metadata"]["dunning_access"] == "active"


async def test_cancel_is_idempotent(fake: FakeStripe, backend: StripePayments):
    await backend.cancel_subscription(access("unpaid after suspension"))
    await backend.cancel_subscription(access("unpaid after suspension"))  # an activity retry
    assert fake.subscriptions["sub_test_1"]["status"] == "canceled"
    deletes = fake.seen("DELETE", "/v1/subscriptions/sub_test_1")
    assert len(deletes) == 1
    assert deletes[0].query == {"cancellation_details[comment]": "unpaid after suspension"}


async def test_suspend_of_a_missing_subscription_is_rejected(fake: FakeStripe, backend: StripePayments):
    del fake.subscriptions["sub_test_1"]
    with pytest.raises(ProviderRejected, match="resource_missing"):
        await backend.suspend_access(access())


# --- configuration --------------------------------------------------------------------


def test_factory_chooses_stripe_when_its_key_is_set():
    from activities.factory import build_activities
    from runtime.settings import Settings

    charge_activity = build_activities(Settings(stripe_api_key=API_KEY, stripe_api_base="http://127.0.0.1:1"))[0]
    assert isinstance(charge_activity.__self__.payments, StripePayments)
    sandbox = build_activities(Settings(stripe_api_key=API_KEY, dunning_payments="sandbox"))[0]
    assert not isinstance(sandbox.__self__.payments, StripePayments)


def test_stripe_without_a_key_fails_at_start_with_a_clear_message():
    with pytest.raises(ProviderRejected, match="STRIPE_API_KEY"):
        StripePayments("")


# --- why Stripe's own attempt failed ----------------------------------------------------


async def test_failure_details_come_from_the_latest_failed_payment(fake: FakeStripe, backend: StripePayments):
    fake.invoice_payments["in_test_1"] = [
        sf.failed_payment("in_test_1", decline_code="insufficient_funds", created=1_000),
        sf.failed_payment(
            "in_test_1",
            code="expired_card",
            decline_code="expired_card",
            advice_code="do_not_try_again",
            payment_method_id="pm_card_expired",
            created=2_000,
        ),
    ]
    details = await backend.failure_details("in_test_1")
    assert details is not None
    assert details.model_dump() == {
        "code": "expired_card",
        "decline_code": "expired_card",
        "advice_code": "do_not_try_again",
        "message": "Your card was declined.",
        "payment_method_id": "pm_card_expired",
    }
    read = fake.seen("GET", "/v1/invoices/in_test_1")[0]
    assert read.query == {"expand[0]": "payments.data.payment.payment_intent"}


async def test_failure_details_none_without_a_failed_payment(fake: FakeStripe, backend: StripePayments):
    assert await backend.failure_details("in_test_1") is None


async def test_get_customer_infers_the_zone_from_the_address_and_asks_for_the_tax_location(
    fake: FakeStripe, backend: StripePayments
):
    cus = sf.customer("cus_ca", phone="+12125550100")
    cus["address"].update(country="US", state="CA")
    fake.add(cus)
    profile = await backend.get_customer("cus_ca")
    assert (profile.timezone, profile.timezone_candidates, profile.timezone_source) == (
        "America/Los_Angeles",
        ["America/Los_Angeles"],
        "address",
    )
    assert fake.seen("GET", "/v1/customers/cus_ca")[-1].query.get("expand[0]") == "tax"


async def test_get_customer_falls_back_to_stripe_tax_location(fake: FakeStripe, backend: StripePayments):
    cus = sf.customer("cus_tax", phone=None)
    cus["tax"] = {"automatic_tax": "supported", "ip_address": None, "location": {"country": "DE", "source": "ip_address", "state": None}}
    fake.add(cus)
    profile = await backend.get_customer("cus_tax")
    assert profile.timezone == "Europe/Berlin" and profile.timezone_source == "tax_location"


async def test_get_customer_without_hints_has_no_zone(fake: FakeStripe, backend: StripePayments):
    fake.add(sf.customer("cus_none", metadata={"timezone": "Mars/Olympus_Mons"}))
    profile = await backend.get_customer("cus_none")
    assert (profile.timezone, profile.timezone_candidates, profile.timezone_source) == (None, [], None)


async def test_sms_opt_out_is_written_to_and_cleared_from_the_customers_metadata(
    fake: FakeStripe, backend: StripePayments
):
    fake.add(sf.customer("cus_stop", metadata={"other": "kept"}))
    await backend.set_sms_opt_out_metadata("cus_stop", True)
    assert fake.customers["cus_stop"]["metadata"] == {"other": "kept", "dunning_sms_opt_out": "true"}
    assert (await backend.get_contact("cus_stop")).sms_opted_out
    assert (await backend.get_customer("cus_stop")).sms_opted_out
    await backend.set_sms_opt_out_metadata("cus_stop", False)
    assert fake.customers["cus_stop"]["metadata"] == {"other": "kept"}
    assert not (await backend.get_contact("cus_stop")).sms_opted_out


# --- the card's budget across cases and backup cards ---------------------------------------


async def test_the_charged_card_is_read_with_its_fingerprint(fake: FakeStripe, backend: StripePayments):
    fake.add(sf.payment_method("pm_card_old", fingerprint="fpSHARED", brand="mastercard", last4="4444"))
    card = await backend.charged_card(charge())  # no card named: the customer's default
    assert card is not None and (card.payment_method_id, card.fingerprint, card.brand, card.last4) == (
        "pm_card_old",
        "fpSHARED",
        "mastercard",
        "4444",
    )
    assert await backend.charged_card(charge(payment_method_id="pm_unknown")) is None  # no card: no budget


async def test_saved_cards_list_the_customers_card_payment_methods(fake: FakeStripe, backend: StripePayments):
    fake.add(
        sf.payment_method("pm_card_old", fingerprint="fpOLD"),
        sf.payment_method("pm_backup", fingerprint="fpBACKUP", brand="mastercard", last4="4444", exp_year=2031),
        sf.payment_method("pm_other_customer", customer="cus_other", fingerprint="fpOTHER"),
    )
    cards = await backend.saved_cards("cus_test_1")
    assert [(c.payment_method_id, c.fingerprint, c.is_default) for c in cards] == [
        ("pm_card_old", "fpOLD", True),
        ("pm_backup", "fpBACKUP", False),
    ]
    listing = [r for r in fake.requests if r.path.endswith("/payment_methods")]
    assert listing and listing[0].query.get("type") == "card"


async def test_two_customers_one_card_share_its_budget_through_the_activity(
    fake: FakeStripe, backend: StripePayments, tmp_path
):
    """The same card number saved by two customers: one fingerprint, one budget in the database.
    A refused charge never reaches Stripe and is no attempt; a stolen card blocks it for both."""
    fake.add(
        sf.invoice("in_b", customer="cus_b", subscription="sub_b"),
        sf.customer("cus_b", default_payment_method="pm_b"),
        sf.subscription("sub_b", customer="cus_b"),
        sf.payment_method("pm_card_old", fingerprint="fpSHARED"),
        sf.payment_method("pm_b", customer="cus_b", fingerprint="fpSHARED"),
    )
    budget = DatabaseCardBudget(sqlite_database(tmp_path))
    activities = PaymentActivities(backend, budget)
    fake.pay_script.extend(
        [Reply(402, sf.card_error(decline_code="insufficient_funds")), Reply(402, sf.card_error(decline_code="insufficient_funds", invoice_id="in_b", payment_method_id="pm_b"))]
    )
    first = await activities.charge_invoice(charge(1).model_copy(update={"card_budget_limit": 2}))
    assert first.status == "declined" and first.card_budget is not None and first.card_budget.used == 1
    other = ChargeRequest(
        invoice_id="in_b", customer_id="cus_b", subscription_id="sub_b", attempt=1,
        idempotency_key="dunning-sub_b@x/in_b/1", card_budget_limit=2,
    )
    second = await activities.charge_invoice(other)
    assert second.status == "declined" and second.card_budget is not None
    assert second.card_budget.used == 2 and second.card_budget.used_by[-1] == "dunning-sub_b"
    pays = len([r for r in fake.requests if r.path.endswith("/pay")])
    refused = await activities.charge_invoice(charge(2).model_copy(update={"card_budget_limit": 2}))
    assert refused.status == "refused" and refused.code == "card_budget_exhausted"
    assert len([r for r in fake.requests if r.path.endswith("/pay")]) == pays  # Stripe never saw it
    # The activity retried after an outage reuses its reservation (same idempotency key).
    again = await activities.charge_invoice(other)
    assert again.status == "declined"
