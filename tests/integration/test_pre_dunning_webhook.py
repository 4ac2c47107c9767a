"""Pre-dunning at the door: `invoice.upcoming` (and `customer.source.expiring`) signed like Stripe
signs them, the card read from the Stripe fake with the real SDK, against the Temporal dev server.

No worker runs: the tests read what Temporal holds (the workflow started or not, its start
signal, the signals it got). What the workflow then does is tested in tests/workflow.
"""

from __future__ import annotations

import html
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pytest_httpserver import HTTPServer
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from activities.stripe_backend import StripePayments
from dunning import contract
from dunning.card_expiry import CardExpiryStatus
from fakes import stripe_api as sf
from fakes.stripe_api import FakeStripe
from runtime import migrations
from runtime.settings import Settings
from starter.api.main import create_app
from tests.helpers.workers import eventually, new_worker
from tests.integration.test_webhooks import SECRET, never_started, post_event, signals

#: A renewal in three weeks' time, at 10:00 on the first of a month: a card of the month before expires first.
_AHEAD = datetime.now(UTC) + timedelta(days=21)
RENEWAL = (_AHEAD.replace(day=1) + timedelta(days=32)).replace(day=1, hour=10, minute=0, second=0, microsecond=0)
LAST_MONTH = RENEWAL - timedelta(days=1)


@pytest.fixture
def ids() -> dict[str, str]:
    suffix = uuid.uuid4().hex[:10]
    return {"customer": f"cus_{suffix}", "subscription": f"sub_{suffix}", "queue": f"pre-dunning-{suffix}"}


@pytest.fixture
def stripe(httpserver: HTTPServer, ids: dict[str, str]) -> FakeStripe:
    fake = FakeStripe(httpserver)
    subscription = sf.subscription(ids["subscription"], customer=ids["customer"], status="active", metadata={"dunning_policy": "high_value"})
    subscription["default_payment_method"] = "pm_expiring"
    subscription["items"]["data"][0]["current_period_end"] = int(RENEWAL.timestamp())
    fake.add(
        sf.customer(ids["customer"], default_payment_method="pm_valid"),
        subscription,
        sf.payment_method("pm_expiring", customer=ids["customer"], exp_month=LAST_MONTH.month, exp_year=LAST_MONTH.year, last4="4444"),
        sf.payment_method("pm_valid", customer=ids["customer"], exp_month=12, exp_year=RENEWAL.year + 4),
    )
    return fake


@pytest.fixture
async def api(dev_env: WorkflowEnvironment, ids, stripe) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        stripe_webhook_secret=SECRET,
        dunning_task_queue=ids["queue"],
        stripe_api_key="sk_test_pre_dunning_0123",
        stripe_api_base=stripe.base_url,
    )
    app = create_app(settings, client_factory=lambda: dev_env.client, visibility_rechecks=(0.5, 1.0, 2.0, 3.0))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
        yield http


def upcoming(ids: dict[str, str], event_id: str = "evt_upcoming_1", policy: str = "high_value") -> dict:
    invoice = sf.upcoming_invoice(
        customer=ids["customer"],
        subscription=ids["subscription"],
        renewal=int(RENEWAL.timestamp()),
        subscription_metadata={"dunning_policy": policy},
    )
    return sf.event("invoice.upcoming", invoice, event_id=event_id)


async def test_an_expiring_card_starts_the_reminders(api, dev_env, ids, stripe) -> None:
    response = await post_event(api, upcoming(ids))
    wid = f"card-expiry-{ids['subscription']}"
    assert response.status_code == 200, response.text
    assert (response.json()["action"], response.json()["cases"]) == ("signal_with_start", [wid])

    described = await dev_env.client.get_workflow_handle(wid).describe()
    assert described.workflow_type == "CardExpiryWorkflow"
    assert described.status == WorkflowExecutionStatus.RUNNING
    assert described.typed_search_attributes.get(contract.CUSTOMER_ID) == ids["customer"]
    [(name, payload)] = await signals(dev_env.client, wid)
    assert name == "renewal_upcoming"
    assert payload["card"] == {
        "payment_method_id": "pm_expiring",
        "brand": "visa",
        "last4": "4444",
        "exp_month": LAST_MONTH.month,
        "exp_year": LAST_MONTH.year,
    }
    assert datetime.fromisoformat(payload["renewal_at"]) == RENEWAL
    # the card the subscription charges, read with the real SDK
    assert [r.path for r in stripe.seen("GET")] == [
        f"/v1/subscriptions/{ids['subscription']}",
        "/v1/payment_methods/pm_expiring",
    ]


async def test_a_card_that_outlives_the_renewal_starts_nothing(api, dev_env, ids, stripe) -> None:
    stripe.subscriptions[ids["subscription"]]["default_payment_method"] = None  # the customer's default pays: valid
    response = await post_event(api, upcoming(ids))
    assert (response.status_code, response.json()["action"]) == (200, "ignored")
    assert "outlives the renewal" in response.json()["detail"]
    assert await never_started(dev_env.client, f"card-expiry-{ids['subscription']}")
    assert [r.path for r in stripe.seen("GET")][-1] == "/v1/payment_methods/pm_valid"


async def test_a_policy_without_pre_dunning_reads_nothing_and_starts_nothing(api, dev_env, ids, stripe) -> None:
    response = await post_event(api, upcoming(ids, policy="default"))
    assert (response.status_code, response.json()["action"]) == (200, "ignored")
    assert "pre-dunning is off" in response.json()["detail"]
    assert stripe.seen("GET") == []
    assert await never_started(dev_env.client, f"card-expiry-{ids['subscription']}")


