"""The customer's page in a real browser: Debian's chromium driven by Playwright (DESIGN.md §4).

The API is served for real (uvicorn on a loopback port, in this event loop) so the browser opens
the link from the email exactly as a customer would; the worker runs in-process and shares the
API's links (one SQLite database); Stripe is the loopback fake, whose billing-portal sessions
expire and whose portal form attaches a card and sends the signed `payment_method.attached`
webhook to the served API.

Every page state is checked with axe-core (tests/assets/axe.min.js, vendored from npm) at phone
and desktop sizes: no serious or critical violation. The page's CSP forbids scripts, so axe is
evaluated through the DevTools protocol (`page.evaluate`), which CSP does not govern; the page
itself still runs no script.

Screenshots: `UPDATE_SCREENSHOTS=1` writes docs/customer-page.png (phone, English, open case) and
docs/customer-page-de.png; `SCREENSHOT_DIR=/some/dir` saves every state checked, for review.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import pytest_asyncio
import uvicorn
from babel.dates import format_date
from playwright.async_api import Browser, Page, async_playwright
from pytest_httpserver import HTTPServer
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.sandbox import SandboxOutbox
from activities.stripe_backend import StripePayments
from dunning.models import CaseStatus, Stage
from dunning.policy import SHIPPED_POLICY_DIR
from fakes import stripe_api as sf
from fakes.stripe_api import FakeStripe
from runtime.settings import Settings
from starter.api.main import create_app
from starter.api.routes import customer_page
from tests.helpers import new_worker
from tests.helpers.policy_files import RECOVERY_LADDER, policy_text
from tests.unit.test_customer_page_render import EXAMPLES, rendered

CHROMIUM = Path("/usr/bin/chromium")
AXE = Path(__file__).resolve().parents[1] / "assets" / "axe.min.js"
DOCS = Path(__file__).resolve().parents[2] / "docs"
SECRET = "whsec_test_browser_0123456789abcdef"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
# One retry an hour after the failure: nothing fires by itself while the browser clicks around.
PAGE_POLICY = policy_text(
    "page", RECOVERY_LADDER, retry_after='["PT1H"]', max_attempts_per_card_30d="10", min_gap_between_messages='"PT20H"'
)


# --- the browser ---------------------------------------------------------------------------


@pytest_asyncio.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    """Debian's chromium (never `playwright install`, which downloads). Skipped where it is not
    installed, except in CI (`CI=true`), where `.ci/run` installs it: missing there is a failure."""
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is not installed (apt-get install chromium; .ci/run does it)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture(autouse=True)
def _fresh_rate_limits() -> None:
    """The page's per-process rate limits count every test's loads from 127.0.0.1; start afresh."""
    customer_page._limiter.storage.reset()


async def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now."""
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        await page.evaluate(AXE.read_text(encoding="utf-8"))
    result = await page.evaluate(
        "async () => (await axe.run(document, {runOnly: {type: 'tag', values:"
        " ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice']}})).violations"
    )
    return [v for v in result if v["impact"] in ("serious", "critical")]


async def check_accessible(page: Page, name: str) -> None:
    """No serious or critical axe violation at phone and at desktop size; saves a screenshot of
    each size when SCREENSHOT_DIR is set."""
    for size_name, size in (("phone", PHONE), ("desktop", DESKTOP)):
        await page.set_viewport_size(size)
        violations = await axe_violations(page)
        assert not violations, f"{name} at {size_name}: " + json.dumps(
            [{"id": v["id"], "help": v["help"], "nodes": [n["html"] for n in v["nodes"]][:3]} for v in violations],
            indent=1,
        )
        if os.environ.get("SCREENSHOT_DIR"):
            folder = Path(os.environ["SCREENSHOT_DIR"])
            folder.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=folder / f"{name}-{size_name}.png", full_page=True)
    await page.set_viewport_size(PHONE)


async def save_doc_screenshot(page: Page, name: str) -> None:
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        await page.set_viewport_size(PHONE)
        await page.screenshot(path=DOCS / name, full_page=True)


