"""The demo's webhook events: signed exactly like Stripe signs them, shaped like Stripe's objects."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import stripe

from dunning.policy import load_policies
from starter.cli import demo
from starter.cli import stripe_events as se

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "stripe" / "fixtures3.json"


def test_signature_verifies_with_the_stripe_sdk() -> None:
    event = se.event(
        "invoice.payment_failed",
        se.invoice(invoice_id="in_1", customer_id="cus_1", subscription_id="sub_1", amount_due=4900, policy="demo"),
    )
    body = se.encode(event)
    header = se.sign(body, "whsec_test")
    parsed = stripe.Webhook.construct_event(body.decode(), header, "whsec_test")
    assert parsed["type"] == "invoice.payment_failed"
    invoice = parsed["data"]["object"]
    assert invoice["parent"]["subscription_details"]["subscription"] == "sub_1"
    assert invoice["parent"]["subscription_details"]["metadata"]["dunning_policy"] == "demo"
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body.decode(), se.sign(body, "whsec_other"), "whsec_test")
    with pytest.raises(stripe.SignatureVerificationError):  # stale: outside Stripe's 5-minute tolerance
        stripe.Webhook.construct_event(body.decode(), se.sign(body, "whsec_test", timestamp=1), "whsec_test")


@pytest.mark.skipif(not FIXTURES.exists(), reason="shared/stripe/fixtures3.json not beside the repo")
@pytest.mark.parametrize(
    ("resource", "obj"),
    [
        ("invoice", se.invoice(invoice_id="in_1", customer_id="cus_1", subscription_id="sub_1", amount_due=1)),
        ("payment_method", se.payment_method(payment_method_id="pm_card_visa", customer_id="cus_1")),
        ("subscription", se.subscription(subscription_id="sub_1", customer_id="cus_1")),
        ("event", se.event("invoice.paid", {})),
    ],
)
def test_shapes_use_stripes_field_names(resource: str, obj: dict) -> None:
    """Every top-level field we send exists on Stripe's published object (the trimmed template
    adds nothing Stripe would not send, except the legacy expanded `payment_intent`)."""
    published = json.loads(FIXTURES.read_text())["resources"][resource]
    extra = set(obj) - set(published) - {"payment_intent"}
    assert not extra, f"{resource}: not Stripe fields: {sorted(extra)}"
    if resource == "invoice":
        assert set(obj["parent"]) <= set(published["parent"]) | {"type"}


def test_demo_policy_plays_out_in_minutes() -> None:
    policy = load_policies()["demo"]
    assert policy.retry_after[-1].total_seconds() <= 300
    assert (policy.grace + policy.cancel_after_suspension).total_seconds() <= 600
    assert policy.min_gap_between_messages.total_seconds() <= 60
    # An empty quiet window: an SMS is never held for the night during a demo.
    start, end = policy.quiet_hours
    assert start == end


def test_demo_population_mixes_every_behaviour() -> None:
    run = demo.DemoRun(demo.DemoConfig(api_url="http://x", secret="s", customers=16, seed=7), None, None, None)  # type: ignore[arg-type]
    run.populate()
    assert len(run.cases) == 16 and len({c.subscription_id for c in run.cases}) == 16
    actions = {step.action for step in run.steps}
    assert actions == {"failed", "paid", "new_card", "cancel", "extend_grace"}
    cards = {c.persona.card for c in run.cases}
    assert cards == {demo.SOFT, demo.HARD, demo.AUTH, demo.GOOD}
    # Every customer acts after their own failure.
    failed_at = {s.case.subscription_id: s.at for s in run.steps if s.action == "failed"}
    assert all(s.at > failed_at[s.case.subscription_id] for s in run.steps if s.action != "failed")


def test_a_decline_carried_in_the_event_reaches_the_case_without_asking_stripe():
    """With the payment intent expanded (older API versions, the sandbox demo), the case opens
    knowing the decline, so a hard decline is never retried even once."""
    from starter.api.routes.stripe_webhook import StartCase, plan
    from starter.cli import stripe_events

    obj = stripe_events.invoice(
        invoice_id="in_x",
        customer_id="cus_x",
        subscription_id="sub_x",
        amount_due=4900,
        currency="usd",
        payment_method_id="pm_card_chargeDeclinedExpiredCard",
    )
    action = plan(stripe_events.event("invoice.payment_failed", obj))
    assert isinstance(action, StartCase)
    assert (action.payload.decline_code, action.payload.failure_code) == ("expired_card", "expired_card")
    assert action.payload.payment_method_id == "pm_card_chargeDeclinedExpiredCard"
