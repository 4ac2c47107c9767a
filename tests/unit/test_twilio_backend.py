"""The Twilio backend against a loopback Twilio (pytest-httpserver), with the real SDK."""

from __future__ import annotations

import dataclasses
import time
import urllib.parse
from datetime import UTC, datetime, timedelta

import pytest
from pytest_httpserver import HTTPServer
from temporalio.testing import ActivityEnvironment
from werkzeug import Request, Response

from activities.backends import ProviderRejected, ProviderUnavailable, RecipientUnreachable
from activities.twilio_backend import TwilioSms

SID = "AC00000000000000000000000000000001"
TOKEN = "twilio-test-token"
FROM = "+15005550006"
TO = "+15551234567"
BODY = (
    "Acme: reminder, your $49.00 payment is still open. Update your card: https://pay.acme.example/u/1 "
    "Reply STOP to opt out"
)
MESSAGES = f"/2010-04-01/Accounts/{SID}/Messages.json"


def message(sid: str, body: str = BODY, status: str = "queued", created: datetime | None = None) -> dict:
    created = created or datetime.now(UTC)
    return {
        "account_sid": SID,
        "api_version": "2010-04-01",
        "body": body,
        "date_created": created.strftime("%a, %d %b %Y %H:%M:%S +0000"),
        "date_sent": None,
        "date_updated": None,
        "direction": "outbound-api",
        "error_code": None,
        "error_message": None,
        "from": FROM,
        "messaging_service_sid": None,
        "num_media": "0",
        "num_segments": "1",
        "price": None,
        "price_unit": "USD",
        "sid": sid,
        "status": status,
        "to": TO,
        "uri": f"/2010-04-01/Accounts/{SID}/Messages/{sid}.json",
        "subresource_uris": {},
    }


def page(*messages: dict) -> dict:
    return {
        "messages": list(messages),
        "end": len(messages),
        "first_page_uri": MESSAGES,
        "next_page_uri": None,
        "page": 0,
        "page_size": 20,
        "previous_page_uri": None,
        "start": 0,
        "uri": MESSAGES,
    }


def twilio_error(code: int, text: str, status: int = 400) -> dict:
    return {"code": code, "message": text, "more_info": f"https://www.twilio.com/docs/errors/{code}", "status": status}


@pytest.fixture
def twilio(httpserver: HTTPServer) -> TwilioSms:
    return TwilioSms(SID, TOKEN, FROM, api_base=httpserver.url_for(""), timeout=1.0)


def posted(httpserver: HTTPServer) -> list[dict[str, str]]:
    return [
        dict(urllib.parse.parse_qsl(r.get_data(as_text=True)))
        for r, _ in httpserver.log
        if r.path == MESSAGES and r.method == "POST"
    ]


async def test_sends_the_exact_request(httpserver: HTTPServer, twilio: TwilioSms) -> None:
    httpserver.expect_request(MESSAGES, method="POST").respond_with_json(message("SM1"), status=201)
    assert await twilio.send_sms(to=TO, body=BODY, idempotency_key="case-1:reminder:sms") == "SM1"
    assert posted(httpserver) == [{"To": TO, "From": FROM, "Body": BODY}]
    request = httpserver.log[0][0]
    assert request.authorization is not None and request.authorization.username == SID
    assert request.authorization.password == TOKEN
    # The same key again in this worker: no second text.
    assert await twilio.send_sms(to=TO, body=BODY, idempotency_key="case-1:reminder:sms") == "SM1"
    assert len(posted(httpserver)) == 1


async def test_messaging_service_sender_shortens_links(httpserver: HTTPServer) -> None:
    backend = TwilioSms(SID, TOKEN, "MG0000000000000000000000000000000a", api_base=httpserver.url_for(""))
    httpserver.expect_request(MESSAGES, method="POST").respond_with_json(message("SM2"), status=201)
    await backend.send_sms(to=TO, body=BODY, idempotency_key="k")
    assert posted(httpserver) == [
        {"To": TO, "MessagingServiceSid": "MG0000000000000000000000000000000a", "ShortenUrls": "true", "Body": BODY}
    ]


async def test_a_retry_finds_the_message_of_the_lost_attempt(httpserver: HTTPServer, twilio: TwilioSms) -> None:
    """Attempt 1 timed out after Twilio accepted it: attempt 2 finds it in Twilio's log, sends nothing."""
    httpserver.expect_request(MESSAGES, method="GET").respond_with_json(
        page(message("SMother", body="something else"), message("SMlost"))
    )
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=2, scheduled_time=datetime.now(UTC) - timedelta(minutes=5))
    sid = await env.run(twilio.send_sms, to=TO, body=BODY, idempotency_key="case-1:reminder:sms")
    assert sid == "SMlost"
    assert posted(httpserver) == []
    query = dict(urllib.parse.parse_qsl(httpserver.log[0][0].query_string.decode()))
    assert query["To"] == TO and query["From"] == FROM


