"""`POST /webhooks/twilio/sms` in a small FastAPI app: signatures, STOP / START, bad requests."""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from xml.etree import ElementTree

import httpx
import pytest
from fastapi import FastAPI
from twilio.request_validator import RequestValidator

from activities.messages import sms_length, sms_segments
from runtime.consent import DatabaseConsentStore
from runtime.database import Database
from runtime.settings import Settings
from starter.api import deps
from starter.api.routes import sms_webhook
from tests.helpers.database import consent_store

TOKEN = "twilio-auth-token"
ACCOUNT = "AC00000000000000000000000000000001"
URL = "http://testserver/webhooks/twilio/sms"
PHONE = "+15551234567"


@pytest.fixture
def store(tmp_path: Path) -> DatabaseConsentStore:
    return consent_store(tmp_path)


@pytest.fixture
def app(store: DatabaseConsentStore) -> FastAPI:
    app = FastAPI()
    app.include_router(sms_webhook.router)
    app.dependency_overrides[deps.get_consent_store] = lambda: store
    app.dependency_overrides[deps.get_phone_directory] = lambda: store
    app.dependency_overrides[deps.get_twilio_webhook_config] = lambda: deps.TwilioWebhookConfig(
        auth_token=TOKEN, account_sid=ACCOUNT
    )
    app.dependency_overrides[deps.get_settings] = lambda: Settings(
        dunning_company_name="Acme", dunning_support_email="help@acme.example"
    )
    return app


def inbound(body: str, phone: str = PHONE) -> dict[str, str]:
    return {
        "ToCountry": "US",
        "SmsMessageSid": "SM123",
        "NumMedia": "0",
        "SmsSid": "SM123",
        "SmsStatus": "received",
        "Body": body,
        "To": "+15005550006",
        "MessageSid": "SM123",
        "AccountSid": ACCOUNT,
        "From": phone,
        "ApiVersion": "2010-04-01",
    }


async def post(app: FastAPI, form: dict[str, str], signature: str | None = "sign", url: str = URL) -> httpx.Response:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signature == "sign":
        signature = RequestValidator(TOKEN).compute_signature(url, form)
    if signature is not None:
        headers["X-Twilio-Signature"] = signature
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        return await client.post(
            url.removeprefix("http://testserver"), content=urllib.parse.urlencode(form), headers=headers
        )


async def test_stop_then_start_with_a_valid_signature(app: FastAPI, store: DatabaseConsentStore) -> None:
    await store.remember_sms_recipient("cus_1", PHONE)
    response = await post(app, inbound(" stop "))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/xml")
    assert response.text == '<?xml version="1.0" encoding="UTF-8"?><Response />'
    assert await store.sms_opted_out("cus_1")

    assert (await post(app, inbound("START"))).status_code == 200
    assert not await store.sms_opted_out("cus_1")
    assert [s for _, s, _ in await store.history("cus_1")] == ["sms:STOP", "sms:START"]


@pytest.mark.parametrize("word", ["STOP", "stopall", "Unsubscribe", "CANCEL", "end", "QUIT", "Stop."])
async def test_every_stop_keyword_opts_out(app: FastAPI, store: DatabaseConsentStore, word: str) -> None:
    await store.remember_sms_recipient("cus_1", PHONE)
    assert (await post(app, inbound(word))).status_code == 200
    assert await store.sms_opted_out("cus_1")


async def test_ordinary_reply_changes_nothing(app: FastAPI, store: DatabaseConsentStore) -> None:
    await store.remember_sms_recipient("cus_1", PHONE)
    assert (await post(app, inbound("please stop charging twice"))).status_code == 200
    assert not await store.sms_opted_out("cus_1")


async def test_unknown_number_is_acknowledged(app: FastAPI, store: DatabaseConsentStore) -> None:
    assert (await post(app, inbound("STOP", phone="+15550000000"))).status_code == 200


async def test_bad_signature_is_rejected(app: FastAPI, store: DatabaseConsentStore) -> None:
    await store.remember_sms_recipient("cus_1", PHONE)
    response = await post(app, inbound("STOP"), signature="bm90IGEgc2lnbmF0dXJl")
    assert response.status_code == 403 and "Signature" in response.json()["detail"]
    assert not await store.sms_opted_out("cus_1")


async def test_signature_over_a_tampered_body_is_rejected(app: FastAPI, store: DatabaseConsentStore) -> None:
    await store.remember_sms_recipient("cus_1", PHONE)
    signature = RequestValidator(TOKEN).compute_signature(URL, inbound("hello"))
    response = await post(app, inbound("STOP"), signature=signature)
    assert response.status_code == 403
    assert not await store.sms_opted_out("cus_1")


async def test_missing_signature_is_rejected(app: FastAPI) -> None:
    response = await post(app, inbound("STOP"), signature=None)
    assert response.status_code == 403 and response.json()["detail"] == "missing X-Twilio-Signature"


