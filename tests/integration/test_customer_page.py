"""The customer's page end to end on the real dev server: the link in the email the case sent,
opened later; more time; cancel with a reason; the update link created at the click; forged,
altered and expired tokens. Stripe is the loopback fake behind the real SDK; the worker and the
API share one database (the links) like a deployment does.
"""

from __future__ import annotations

import asyncio
import html as html_text
import json
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pytest_httpserver import HTTPServer
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.sandbox import SandboxOutbox
from activities.stripe_backend import StripePayments
from dunning.models import CaseStatus, Stage
from dunning.policy import SHIPPED_POLICY_DIR
from fakes import stripe_api as sf
from fakes.stripe_api import FakeStripe, Reply
from runtime import migrations
from runtime.ledger import ledger_cases
from runtime.links import customer_links
from runtime.settings import Settings
from starter.api.main import create_app
from starter.api.routes.customer_page import PAGE_HEADERS
from tests.helpers import new_worker
from tests.helpers.policy_files import RECOVERY_LADDER, policy_text

SECRET = "whsec_test_page_0123456789abcdef"
PUBLIC_URL = "https://pay.acme.example"
# One retry an hour after the failure: nothing fires by itself while the test clicks around.
PAGE_POLICY = policy_text(
    "page",
    RECOVERY_LADDER,
    retry_after='["PT1H"]',
    max_attempts_per_card_30d="10",
    min_gap_between_messages='"PT20H"',
)


@dataclass
class World:
    suffix: str
    stripe: FakeStripe
    api: httpx.AsyncClient
    handle: WorkflowHandle
    outbox: SandboxOutbox
    client: Client
    app: object

    @property
    def invoice_id(self) -> str:
        return f"in_{self.suffix}"

    async def status(self) -> CaseStatus:
        return await self.handle.query("status", result_type=CaseStatus)

    async def open_case(self, decline_code: str = "insufficient_funds", code: str = "card_declined") -> str:
        """Stripe's payment failed; returns the page path from the email the customer got."""
        self.stripe.invoice_payments[self.invoice_id] = [
            sf.failed_payment(self.invoice_id, code=code, decline_code=decline_code)
        ]
        invoice = self.stripe.invoices[self.invoice_id]
        body = json.dumps(sf.event("invoice.payment_failed", invoice, event_id=f"evt_failed_{self.suffix}")).encode()
        response = await self.api.post("/webhooks/stripe", content=body, headers={"Stripe-Signature": sf.sign(body, SECRET)})
        assert response.status_code == 200, response.text
        for _ in range(100):
            if self.outbox.messages:
                break
            await asyncio.sleep(0.1)
        [email] = self.outbox.messages
        links = re.findall(r"https://\S+", email.body)
        page_links = [link for link in links if link.startswith(f"{PUBLIC_URL}/c/")]
        assert page_links, email.body
        assert not any("stripe.com" in link for link in links), "no provider URL in a message"
        token = page_links[0].removeprefix(f"{PUBLIC_URL}/c/").rstrip(".,)")
        assert len(token) <= 56
        return f"/c/{token}"


@asynccontextmanager
async def world(dev_env: WorkflowEnvironment, httpserver: HTTPServer, tmp_path: Path, locale: str = "en") -> AsyncIterator[World]:
    suffix = uuid.uuid4().hex[:10]
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    shutil.copy(SHIPPED_POLICY_DIR / "default.toml", policy_dir)
    (policy_dir / "page.toml").write_text(PAGE_POLICY)
    stripe = FakeStripe(httpserver)
    customer = sf.customer(f"cus_{suffix}")
    customer["preferred_locales"] = [locale]
    stripe.add(
        sf.invoice(
            f"in_{suffix}",
            customer=f"cus_{suffix}",
            subscription=f"sub_{suffix}",
            subscription_metadata={"dunning_policy": "page"},
            hosted_invoice_url=f"https://invoice.stripe.com/i/acct_test/in_{suffix}",
        ),
        customer,
        sf.subscription(f"sub_{suffix}", customer=f"cus_{suffix}"),
    )
    settings = Settings(
        stripe_api_key="sk_test_page_0123456789",
        stripe_api_base=stripe.base_url,
        stripe_webhook_secret=SECRET,
        dunning_task_queue=f"page-{suffix}",
        dunning_policy_dir=policy_dir,
        dunning_state_dir=tmp_path / "state",
        dunning_public_url=PUBLIC_URL,
        dunning_company_name="Acme",
        dunning_support_email="billing@acme.example",
    )
    payments = StripePayments.from_settings(settings)
    outbox = SandboxOutbox()
    client = dev_env.client
    app = create_app(settings, client_factory=lambda: client, payments=payments)
    migrations.upgrade(app.state.database)
    async with (
        new_worker(client, task_queue=settings.dunning_task_queue, payments=payments, outbox=outbox, links=app.state.links),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://pay.acme.example") as api,
    ):
        yield World(suffix, stripe, api, client.get_workflow_handle(f"dunning-sub_{suffix}", result_type=CaseStatus), outbox, client, app)
    await payments.aclose()


