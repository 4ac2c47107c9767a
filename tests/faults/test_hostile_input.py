"""Hostile input on every endpoint of the API, against the real Temporal dev server.

Property-based (hypothesis): fuzzed bodies, headers, signatures, tokens and path parameters,
oversized bodies, and events that carry a valid Stripe signature but hostile content. Every answer
is a clean 4xx (or the documented 2xx "ignored"), never a 5xx, and never a started case.
"""

from __future__ import annotations

import base64
import json
import string
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from twilio.request_validator import RequestValidator

from activities.sandbox import SandboxOutbox, SandboxPayments
from dunning.models import DunningInput
from dunning.policy import load_policies
from fakes import stripe_api as sf
from runtime import migrations
from runtime.settings import Settings
from starter.api.main import create_app
from tests.helpers.case_harness import failure
from tests.helpers.trust_harness import WEBHOOK_SECRET, until, write_policies
from tests.helpers.workers import new_worker
from workflows.dunning_workflow import DunningWorkflow

API_TOKEN = "hostile-test-token-" + "z" * 20
TWILIO_TOKEN = "twilio_auth_token_0123456789abcdef"
TWILIO_SID = "AC" + "0" * 32
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))


@dataclass
class Target:
    api: httpx.AsyncClient
    app: FastAPI
    client: Client
    queue: str
    customer: str  # a customer with an open case (so the in-app endpoint renders a banner)

    async def cases_started_by_api(self) -> int:
        return len([w async for w in self.client.list_workflows(f'TaskQueue = "{self.queue}"')])


def full_app(settings_: Settings, client: Client) -> FastAPI:
    """The API as deployed: create_app serves every endpoint of the contract and the codec server."""
    return create_app(settings_, client_factory=lambda: client)


@pytest_asyncio.fixture(scope="module")
async def target(dev_env: WorkflowEnvironment, tmp_path_factory) -> AsyncIterator[Target]:
    import os

    folder: Path = tmp_path_factory.mktemp("hostile")
    policies = write_policies(folder / "policies")
    queue = f"hostile-{uuid.uuid4().hex[:8]}"  # anything the API starts lands here: none must
    case_queue = f"hostile-case-{uuid.uuid4().hex[:8]}"
    customer = f"cus_hostile_{uuid.uuid4().hex[:6]}"
    env_before = {k: os.environ.get(k) for k in ("DUNNING_API_TOKEN", "DUNNING_ENCRYPTION_KEYS")}
    os.environ["DUNNING_API_TOKEN"] = API_TOKEN  # the codec server and in-app read it from the environment
    os.environ["DUNNING_ENCRYPTION_KEYS"] = f"k1:{base64.b64encode(os.urandom(32)).decode()}"
    # Every door configured as in production, so none answers 503 for a missing secret.
    sendgrid_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    settings_ = Settings(
        stripe_webhook_secret=WEBHOOK_SECRET,
        sendgrid_webhook_public_key=base64.b64encode(
            sendgrid_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        ).decode(),
        twilio_auth_token=TWILIO_TOKEN,
        twilio_account_sid=TWILIO_SID,
        dunning_api_token=API_TOKEN,
        dunning_task_queue=queue,
        dunning_policy_dir=policies,
        dunning_state_dir=folder / "state",
    )
    client = dev_env.client
    payments, outbox = SandboxPayments(), SandboxOutbox()
    worker = new_worker(client, task_queue=case_queue, payments=payments, outbox=outbox)
    app = full_app(settings_, client)
    migrations.upgrade(app.state.database)  # what the app's lifespan does under a server
    async with worker, httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as api:
        handle = await client.start_workflow(
            DunningWorkflow.run,
            DunningInput(
                subscription_id=f"sub_{customer}", customer_id=customer, policy=load_policies(policies)["default"]
            ),
            id=f"dunning-sub_{customer}",
            task_queue=case_queue,
            start_signal="payment_failed",
            start_signal_args=[failure("in_hostile")],
            search_attributes=None,
        )
        t = Target(api, app, client, queue, customer)
        try:
            yield t
        finally:
            await handle.terminate("test finished")
            for k, v in env_before.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    # After all the fuzzing: not one case was started by hostile input.
    assert await t.cases_started_by_api() == 0


