"""Properties of `POST /webhooks/stripe` over anything a caller can send (hypothesis).

- Any event Stripe's fixtures can build (every type we act on), signed with our secret, with one to
  three of its fields (anywhere in the tree) replaced by arbitrary JSON, never gets a 5xx, and
  starts a case only when the event is one that should: a strictly positive integer amount within
  12 digits, a 3-letter currency, Stripe-shaped ids, a renewal, an invoice Stripe still holds open
  and a subscription it has not ended. What the case then stores is bounded and its links https.
- Any bytes in `Stripe-Signature`, without a valid signature, never get a 5xx (nor reach Temporal).

Against the real Temporal dev server and a loopback Stripe that the API asks when a case opens.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest_asyncio
from hypothesis import HealthCheck, event as note, given, settings
from hypothesis import strategies as st
from pytest_httpserver import HTTPServer
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from dunning.models import MAX_AMOUNT
from fakes import stripe_api as sf
from fakes.stripe_api import FakeStripe
from runtime.settings import Settings
from starter.api.main import create_app
from tests.helpers.trust_harness import WEBHOOK_SECRET, stripe_server, write_policies

PROPERTIES = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
STRIPE_ID = re.compile(r"^[A-Za-z0-9_]{3,255}$")


@dataclass
class Door:
    api: httpx.AsyncClient
    client: Client
    stripe: FakeStripe
    queue: str


@pytest_asyncio.fixture(scope="module")
async def door(dev_env: WorkflowEnvironment, tmp_path_factory) -> AsyncIterator[Door]:
    folder = tmp_path_factory.mktemp("door")
    server: HTTPServer = stripe_server()
    stripe = FakeStripe(server)
    queue = f"door-{uuid.uuid4().hex[:8]}"  # no worker: cases are started and only read back
    settings_ = Settings(
        stripe_webhook_secret=WEBHOOK_SECRET,
        stripe_api_key="sk_test_door_0123456789",
        stripe_api_base=stripe.base_url,
        dunning_task_queue=queue,
        dunning_policy_dir=write_policies(folder / "policies"),
        dunning_state_dir=folder / "state",
    )
    # No second look for a customer's cases (it waits 2 s when there are none, as here).
    app = create_app(settings_, client_factory=lambda: dev_env.client, visibility_rechecks=())
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as api:
            yield Door(api, dev_env.client, stripe, queue)
    finally:
        server.clear()
        if server.is_running():
            server.stop()


# --- strategies -----------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**25), max_value=10**25)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.sampled_from(["", "0", "1000", "eur", "javascript:alert(1)", "http://x.test", "sub_x"])
    | st.just(5000).map(lambda n: "x" * n),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
EVENT_TYPES = [
    "invoice.payment_failed",
    "invoice.payment_failed",  # the one that opens cases: drawn more often
    "invoice.payment_failed",
    "invoice.paid",
    "invoice.payment_succeeded",
    "customer.subscription.deleted",
    "payment_method.attached",
    "payment_method.automatically_updated",
    "customer.source.updated",
    "customer.updated",
]


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every place in a JSON tree a value can be replaced (the root excluded)."""
    found = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, child in items:
        found.append((*prefix, key))
        found.extend(paths(child, (*prefix, key)))
    return found


def replace(tree: Any, path: tuple, value: Any) -> None:
    for key in path[:-1]:
        tree = tree[key]
    tree[path[-1]] = value


def build(event_type: str, suffix: str) -> dict[str, Any]:
    customer, subscription, invoice = f"cus_{suffix}", f"sub_{suffix}", f"in_{suffix}"
    if event_type.startswith("invoice."):
        obj = sf.invoice(invoice, customer=customer, subscription=subscription, status="open")
        obj["payment_intent"] = {"last_payment_error": {"code": "card_declined", "decline_code": "generic_decline"}}
    elif event_type == "customer.subscription.deleted":
        obj = sf.subscription(subscription, customer=customer, status="canceled")
    elif event_type == "customer.source.updated":
        obj = sf.resource("card", id=f"card_{suffix}", customer=customer)
    elif event_type == "customer.updated":
        obj = sf.customer(customer, default_payment_method=f"pm_{suffix}")
    else:
        obj = sf.payment_method(f"pm_{suffix}", customer=customer)
    previous = {"invoice_settings": {"default_payment_method": "pm_old"}} if event_type == "customer.updated" else None
    return sf.event(event_type, obj, event_id=f"evt_{suffix}", previous_attributes=previous)


