"""The case talking to a customer, end to end on the time-skipping server: quiet hours across a
night in the customer's own time zone, STOP mid-case through the signed webhook (lasting across
cases), fallback to email when Twilio can't reach the number, nothing once the invoice is paid,
and the in-app endpoint reading a live case."""

from __future__ import annotations

import urllib.parse
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
from fastapi import FastAPI
from pytest_httpserver import HTTPServer
from twilio.request_validator import RequestValidator

from activities.sandbox import SandboxLinks, SandboxPayments
from activities.twilio_backend import TwilioSms
from dunning.models import InvoicePaid, Stage
from runtime.consent import DatabaseConsentStore
from starter.api import deps
from starter.api.routes import in_app, sms_webhook
from tests.helpers.case_harness import CaseRunner, make_policy
from tests.helpers.database import consent_store

BERLIN = ZoneInfo("Europe/Berlin")
TWILIO_SID = "AC00000000000000000000000000000001"
TWILIO_TOKEN = "twilio-token"


class NotifyRunner(CaseRunner):
    """The lead's CaseRunner, with the notification backends and consent store of our choice."""

    def __init__(self, env, *, consent, sms=None, email=None, payments: SandboxPayments | None = None) -> None:
        super().__init__(
            env, payments, consent=consent, sms=sms, email=email, message_defaults={"company_name": "Acme"}
        )


async def advance_to_local(env, hour: int, minute: int, tz: ZoneInfo) -> datetime:
    """Skip virtual time forward to the next hour:minute in `tz`."""
    now = await env.get_current_time()
    local = now.astimezone(tz)
    target = local.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if target <= local:
        target += timedelta(days=1)
    await env.sleep(target - local)
    return await env.get_current_time()


async def test_sms_due_in_the_berlin_night_waits_for_8am_and_speaks_german(time_env, tmp_path: Path) -> None:
    policy = make_policy(quiet_hours=["21:00", "08:00"], retry_after=["P20D"])
    async with NotifyRunner(time_env, consent=consent_store(tmp_path)) as runner:
        runner.payments.add_customer(
            "cus_de",
            name="Jonas Becker",
            email="jonas@example.de",
            phone="+4915112345678",
            locale="de-DE",
            timezone="Europe/Berlin",
        )
        runner.payments.script_card("pm_card_customer", ["insufficient_funds"] * 5)
        await advance_to_local(time_env, 22, 30, BERLIN)  # the failure arrives at 22:30 in Berlin
        case = await runner.open(policy=policy, customer_id="cus_de")
        await case.wait_days(3.2)  # past the reminder (day 3, 22:30 Berlin), before its morning
        assert [m.channel for m in runner.outbox.messages] == ["email", "email"]  # payment_failed, reminder email
        status = await case.status()
        assert any(t.event == "sms_deferred" for t in status.timeline)

        await case.wait_days(0.5)  # the night ends
        sms = [m for m in runner.outbox.messages if m.channel == "sms"]
        assert len(sms) == 1
        local = sms[0].at.astimezone(BERLIN)
        assert (local.hour, local.minute) == (8, 0)
        assert case.day(sms[0].at) == round(3 + 9.5 / 24, 2)  # 22:30 → 08:00 next morning
        assert sms[0].to == "+4915112345678"
        # The full wording (plan, retry date) is too long for one segment: the compact one goes.
        assert sms[0].body == (
            "Acme: Erinnerung: Ihre Zahlung über 49,00 € steht noch aus. Ihre Optionen: "
            f"https://pay.example.com/c/{SandboxLinks().signer.token_for(status.case_id)[1]} Abmelden: STOP"
        )
        email = runner.outbox.messages[1]
        assert email.subject == "Erinnerung: Ihre Zahlung für Pro steht noch aus"
        assert "Hallo Jonas," in email.body and "49,00\xa0€" in email.body


def webhook_app(store: DatabaseConsentStore) -> FastAPI:
    app = FastAPI()
    app.include_router(sms_webhook.router)
    app.dependency_overrides[deps.get_consent_store] = lambda: store
    app.dependency_overrides[deps.get_phone_directory] = lambda: store
    app.dependency_overrides[deps.get_twilio_webhook_config] = lambda: deps.TwilioWebhookConfig(
        auth_token=TWILIO_TOKEN
    )
    return app


async def text_back(app: FastAPI, phone: str, body: str) -> int:
    url = "http://api.test/webhooks/twilio/sms"
    form = {"From": phone, "To": "+15005550006", "Body": body, "MessageSid": "SMin", "AccountSid": TWILIO_SID}
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": RequestValidator(TWILIO_TOKEN).compute_signature(url, form),
    }
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api.test") as http:
        response = await http.post("/webhooks/twilio/sms", content=urllib.parse.urlencode(form), headers=headers)
    return response.status_code


