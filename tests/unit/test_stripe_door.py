"""What `POST /webhooks/stripe` checks before it believes a request, over HTTP, without Temporal.

Every request here must be answered at the door: the app's Temporal connection fails loudly
(and is counted), so a test passes only if nothing reached it. What does reach Temporal (cases
that open, signals) is tested against the dev server in tests/integration/test_webhooks.py.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from fakes import stripe_api as sf
from runtime.settings import Settings
from starter.api.main import create_app
from starter.api.stripe_events import FailedInvoice, StripeEvent
from starter.api.stripe_signature import FUTURE, MALFORMED, MISMATCH, NO_V1, STALE, signature_problem

SECRET = "whsec_test_door_0123456789abcdef"
OLD_SECRET = "whsec_test_door_old_secret_9876"


class TemporalTouched(Exception):
    pass


@pytest.fixture
def touched() -> list[str]:
    return []


@pytest.fixture
def app(touched: list[str]) -> FastAPI:
    def no_temporal():
        touched.append("connect")
        raise TemporalTouched("this request should have been answered at the door")

    return create_app(Settings(stripe_webhook_secret=f"{SECRET}, {OLD_SECRET}"), client_factory=no_temporal)


async def post(app: FastAPI, body: bytes, signature: str | bytes | None) -> httpx.Response:
    headers: dict[str, Any] = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
        return await http.post("/webhooks/stripe", content=body, headers=headers)


async def post_signed(app: FastAPI, event: Any, secret: str = SECRET, timestamp: int | None = None) -> httpx.Response:
    body = event if isinstance(event, bytes) else json.dumps(event).encode()
    return await post(app, body, sf.sign(body, secret, timestamp))


def failed(**invoice_fields: Any) -> dict[str, Any]:
    inv = sf.invoice("in_door_1", customer="cus_door_1", subscription="sub_door_1")
    inv.update(invoice_fields)
    return sf.event("invoice.payment_failed", inv, event_id="evt_door_1")


def assert_ignored(response: httpx.Response, touched: list[str], *words: str) -> None:
    assert response.status_code == 200, response.text
    assert response.json()["action"] == "ignored", response.json()
    for word in words:
        assert word in response.json()["detail"], response.json()
    assert touched == []


# --- 1. the signature: an unauthenticated 500 ------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "t=1,v1=é".encode(),  # the finding: non-ASCII made the SDK's compare_digest raise TypeError
        "t=9999999999,v1=ü".encode(),
        b"t=\xff\xfe,v1=\x80",
        ("t=١٢٣,v1=" + "a" * 64).encode(),
        "t=1,v1=" + "A" * 64,
        "t=,v1=",
        ",,,=,=",
    ],
)
async def test_any_signature_header_without_the_secret_is_a_400_never_a_500(app, touched, header):
    response = await post(app, json.dumps(failed()).encode(), header)
    assert response.status_code == 400, response.text
    assert touched == []


def test_the_signature_check_returns_a_reason_and_never_raises():
    body = b'{"id": "evt_1"}'
    good = sf.sign(body, SECRET)
    assert signature_problem(body, good, [SECRET], tolerance=300) is None
    assert signature_problem(body, "t=1,v1=é", [SECRET], tolerance=300) == NO_V1
    assert signature_problem(body, "t=x,v1=" + "0" * 64, [SECRET], tolerance=300) == MALFORMED
    assert signature_problem(body, "t=١٢٣,v1=" + "0" * 64, [SECRET], tolerance=300) == MALFORMED  # int() takes them
    assert signature_problem(body + b" ", good, [SECRET], tolerance=300) == MISMATCH
    assert signature_problem(body, good, ["whsec_other"], tolerance=300) == MISMATCH
    assert signature_problem(body, good, [SECRET], tolerance=300, now=time.time() + 3600) == STALE
    assert signature_problem(body, good, [SECRET], tolerance=300, now=time.time() - 3600) == FUTURE


# --- 7. a signature timestamp a year in the future ----------------------------------------------------


async def test_a_signature_dated_in_the_future_is_refused(app, touched):
    response = await post_signed(app, failed(), timestamp=int(time.time()) + 365 * 86400)
    assert response.status_code == 400
    assert response.json()["detail"].startswith("timestamp in the future")
    # A few seconds of clock skew is fine (the tolerance applies both ways).
    ok = await post_signed(app, sf.resource("event"), timestamp=int(time.time()) + 30)
    assert ok.status_code == 200
    assert touched == []


# --- several secrets: rotation without dropped events --------------------------------------------------


async def test_every_listed_webhook_secret_verifies(app, touched):
    """`STRIPE_WEBHOOK_SECRET="new, old"`: events signed with either are Stripe's, and so is the
    header Stripe sends while it rolls a secret (one `v1` per secret)."""
    event = sf.resource("event")  # plan.created: acknowledged and ignored, no Temporal needed
    assert (await post_signed(app, event, SECRET)).status_code == 200
    assert (await post_signed(app, event, OLD_SECRET)).status_code == 200
    body = json.dumps(event).encode()
    t = int(time.time())
    both = sf.sign(body, "whsec_unknown", t) + "," + sf.sign(body, OLD_SECRET, t).split(",")[1]
    assert (await post(app, body, both)).status_code == 200
    assert (await post_signed(app, event, "whsec_unknown")).status_code == 400
    assert touched == []


def test_the_secrets_are_read_comma_separated():
    settings = Settings(stripe_webhook_secret=" whsec_a ,whsec_b,, ")
    assert settings.stripe_webhook_secrets() == ["whsec_a", "whsec_b"]
    assert Settings().stripe_webhook_secrets() == []


# --- 6. amounts and shapes ----------------------------------------------------------------------------


@pytest.mark.parametrize("amount", [0, True, False, "1000", 49.5, 4900.0, -1, 10**12, None, [4900]])
async def test_an_amount_stripe_never_sends_opens_no_case(app, touched, amount):
    """`amount_due` 0 opened a case with a $0.00 reminder; `true` and `"1000"` were taken as numbers."""
    assert_ignored(await post_signed(app, failed(amount_due=amount)), touched, "amount_due")


@pytest.mark.parametrize("currency", ["eu", "euro", "€€€", 978, None])
async def test_a_currency_that_is_not_three_letters_opens_no_case(app, touched, currency):
    assert_ignored(await post_signed(app, failed(currency=currency)), touched, "currency")


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ("id", "in_" + "x" * 300),
        ("id", 'in_1" OR "1"="1'),
        ("customer", {"id": ["cus_1"]}),
        ("customer", None),
    ],
)
async def test_absurd_ids_are_refused_not_stored(app, touched, where, value):
    assert_ignored(await post_signed(app, failed(**{where: value})), touched)


async def test_a_body_nested_fifty_thousand_deep_is_a_400_not_a_500(app, touched):
    response = await post_signed(app, b"[" * 50_000)
    assert (response.status_code, response.json()["detail"]) == (400, "body is not JSON")
    response = await post_signed(app, b'{"id": "evt_1", "type": "invoice.paid", "data": ' + b"[" * 50_000 + b"]" * 50_000 + b"}")
    assert response.status_code < 500
    assert touched == []


@pytest.mark.parametrize(
    "event",
    [
        {"id": "evt_1", "type": "invoice.paid"},  # no data
        {"id": ["evt_1"], "type": "invoice.paid", "data": {"object": {}}},
        {"id": "evt_1", "type": "x" * 5000, "data": {"object": {}}},
        {"id": "evt_1", "type": "invoice.paid", "data": {"object": "in_1"}},
        {"id": "evt_" + "1" * 300, "type": "invoice.paid", "data": {"object": {}}},
    ],
)
async def test_a_signed_event_we_cannot_read_is_acknowledged_and_ignored(app, touched, event):
    """Stripe retries every non-2xx for three days: an event that can never become usable is a 2xx."""
    response = await post_signed(app, event)
    assert_ignored(response, touched, "unusable event")
    assert len(response.text) < 1000


@pytest.mark.parametrize(
    "obj_change",
    [
        {"parent": {"subscription_details": {"subscription": ["sub_1"]}}},
        {"parent": "x"},
        {"subscription": 12, "parent": None},
    ],
)
async def test_an_invoice_whose_subscription_cannot_be_read_is_ignored(app, touched, obj_change):
    for event_type in ("invoice.payment_failed", "invoice.paid"):
        event = failed(**obj_change)
        event["type"] = event_type
        assert_ignored(await post_signed(app, event), touched)


async def test_hostile_customer_updated_and_card_events_are_ignored(app, touched):
    customer = sf.customer("cus_door_1")
    for previous in ([{"invoice_settings": {}}], "x", None, {"invoice_settings": "x"}):
        event = sf.event("customer.updated", customer, previous_attributes=previous)
        assert_ignored(await post_signed(app, event), touched, "did not change")
    customer["invoice_settings"] = "x"
    event = sf.event("customer.updated", customer, previous_attributes={"invoice_settings": {"default_payment_method": "pm_1"}})
    assert_ignored(await post_signed(app, event), touched, "did not change")
    pm = sf.payment_method("pm_1", customer={"id": "cus_1 OR 1=1"})
    assert_ignored(await post_signed(app, sf.event("payment_method.attached", pm)), touched, "payment method")


# --- the models alone --------------------------------------------------------------------------------------


@pytest.mark.parametrize("created", [10**20, -(10**20), 1e308, float("inf"), float("nan"), "1700000000", True, None, [1], {}])
def test_any_created_becomes_an_aware_datetime_or_none(created):
    event = StripeEvent.model_validate({"id": "evt_1", "type": "x", "created": created, "data": {"object": {}}})
    assert event.created is None or event.created.tzinfo is not None
    ok = StripeEvent.model_validate({"id": "evt_1", "type": "x", "created": 1_700_000_000, "data": {"object": {}}})
    assert ok.created is not None and ok.created.tzinfo is not None


def test_decorative_fields_are_bounded_or_dropped():
    inv = sf.invoice("in_1")
    inv["payment_intent"] = {
        "last_payment_error": {
            "code": "card_declined",
            "decline_code": "x" * 200_000,
            "advice_code": ["try_again_later"],
            "message": "m" * 10_000,
            "payment_method": {"id": "pm_" + "1" * 300},
        }
    }
    inv["hosted_invoice_url"] = "javascript:alert(1)"
    inv["parent"]["subscription_details"]["metadata"] = {"dunning_policy": ["x"]}
    parsed = FailedInvoice.model_validate(inv)
    error = parsed.payment_error()
    assert (error.code, error.decline_code, error.advice_code, error.payment_method) == ("card_declined", None, None, None)
    assert error.message == "m" * 500
    assert parsed.hosted_invoice_url is None
    assert parsed.requested_policy() is None
    assert parsed.subscription_id() == "sub_test_1"
