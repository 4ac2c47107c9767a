"""`POST /webhooks/stripe` against the real Temporal dev server, with events signed the way
Stripe signs them and `data.object` built from Stripe's fixtures3.json.

No worker runs here: the cases are started and signaled for real, and the tests read what
Temporal holds (start input, search attributes, signals in history). Each test uses its own
task queue and ids, so nothing here is picked up by another test's worker.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from pytest_httpserver import HTTPServer
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from dunning import contract as sa
from fakes import stripe_api as sf
from fakes.stripe_api import FakeStripe
from runtime.settings import Settings
from starter.api.main import create_app
from tests.helpers import binary

SECRET = "whsec_test_webhooks_0123456789abcdef"


def uid() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def ids() -> dict[str, str]:
    suffix = uid()
    return {
        "customer": f"cus_{suffix}",
        "subscription": f"sub_{suffix}",
        "invoice": f"in_{suffix}",
        "queue": f"webhooks-{suffix}",
    }


def settings_for(ids: dict[str, str], **overrides: Any) -> Settings:
    return Settings(
        stripe_webhook_secret=SECRET,
        dunning_task_queue=ids["queue"],
        **overrides,
    )


@pytest.fixture
async def api(dev_env: WorkflowEnvironment, ids: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings_for(ids), client_factory=lambda: dev_env.client)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
        yield http


async def post_event(
    http: httpx.AsyncClient,
    event: dict[str, Any],
    *,
    secret: str = SECRET,
    timestamp: int | None = None,
) -> httpx.Response:
    body = json.dumps(event).encode()
    return await http.post(
        "/webhooks/stripe",
        content=body,
        headers={"Stripe-Signature": sf.sign(body, secret, timestamp), "Content-Type": "application/json"},
    )


def failed_event(
    ids: dict[str, str], *, event_id: str | None = None, invoice_id: str | None = None, **invoice_fields: Any
) -> dict[str, Any]:
    inv = sf.invoice(
        invoice_id or ids["invoice"], customer=ids["customer"], subscription=ids["subscription"], **invoice_fields
    )
    return sf.event("invoice.payment_failed", inv, event_id=event_id or f"evt_{uid()}")


async def signals(client: Client, workflow_id: str, run_id: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
    found = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            attrs = event.workflow_execution_signaled_event_attributes
            found.append((attrs.signal_name, json.loads(attrs.input.payloads[0].data)))
    return found


async def never_started(client: Client, workflow_id: str) -> bool:
    """Describe is consistent (visibility lags): NOT_FOUND means no case was ever started."""
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        return exc.status == RPCStatusCode.NOT_FOUND
    return False


async def start_input(client: Client, workflow_id: str) -> dict[str, Any]:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    return json.loads(started.input.payloads[0].data)


# --- invoice.payment_failed --------------------------------------------------------------


async def test_payment_failed_starts_the_case(api: httpx.AsyncClient, dev_env: WorkflowEnvironment, ids):
    event = failed_event(ids, event_id="evt_pf_1")
    response = await post_event(api, event)

    assert response.status_code == 200, response.text
    assert response.json()["cases"] == [f"dunning-{ids['subscription']}"]
    client = dev_env.client
    wid = f"dunning-{ids['subscription']}"
    described = await client.get_workflow_handle(wid).describe()
    assert described.workflow_type == "DunningWorkflow"
    assert described.task_queue == ids["queue"]
    assert described.status == WorkflowExecutionStatus.RUNNING
    assert described.typed_search_attributes.get(sa.CUSTOMER_ID) == ids["customer"]
    assert described.typed_search_attributes.get(sa.SUBSCRIPTION_ID) == ids["subscription"]
    assert described.typed_search_attributes.get(sa.AMOUNT_DUE) == 4900
    assert await described.static_summary() == f"{ids['customer']} · €49.00 · {ids['subscription']}"

    started = await start_input(client, wid)
    assert (started["subscription_id"], started["customer_id"], started["policy"]["name"]) == (
        ids["subscription"],
        ids["customer"],
        "default",
    )
    [(name, payload)] = await signals(client, wid)
    assert name == "payment_failed"
    assert payload["event_id"] == "evt_pf_1"
    assert payload["invoice_id"] == ids["invoice"]
    assert (payload["amount_due"], payload["currency"]) == (4900, "eur")
    assert payload["hosted_invoice_url"] == event["data"]["object"]["hosted_invoice_url"]
    # the contract: customer data is fetched by activity, not copied into the case
    assert "ada@example.com" not in json.dumps(payload)


@pytest.mark.parametrize(
    ("requested", "chosen", "unknown"),
    [("high_value", "high_value", None), ("no_such_policy", "default", "no_such_policy")],
)
async def test_policy_from_subscription_metadata(api, dev_env, ids, capsys, requested, chosen, unknown):
    event = failed_event(ids, subscription_metadata={"dunning_policy": requested})
    assert (await post_event(api, event)).status_code == 200
    started = await start_input(dev_env.client, f"dunning-{ids['subscription']}")
    assert started["policy"]["name"] == chosen
    # An unknown name is not silently replaced: the case is told, and the log says so.
    assert started["requested_policy"] == unknown
    out = capsys.readouterr()
    warned = [line for line in (out.out + out.err).splitlines() if "unknown dunning_policy" in line]
    if unknown:
        assert len(warned) == 1 and "no_such_policy" in warned[0] and "default" in warned[0]
    else:
        assert warned == []


async def test_legacy_invoice_shape_is_understood(api, dev_env, ids):
    inv = sf.invoice(ids["invoice"], customer=ids["customer"], subscription=None)
    inv["subscription"] = ids["subscription"]
    inv["subscription_details"] = {"metadata": {"dunning_policy": "high_value"}}
    assert (await post_event(api, sf.event("invoice.payment_failed", inv))).status_code == 200
    started = await start_input(dev_env.client, f"dunning-{ids['subscription']}")
    assert started["policy"]["name"] == "high_value"


async def test_one_off_invoice_is_ignored(api, ids):
    inv = sf.invoice(ids["invoice"], customer=ids["customer"], subscription=None)
    response = await post_event(api, sf.event("invoice.payment_failed", inv))
    assert response.status_code == 200
    assert response.json()["action"] == "ignored"


async def test_first_invoice_of_a_new_subscription_is_not_dunned(api, ids):
    response = await post_event(api, failed_event(ids, billing_reason="subscription_create"))
    assert (response.status_code, response.json()["action"]) == (200, "ignored")


@pytest.fixture
def fake_stripe(httpserver: HTTPServer, ids) -> FakeStripe:
    stripe = FakeStripe(httpserver)
    stripe.add(sf.invoice(ids["invoice"], customer=ids["customer"], subscription=ids["subscription"]))
    return stripe


@pytest.fixture
async def api_with_stripe(dev_env, ids, fake_stripe) -> AsyncIterator[httpx.AsyncClient]:
    """The API as deployed with a Stripe key: it asks Stripe why the invoice failed."""
    settings = settings_for(ids, stripe_api_key="sk_test_webhooks_0123", stripe_api_base=fake_stripe.base_url)
    app = create_app(settings, client_factory=lambda: dev_env.client)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
        yield http


async def test_the_decline_behind_the_failure_is_asked_of_stripe(api_with_stripe, dev_env, ids, fake_stripe):
    fake_stripe.invoice_payments[ids["invoice"]] = [
        sf.failed_payment(ids["invoice"], code="expired_card", decline_code="expired_card", payment_method_id="pm_x")
    ]
    assert (await post_event(api_with_stripe, failed_event(ids))).status_code == 200
    [(_, payload)] = await signals(dev_env.client, f"dunning-{ids['subscription']}")
    assert (payload["failure_code"], payload["decline_code"], payload["payment_method_id"]) == (
        "expired_card",
        "expired_card",
        "pm_x",
    )
    assert payload["message"] == "Your card was declined."


async def test_the_case_opens_even_when_stripe_cannot_say_why(api_with_stripe, dev_env, ids, fake_stripe):
    fake_stripe.on_retrieve_invoice.append(sf.Reply(500, sf.api_error(500)))
    assert (await post_event(api_with_stripe, failed_event(ids))).status_code == 200
    [(name, payload)] = await signals(dev_env.client, f"dunning-{ids['subscription']}")
    assert (name, payload["decline_code"]) == ("payment_failed", None)


async def test_redelivery_changes_nothing(api, dev_env, ids):
    client = dev_env.client
    handle = client.get_workflow_handle(f"dunning-{ids['subscription']}")
    event = failed_event(ids, event_id="evt_same")
    for _ in range(2):
        assert (await post_event(api, event)).status_code == 200
    # One case (describe is consistent, unlike visibility); the repeated signal carries the
    # same event id, which the case drops.
    first_run = (await handle.describe()).run_id
    assert (await client.get_workflow_handle(handle.id, run_id=first_run).describe()).run_id == first_run
    assert [p["event_id"] for _, p in await signals(client, handle.id, first_run)] == ["evt_same", "evt_same"]

    # Once the case has closed, the same failure redelivered opens no new case …
    await handle.terminate("test: case closed")
    response = await post_event(api, event)
    assert (response.status_code, response.json()["action"]) == (200, "ignored")
    latest = await handle.describe()
    assert (latest.run_id, latest.status) == (first_run, WorkflowExecutionStatus.TERMINATED)

    # … but a new failure of the subscription does (a new run of the same workflow id).
    response = await post_event(api, failed_event(ids, invoice_id=f"in_{uid()}"))
    assert response.json()["action"] == "signal_with_start"
    latest = await handle.describe()
    assert latest.run_id != first_run
    assert latest.status == WorkflowExecutionStatus.RUNNING


async def until_visible(client: Client, customer_id: str, count: int) -> None:
    """Visibility lags a start a little; the fan-out itself re-checks only when it finds nothing."""
    query = sa.open_cases_of_customer(customer_id)
    for _ in range(50):
        if len([w async for w in client.list_workflows(query)]) == count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{count} open cases of {customer_id} never became visible")


# --- signals to an existing case -------------------------------------------------------------


async def open_case(api: httpx.AsyncClient, customer: str, subscription: str) -> str:
    ids = {"customer": customer, "subscription": subscription, "invoice": f"in_{uid()}"}
    assert (await post_event(api, failed_event(ids))).status_code == 200
    return f"dunning-{subscription}"


@pytest.mark.parametrize("event_type", ["invoice.paid", "invoice.payment_succeeded"])
async def test_invoice_paid_reaches_the_case(api, dev_env, ids, event_type):
    wid = await open_case(api, ids["customer"], ids["subscription"])
    inv = sf.invoice(ids["invoice"], status="paid", customer=ids["customer"], subscription=ids["subscription"])
    response = await post_event(api, sf.event(event_type, inv, event_id="evt_paid"))
    assert response.status_code == 200
    assert (await signals(dev_env.client, wid))[-1] == (
        "invoice_paid",
        {"invoice_id": ids["invoice"], "event_id": "evt_paid"},
    )


@pytest.mark.parametrize(
    ("details", "reason", "stripe_reason"),
    [
        (
            {"comment": None, "feedback": None, "reason": "cancellation_requested"},
            "cancellation_requested",
            "cancellation_requested",
        ),
        # Stripe's own dunning gave up: the case must know it was not the customer.
        ({"comment": None, "feedback": None, "reason": "payment_failed"}, "payment_failed", "payment_failed"),
        ({"comment": "moved to a yearly plan", "feedback": None, "reason": None}, "moved to a yearly plan", None),
        (None, "canceled in Stripe", None),
    ],
)
async def test_subscription_deleted_reaches_the_case(api, dev_env, ids, details, reason, stripe_reason):
    wid = await open_case(api, ids["customer"], ids["subscription"])
    sub = sf.subscription(ids["subscription"], customer=ids["customer"], status="canceled")
    sub["cancellation_details"] = details
    response = await post_event(api, sf.event("customer.subscription.deleted", sub, event_id="evt_del"))
    assert response.status_code == 200
    assert (await signals(dev_env.client, wid))[-1] == (
        "subscription_canceled",
        {"reason": reason, "event_id": "evt_del", "cancellation_reason": stripe_reason, "source": None, "feedback": None},
    )


@pytest.mark.parametrize(
    "event_type", ["payment_method.attached", "payment_method.automatically_updated", "customer.source.updated"]
)
async def test_card_update_reaches_every_open_case_of_the_customer(api, dev_env, ids, event_type):
    first = await open_case(api, ids["customer"], ids["subscription"])
    second = await open_case(api, ids["customer"], f"sub_{uid()}")
    stranger = await open_case(api, f"cus_{uid()}", f"sub_{uid()}")
    closed = await open_case(api, ids["customer"], f"sub_{uid()}")
    await dev_env.client.get_workflow_handle(closed).terminate("test: closed")
    await until_visible(dev_env.client, ids["customer"], 2)

    if event_type == "customer.source.updated":
        obj = sf.resource("card", id="card_new", customer=ids["customer"])
    else:
        obj = sf.payment_method("pm_card_new", customer=ids["customer"])
    response = await post_event(api, sf.event(event_type, obj, event_id="evt_card"))

    assert response.status_code == 200, response.text
    assert sorted(response.json()["cases"]) == sorted([first, second])
    expected = ("card_updated", {"payment_method_id": obj["id"], "event_id": "evt_card", "source": event_type})
    for wid in (first, second):
        assert (await signals(dev_env.client, wid))[-1] == expected
    assert [name for name, _ in await signals(dev_env.client, stranger)] == ["payment_failed"]


async def test_customer_updated_only_when_the_default_card_changed(api, dev_env, ids):
    wid = await open_case(api, ids["customer"], ids["subscription"])
    cus = sf.customer(ids["customer"], default_payment_method="pm_card_new")

    unrelated = sf.event("customer.updated", cus, event_id="evt_name", previous_attributes={"name": "Ada"})
    response = await post_event(api, unrelated)
    assert (response.status_code, response.json()["action"]) == (200, "ignored")

    changed = sf.event(
        "customer.updated",
        cus,
        event_id="evt_default",
        previous_attributes={"invoice_settings": {"default_payment_method": "pm_card_old"}},
    )
    response = await post_event(api, changed)
    assert (response.status_code, response.json()["action"]) == (200, "signaled")
    assert [name for name, _ in await signals(dev_env.client, wid)] == ["payment_failed", "card_updated"]
    assert (await signals(dev_env.client, wid))[-1][1]["payment_method_id"] == "pm_card_new"


async def test_signals_without_a_case_are_acknowledged_and_ignored(api, ids):
    inv = sf.invoice(ids["invoice"], status="paid", customer=ids["customer"], subscription=ids["subscription"])
    for event in (
        sf.event("invoice.paid", inv),
        sf.event("customer.subscription.deleted", sf.subscription(ids["subscription"], customer=ids["customer"])),
        sf.event("payment_method.attached", sf.payment_method(customer=ids["customer"])),
    ):
        response = await post_event(api, event)
        assert (response.status_code, response.json()["action"]) == (200, "ignored"), event["type"]


async def test_unknown_event_type_is_acknowledged_and_ignored(api):
    response = await post_event(api, sf.resource("event"))  # Stripe's fixture: plan.created
    assert response.status_code == 200
    assert response.json()["action"] == "ignored"


# --- odd fields in a real failure: the case opens, bounded (issue: hostile input, items 6 and 7) ---------


async def test_odd_decorative_fields_never_500_and_are_not_stored(api, dev_env, ids):
    """Signed failures with a field Stripe never sends, each a 500 before: `created` of 10**20, a
    policy name that is a list, a 200 KB decline code (which made the `status` query 604 KB), a
    `javascript:` invoice link (handed on as the banner's update link). The failure is real, so the
    case opens; the odd values are dropped and what the case holds stays small."""
    inv = sf.invoice(ids["invoice"], customer=ids["customer"], subscription=ids["subscription"])
    inv["parent"]["subscription_details"]["metadata"] = {"dunning_policy": ["x"]}
    inv["hosted_invoice_url"] = "javascript:alert(document.cookie)"
    inv["payment_intent"] = {
        "last_payment_error": {"code": "card_declined", "decline_code": "d" * 200_000, "message": "m" * 5000}
    }
    event = sf.event("invoice.payment_failed", inv, event_id="evt_odd")
    event["created"] = 10**20
    response = await post_event(api, event)
    assert (response.status_code, response.json()["action"]) == (200, "signal_with_start"), response.text

    wid = f"dunning-{ids['subscription']}"
    started = await start_input(dev_env.client, wid)
    assert started["policy"]["name"] == "default" and started["requested_policy"] is None
    [(name, payload)] = await signals(dev_env.client, wid)
    assert (payload["occurred_at"], payload["hosted_invoice_url"], payload["decline_code"]) == (None, None, None)
    assert payload["failure_code"] == "card_declined" and len(payload["message"]) == 500
    assert len(json.dumps(payload)) < 2000


@pytest.mark.parametrize("metadata", [["x"], "x", {"dunning_policy": "p" * 10_000}])
async def test_metadata_that_is_not_stripes_names_no_policy(api, dev_env, ids, metadata):
    inv = sf.invoice(ids["invoice"], customer=ids["customer"], subscription=ids["subscription"])
    inv["parent"]["subscription_details"]["metadata"] = metadata
    response = await post_event(api, sf.event("invoice.payment_failed", inv))
    assert (response.status_code, response.json()["action"]) == (200, "signal_with_start"), response.text
    assert (await start_input(dev_env.client, f"dunning-{ids['subscription']}"))["policy"]["name"] == "default"


async def test_an_odd_cancellation_reason_still_ends_the_case(api, dev_env, ids):
    """`cancellation_details.reason: ["a"]` was a 500: the subscription is gone all the same, so the
    case hears it, with the reason it can read."""
    wid = await open_case(api, ids["customer"], ids["subscription"])
    sub = sf.subscription(ids["subscription"], customer=ids["customer"], status="canceled")
    sub["cancellation_details"] = {"reason": ["a"], "comment": {"x": 1}, "feedback": None}
    response = await post_event(api, sf.event("customer.subscription.deleted", sub, event_id="evt_odd_del"))
    assert (response.status_code, response.json()["action"]) == (200, "signaled"), response.text
    assert (await signals(dev_env.client, wid))[-1] == (
        "subscription_canceled",
        {"reason": "canceled in Stripe", "event_id": "evt_odd_del", "cancellation_reason": None, "source": None, "feedback": None},
    )


@pytest.mark.parametrize("amount", [0, True, "1000"])
async def test_a_zero_boolean_or_string_amount_opens_no_case(api, dev_env, ids, amount):
    """`amount_due` 0, `true` or `"1000"` opened a case (a $0.00 reminder)."""
    event = failed_event(ids)
    event["data"]["object"]["amount_due"] = amount
    response = await post_event(api, event)
    assert (response.status_code, response.json()["action"]) == (200, "ignored"), response.text
    assert "amount_due" in response.json()["detail"]
    assert await never_started(dev_env.client, f"dunning-{ids['subscription']}")


# --- refusals ---------------------------------------------------------------------------------


async def test_bad_signature_is_refused(api, ids):
    response = await post_event(api, failed_event(ids), secret="whsec_someone_else")
    assert response.status_code == 400
    assert response.json() == {"detail": "signature does not match the body"}


async def test_tampered_body_is_refused(api, ids):
    body = json.dumps(failed_event(ids)).encode()
    header = sf.sign(body, SECRET)
    response = await api.post(
        "/webhooks/stripe", content=body.replace(b"4900", b"1"), headers={"Stripe-Signature": header}
    )
    assert response.status_code == 400


async def test_stale_signature_is_refused(api, ids):
    response = await post_event(api, failed_event(ids), timestamp=int(time.time()) - 3600)
    assert response.status_code == 400
    assert response.json()["detail"].startswith("stale timestamp")


@pytest.mark.parametrize(
    ("headers", "reason"),
    [({}, "missing Stripe-Signature header"), ({"Stripe-Signature": "garbage"}, "malformed Stripe-Signature header")],
)
async def test_missing_or_malformed_signature_is_refused(api, headers, reason):
    response = await api.post("/webhooks/stripe", content=b"{}", headers=headers)
    assert response.status_code == 400
    assert response.json()["detail"] == reason


async def test_signed_garbage_is_refused(api):
    body = b"not json {"
    response = await api.post("/webhooks/stripe", content=body, headers={"Stripe-Signature": sf.sign(body, SECRET)})
    assert (response.status_code, response.json()["detail"]) == (400, "body is not JSON")


async def test_signed_event_missing_fields_is_acknowledged_and_ignored(api, dev_env, ids):
    """Signed by Stripe but unusable: it can never become usable, and anything but a 2xx would make
    Stripe retry it for three days. Acknowledged as ignored, with the reason; no case."""
    event = failed_event(ids)
    del event["data"]["object"]["customer"]
    response = await post_event(api, event)
    assert (response.status_code, response.json()["action"]) == (200, "ignored")
    assert "invoice.customer" in response.json()["detail"]

    event = failed_event(ids)
    del event["data"]
    response = await post_event(api, event)
    assert (response.status_code, response.json()["action"]) == (200, "ignored")
    assert await never_started(dev_env.client, f"dunning-{ids['subscription']}")


async def test_body_too_big_is_refused(api):
    big = b"x" * (256 * 1024 + 1)
    response = await api.post("/webhooks/stripe", content=big, headers={"Stripe-Signature": sf.sign(big, SECRET)})
    assert response.status_code == 413

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted while streaming
        for _ in range(300):
            yield b"y" * 1024

    response = await api.post("/webhooks/stripe", content=chunked(), headers={"Stripe-Signature": "t=1,v1=0"})
    assert response.status_code == 413


async def test_no_secrets_or_contact_details_in_logs(api, ids, capsys):
    await post_event(api, failed_event(ids))
    await post_event(api, failed_event(ids), secret="whsec_wrong_secret_value")
    out = capsys.readouterr()
    logs = out.out + out.err
    assert "payment_failed delivered" in logs
    for secret in (SECRET, "whsec_wrong_secret_value", "ada@example.com", "+15555550123", "Ada Lovelace"):
        assert secret not in logs


# --- Temporal down ------------------------------------------------------------------------------


@pytest.fixture
async def api_without_temporal(ids, unused_tcp_port) -> AsyncIterator[httpx.AsyncClient]:
    async def connect_to_closed_port() -> Client:
        return await Client.connect(f"127.0.0.1:{unused_tcp_port}", data_converter=pydantic_data_converter)

    app = create_app(settings_for(ids), client_factory=connect_to_closed_port)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
        yield http


async def test_temporal_down_is_503_so_stripe_retries(api_without_temporal, ids):
    response = await post_event(api_without_temporal, failed_event(ids))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"
    # Ignored events need no Temporal and are still acknowledged.
    assert (await post_event(api_without_temporal, sf.resource("event"))).status_code == 200


async def test_temporal_lost_after_connecting_is_503(ids, unused_tcp_port):
    client = await Client.connect(f"127.0.0.1:{unused_tcp_port}", lazy=True, data_converter=pydantic_data_converter)
    app = create_app(settings_for(ids), client_factory=lambda: client)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
        for event in (
            failed_event(ids),
            sf.event("payment_method.attached", sf.payment_method(customer=ids["customer"])),
            sf.event("invoice.paid", sf.invoice(ids["invoice"], status="paid", subscription=ids["subscription"])),
        ):
            response = await post_event(http, event)
            assert response.status_code == 503, (event["type"], response.text)
        assert (await http.get("/healthz")).status_code == 503


async def test_temporal_going_away_is_503(ids):
    """A client that was connected, then the server stopped (a Temporal restart)."""
    temporal = binary("temporal")
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=temporal,
        search_attributes=sa.SEARCH_ATTRIBUTES,
        dev_server_log_level="error",
    )
    app = create_app(settings_for(ids), client_factory=lambda: env.client, rpc_timeout=timedelta(seconds=1))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
        assert (await post_event(http, failed_event(ids))).status_code == 200
        await env.shutdown()
        response = await post_event(http, failed_event(ids, event_id="evt_after_shutdown"))
        assert response.status_code == 503, response.text
        assert (await http.get("/healthz")).status_code == 503


async def test_webhook_secret_not_configured_is_not_acknowledged(dev_env, ids):
    app = create_app(Settings(dunning_task_queue=ids["queue"]), client_factory=lambda: dev_env.client)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
        response = await post_event(http, failed_event(ids))
    assert response.status_code == 503


# --- healthz --------------------------------------------------------------------------------------


async def test_healthz(api, api_without_temporal, dev_env, ids):
    up = await api.get("/healthz")
    assert up.status_code == 200
    assert (up.json()["temporal"], up.json()["database"]) == ("reachable", "reachable")
    down = await api_without_temporal.get("/healthz")
    assert down.status_code == 503
    assert down.json()["temporal"].startswith("unreachable")
    no_database = create_app(
        settings_for(ids, dunning_database_url="postgresql+psycopg://dunning@127.0.0.1:1/dunning"),
        client_factory=lambda: dev_env.client,
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=no_database), base_url="http://api") as http:
        degraded = await http.get("/healthz")
    assert degraded.status_code == 503
    assert (degraded.json()["database"], degraded.json()["temporal"]) == ("unreachable", "reachable")