def clean(response: httpx.Response, *allowed: int) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if allowed:
        assert response.status_code in allowed, (response.status_code, response.text[:500])


# --- strategies -------------------------------------------------------------------------

header_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200
)  # what an HTTP header can carry
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
bodies = st.one_of(
    st.binary(max_size=2000),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.just(b'{"id": "evt_1", "type": "invoice.payment_failed"'),  # truncated
    st.just(b"\xef\xbb\xbf{}"),  # BOM
)
signatures = st.one_of(
    header_text,
    st.builds(lambda t, v: f"t={t},v1={v}", st.integers(), st.text(alphabet="0123456789abcdef", max_size=64)),
    st.builds(lambda v: f"t=9999999999,v1={v}", st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)),
)
#: Values no Stripe id, amount or currency can be.
bad_ids = st.one_of(
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.text(max_size=300).filter(lambda s: not (3 <= len(s) <= 255 and s.isascii() and (s.replace("_", "").isalnum()))),
    st.just("sub_1 OR CustomerId != ''"),
    st.just('cus_1" OR "1"="1'),
    st.just("x" * 300),
)
bad_amounts = st.one_of(
    st.integers(max_value=-1),
    st.integers(min_value=2**63),
    st.floats(allow_nan=False).filter(lambda f: f != int(f) if f == f and abs(f) < 1e300 else True),
    st.text(alphabet=string.ascii_letters, min_size=1, max_size=10),
    st.none(),
    st.lists(st.integers(), max_size=2),
)
bad_currencies = st.one_of(st.text(max_size=10).filter(lambda s: len(s) != 3), st.integers(), st.none())


def hostile_event(field: str, value: Any, event_type: str) -> dict[str, Any]:
    invoice = sf.invoice("in_hostile_evt", customer="cus_hostile_evt", subscription="sub_hostile_evt")
    if field == "subscription":
        invoice["parent"]["subscription_details"]["subscription"] = value
    elif field == "event_id":
        pass
    else:
        invoice[field] = value
    event = sf.event(event_type, invoice, event_id=value if field == "event_id" else f"evt_{uuid.uuid4().hex[:8]}")
    return event


async def post_signed(api: httpx.AsyncClient, body: bytes) -> httpx.Response:
    return await api.post(
        "/webhooks/stripe",
        content=body,
        headers={"Stripe-Signature": sf.sign(body, WEBHOOK_SECRET), "Content-Type": "application/json"},
    )


# --- POST /webhooks/stripe ---------------------------------------------------------------


@FUZZ
@given(body=bodies, signature=st.one_of(st.none(), signatures), content_type=st.one_of(st.none(), header_text))
async def test_stripe_webhook_unsigned_or_badly_signed(target: Target, body, signature, content_type):
    headers = {k: v for k, v in {"Stripe-Signature": signature, "Content-Type": content_type}.items() if v is not None}
    clean(await target.api.post("/webhooks/stripe", content=body, headers=headers), 400, 413)


@FUZZ
@given(body=bodies)
async def test_stripe_webhook_signed_garbage(target: Target, body):
    response = await post_signed(target.api, body)
    clean(response, 200, 400)
    if response.status_code == 200:
        assert response.json()["action"] == "ignored"


@FUZZ
@given(
    data=st.data(),
    field=st.sampled_from(["id", "customer", "subscription", "amount_due", "currency"]),
    event_type=st.sampled_from(["invoice.payment_failed", "invoice.paid", "invoice.payment_succeeded"]),
)
async def test_stripe_webhook_signed_event_with_a_hostile_field(target: Target, data, field, event_type):
    """A valid signature (a leaked secret, a replay of a tampered test event) over an event whose
    ids, amount or currency are not what Stripe sends: refused or ignored, never a case."""
    if field in ("id", "customer", "subscription"):
        value = data.draw(bad_ids, label=field)
    elif field == "amount_due":
        value = data.draw(bad_amounts, label=field)
    else:
        value = data.draw(bad_currencies, label=field)
    if event_type != "invoice.payment_failed":
        assume(field in ("id", "subscription"))  # the only fields those events read
    event = hostile_event(field, value, event_type)
    response = await post_signed(target.api, json.dumps(event).encode())
    clean(response, 200, 400)
    if response.status_code == 200:
        assert response.json()["action"] == "ignored", response.json()