def should_open(event: Any, stripe: FakeStripe) -> str | None:
    """The test's own account of when a case may open; None when it may, else why not."""
    if not isinstance(event, dict) or event.get("type") != "invoice.payment_failed":
        return "not a failure"
    data = event.get("data")
    invoice = data.get("object") if isinstance(data, dict) else None
    if not isinstance(invoice, dict):
        return "no invoice"
    amount = invoice.get("amount_due")
    if type(amount) is not int or not 1 <= amount <= MAX_AMOUNT:
        return f"amount {amount!r}"
    currency = invoice.get("currency")
    if not (isinstance(currency, str) and re.fullmatch(r"[A-Za-z]{3}", currency)):
        return f"currency {currency!r}"
    customer = invoice.get("customer")
    customer = customer.get("id") if isinstance(customer, dict) else customer
    for name, value in (("event id", event.get("id")), ("invoice id", invoice.get("id")), ("customer", customer)):
        if not (isinstance(value, str) and STRIPE_ID.match(value)):
            return f"{name} {value!r}"
    if invoice.get("billing_reason") == "subscription_create":
        return "first invoice"
    held = stripe.invoices.get(invoice["id"])
    if held is not None and held["status"] != "open":
        return f"invoice {held['status']} in Stripe"
    return None


async def start_signal(client: Client, workflow_id: str) -> dict[str, Any]:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            return json.loads(event.workflow_execution_signaled_event_attributes.input.payloads[0].data)
    raise AssertionError(f"{workflow_id} has no signal")


def strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return []


# --- the properties ------------------------------------------------------------------------------------


@PROPERTIES
@given(
    data=st.data(),
    event_type=st.sampled_from(EVENT_TYPES),
    invoice_status=st.sampled_from(["open"] * 4 + ["paid", "void", "uncollectible"]),
    subscription_status=st.sampled_from(["past_due"] * 3 + ["active", "canceled", "incomplete_expired"]),
)
async def test_any_signed_fixture_event_with_arbitrary_fields_never_5xx_nor_a_case_it_should_not(
    door: Door, data, event_type, invoice_status, subscription_status
):
    suffix = uuid.uuid4().hex[:12]
    event = build(event_type, suffix)
    # What Stripe holds now (the event may be late): the API asks before a case opens.
    door.stripe.add(
        sf.invoice(f"in_{suffix}", customer=f"cus_{suffix}", subscription=f"sub_{suffix}", status=invoice_status),
        sf.subscription(f"sub_{suffix}", customer=f"cus_{suffix}", status=subscription_status),
    )
    where = paths(event)
    for _ in range(data.draw(st.integers(min_value=1, max_value=3), label="replacements")):
        path = data.draw(st.sampled_from(where), label="path")
        try:
            replace(event, path, data.draw(json_values, label=f"value at {'.'.join(map(str, path))}"))
        except (KeyError, IndexError, TypeError):
            pass  # an earlier replacement removed that branch
    body = json.dumps(event).encode()
    response = await door.api.post(
        "/webhooks/stripe", content=body, headers={"Stripe-Signature": sf.sign(body, WEBHOOK_SECRET)}
    )

    assert response.status_code in (200, 400), (response.status_code, response.text[:500])
    note(f"{event_type}: {response.status_code} {response.json().get('action', '')}")
    if response.status_code == 400:
        return
    answer = response.json()
    if answer["action"] != "signal_with_start":
        return
    reason = should_open(event, door.stripe)
    assert reason is None, f"a case opened although {reason}: {answer}"
    subscription = door.stripe.subscriptions.get(answer["cases"][0].removeprefix("dunning-"))
    assert subscription is None or subscription["status"] not in ("canceled", "incomplete_expired"), answer

    payload = await start_signal(door.client, answer["cases"][0])
    assert len(json.dumps(payload)) < 4000
    assert all(len(s) <= 500 for s in strings(payload))
    assert payload["hosted_invoice_url"] is None or payload["hosted_invoice_url"].startswith("https://")
    assert type(payload["amount_due"]) is int and 1 <= payload["amount_due"] <= MAX_AMOUNT


signature_bytes = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=80).map(lambda b: f"t={int(time.time())},v1=".encode() + b),
    st.binary(max_size=80).map(lambda b: b"t=" + b + b",v1=" + b"a" * 64),
    st.lists(st.binary(max_size=20), max_size=8).map(b",".join),
)


@PROPERTIES
@given(header=signature_bytes, body=st.one_of(st.binary(max_size=500), st.just(b"{}")))
async def test_any_signature_header_bytes_without_a_valid_signature_never_5xx(door: Door, header: bytes, body: bytes):
    event = body or json.dumps(build("invoice.payment_failed", uuid.uuid4().hex[:12])).encode()
    response = await door.api.post(
        "/webhooks/stripe", content=event, headers=[(b"Stripe-Signature", header), (b"Content-Type", b"application/json")]
    )
    assert response.status_code == 400, (header, response.status_code, response.text[:300])