# --- the world: served API, worker, fake Stripe ------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class World:
    suffix: str
    base_url: str
    stripe: FakeStripe
    handle: WorkflowHandle[Any, Any]
    outbox: SandboxOutbox
    payments: StripePayments
    webhooks: list[int] = field(default_factory=list)

    @property
    def invoice_id(self) -> str:
        return f"in_{self.suffix}"

    @property
    def subscription_id(self) -> str:
        return f"sub_{self.suffix}"

    async def status(self) -> CaseStatus:
        return await self.handle.query("status", result_type=CaseStatus)

    async def until(self, predicate: Callable[[CaseStatus], bool], timeout: float = 20.0) -> CaseStatus:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            status = await self.status()
            if predicate(status):
                return status
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"the case never got there: {status.stage} {status.timeline}")
            await asyncio.sleep(0.2)

    async def post_webhook(self, event: dict[str, Any]) -> int:
        body = json.dumps(event).encode()
        async with httpx.AsyncClient(base_url=self.base_url) as http:
            response = await http.post(
                "/webhooks/stripe", content=body, headers={"Stripe-Signature": sf.sign(body, SECRET)}
            )
        return response.status_code

    async def open_case(self) -> str:
        """Stripe's payment failed; returns the link in the email the customer got."""
        self.stripe.invoice_payments[self.invoice_id] = [sf.failed_payment(self.invoice_id)]
        failed = sf.event("invoice.payment_failed", self.stripe.invoices[self.invoice_id], event_id=f"evt_f_{self.suffix}")
        assert await self.post_webhook(failed) == 200
        for _ in range(150):
            if self.outbox.messages:
                break
            await asyncio.sleep(0.1)
        email = self.outbox.messages[0]
        links = re.findall(rf"{re.escape(self.base_url)}/c/[A-Za-z0-9_-]+", email.body)
        assert links, email.body
        return links[0]


@asynccontextmanager
async def world(
    dev_env: WorkflowEnvironment, httpserver: HTTPServer, tmp_path: Path, locale: str = "en"
) -> AsyncIterator[World]:
    suffix = uuid.uuid4().hex[:10]
    policy_dir = tmp_path / "policies"
    policy_dir.mkdir()
    shutil.copy(SHIPPED_POLICY_DIR / "default.toml", policy_dir)
    (policy_dir / "page.toml").write_text(PAGE_POLICY)
    stripe = FakeStripe(httpserver)
    stripe.add(
        sf.invoice(
            f"in_{suffix}",
            customer=f"cus_{suffix}",
            subscription=f"sub_{suffix}",
            subscription_metadata={"dunning_policy": "page"},
        ),
        sf.customer(f"cus_{suffix}", preferred_locales=[locale]),
        sf.subscription(f"sub_{suffix}", customer=f"cus_{suffix}"),
    )
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    settings = Settings(
        stripe_api_key="sk_test_browser_0123456789",
        stripe_api_base=stripe.base_url,
        stripe_webhook_secret=SECRET,
        dunning_task_queue=f"browser-{suffix}",
        dunning_policy_dir=policy_dir,
        dunning_state_dir=tmp_path / "state",
        dunning_public_url=base_url,
        dunning_company_name="Acme",
        dunning_support_email="billing@acme.example",
    )
    payments = StripePayments.from_settings(settings)
    outbox = SandboxOutbox()
    client = dev_env.client
    app = create_app(settings, client_factory=lambda: client, payments=payments)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(100):
            if server.started:
                break
            assert not serving.done(), "uvicorn stopped before it started"
            await asyncio.sleep(0.05)
        handle = client.get_workflow_handle(f"dunning-sub_{suffix}", result_type=CaseStatus)
        w = World(suffix, base_url, stripe, handle, outbox, payments)

        def attached(pm: dict[str, Any]) -> None:
            # The fake portal's thread: Stripe sends the webhook on its own, signed.
            body = json.dumps(sf.event("payment_method.attached", pm, event_id=f"evt_pm_{pm['id']}")).encode()
            response = httpx.post(
                f"{base_url}/webhooks/stripe", content=body, headers={"Stripe-Signature": sf.sign(body, SECRET)}
            )
            w.webhooks.append(response.status_code)

        stripe.on_payment_method_attached = attached
        async with new_worker(
            client, task_queue=settings.dunning_task_queue, payments=payments, outbox=outbox, links=app.state.links
        ):
            yield w
    finally:
        server.should_exit = True
        await serving
        await payments.aclose()


