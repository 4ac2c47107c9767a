"""`send_notification` end to end with the real SendGrid and Twilio SDKs against loopback providers:
what the customer receives, consent, fallback, and nothing once the invoice is paid."""

from __future__ import annotations

import json
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment
from werkzeug import Response

from activities.case_activities import NotificationActivities
from activities.factory import build_activities
from activities.messages import render_message
from activities.sandbox import SandboxLinks, SandboxOutbox, SandboxPayments
from activities.sendgrid_backend import SendGridEmail
from activities.twilio_backend import TwilioSms
from dunning.models import Channel, NotificationRequest
from dunning.email_suppression import SuppressionKind, suppression_reason
from runtime.consent import DatabaseConsentStore
from runtime.email_suppression import DatabaseEmailSuppressions, SuppressionEvent
from runtime.database import Database
from runtime.links import CaseLinks, LinkSigner
from runtime.settings import Settings
from tests.helpers.database import consent_store

SID = "AC00000000000000000000000000000001"
MESSAGES = f"/2010-04-01/Accounts/{SID}/Messages.json"
CONTEXT = {
    "amount_due": 1990,
    "currency": "eur",
    "invoice_count": 1,
    "decline_category": "soft",
    "decline_code": "insufficient_funds",
    "next_retry_at": "2026-11-24T08:00:00+00:00",
    "grace_ends_at": "2026-12-05T08:00:00+00:00",
    "days_left": 11,
    "plan_name": "Pro",
    "access": "grace",
    "timezone": "Europe/Berlin",
    "hosted_invoice_url": None,
}


@pytest.fixture
def payments() -> SandboxPayments:
    payments = SandboxPayments()
    payments.add_customer(
        "cus_de", name="Jonas Becker", email="jonas@example.de", phone="+4915112345678", locale="de-DE"
    )
    return payments


@pytest.fixture
def consent(tmp_path: Path) -> DatabaseConsentStore:
    return consent_store(tmp_path)


@pytest.fixture
def notify(httpserver: HTTPServer, payments, consent) -> NotificationActivities:
    email = SendGridEmail(
        "SG.key", "Acme Billing <billing@acme.example>", host=httpserver.url_for(""), check_bounces=False, timeout=2
    )
    sms = TwilioSms(SID, "token", "+15005550006", api_base=httpserver.url_for(""), timeout=2)
    return NotificationActivities(
        payments, email, sms, consent, page_links(consent), message_defaults={"company_name": "Acme", "support_email": None}
    )


def page_links(consent: DatabaseConsentStore) -> CaseLinks:
    return CaseLinks(LinkSigner([b"test-link-key-0123456789"]), "https://pay.acme.example", consent.database)


def page_url(case_id: str = "dunning-sub_1") -> str:
    return "https://pay.acme.example/c/" + LinkSigner([b"test-link-key-0123456789"]).token_for(case_id)[1]


def request(channel: Channel, template: str = "reminder") -> NotificationRequest:
    return NotificationRequest(
        case_id="dunning-sub_1",
        customer_id="cus_de",
        subscription_id="sub_1",
        channel=channel,
        template=template,
        idempotency_key=f"dunning-sub_1/step-1/{channel}",
        invoice_ids=["in_1"],
        context=CONTEXT,
    )


async def run(notify: NotificationActivities, req: NotificationRequest):
    return await ActivityEnvironment().run(notify.send_notification, req)