async def test_a_retry_sends_when_nothing_went_out(httpserver: HTTPServer, twilio: TwilioSms) -> None:
    old = datetime.now(UTC) - timedelta(days=3)
    httpserver.expect_request(MESSAGES, method="GET").respond_with_json(
        page(message("SMold", created=old), message("SMfailed", status="failed"))
    )
    httpserver.expect_request(MESSAGES, method="POST").respond_with_json(message("SMnew"), status=201)
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=3, scheduled_time=datetime.now(UTC) - timedelta(minutes=5))
    assert await env.run(twilio.send_sms, to=TO, body=BODY, idempotency_key="k") == "SMnew"
    assert len(posted(httpserver)) == 1


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (21610, "Attempt to send to unsubscribed recipient"),
        (21211, "The 'To' number +1555 is not a valid phone number."),
        (21614, "'To' number is not a valid mobile number"),
    ],
)
async def test_unreachable_numbers_are_final_for_sms(httpserver, twilio, code: int, text: str) -> None:
    httpserver.expect_request(MESSAGES, method="POST").respond_with_json(twilio_error(code, text), status=400)
    with pytest.raises(RecipientUnreachable, match=str(code)):
        await twilio.send_sms(to=TO, body=BODY, idempotency_key="k")


@pytest.mark.parametrize(("status", "code"), [(429, 20429), (500, 20500), (503, 20503)])
async def test_outages_are_retryable(httpserver, twilio, status: int, code: int) -> None:
    httpserver.expect_request(MESSAGES, method="POST").respond_with_json(
        twilio_error(code, "Too Many Requests" if status == 429 else "Service unavailable", status), status=status
    )
    with pytest.raises(ProviderUnavailable):
        await twilio.send_sms(to=TO, body=BODY, idempotency_key="k")


async def test_timeout_is_retryable(httpserver: HTTPServer) -> None:
    backend = TwilioSms(SID, TOKEN, FROM, api_base=httpserver.url_for(""), timeout=0.3)

    def slow(_request: Request) -> Response:
        time.sleep(1.0)
        return Response(status=201)

    httpserver.expect_request(MESSAGES, method="POST").respond_with_handler(slow)
    with pytest.raises(ProviderUnavailable, match="unreachable"):
        await backend.send_sms(to=TO, body=BODY, idempotency_key="k")


@pytest.mark.parametrize(
    ("status", "code", "text"),
    [(401, 20003, "Authenticate"), (400, 21606, "The 'From' phone number provided is not a valid message-capable")],
)
async def test_other_client_errors_are_final_with_the_reason(httpserver, twilio, status, code, text) -> None:
    httpserver.expect_request(MESSAGES, method="POST").respond_with_json(
        twilio_error(code, text, status), status=status
    )
    with pytest.raises(ProviderRejected, match=f"Twilio {code}"):
        await twilio.send_sms(to=TO, body=BODY, idempotency_key="k")


async def test_a_retry_without_read_access_still_sends(httpserver: HTTPServer, twilio: TwilioSms) -> None:
    httpserver.expect_request(MESSAGES, method="GET").respond_with_json(
        twilio_error(20003, "Permission denied", 403), status=403
    )
    httpserver.expect_request(MESSAGES, method="POST").respond_with_json(message("SMsent"), status=201)
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=2, scheduled_time=datetime.now(UTC))
    assert await env.run(twilio.send_sms, to=TO, body=BODY, idempotency_key="k") == "SMsent"


async def test_a_retry_during_an_outage_waits(httpserver: HTTPServer, twilio: TwilioSms) -> None:
    httpserver.expect_request(MESSAGES, method="GET").respond_with_json(twilio_error(20500, "oops", 500), status=500)
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=2, scheduled_time=datetime.now(UTC))
    with pytest.raises(ProviderUnavailable):
        await env.run(twilio.send_sms, to=TO, body=BODY, idempotency_key="k")
    assert posted(httpserver) == []


def test_remembered_keys_are_bounded() -> None:
    from activities.sendgrid_backend import RecentKeys

    keys = RecentKeys(limit=3)
    for i in range(5):
        keys[f"k{i}"] = f"m{i}"
    assert list(keys) == ["k2", "k3", "k4"]