async def test_a_redelivered_event_changes_nothing(api, dev_env, ids) -> None:
    event = upcoming(ids, event_id="evt_upcoming_same")
    wid = f"card-expiry-{ids['subscription']}"
    first = await post_event(api, event)
    run = (await dev_env.client.get_workflow_handle(wid).describe()).run_id
    second = await post_event(api, event)
    assert (first.status_code, second.status_code) == (200, 200)
    assert (await dev_env.client.get_workflow_handle(wid).describe()).run_id == run
    # the same event id twice: the workflow drops the second (tests/workflow/test_card_expiry_flows.py)
    assert [p["event_id"] for _, p in await signals(dev_env.client, wid)] == ["evt_upcoming_same"] * 2
    # once its run has ended, a redelivery of the event that started it starts nothing
    await dev_env.client.get_workflow_handle(wid).terminate("test: ended")
    third = await post_event(api, event)
    assert (third.status_code, third.json()["action"]) == (200, "ignored")
    assert (await dev_env.client.get_workflow_handle(wid).describe()).run_id == run


async def test_a_new_card_reaches_the_reminders(api, dev_env, ids) -> None:
    wid = f"card-expiry-{ids['subscription']}"
    assert (await post_event(api, upcoming(ids))).status_code == 200
    attached = sf.event("payment_method.attached", sf.payment_method("pm_new", customer=ids["customer"]), event_id="evt_pm_new")

    async def delivered() -> bool:
        response = await post_event(api, attached)
        return wid in response.json()["cases"]

    await eventually(delivered, timeout=30, what="card_updated to the card-expiry workflow")
    names = [name for name, _ in await signals(dev_env.client, wid)]
    assert names[0] == "renewal_upcoming" and "card_updated" in names


async def test_an_expiring_legacy_card_starts_the_reminders_of_the_renewals_it_pays(api, dev_env, ids, stripe) -> None:
    card = sf.resource(
        "card", id="card_expiring", customer=ids["customer"], exp_month=LAST_MONTH.month, exp_year=LAST_MONTH.year, last4="0005"
    )
    stripe.subscriptions[ids["subscription"]]["default_payment_method"] = "card_expiring"
    response = await post_event(api, sf.event("customer.source.expiring", card, event_id="evt_src_1"))
    wid = f"card-expiry-{ids['subscription']}"
    assert (response.status_code, response.json()["cases"]) == (200, [wid]), response.text
    [(name, payload)] = await signals(dev_env.client, wid)
    assert (name, payload["card"]["last4"], payload["source"]) == ("renewal_upcoming", "0005", "customer.source.expiring")


async def test_while_stripe_cannot_be_read_the_event_is_refused_for_stripe_to_send_again(dev_env, ids, unused_tcp_port) -> None:
    settings = Settings(
        stripe_webhook_secret=SECRET,
        dunning_task_queue=ids["queue"],
        stripe_api_key="sk_test_pre_dunning_0123",
        stripe_api_base=f"http://127.0.0.1:{unused_tcp_port}",
    )
    app = create_app(settings, client_factory=lambda: dev_env.client)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
        response = await post_event(http, upcoming(ids))
    assert response.status_code == 503
    assert await never_started(dev_env.client, f"card-expiry-{ids['subscription']}")


async def test_the_reminders_link_opens_a_page_about_the_expiring_card(dev_env, ids, stripe, tmp_path) -> None:
    """The link in a reminder is the customer's page too: it names the card and the renewal and
    opens the billing portal at the click; a forged link still gets the 404 page."""
    settings = Settings(
        stripe_webhook_secret=SECRET,
        dunning_task_queue=ids["queue"],
        stripe_api_key="sk_test_pre_dunning_0123",
        stripe_api_base=stripe.base_url,
        dunning_state_dir=tmp_path,
        dunning_public_url="https://pay.acme.example",
    )
    app = create_app(settings, client_factory=lambda: dev_env.client)
    migrations.upgrade(app.state.database)
    payments = StripePayments.from_settings(settings)
    async with (
        new_worker(dev_env.client, task_queue=ids["queue"], payments=payments, links=app.state.links),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://pay.acme.example") as http,
    ):
        assert (await post_event(http, upcoming(ids))).status_code == 200
        handle = dev_env.client.get_workflow_handle(f"card-expiry-{ids['subscription']}")

        async def reminder_started() -> CardExpiryStatus | None:
            status = await handle.query("status", result_type=CardExpiryStatus)
            return status if status.customer is not None else None

        status = await eventually(reminder_started, what="the reminder workflow", retry_on=(Exception,))
        link = await app.state.links.issue(
            case_id=status.reminder_id, workflow_id=handle.id, run_id="", customer_id=ids["customer"]
        )
        page = link.removeprefix("https://pay.acme.example")
        shown = html.unescape((await http.get(page)).text)
        assert "Your card expires before your next payment" in shown and "ending in 4444" in shown
        response = await http.get(f"{page}/update")
        assert response.status_code == 303 and "/p/session/" in response.headers["location"]
        assert (await http.post(f"{page}/cancel", data={"csrf": "x"})).status_code == 303  # nothing to cancel here
        assert (await handle.query("status", result_type=CardExpiryStatus)).ended is None
        await handle.terminate("test done")
    await payments.aclose()