async def test_email_in_the_customer_language(httpserver: HTTPServer, notify) -> None:
    httpserver.expect_request("/v3/mail/send", method="POST").respond_with_response(
        Response(status=202, headers={"X-Message-Id": "sg-1"})
    )
    result = await run(notify, request(Channel.EMAIL))
    assert (result.status, result.provider_message_id) == ("sent", "sg-1")
    sent = json.loads(httpserver.log[0][0].data)
    expected = render_message(
        "reminder",
        Channel.EMAIL,
        {
            **CONTEXT,
            "company_name": "Acme",
            "customer_name": "Jonas Becker",
            "update_url": page_url(),
        },
        "de-DE",
    )
    assert sent["personalizations"] == [{"to": [{"email": "jonas@example.de"}]}]
    assert sent["from"] == {"email": "billing@acme.example", "name": "Acme Billing"}
    assert sent["subject"] == "Erinnerung: Ihre Zahlung für Pro steht noch aus" == expected.subject
    assert sent["content"][0] == {"type": "text/plain", "value": expected.text}
    assert sent["content"][1]["value"] == expected.html
    assert "Hallo Jonas," in expected.text and "19,90\xa0€" in expected.text and "24. November 2026" in expected.text
    # They come back in SendGrid's events: a bounce or spam report finds its customer and case.
    assert sent["custom_args"] == {
        "idempotency_key": "dunning-sub_1/step-1/email",
        "customer_id": "cus_de",
        "case_id": "dunning-sub_1",
    }


async def test_sms_goes_out_and_the_number_is_remembered_for_stop(httpserver: HTTPServer, notify, consent) -> None:
    httpserver.expect_request(MESSAGES, method="POST").respond_with_json({"sid": "SM1", "status": "queued"}, status=201)
    result = await run(notify, request(Channel.SMS))
    assert (result.status, result.provider_message_id) == ("sent", "SM1")
    form = dict(urllib.parse.parse_qsl(httpserver.log[0][0].get_data(as_text=True)))
    assert form["To"] == "+4915112345678" and form["From"] == "+15005550006"
    assert form["Body"] == (
        "Acme: Erinnerung: Ihre Zahlung über 19,90 € steht noch aus. Ihre Optionen: "
        f"{page_url()} Abmelden: STOP"
    )
    assert await consent.customers_for_phone("+4915112345678") == ["cus_de"]


async def test_opted_out_customer_gets_no_sms_and_falls_back_to_email(httpserver, notify, consent) -> None:
    await consent.set_sms_opt_out("cus_de", True, source="sms:STOP")
    result = await run(notify, request(Channel.SMS))
    assert (result.status, result.fallback_channel) == ("skipped", Channel.EMAIL)
    assert httpserver.log == []


async def test_twilio_opt_out_error_falls_back_to_email_and_is_remembered(httpserver, notify, consent) -> None:
    httpserver.expect_request(MESSAGES, method="POST").respond_with_json(
        {"code": 21610, "message": "Attempt to send to unsubscribed recipient", "status": 400}, status=400
    )
    result = await run(notify, request(Channel.SMS))
    assert (result.status, result.fallback_channel) == ("failed", Channel.EMAIL)
    assert "21610" in (result.reason or "")
    assert await consent.sms_opted_out("cus_de")  # the next SMS is not even tried
    assert [source for _, source, _ in await consent.history("cus_de")] == ["provider:opted_out"]


async def test_nothing_goes_out_once_the_invoice_is_paid(httpserver: HTTPServer, notify, payments) -> None:
    payments.paid_invoices.add("in_1")
    for channel in (Channel.EMAIL, Channel.SMS, Channel.IN_APP):
        result = await run(notify, request(channel))
        assert (result.status, result.reason) == ("skipped", "invoice already paid")
    assert httpserver.log == []


async def test_sendgrid_rejection_is_final_with_its_reason(httpserver: HTTPServer, notify) -> None:
    httpserver.expect_request("/v3/mail/send", method="POST").respond_with_json(
        {"errors": [{"message": "The from address does not match a verified Sender Identity.", "field": "from"}]},
        status=403,
    )
    with pytest.raises(ApplicationError) as raised:
        await run(notify, request(Channel.EMAIL))
    assert raised.value.non_retryable and raised.value.type == "ProviderRejected"
    assert "verified Sender Identity" in str(raised.value)