async def test_other_account_is_rejected(app: FastAPI) -> None:
    form = {**inbound("STOP"), "AccountSid": "AC99999999999999999999999999999999"}
    assert (await post(app, form)).status_code == 403


async def test_body_without_sender_is_400(app: FastAPI) -> None:
    form = {"Body": "STOP", "AccountSid": ACCOUNT}
    response = await post(app, form)
    assert response.status_code == 400 and "From" in response.json()["detail"]


async def test_json_body_is_400(app: FastAPI) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        response = await client.post("/webhooks/twilio/sms", json={"Body": "STOP"}, headers={"X-Twilio-Signature": "x"})
    assert response.status_code == 400


async def test_unconfigured_token_refuses(app: FastAPI) -> None:
    app.dependency_overrides[deps.get_twilio_webhook_config] = lambda: deps.TwilioWebhookConfig(None)
    assert (await post(app, inbound("STOP"))).status_code == 503


async def test_public_url_behind_a_proxy(app: FastAPI, store: DatabaseConsentStore) -> None:
    app.dependency_overrides[deps.get_twilio_webhook_config] = lambda: deps.TwilioWebhookConfig(
        auth_token=TOKEN, public_url="https://dunning.example.com/"
    )
    await store.remember_sms_recipient("cus_1", PHONE)
    form = inbound("STOP")
    signature = RequestValidator(TOKEN).compute_signature("https://dunning.example.com/webhooks/twilio/sms", form)
    assert (await post(app, form, signature=signature)).status_code == 200
    assert await store.sms_opted_out("cus_1")


async def test_reads_the_token_from_the_apps_settings(store: DatabaseConsentStore) -> None:
    from runtime.settings import Settings

    app = FastAPI()
    app.include_router(sms_webhook.router)
    app.state.settings = Settings(twilio_auth_token=TOKEN, twilio_account_sid=ACCOUNT)
    app.dependency_overrides[deps.get_consent_store] = lambda: store
    app.dependency_overrides[deps.get_phone_directory] = lambda: store
    await store.remember_sms_recipient("cus_1", PHONE)
    assert (await post(app, inbound("STOP"))).status_code == 200
    assert await store.sms_opted_out("cus_1")
    assert (await post(app, inbound("START"), signature="bad")).status_code == 403


async def test_default_store_is_the_workers_database(tmp_path: Path) -> None:
    """No overrides: the webhook writes the settings' database ($DUNNING_STATE_DIR/dunning.sqlite3
    by default), which the worker reads."""
    from activities.factory import build_activities
    from runtime import migrations
    from runtime.settings import Settings

    settings = Settings(twilio_auth_token=TOKEN, dunning_sms="sandbox", dunning_state_dir=tmp_path)
    database = migrations.prepare(settings)  # what the worker does at start
    notify = next(a.__self__ for a in build_activities(settings, database) if a.__name__ == "send_notification")
    await notify.consent.remember_sms_recipient("cus_1", PHONE)  # the worker texted this number
    app = FastAPI()
    app.include_router(sms_webhook.router)
    app.state.settings = settings
    assert (await post(app, inbound("STOP"))).status_code == 200
    assert await notify.consent.sms_opted_out("cus_1")


async def test_database_down_answers_503_so_twilio_retries_the_stop(app: FastAPI) -> None:
    down = DatabaseConsentStore(Database("postgresql+psycopg://dunning@127.0.0.1:1/dunning?connect_timeout=2"))
    app.dependency_overrides[deps.get_consent_store] = lambda: down
    app.dependency_overrides[deps.get_phone_directory] = lambda: down
    response = await post(app, inbound("STOP"))
    assert response.status_code == 503 and response.headers["Retry-After"] == "30"
    assert (await post(app, inbound("thanks"))).status_code == 200  # an ordinary reply needs no database


# --- HELP: who we are and how to reach us ------------------------------------------------------


def reply_of(response: httpx.Response) -> str:
    """The text of the TwiML <Message> in a webhook answer."""
    message = ElementTree.fromstring(response.text).find("Message")
    assert message is not None, response.text
    return message.text or ""


@pytest.mark.parametrize("word", ["HELP", "help", " Info ", "Help!"])
async def test_help_is_answered_with_who_we_are_and_changes_no_consent(
    app: FastAPI, store: DatabaseConsentStore, word: str
) -> None:
    await store.remember_sms_recipient("cus_1", PHONE)
    response = await post(app, inbound(word))
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/xml")
    assert reply_of(response) == (
        "Acme: billing notices about your subscription. Help: help@acme.example. "
        "Msg&data rates may apply. Reply STOP to opt out."
    )
    assert not await store.sms_opted_out("cus_1") and await store.history("cus_1") == []