def form_secret(html: str, action: str) -> str:
    match = re.search(rf'action="[^"]*/{action}">\s*<input type="hidden" name="csrf" value="([^"]+)"', html)
    assert match, f"no {action} form on the page"
    return match.group(1)


async def test_the_link_opens_the_page_and_more_time_extends_grace_once(dev_env, httpserver, tmp_path):
    async with world(dev_env, httpserver, tmp_path) as w:
        page = await w.open_case()
        before = await w.status()

        # A mail scanner prefetches the link: the page answers, the case does not change.
        response = await w.api.get(page)
        assert response.status_code == 200
        for name, value in PAGE_HEADERS.items():
            assert response.headers[name] == value
        html = html_text.unescape(response.text)
        assert "Your payment of €49.00 didn't go through" in html
        assert "Take another 7 days" in html
        assert "<script" not in html
        assert (await w.status()).timeline == before.timeline

        secret = form_secret(html, "more-time")
        response = await w.api.post(f"{page}/more-time", data={"csrf": secret})
        assert (response.status_code, response.headers["location"]) == (303, f"{page}?done=more-time")
        extended = await w.status()
        assert extended.grace_ends_at == before.grace_ends_at + timedelta(days=7)
        assert extended.customer_extensions == 1 and extended.self_service_grace_left == 0
        assert any(e.event == "grace_extended" and "the customer" in e.detail for e in extended.timeline)

        # A double submit (the same form again) extends nothing more.
        response = await w.api.post(f"{page}/more-time", data={"csrf": secret})
        assert response.status_code == 303
        assert (await w.status()).grace_ends_at == extended.grace_ends_at

        shown = html_text.unescape((await w.api.get(f"{page}?done=more-time")).text)
        assert "Done: your access continues until" in shown
        assert "Take another" not in shown  # the limit (1) is used up


async def test_cancel_with_a_reason_cancels_in_stripe_and_closes_the_case(dev_env, httpserver, tmp_path):
    async with world(dev_env, httpserver, tmp_path) as w:
        page = await w.open_case()
        html = (await w.api.get(page)).text
        response = await w.api.post(
            f"{page}/cancel",
            data={"csrf": form_secret(html, "cancel"), "reason": "too_expensive", "comment": "Budget cuts"},
        )
        assert response.status_code == 303
        final = await asyncio.wait_for(w.handle.result(), timeout=20)
        assert final.stage is Stage.CLOSED_BY_CUSTOMER
        assert final.feedback is not None
        assert (final.feedback.reason.value, final.feedback.comment) == ("too_expensive", "Budget cuts")
        assert [r.method for r in w.stripe.seen(path=f"/v1/subscriptions/sub_{w.suffix}")][-1] == "DELETE"
        goodbye = (await w.api.get(page)).text
        assert "Your subscription is canceled" in goodbye and "Thank you for telling us why" in goodbye