async def test_sendgrid_outage_is_retryable(httpserver: HTTPServer, notify) -> None:
    httpserver.expect_request("/v3/mail/send", method="POST").respond_with_data("bad gateway", status=502)
    with pytest.raises(ApplicationError) as raised:
        await run(notify, request(Channel.EMAIL))
    assert not raised.value.non_retryable and raised.value.type == "ProviderUnavailable"


async def test_unknown_template_is_final(notify) -> None:
    with pytest.raises(ApplicationError) as raised:
        await run(notify, request(Channel.EMAIL, template="no_such_template"))
    assert raised.value.non_retryable


def test_factory_wires_sendgrid_twilio_and_durable_consent(tmp_path: Path) -> None:
    settings = Settings(
        sendgrid_api_key="SG.x",
        sendgrid_api_host="http://127.0.0.1:1",
        dunning_email_from="billing@acme.example",
        twilio_account_sid=SID,
        twilio_auth_token="t",
        twilio_from_number="+15005550006",
        twilio_api_base="http://127.0.0.1:1",
        dunning_state_dir=tmp_path,
        dunning_company_name="Acme",
        dunning_company_address="Musterstraße 1\\n10115 Berlin",
        dunning_link_keys="test-link-key-0123456789",
    )
    activities = build_activities(settings)
    notify = next(a.__self__ for a in activities if getattr(a, "__name__", "") == "send_notification")
    assert isinstance(notify.email, SendGridEmail) and isinstance(notify.sms, TwilioSms)
    assert notify.email.from_email == "billing@acme.example"
    assert isinstance(notify.consent, DatabaseConsentStore)
    assert notify.consent.database.engine.url.database == str(tmp_path.resolve() / "dunning.sqlite3")
    assert notify.message_defaults == {"company_name": "Acme", "company_address": "Musterstraße 1\\n10115 Berlin"}
    # … and reach every email's footer, the address on one line
    email = render_message("reminder", Channel.EMAIL, {**notify.message_defaults, "update_url": "https://x"}, "de")
    assert email.text.rstrip().endswith("Acme, Musterstraße 1, 10115 Berlin")


async def test_a_bad_number_does_not_count_as_an_opt_out(httpserver: HTTPServer, notify, consent) -> None:
    httpserver.expect_request(MESSAGES, method="POST").respond_with_json(
        {"code": 21211, "message": "The 'To' number is not a valid phone number.", "status": 400}, status=400
    )
    result = await run(notify, request(Channel.SMS))
    assert (result.status, result.fallback_channel) == ("failed", Channel.EMAIL)
    assert not await consent.sms_opted_out("cus_de")


async def test_consent_unreadable_while_the_database_is_down_is_retried(httpserver: HTTPServer, payments) -> None:
    """No SMS without knowing the customer's consent: the activity fails retryably (Temporal retries)."""
    down = DatabaseConsentStore(Database("postgresql+psycopg://dunning@127.0.0.1:1/dunning?connect_timeout=2"))
    sms = TwilioSms(SID, "token", "+15005550006", api_base=httpserver.url_for(""), timeout=2)
    notify = NotificationActivities(payments, SandboxOutbox(), sms, down, SandboxLinks())
    with pytest.raises(ApplicationError) as raised:
        await run(notify, request(Channel.SMS))
    assert raised.value.type == "DatabaseUnavailable" and not raised.value.non_retryable
    assert not httpserver.log  # nothing was sent


async def test_stripe_metadata_opt_out_means_email_instead(httpserver, notify, payments) -> None:
    payments.customers["cus_de"].sms_opted_out = True  # dunning_sms_opt_out in Stripe
    result = await run(notify, request(Channel.SMS))
    assert (result.status, result.fallback_channel) == ("skipped", Channel.EMAIL)
    assert "dunning_sms_opt_out" in (result.reason or "")
    assert httpserver.log == []
    payments.customers["cus_de"].sms_opted_out = False  # START cleared it: read at send time
    httpserver.expect_request(MESSAGES, method="POST").respond_with_json({"sid": "SM1", "status": "queued"}, status=201)
    assert (await run(notify, request(Channel.SMS))).status == "sent"