async def test_hilfe_is_answered_in_german(app: FastAPI) -> None:
    reply = reply_of(await post(app, inbound("Hilfe")))
    assert reply == (
        "Acme: Hinweise zur Abrechnung Ihres Abonnements. Hilfe: help@acme.example. "
        "Es können SMS-Gebühren anfallen. Abmelden: STOP"
    )


async def test_help_from_an_unknown_number_is_answered_too(app: FastAPI) -> None:
    assert "Reply STOP to opt out" in reply_of(await post(app, inbound("HELP", phone="+15550000000")))


async def test_stop_and_ordinary_replies_still_get_no_message(app: FastAPI, store: DatabaseConsentStore) -> None:
    await store.remember_sms_recipient("cus_1", PHONE)
    for body in ("STOP", "START", "can you help me"):
        response = await post(app, inbound(body))
        assert response.text == '<?xml version="1.0" encoding="UTF-8"?><Response />', body


async def test_help_needs_a_valid_signature(app: FastAPI) -> None:
    assert (await post(app, inbound("HELP"), signature="bm90IGEgc2lnbmF0dXJl")).status_code == 403


@pytest.mark.parametrize("language", ["en", "de"])
@pytest.mark.parametrize(
    ("company", "email"),
    [(None, None), ("Acme", None), ("Acme Analytics", "billing-support@acme-analytics.example")],
)
def test_the_help_reply_is_one_gsm7_segment(language: str, company: str | None, email: str | None) -> None:
    text = sms_webhook.help_reply(language, company, email)
    assert sms_length(text)[0] == "gsm7" and sms_segments(text) == 1, (len(text), text)
    assert text.endswith("Reply STOP to opt out." if language == "en" else "Abmelden: STOP")
    assert "None" not in text


# --- STOP and START mirrored into Stripe's metadata (real SDK, loopback Stripe) ---------------


@pytest.fixture
def stripe_fake(httpserver):
    from fakes import stripe_api as sf
    from fakes.stripe_api import FakeStripe

    fake = FakeStripe(httpserver)
    fake.add(sf.customer("cus_1", metadata={"crm_id": "42"}), sf.customer("cus_2"))
    return fake


@pytest.fixture
async def stripe_app(app: FastAPI, stripe_fake):
    from activities.stripe_backend import StripePayments

    payments = StripePayments("sk_test_webhook_mirror_0123456789", api_base=stripe_fake.base_url, timeout=2)
    app.state.payments = payments
    yield app
    await payments.aclose()


async def test_stop_and_start_are_mirrored_into_stripe_metadata(stripe_app, stripe_fake, store) -> None:
    for customer_id in ("cus_1", "cus_2"):
        await store.remember_sms_recipient(customer_id, PHONE)
    assert (await post(stripe_app, inbound("STOP"))).status_code == 200
    assert stripe_fake.customers["cus_1"]["metadata"] == {"crm_id": "42", "dunning_sms_opt_out": "true"}
    assert stripe_fake.customers["cus_2"]["metadata"] == {"dunning_sms_opt_out": "true"}

    assert (await post(stripe_app, inbound("START"))).status_code == 200
    assert stripe_fake.customers["cus_1"]["metadata"] == {"crm_id": "42"}
    assert not await store.sms_opted_out("cus_1")


async def test_a_stripe_outage_never_loses_the_stop(stripe_app, stripe_fake, store, capsys) -> None:
    from fakes import stripe_api as sf
    from fakes.stripe_api import Reply

    await store.remember_sms_recipient("cus_1", PHONE)
    stripe_fake.on_update_customer = [Reply(503, sf.api_error(503)) for _ in range(3)]
    response = await post(stripe_app, inbound("STOP"))
    assert response.status_code == 200  # Twilio is answered; the database has the STOP
    assert await store.sms_opted_out("cus_1")
    assert "dunning_sms_opt_out" not in stripe_fake.customers["cus_1"]["metadata"]
    assert len(stripe_fake.seen("POST", "/v1/customers/cus_1")) == 3  # retried, then…
    assert "NOT mirrored to Stripe" in capsys.readouterr().out  # …said loudly


async def test_one_failed_write_is_retried(stripe_app, stripe_fake, store) -> None:
    from fakes import stripe_api as sf
    from fakes.stripe_api import Reply

    await store.remember_sms_recipient("cus_1", PHONE)
    stripe_fake.on_update_customer = [Reply(500, sf.api_error(500))]
    assert (await post(stripe_app, inbound("STOP"))).status_code == 200
    assert stripe_fake.customers["cus_1"]["metadata"]["dunning_sms_opt_out"] == "true"


async def test_an_app_without_payments_still_records_the_stop(app: FastAPI, store) -> None:
    await store.remember_sms_recipient("cus_1", PHONE)
    assert (await post(app, inbound("STOP"))).status_code == 200
    assert await store.sms_opted_out("cus_1")