@asynccontextmanager
async def new_page(browser: Browser, locale: str = "en-US") -> AsyncIterator[Page]:
    context = await browser.new_context(viewport=PHONE, locale=locale)
    try:
        yield await context.new_page()
    finally:
        await context.close()


def long_date(status: CaseStatus, lang: str) -> str:
    assert status.grace_ends_at is not None
    zone = ZoneInfo(status.customer_timezone or "UTC")
    return format_date(status.grace_ends_at.astimezone(zone).date(), format="long", locale=lang)


# --- scenarios -------------------------------------------------------------------------------


async def test_update_the_card_from_the_email_after_old_sessions_expired_and_the_case_recovers(
    dev_env, httpserver, tmp_path, browser
):
    async with world(dev_env, httpserver, tmp_path) as w, new_page(browser) as page:
        link = await w.open_case()
        # What a message carrying a provider session would have held: dead by the time of the click.
        stale = await w.payments.update_link(f"cus_{w.suffix}", w.invoice_id, link)
        w.stripe.expire_portal_sessions()
        response = await page.goto(stale)
        assert response is not None and response.status == 410
        assert "This session has expired" in await page.inner_text("body")

        # Our link still works: the page, then the portal session created at the click.
        response = await page.goto(link)
        assert response is not None and response.status == 200
        assert "Your payment of €49.00 didn't go through" in await page.inner_text("h1")
        await check_accessible(page, "open")
        await save_doc_screenshot(page, "customer-page.png")

        await page.get_by_role("link", name="Update your card").click()
        await page.wait_for_url(re.compile(r".*/p/session/.*"))
        assert "Update payment method" in await page.inner_text("h1")
        await page.get_by_label("Mastercard ending in 4444").check()
        await page.get_by_role("button", name="Save").click()
        await page.wait_for_url(f"{link}?done=card")
        assert w.webhooks == [200], "the fake portal's webhook reached the API"

        # Back on the page: it waited a moment for the new card's charge; on a slow machine it may
        # not have closed yet, and then the page says the card is being charged.
        if await page.inner_text("h1") != "All settled, thank you":
            assert "we're charging it now" in await page.get_by_role("status").inner_text()
            await check_accessible(page, "card-returned")
            await w.until(lambda s: s.outcome is not None)
            await page.reload()
        assert await page.inner_text("h1") == "All settled, thank you"
        final = await w.status()
        assert final.stage is Stage.RECOVERED
        await check_accessible(page, "recovered")

        [new_card] = w.stripe.payment_methods
        assert w.stripe.pay_requests[-1].form["payment_method"] == new_card, "the new card was charged"
        assert w.stripe.invoices[w.invoice_id]["status"] == "paid"
        assert w.stripe.subscriptions[w.subscription_id]["default_payment_method"] == new_card
        assert len(w.stripe.seen("POST", "/v1/billing_portal/sessions")) == 2  # the stale one, and the click's


async def test_more_time_with_the_keyboard_only(dev_env, httpserver, tmp_path, browser):
    async with world(dev_env, httpserver, tmp_path) as w, new_page(browser) as page:
        link = await w.open_case()
        before = await w.status()
        await page.goto(link)
        # Tab through the page as a keyboard user does; the focus order follows the reading order.
        order: list[str] = []
        for _ in range(20):
            await page.keyboard.press("Tab")
            focused = await page.evaluate("document.activeElement.innerText || document.activeElement.id")
            order.append(focused.strip())
            if focused.strip() == "Take another 7 days":
                break
        assert order == ["Update your card", "Take another 7 days"], order
        assert await page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none", (
            "the focused button shows where the focus is"
        )
        async with page.expect_navigation():
            await page.keyboard.press("Enter")

        extended = await w.status()
        assert extended.grace_ends_at == before.grace_ends_at + timedelta(days=7)
        assert extended.customer_extensions == 1
        notice = await page.get_by_role("status").inner_text()
        assert notice == f"Done: your access continues until {long_date(extended, 'en')}."
        assert "Take another" not in await page.inner_text("main")
        await check_accessible(page, "grace-extended")