async def test_stop_mid_case_ends_sms_for_this_case_and_the_next(time_env, tmp_path: Path) -> None:
    store = consent_store(tmp_path)
    app = webhook_app(store)
    async with NotifyRunner(time_env, consent=store) as runner:
        runner.payments.script_card("pm_card_customer", ["insufficient_funds"] * 10)
        case = await runner.open(customer_id="cus_stop")
        await case.wait_days(3.5)
        phone = runner.payments.customers["cus_stop"].phone
        assert [m.to for m in runner.outbox.messages if m.channel == "sms"] == [phone]  # the day-3 reminder

        assert await text_back(app, phone, "STOP") == 200  # the customer answers that SMS
        assert await store.sms_opted_out("cus_stop")

        # A new failure on another subscription of the same customer: a new case, same consent.
        second = await runner.open(customer_id="cus_stop")
        await case.wait_days(7)  # day 10.5: the first case's final notice, the second case's reminder
        assert [m.to for m in runner.outbox.messages if m.channel == "sms"] == [phone]  # nothing new
        final = [n for n in (await case.status()).notifications if n.template == "final_notice"]
        assert {(n.channel.value, n.status) for n in final} == {
            ("email", "sent"),
            ("sms", "skipped"),
            ("in_app", "sent"),
        }
        assert next(n.reason for n in final if n.channel.value == "sms") == "customer opted out of SMS"
        reminder = [n for n in (await second.status()).notifications if n.template == "reminder"]
        assert {(n.channel.value, n.status) for n in reminder} == {("email", "sent"), ("sms", "skipped")}

        assert await text_back(app, phone, "START") == 200
        assert not await store.sms_opted_out("cus_stop")


async def test_sms_only_step_falls_back_to_email_when_twilio_cannot_reach_the_number(
    time_env, tmp_path: Path, httpserver: HTTPServer
) -> None:
    httpserver.expect_request(f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json", method="POST").respond_with_json(
        {"code": 21614, "message": "'To' number is not a valid mobile number", "status": 400}, status=400
    )
    twilio = TwilioSms(TWILIO_SID, TWILIO_TOKEN, "+15005550006", api_base=httpserver.url_for(""), timeout=2)
    policy = make_policy(
        retry_after=["P20D"],
        notify=[
            {"at": "PT0S", "channels": ["email"], "template": "payment_failed"},
            {"at": "P3D", "channels": ["sms"], "template": "reminder"},
        ],
    )
    async with NotifyRunner(time_env, consent=consent_store(tmp_path), sms=twilio) as runner:
        runner.payments.script_card("pm_card_customer", ["insufficient_funds"] * 5)
        case = await runner.open(policy=policy, customer_id="cus_landline")
        await case.wait_days(3.5)
        reminder = [
            (n.channel.value, n.status, n.step) for n in (await case.status()).notifications if n.template == "reminder"
        ]
        assert reminder == [("sms", "failed", "step-1"), ("email", "sent", "step-1-fallback")]
        sms_failure = next(n for n in (await case.status()).notifications if n.channel.value == "sms")
        assert "21614" in (sms_failure.reason or "")
        assert [(m.channel, m.to, m.subject) for m in runner.outbox.messages] == [
            ("email", "ada@example.com", "We couldn't process your Pro payment"),
            ("email", "ada@example.com", "Reminder: your Pro payment is outstanding"),
        ]
        assert len([r for r, _ in httpserver.log]) == 1  # one SMS attempt: final, not retried


async def test_no_message_once_the_invoice_is_paid_even_before_stripe_tells_the_case(time_env, tmp_path: Path) -> None:
    policy = make_policy(retry_after=["P20D"])
    async with NotifyRunner(time_env, consent=consent_store(tmp_path)) as runner:
        runner.payments.script_card("pm_card_customer", ["insufficient_funds"] * 5)
        case = await runner.open(policy=policy, customer_id="cus_paid")
        await case.wait_days(2)
        runner.payments.paid_invoices.add("in_1")  # paid at Stripe; the webhook is still on its way
        await case.wait_days(1.5)
        reminder = [
            (n.channel.value, n.status, n.reason)
            for n in (await case.status()).notifications
            if n.template == "reminder"
        ]
        assert reminder == [("email", "skipped", "invoice already paid"), ("sms", "skipped", "invoice already paid")]
        assert [m.subject for m in runner.outbox.messages] == ["We couldn't process your Pro payment"]

        await case.signal("invoice_paid", InvoicePaid(invoice_id="in_1", event_id="evt_paid_late"))
        status = await case.result()
        assert status.stage is Stage.RECOVERED
        subjects = [m.subject for m in runner.outbox.messages]
        assert subjects == ["We couldn't process your Pro payment", "Thank you, your Pro payment went through"]
        assert "$0.00" not in runner.outbox.messages[-1].body and "€0.00" not in runner.outbox.messages[-1].body


async def test_in_app_endpoint_reads_the_live_case(dev_env, tmp_path: Path) -> None:
    """On the real dev server: visibility finds the case by CustomerId, the status query gives the banner."""
    async with NotifyRunner(dev_env, consent=consent_store(tmp_path)) as runner:
        runner.payments.script_card("pm_card_customer", ["insufficient_funds"] * 5)
        customer = f"cus_{uuid.uuid4().hex[:8]}"
        case = await runner.open(customer_id=customer)
        app = FastAPI()
        app.include_router(in_app.router)
        app.dependency_overrides[deps.get_temporal_client] = lambda: dev_env.client
        app.dependency_overrides[deps.get_api_token] = lambda: "token"
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
            body = {}
            for _ in range(50):  # visibility is eventually consistent
                body = (
                    await http.get(f"/v1/customers/{customer}/dunning", headers={"Authorization": "Bearer token"})
                ).json()
                if body.get("open_case") and body.get("message"):
                    break
                await dev_env.sleep(timedelta(milliseconds=100))
            assert body["open_case"] is True
            assert body["case_id"] == (await case.status()).case_id
            assert (body["stage"], body["access_state"]) == ("retrying", "grace")
            assert (body["amount_due"], body["currency"]) == (4900, "eur")
            assert body["message"].startswith("Your latest payment of €49.00 didn't go through.")
            other = await http.get("/v1/customers/cus_nobody/dunning", headers={"Authorization": "Bearer token"})
            assert other.json()["open_case"] is False
