"""`dunning up`'s stand-in billing portal: the demo's customer journey can be clicked through on
sandbox payments (page → "Update your card" → save a working card → the case recovers)."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import httpx
from temporalio.testing import WorkflowEnvironment

from activities.sandbox import SandboxOutbox, SandboxPayments
from dunning.models import CaseStatus, PaymentFailed, Stage
from dunning.policy import SHIPPED_POLICY_DIR, load_policies
from runtime import migrations
from runtime.settings import Settings
from starter.api.main import create_app
from starter.cases import open_case
from tests.helpers import new_worker

PUBLIC = "http://127.0.0.1:8000"


async def test_the_local_portal_saves_a_working_card_and_the_case_recovers(dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    settings = Settings(
        dunning_task_queue=f"portal-{suffix}",
        dunning_state_dir=tmp_path,
        dunning_public_url=PUBLIC,
        dunning_sandbox_outbox_file=tmp_path / "sandbox-outbox.jsonl",
        dunning_payments="sandbox",
        dunning_email="sandbox",
        dunning_sms="sandbox",
    )
    app = create_app(settings, client_factory=lambda: dev_env.client)
    migrations.upgrade(app.state.database)
    payments = SandboxPayments()
    customer = f"cus_{suffix}"
    payments.add_customer(customer, name="Ada", email="ada@example.com")
    payments.script_card("pm_card_old", ["insufficient_funds"] * 5)
    outbox = SandboxOutbox()
    async with (
        new_worker(dev_env.client, task_queue=settings.dunning_task_queue, payments=payments, outbox=outbox, links=app.state.links),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=PUBLIC) as http,
    ):
        failure = PaymentFailed(
            invoice_id=f"in_{suffix}", amount_due=4900, currency="usd", customer_id=customer,
            subscription_id=f"sub_{suffix}", payment_method_id="pm_card_old",
        )
        policy = load_policies(SHIPPED_POLICY_DIR)["default"]
        handle = await open_case(
            dev_env.client, task_queue=settings.dunning_task_queue, payment=failure, policy=policy, opened_by="test"
        )
        for _ in range(100):
            if outbox.messages:
                break
            await asyncio.sleep(0.1)
        page = re.search(rf"{PUBLIC}(/c/[A-Za-z0-9_-]+)", outbox.messages[0].body)
        assert page, outbox.messages[0].body
        update = await http.get(f"{page.group(1)}/update")
        assert update.status_code == 303
        portal = update.headers["location"]
        assert portal.startswith(f"{PUBLIC}/dev/portal/update/{customer}?return_url=")
        form = await http.get(portal.removeprefix(PUBLIC))
        assert "Save this card" in form.text
        back = re.search(r'name="return_url" value="([^"]+)"', form.text)
        assert back
        saved = await http.post(portal.removeprefix(PUBLIC).split("?")[0], data={"return_url": back.group(1).replace("&amp;", "&")})
        assert saved.status_code == 303 and saved.headers["location"].startswith(f"{PUBLIC}/c/")
        final = CaseStatus.model_validate(await asyncio.wait_for(handle.result(), timeout=30))
        assert final.stage is Stage.RECOVERED
        assert final.attempts[-1].result.payment_method_id == "pm_card_visa"


async def test_an_authentication_decline_also_reaches_the_local_portal() -> None:
    """On sandbox payments there is no hosted invoice page: "Confirm the payment" opens the local
    portal too (a working card stands in for the 3-D Secure step)."""
    payments = SandboxPayments(portal_url=f"{PUBLIC}/dev/portal")
    assert await payments.hosted_invoice_url("in_1") is None
    assert (await SandboxPayments().hosted_invoice_url("in_1") or "").startswith("https://billing.example.com/")


async def test_the_local_portal_never_redirects_elsewhere_and_is_absent_next_to_stripe(dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
    local = create_app(
        Settings(dunning_state_dir=tmp_path, dunning_public_url=PUBLIC, dunning_sandbox_outbox_file=tmp_path / "o.jsonl",
                 dunning_payments="sandbox", dunning_email="sandbox", dunning_sms="sandbox"),
        client_factory=lambda: dev_env.client,
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=local), base_url=PUBLIC) as http:
        form = await http.get("/dev/portal/update/cus_1", params={"return_url": "https://evil.example/phish"})
        assert 'value="/dev/mailbox"' in form.text
    stripe = create_app(
        Settings(dunning_state_dir=tmp_path, stripe_api_key="sk_test_x", dunning_sandbox_outbox_file=tmp_path / "o.jsonl"),
        client_factory=lambda: dev_env.client,
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=stripe), base_url=PUBLIC) as http:
        assert (await http.get("/dev/portal/update/cus_1")).status_code == 404