@pytest.mark.parametrize(
    "field, value",
    [
        ("amount_due", 2**63),  # beyond the AmountDue search attribute (int64)
        ("amount_due", 1e30),
        ("amount_due", -1),
        ("amount_due", 49.5),
        ("currency", "eu"),
        ("currency", "€€€"),
        ("customer", 'cus_1" OR CustomerId != "'),  # would widen the visibility query of a card update
        ("subscription", "sub_../../x"),
        ("id", None),
    ],
)
async def test_stripe_webhook_signed_known_hostile_values(target: Target, field, value):
    response = await post_signed(target.api, json.dumps(hostile_event(field, value, "invoice.payment_failed")).encode())
    clean(response, 200, 400)
    if response.status_code == 200:
        assert response.json()["action"] == "ignored", response.json()


async def test_card_update_for_a_hostile_customer_id_signals_nobody(target: Target):
    pm = sf.payment_method("pm_hostile", customer='cus_1" OR CustomerId != "')
    response = await post_signed(target.api, json.dumps(sf.event("payment_method.attached", pm)).encode())
    clean(response, 200)
    assert (response.json()["action"], response.json()["cases"]) == ("ignored", [])


async def test_stripe_webhook_oversized_and_endless_bodies(target: Target):
    big = json.dumps(sf.event("invoice.payment_failed", {"pad": "x" * 2_000_000})).encode()
    clean(await post_signed(target.api, big), 413)

    async def endless():
        for _ in range(2000):
            yield b"x" * 1024

    clean(await target.api.post("/webhooks/stripe", content=endless(), headers={"Stripe-Signature": "t=1,v1=0"}), 413)


# --- POST /webhooks/twilio/sms -------------------------------------------------------------


def twilio_sign(params: dict[str, str], url: str = "http://api/webhooks/twilio/sms") -> str:
    return RequestValidator(TWILIO_TOKEN).compute_signature(url, params)


@FUZZ
@given(
    body=st.one_of(
        st.binary(max_size=500),
        st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=5).map(lambda d: urlencode(d).encode()),
    ),
    signature=st.one_of(st.none(), header_text),
    content_type=st.sampled_from([None, "application/x-www-form-urlencoded", "application/json", "text/plain"]),
)
async def test_twilio_webhook_fuzz(target: Target, body, signature, content_type):
    headers = {k: v for k, v in {"X-Twilio-Signature": signature, "Content-Type": content_type}.items() if v}
    clean(await target.api.post("/webhooks/twilio/sms", content=body, headers=headers), 400, 403, 413)


@FUZZ
@given(
    params=st.dictionaries(
        st.sampled_from(["From", "Body", "AccountSid", "MessageSid", "To", "x"]),
        st.text(max_size=60),
        max_size=6,
    )
)
async def test_twilio_webhook_validly_signed_odd_forms(target: Target, params):
    """Signed with our Twilio token but odd content (no From, huge Body, another account): no 5xx."""
    response = await target.api.post(
        "/webhooks/twilio/sms",
        content=urlencode(params).encode(),
        headers={"X-Twilio-Signature": twilio_sign(params), "Content-Type": "application/x-www-form-urlencoded"},
    )
    clean(response, 200, 400, 403)


# --- GET /v1/customers/{id}/dunning ----------------------------------------------------------


@FUZZ
@given(customer=st.text(min_size=1, max_size=300), token=st.one_of(st.none(), header_text))
async def test_in_app_wrong_tokens_and_odd_ids(target: Target, customer, token):
    headers = {"Authorization": token} if token is not None else {}
    response = await target.api.get(f"/v1/customers/{quote(customer, safe='')}/dunning", headers=headers)
    clean(response, 401, 404, 422)