async def test_cancel_with_a_reason_and_a_comment(dev_env, httpserver, tmp_path, browser):
    async with world(dev_env, httpserver, tmp_path) as w, new_page(browser) as page:
        link = await w.open_case()
        await page.goto(link)
        await page.get_by_label("It's too expensive").check()
        await page.get_by_label("Anything else you'd like to tell us? (optional)").fill("Budget cuts this quarter")
        await page.get_by_role("button", name="Cancel my subscription").click()
        await page.wait_for_load_state()

        final = await asyncio.wait_for(w.handle.result(), timeout=20)
        assert final.stage is Stage.CLOSED_BY_CUSTOMER
        assert final.feedback is not None
        assert (final.feedback.reason.value, final.feedback.comment) == ("too_expensive", "Budget cuts this quarter")
        assert [r.method for r in w.stripe.seen(path=f"/v1/subscriptions/{w.subscription_id}")][-1] == "DELETE"
        assert w.stripe.subscriptions[w.subscription_id]["status"] == "canceled"

        await page.reload()
        assert await page.inner_text("h1") == "Your subscription is canceled"
        assert "Thank you for telling us why." in await page.inner_text("main")
        await check_accessible(page, "closed_by_customer")


async def test_a_forged_token_shows_the_404_page(dev_env, httpserver, tmp_path, browser):
    async with world(dev_env, httpserver, tmp_path) as w, new_page(browser) as page:
        link = await w.open_case()
        token = link.rsplit("/", 1)[1]
        response = await page.goto(f"{w.base_url}/c/{'A' * len(token)}")
        assert response is not None and response.status == 404
        assert await page.inner_text("h1") == "We can't find this page"
        assert "€" not in await page.content()
        await check_accessible(page, "not-found")


async def test_the_german_page(dev_env, httpserver, tmp_path, browser):
    async with world(dev_env, httpserver, tmp_path, locale="de") as w, new_page(browser, locale="de-DE") as page:
        link = await w.open_case()
        await page.goto(link)
        assert await page.get_attribute("html", "lang") == "de"
        # Babel puts a no-break space between the amount and the sign, as German typesetting wants.
        assert await page.inner_text("h1") == "Ihre Zahlung über 49,00\xa0€ ist fehlgeschlagen"
        assert await page.get_by_role("link", name="Karte aktualisieren").is_visible()
        assert await page.get_by_role("button", name="Abonnement kündigen").is_visible()
        await check_accessible(page, "open-de")
        await save_doc_screenshot(page, "customer-page-de.png")


# --- every state, both languages: the snapshot renderings in the browser ----------------------

STATES = [(lang, state) for lang, state in EXAMPLES]


@pytest.mark.parametrize(("lang", "state"), STATES, ids=[f"{lang}-{state}" for lang, state in STATES])
async def test_every_state_passes_axe(browser, lang, state):
    """The states a scenario above can't reach quickly (paused, suspended, canceled, canceling,
    expired, …): the unit tier's renderings served with the page's own CSS and headers."""
    css = (customer_page.PAGE_DIR / "customer-page.css").read_text(encoding="utf-8")
    html = rendered(lang, state)

    async def serve(route: Any) -> None:
        if route.request.url.endswith("/static/customer-page.css"):
            await route.fulfill(body=css, content_type="text/css")
        else:
            await route.fulfill(body=html, content_type="text/html; charset=utf-8", headers=customer_page.PAGE_HEADERS)

    async with new_page(browser) as page:
        await page.route("http://page.test/**", serve)
        await page.goto(f"http://page.test/c/{'T' * 32}")
        assert await page.evaluate("getComputedStyle(document.body).margin") == "0px", "the stylesheet loaded"
        await check_accessible(page, f"state-{lang}-{state}")