async def test_twilio_opt_out_is_mirrored_into_stripe(httpserver, notify, payments) -> None:
    httpserver.expect_request(MESSAGES, method="POST").respond_with_json(
        {"code": 21610, "message": "Attempt to send to unsubscribed recipient", "status": 400}, status=400
    )
    await run(notify, request(Channel.SMS))
    assert payments.customers["cus_de"].sms_opted_out


async def test_a_stop_that_never_reached_stripe_is_mended_at_the_next_sms(httpserver, notify, consent, payments) -> None:
    await consent.set_sms_opt_out("cus_de", True, source="sms:STOP")  # the webhook's mirror had failed
    payments.outage_calls_left = 1
    await run(notify, request(Channel.SMS))  # the mirror fails again: logged, the SMS still refused
    assert not payments.customers["cus_de"].sms_opted_out
    result = await run(notify, request(Channel.SMS))
    assert (result.status, result.fallback_channel) == ("skipped", Channel.EMAIL)
    assert payments.customers["cus_de"].sms_opted_out
    assert httpserver.log == []


@pytest.mark.parametrize(
    ("kind", "detail", "reason"),
    [
        (SuppressionKind.BOUNCE, "550 5.1.1 unknown user", "email bounced: 550 5.1.1 unknown user"),
        (SuppressionKind.SPAMREPORT, None, "marked as spam"),
        (SuppressionKind.UNSUBSCRIBE, None, "unsubscribed"),
    ],
)
async def test_a_suppressed_address_gets_no_email_and_the_step_goes_by_sms(
    httpserver: HTTPServer, payments, consent, kind: SuppressionKind, detail: str | None, reason: str
) -> None:
    """SendGrid's Event Webhook recorded the address: the email is skipped with the reason (no
    request reaches SendGrid) and the case is told to use SMS instead."""
    suppressions = DatabaseEmailSuppressions(consent.database)
    await suppressions.record(
        [SuppressionEvent("ev-1", "Jonas@Example.DE", kind, suppression_reason(kind, detail), datetime.now(UTC), "cus_de")]
    )
    email = SendGridEmail("SG.key", "billing@acme.example", host=httpserver.url_for(""), check_bounces=False, timeout=2)
    sms = TwilioSms(SID, "token", "+15005550006", api_base=httpserver.url_for(""), timeout=2)
    notify = NotificationActivities(payments, email, sms, consent, page_links(consent), suppressions=suppressions)

    result = await run(notify, request(Channel.EMAIL))
    assert (result.status, result.reason, result.fallback_channel) == ("skipped", reason, Channel.SMS)
    assert httpserver.log == []

    # The SMS that goes instead is an ordinary one.
    httpserver.expect_request(MESSAGES, method="POST").respond_with_json({"sid": "SM1", "status": "queued"}, status=201)
    sms_result = await run(notify, request(Channel.SMS))
    assert sms_result.status == "sent"


async def test_an_address_not_suppressed_is_emailed(httpserver: HTTPServer, payments, consent) -> None:
    suppressions = DatabaseEmailSuppressions(consent.database)
    await suppressions.record(
        [SuppressionEvent("ev-2", "someone.else@example.de", SuppressionKind.SPAMREPORT, "marked as spam", datetime.now(UTC))]
    )
    email = SendGridEmail("SG.key", "billing@acme.example", host=httpserver.url_for(""), check_bounces=False, timeout=2)
    notify = NotificationActivities(payments, email, SandboxOutbox(), consent, page_links(consent), suppressions=suppressions)
    httpserver.expect_request("/v3/mail/send", method="POST").respond_with_response(Response(status=202))
    assert (await run(notify, request(Channel.EMAIL))).status == "sent"