@FUZZ
@given(
    customer=st.one_of(
        st.text(alphabet=string.ascii_letters + string.digits + "_-.:", min_size=1, max_size=255),
        st.text(min_size=1, max_size=300),
    ),
    locale=st.one_of(st.none(), st.text(max_size=40)),
    accept_language=st.one_of(st.none(), header_text),
)
async def test_in_app_with_the_token_any_id_and_language(target: Target, customer, locale, accept_language):
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    if accept_language is not None:
        headers["Accept-Language"] = accept_language
    query = f"?{urlencode({'locale': locale})}" if locale is not None else ""
    response = await target.api.get(f"/v1/customers/{quote(customer, safe='')}/dunning{query}", headers=headers)
    clean(response, 200, 404, 422)


@FUZZ
@given(locale=st.one_of(st.none(), st.text(max_size=35)), accept_language=st.one_of(st.none(), header_text))
async def test_in_app_banner_of_an_open_case_in_any_language(target: Target, locale, accept_language):
    """The banner is rendered in the language the caller asks for: a language that does not exist
    must not break the answer."""
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    if accept_language is not None:
        headers["Accept-Language"] = accept_language
    params = {"locale": locale} if locale is not None else None
    response = await target.api.get(f"/v1/customers/{target.customer}/dunning", headers=headers, params=params)
    clean(response, 200, 422)
    if response.status_code == 200:
        assert response.json()["open_case"] is True


async def test_the_open_case_is_really_visible(target: Target):
    """Guard for the tests above: the customer's case is open and answers, so the banner path runs."""

    async def visible():
        r = await target.api.get(
            f"/v1/customers/{target.customer}/dunning", headers={"Authorization": f"Bearer {API_TOKEN}"}
        )
        return r.status_code == 200 and r.json()["open_case"] and r.json()["message"]

    await until(visible, 15, "the open case to show in-app")


# --- every route, whatever it is -------------------------------------------------------------


def routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every operation of the app's own OpenAPI schema (what a client of the API can discover)."""
    return sorted(
        (method.upper(), path) for path, operations in app.openapi()["paths"].items() for method in operations
    )


def test_every_endpoint_of_the_contract_is_under_test(target: Target):
    paths = {p for _, p in routes(target.app)}
    assert {
        "/webhooks/stripe",
        "/webhooks/twilio/sms",
        "/webhooks/sendgrid/events",
        "/v1/customers/{customer_id}/dunning",
        "/healthz",
        "/codec/decode",
        "/codec/encode",
    } <= paths


@FUZZ
@given(
    data=st.data(),
    body=bodies,
    headers=st.dictionaries(
        st.sampled_from(
            [
                "Authorization",
                "Content-Type",
                "Stripe-Signature",
                "X-Twilio-Signature",
                "X-Twilio-Email-Event-Webhook-Signature",
                "X-Twilio-Email-Event-Webhook-Timestamp",
                "Origin",
                "Accept-Language",
                "X-Namespace",
                "Cookie",
                "Content-Encoding",
            ]
        ),
        header_text,
        max_size=5,
    ),
)
async def test_any_route_any_method_any_garbage(target: Target, data, body, headers):
    """Whatever route exists (including ones added later), garbage gets a 4xx or a 2xx, never a 5xx."""
    method, path = data.draw(st.sampled_from(routes(target.app)), label="route")
    method = data.draw(st.sampled_from([method, "GET", "POST", "PUT", "DELETE", "PATCH"]), label="method")
    filled = path
    while "{" in filled:
        start, end = filled.index("{"), filled.index("}")
        filled = (
            filled[:start]
            + quote(data.draw(st.text(min_size=1, max_size=50), label="param"), safe="")
            + filled[end + 1 :]
        )
    response = await target.api.request(
        method, filled, content=body if method not in ("GET",) else None, headers=headers
    )
    if path == "/healthz" and method == "GET":
        clean(response, 200)
    else:
        clean(response)