async def test_the_update_link_is_created_at_the_click_and_returns_to_the_page(dev_env, httpserver, tmp_path):
    async with world(dev_env, httpserver, tmp_path) as w:
        page = await w.open_case()
        sessions_before = len(w.stripe.seen("POST", "/v1/billing_portal/sessions"))
        assert sessions_before == 0, "no portal session is created when a message is sent"
        # Minutes later any session made when the message went out would be dead; the click makes one now.
        w.stripe.expire_portal_sessions()
        response = await w.api.get(f"{page}/update")
        assert response.status_code == 303
        location = response.headers["location"]
        assert location.startswith(f"{w.stripe.base_url}/p/session/")
        async with httpx.AsyncClient() as browser:
            assert (await browser.get(location)).status_code == 200, "the session the click made is live"
        [session] = w.stripe.seen("POST", "/v1/billing_portal/sessions")
        assert session.form["flow_data[type]"] == "payment_method_update"
        assert session.form["return_url"] == f"{PUBLIC_URL}{page}?done=card"
        with w.app.state.database.engine.connect() as db:
            clicked = db.execute(customer_links.select()).mappings().one()["update_clicked_at"]
        assert clicked is not None


async def test_an_authentication_decline_goes_to_the_hosted_invoice_page(dev_env, httpserver, tmp_path):
    async with world(dev_env, httpserver, tmp_path, locale="de") as w:
        page = await w.open_case(code="authentication_required", decline_code="authentication_required")
        html = (await w.api.get(page)).text
        assert '<html lang="de">' in html and "Zahlung bestätigen" in html
        response = await w.api.get(f"{page}/update")
        assert (response.status_code, response.headers["location"]) == (
            303,
            f"https://invoice.stripe.com/i/acct_test/in_{w.suffix}",
        )


@pytest.mark.parametrize("how", ["forged", "altered", "short"])
async def test_a_forged_or_altered_token_gets_the_404_page_without_data(dev_env, httpserver, tmp_path, how):
    async with world(dev_env, httpserver, tmp_path) as w:
        page = await w.open_case()
        token = page.removeprefix("/c/")
        bad = {
            "forged": "A" * len(token),
            "altered": token[:-1] + ("A" if token[-1] != "A" else "B"),
            "short": token[:10],
        }[how]
        for path in (f"/c/{bad}", f"/c/{bad}/update"):
            response = await w.api.get(path)
            assert response.status_code == 404
            assert "We can't find this page" in html_text.unescape(response.text)
            assert "€" not in response.text and w.suffix not in response.text
        response = await w.api.post(f"/c/{bad}/cancel", data={"csrf": "x"})
        assert response.status_code == 404
        assert (await w.status()).outcome is None


@pytest.mark.parametrize(
    ("outcome", "days_ago", "shown", "status_code"),
    [
        ("recovered", 3, "All settled, thank you", 200),
        ("canceled", 3, "Your subscription has ended", 200),
        ("closed_by_customer", 3, "Your subscription is canceled", 200),
        ("recovered", 31, "This link has expired", 410),
    ],
)
async def test_once_temporal_forgot_the_case_the_ledger_says_how_it_ended(
    dev_env, httpserver, tmp_path, outcome, days_ago, shown, status_code
):
    """Past Temporal's retention the page still answers from the ledger: the outcome only, no data."""
    async with world(dev_env, httpserver, tmp_path) as w:
        links = w.app.state.links
        case_id = f"dunning-sub_gone_{w.suffix}@20260101T000000Z"
        url = await links.issue(case_id=case_id, workflow_id=f"dunning-sub_gone_{w.suffix}", run_id="", customer_id="cus_gone")
        closed = datetime.now(UTC) - timedelta(days=days_ago)
        with w.app.state.database.engine.begin() as db:
            db.execute(
                ledger_cases.insert().values(
                    case_id=case_id, workflow_id=f"dunning-sub_gone_{w.suffix}", subscription_id="sub_gone",
                    customer_id="cus_gone", policy="default", opened_at=closed - timedelta(days=5), amount=4900,
                    recovered_amount=4900 if outcome == "recovered" else 0, currency="eur", stage=outcome,
                    outcome=outcome, closed_at=closed, charge_attempts=1, messages_sent=1, customer_extensions=0,
                    seq=1, updated_at=closed,
                )
            )
        response = await w.api.get(url.removeprefix(PUBLIC_URL))
        assert response.status_code == status_code
        text = html_text.unescape(response.text)
        assert shown in text and "€" not in text and "cus_gone" not in text
