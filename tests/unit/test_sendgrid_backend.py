"""The SendGrid backend against a loopback SendGrid (pytest-httpserver), with the real SDK."""

from __future__ import annotations

import json
import time

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from activities.backends import ProviderRejected, ProviderUnavailable, RecipientUnreachable
from activities.sendgrid_backend import SendGridEmail

KEY = "SG.test-key"
TO = "anna@example.com"


@pytest.fixture
def sendgrid(httpserver: HTTPServer) -> SendGridEmail:
    return SendGridEmail(KEY, "Acme Billing <billing@acme.example>", host=httpserver.url_for(""), timeout=1.0)


def no_bounces(httpserver: HTTPServer, to: str = TO) -> None:
    httpserver.expect_request(f"/v3/suppression/bounces/{to}", method="GET").respond_with_json([])


async def send(backend: SendGridEmail, key: str = "case-1:payment_failed:email") -> str:
    return await backend.send_email(
        to=TO,
        subject="We couldn't process your Pro payment",
        text="Hi Anna,\n\ntext",
        html="<p>Hi Anna,</p>",
        idempotency_key=key,
    )


async def test_sends_the_exact_request_once_per_idempotency_key(httpserver: HTTPServer, sendgrid) -> None:
    no_bounces(httpserver)
    httpserver.expect_request(
        "/v3/mail/send",
        method="POST",
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        json={
            "from": {"email": "billing@acme.example", "name": "Acme Billing"},
            "subject": "We couldn't process your Pro payment",
            "personalizations": [{"to": [{"email": TO}]}],
            "content": [
                {"type": "text/plain", "value": "Hi Anna,\n\ntext"},
                {"type": "text/html", "value": "<p>Hi Anna,</p>"},
            ],
            "headers": {"X-Idempotency-Key": "case-1:payment_failed:email"},
            "custom_args": {"idempotency_key": "case-1:payment_failed:email"},
            "categories": ["dunning"],
        },
    ).respond_with_response(Response(status=202, headers={"X-Message-Id": "msg-123"}))

    assert await send(sendgrid) == "msg-123"
    # An activity retry in the same worker after a success does not send again.
    assert await send(sendgrid) == "msg-123"
    sends = [r for r, _ in httpserver.log if r.path == "/v3/mail/send"]
    assert len(sends) == 1
    httpserver.check_assertions()


@pytest.mark.parametrize("status", [429, 500, 502, 503])
async def test_outages_are_retryable(httpserver: HTTPServer, sendgrid, status: int) -> None:
    no_bounces(httpserver)
    httpserver.expect_request("/v3/mail/send", method="POST").respond_with_json(
        {"errors": [{"message": "try later"}]}, status=status
    )
    with pytest.raises(ProviderUnavailable, match=str(status)):
        await send(sendgrid)


async def test_timeout_is_retryable(httpserver: HTTPServer) -> None:
    backend = SendGridEmail(KEY, "billing@acme.example", host=httpserver.url_for(""), timeout=0.3, check_bounces=False)

    def slow(_request: Request) -> Response:
        time.sleep(1.0)
        return Response(status=202)

    httpserver.expect_request("/v3/mail/send", method="POST").respond_with_handler(slow)
    with pytest.raises(ProviderUnavailable, match="unreachable"):
        await send(backend)


async def test_connection_refused_is_retryable() -> None:
    backend = SendGridEmail(KEY, "billing@acme.example", host="http://127.0.0.1:9", timeout=0.5, check_bounces=False)
    with pytest.raises(ProviderUnavailable):
        await send(backend)


@pytest.mark.parametrize(
    ("status", "errors", "reason"),
    [
        (401, [{"message": "The provided authorization grant is invalid, expired, or revoked"}], "authorization"),
        (
            403,
            [{"message": "The from address does not match a verified Sender Identity.", "field": "from"}],
            "verified Sender Identity",
        ),
        (413, [{"message": "Payload too large"}], "too large"),
    ],
)
async def test_rejections_are_final_with_the_reason(httpserver, sendgrid, status, errors, reason) -> None:
    no_bounces(httpserver)
    httpserver.expect_request("/v3/mail/send", method="POST").respond_with_json({"errors": errors}, status=status)
    with pytest.raises(ProviderRejected, match=reason):
        await send(sendgrid)


async def test_invalid_address_is_unreachable(httpserver: HTTPServer, sendgrid) -> None:
    no_bounces(httpserver)
    httpserver.expect_request("/v3/mail/send", method="POST").respond_with_json(
        {"errors": [{"message": "Does not contain a valid address.", "field": "personalizations.0.to.0.email"}]},
        status=400,
    )
    with pytest.raises(RecipientUnreachable, match="valid address"):
        await send(sendgrid)


async def test_bounced_address_is_unreachable_and_nothing_is_sent(httpserver: HTTPServer, sendgrid) -> None:
    httpserver.expect_request(f"/v3/suppression/bounces/{TO}", method="GET").respond_with_json(
        [
            {
                "created": 1700000000,
                "email": TO,
                "reason": "550 5.1.1 The email account does not exist",
                "status": "5.1.1",
            }
        ]
    )
    with pytest.raises(RecipientUnreachable, match="does not exist"):
        await send(sendgrid)
    assert not [r for r, _ in httpserver.log if r.path == "/v3/mail/send"]


async def test_bounce_check_failure_does_not_block_the_send(httpserver: HTTPServer, sendgrid) -> None:
    httpserver.expect_request(f"/v3/suppression/bounces/{TO}").respond_with_json(
        {"errors": [{"message": "access forbidden"}]}, status=403
    )
    httpserver.expect_request("/v3/mail/send", method="POST").respond_with_response(
        Response(status=202, headers={"X-Message-Id": "m-2"})
    )
    assert await send(sendgrid) == "m-2"
    sent = json.loads([r for r, _ in httpserver.log if r.path == "/v3/mail/send"][0].data)
    assert sent["personalizations"][0]["to"] == [{"email": TO}]


async def test_replies_go_to_support(httpserver: HTTPServer) -> None:
    backend = SendGridEmail(
        KEY, "billing@acme.example", host=httpserver.url_for(""), check_bounces=False, reply_to="help@acme.example"
    )
    httpserver.expect_request("/v3/mail/send", method="POST").respond_with_response(Response(status=202))
    await send(backend)
    sent = json.loads(httpserver.log[0][0].data)
    assert sent["reply_to"] == {"email": "help@acme.example"}
    assert sent["from"] == {"email": "billing@acme.example"}
