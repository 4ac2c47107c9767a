"""End to end on the real Temporal dev server: Stripe's webhooks in, Stripe's API out.

signed `invoice.payment_failed` → the API starts the case → the worker (Stripe backend,
pointed at the loopback fake) retries and the fake declines the card as expired → signed
`payment_method.attached` → the case charges the new card at once → `recovered`.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from pathlib import Path

import httpx
from pytest_httpserver import HTTPServer
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.case_activities import NotificationActivities, PaymentActivities
from activities.sandbox import MemoryConsentStore, SandboxOutbox
from activities.settings import Settings
from activities.stripe_backend import StripePayments
from dunning.models import CaseStatus, Stage
from dunning.policy import SHIPPED_POLICY_DIR
from starter.api import create_app
from tests import stripe_fakes as sf
from tests.stripe_fakes import FakeStripe, Reply
from workflows.dunning_workflow import DunningWorkflow

SECRET = "whsec_test_e2e_0123456789abcdef"

# Retries two seconds after the failure, then an hour later: nothing else fires during the test.
E2E_POLICY = """
name = "e2e"
retry_after = ["PT2S", "PT1H"]
max_attempts_per_card_30d = 10
grace = "P14D"
cancel_after_suspension = "P30D"
min_gap_between_messages = "PT20H"

[[notify]]
at = "PT0S"
channels = ["email", "in_app"]
template = "payment_failed"

[[notify]]
on = "recovered"
channels = ["email"]
template = "recovered"
"""


async def post_event(http: httpx.AsyncClient, event: dict) -> httpx.Response:
    body = json.dumps(event).encode()
    return await http.post("/webhooks/stripe", content=body, headers={"Stripe-Signature": sf.sign(body, SECRET)})


async def until(predicate, query, timeout: float = 20.0) -> CaseStatus:
    """Polls the case's `status` query until `predicate(status)` holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status = await query()
        if predicate(status):
            return status
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"case never got there; last status: {status.stage} {status.timeline}")
        await asyncio.sleep(0.2)


async def test_failed_payment_recovered_by_a_card_update(
    dev_env: WorkflowEnvironment, httpserver: HTTPServer, tmp_path: Path
):
    suffix = uuid.uuid4().hex[:10]
    customer_id, subscription_id, invoice_id = f"cus_{suffix}", f"sub_{suffix}", f"in_{suffix}"
    queue = f"e2e-{suffix}"

    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    shutil.copy(SHIPPED_POLICY_DIR / "default.toml", policy_dir)
    (policy_dir / "e2e.toml").write_text(E2E_POLICY)

    stripe = FakeStripe(httpserver)
    failed_invoice = sf.invoice(
        invoice_id, customer=customer_id, subscription=subscription_id, subscription_metadata={"dunning_policy": "e2e"}
    )
    stripe.add(failed_invoice, sf.customer(customer_id), sf.subscription(subscription_id, customer=customer_id))
    # The case's first retry meets the same expired card Stripe's own attempt did.
    stripe.pay_script.append(
        Reply(
            402,
            sf.card_error(
                code="expired_card",
                decline_code="expired_card",
                message="Your card has expired.",
                invoice_id=invoice_id,
            ),
        )
    )

    settings = Settings(
        stripe_api_key="sk_test_e2e_0123456789",
        stripe_api_base=stripe.base_url,
        stripe_webhook_secret=SECRET,
        dunning_task_queue=queue,
        dunning_policy_dir=policy_dir,
    )
    payments = StripePayments.from_settings(settings)
    outbox = SandboxOutbox()
    payment_activities = PaymentActivities(payments)
    notification_activities = NotificationActivities(payments, outbox, outbox, MemoryConsentStore())
    client = dev_env.client
    app = create_app(settings, client_factory=lambda: client)
    handle = client.get_workflow_handle(f"dunning-{subscription_id}", result_type=CaseStatus)

    async def status() -> CaseStatus:
        return await handle.query("status", result_type=CaseStatus)

    async with (
        Worker(
            client,
            task_queue=queue,
            workflows=[DunningWorkflow],
            activities=[
                payment_activities.charge_invoice,
                payment_activities.suspend_access,
                payment_activities.restore_access,
                payment_activities.cancel_subscription,
                payment_activities.get_customer,
                notification_activities.send_notification,
            ],
        ),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as api,
    ):
        failed = sf.event("invoice.payment_failed", failed_invoice, event_id=f"evt_failed_{suffix}")
        response = await post_event(api, failed)
        assert response.status_code == 200, response.text

        declined = await until(lambda s: any(a.attempt == 1 for a in s.attempts), status)
        assert declined.stage is Stage.AWAITING_PAYMENT_METHOD
        assert declined.policy == "e2e"
        assert declined.decline_category.value == "hard"
        retry = next(a for a in declined.attempts if a.attempt == 1)
        assert (retry.result.status, retry.result.decline_code) == ("declined", "expired_card")

        attached = sf.event(
            "payment_method.attached",
            sf.payment_method("pm_card_new", customer=customer_id),
            event_id=f"evt_pm_{suffix}",
        )
        response = await post_event(api, attached)
        assert response.status_code == 200, response.text
        assert response.json()["cases"] == [f"dunning-{subscription_id}"]

        final = await asyncio.wait_for(handle.result(), timeout=20)
        assert final.stage is Stage.RECOVERED
        assert final.access.value == "active"
        assert (await handle.describe()).status == WorkflowExecutionStatus.COMPLETED

        # Stripe's redeliveries of both events, after the case closed: nothing happens.
        for event in (failed, attached):
            response = await post_event(api, event)
            assert (response.status_code, response.json()["action"]) == (200, "ignored")
        assert len([w async for w in client.list_workflows(f'WorkflowId = "dunning-{subscription_id}"')]) == 1

    # What Stripe received: each charge preceded by a fresh read of the invoice, off-session,
    # one idempotency key per attempt, the second one on the new card.
    pay_path = f"/v1/invoices/{invoice_id}/pay"
    charges = [(r.method, r.path) for r in stripe.requests if r.path.startswith(f"/v1/invoices/{invoice_id}")]
    assert charges[-4:] == [("GET", f"/v1/invoices/{invoice_id}"), ("POST", pay_path)] * 2
    first, second = stripe.pay_requests
    assert first.form == {"off_session": "true"}
    assert second.form == {"off_session": "true", "payment_method": "pm_card_new"}
    assert first.idempotency_key == f"{final.case_id}/{invoice_id}/1"
    assert second.idempotency_key == f"{final.case_id}/{invoice_id}/2"
    assert [a.result.status for a in final.attempts] == ["declined", "declined", "succeeded"]
    assert final.attempts[-1].result.payment_method_id == "pm_card_new"
    assert stripe.invoices[invoice_id]["status"] == "paid"

    # The customer heard about it by email, with the one-click portal link, then the thanks.
    assert [m.subject for m in outbox.messages] == [
        "We couldn't process your payment",
        "Thank you, your payment went through",
    ]
    assert outbox.messages[0].to == "ada@example.com"
    assert f"https://billing.stripe.com/p/session/test_{customer_id}" in outbox.messages[0].body
    await payments.aclose()
