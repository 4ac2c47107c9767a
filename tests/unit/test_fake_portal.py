"""The loopback Stripe's billing portal: sessions served by the fake itself, that expire like
Stripe's (minutes), and a form that attaches a card, makes it the default and returns.

This is what lets the tests prove the rule "the link works when the customer clicks it": a
session created when a message was sent would be dead by the time the customer clicks; the
customer's page creates one at the click.
"""

from __future__ import annotations

import httpx
from pytest_httpserver import HTTPServer

from fakes import stripe_api as sf
from fakes.stripe_api import FakeStripe


def create_session(fake: FakeStripe, return_url: str = "https://pay.acme.example/c/tok") -> dict:
    response = httpx.post(
        f"{fake.base_url}/v1/billing_portal/sessions",
        data={"customer": "cus_test_1", "flow_data[type]": "payment_method_update", "return_url": return_url},
    )
    assert response.status_code == 200
    return response.json()


def test_a_session_opens_the_update_form_until_it_expires(httpserver: HTTPServer) -> None:
    now = [1_800_000_000.0]
    fake = FakeStripe(httpserver, clock=lambda: now[0])
    fake.add(sf.customer())
    session = create_session(fake)
    assert session["object"] == "billing_portal.session"
    assert session["url"] == f"{fake.base_url}/p/session/{session['id']}"
    page = httpx.get(session["url"])
    assert page.status_code == 200 and "Update payment method" in page.text and "Save" in page.text

    now[0] += fake.portal_session_ttl + 1  # the customer comes back later
    expired = httpx.get(session["url"])
    assert expired.status_code == 410 and "This session has expired" in expired.text
    assert httpx.post(session["url"], data={"card": "visa"}).status_code == 410

    assert httpx.get(create_session(fake)["url"]).status_code == 200, "a session created now is live"


def test_expire_all_and_a_zero_ttl(httpserver: HTTPServer) -> None:
    fake = FakeStripe(httpserver)
    fake.add(sf.customer())
    first = create_session(fake)
    fake.expire_portal_sessions()
    assert httpx.get(first["url"]).status_code == 410
    fake.portal_session_ttl = 0
    assert httpx.get(create_session(fake)["url"]).status_code == 410


def test_saving_attaches_the_card_makes_it_the_default_and_returns(httpserver: HTTPServer) -> None:
    fake = FakeStripe(httpserver)
    fake.add(sf.customer())
    attached: list[dict] = []
    fake.on_payment_method_attached = attached.append
    session = create_session(fake, return_url="https://pay.acme.example/c/tok")
    response = httpx.post(session["url"], data={"card": "mastercard"})
    assert (response.status_code, response.headers["location"]) == (303, "https://pay.acme.example/c/tok")
    [pm] = attached
    assert pm["object"] == "payment_method" and pm["customer"] == "cus_test_1"
    assert (pm["card"]["brand"], pm["card"]["last4"]) == ("mastercard", "4444")
    assert fake.payment_methods[pm["id"]] is pm
    assert fake.customers["cus_test_1"]["invoice_settings"]["default_payment_method"] == pm["id"]


def test_an_unknown_session_is_not_found(httpserver: HTTPServer) -> None:
    fake = FakeStripe(httpserver)
    assert httpx.get(f"{fake.base_url}/p/session/bps_nope").status_code == 404
