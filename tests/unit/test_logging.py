"""Logs never carry card data, tokens or full contact details."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from runtime.logging import CARD, REDACTED, configure_logging, redact, scrub, scrub_text


@pytest.fixture
def json_logs():
    """The process's real logging set-up, writing JSON lines we read back."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    uvicorn = logging.getLogger("uvicorn")
    uvicorn.addHandler(logging.StreamHandler(io.StringIO()))
    uvicorn.propagate = False  # what uvicorn's own log config does
    out = io.StringIO()
    configure_logging(level="INFO", fmt="json", stream=out)

    def lines() -> list[dict]:
        return [json.loads(line) for line in out.getvalue().splitlines()]

    yield lines
    structlog.reset_defaults()
    root.handlers[:], root.level = saved


def test_secret_keys_are_redacted_whatever_their_spelling():
    event = redact(
        None,
        "info",
        {
            "event": "calling stripe",
            "Authorization": "Bearer sk_live_abcdefgh12345678",
            "api_key": "sk_test_123456789abc",
            "STRIPE_WEBHOOK_SECRET": "whsec_abcdefgh",
            "x-twilio-signature": "abc=",
            "headers": {"Stripe-Signature": "t=1,v1=deadbeef", "content-type": "application/json"},
            "token": "op-token",
            "cvc": "123",
            "card": {"number": "4242424242424242", "exp_month": 12, "brand": "visa"},
            "attempt": 3,
            "amount_due": 4900,
            "invoice_id": "in_123",
        },
    )
    assert event["Authorization"] == event["api_key"] == event["STRIPE_WEBHOOK_SECRET"] == REDACTED
    assert event["x-twilio-signature"] == event["token"] == event["cvc"] == REDACTED
    assert event["headers"] == {"Stripe-Signature": REDACTED, "content-type": "application/json"}
    assert event["card"] == {"number": REDACTED, "exp_month": REDACTED, "brand": "visa"}
    # What operators need stays.
    assert (event["attempt"], event["amount_due"], event["invoice_id"]) == (3, 4900, "in_123")


def test_contact_details_are_masked_not_dropped():
    event = redact(
        None,
        "info",
        {
            "event": "sent",
            "to": "ada.lovelace@example.com",
            "phone": "+44 7700 900123",
            "email": "ada@example.com",
            "recipients": ["bob@example.org", "+15555550123"],
        },
    )
    assert event["to"] == "a***@example.com"
    assert event["phone"] == "***0123"
    assert event["email"] == "a***@example.com"
    assert event["recipients"] == ["b***@example.org", "***0123"]
    # Contact-named keys that hold no contact detail stay readable.
    assert redact(None, "info", {"email": "sandbox", "sms": "twilio"})["email"] == "sandbox"


@pytest.mark.parametrize(
    "text, absent, present",
    [
        ("card 4242 4242 4242 4242 declined", "4242 4242", CARD),
        ("pan=4000-0566-5566-5556", "4000-0566", CARD),
        ("amex 378282246310005!", "378282246310005", CARD),
        ("mail ada.lovelace@example.com now", "lovelace", "a***@example.com"),
        ("call +1 (555) 555-0123 or (555) 555-0199", "555) 555", "***0123"),
        ("header Authorization: Bearer eyJhbGciOi.abc.def", "eyJhbGciOi", "Bearer [redacted]"),
        ("key sk_live_51HxYzABCDEFGHijkl and whsec_1234567890abc", "sk_live_51", REDACTED),
        ("sendgrid SG.abcdefghijklmn.opqrstuvwxyz0123456 failed", "SG.abcdef", REDACTED),
        # uvicorn's access line of a customer's page: the token opens their case, like a password.
        ('1.2.3.4 - "GET /c/Pv0jC38aDO-J9fWMNFL1jZtdMNKPW-VF/update HTTP/1.1" 303', "Pv0jC38a", "/c/[redacted]/update"),
    ],
)
def test_free_text_is_scrubbed(text, absent, present):
    out = scrub_text(text)
    assert absent not in out and present in out


@pytest.mark.parametrize(
    "text",
    [
        "charge dunning-sub_123@20261121T053942Z/in_456/3 declined",  # an idempotency key
        "retry at 2026-11-21T09:00:00+00:00 (attempt 2 of 10)",
        "amount 4900 eur, invoice in_1234567890123456, pi_3NabcDEF1234567890",
        "order 1234567890123",  # 13 digits but not a card (Luhn fails)
    ],
)
def test_ordinary_operational_text_is_left_alone(text):
    assert scrub_text(text) == text


@given(st.text(max_size=200), st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=5))
def test_scrub_never_raises(text, mapping):
    scrub(text)
    scrub(mapping)
    redact(None, "info", {"event": text, **mapping})


def test_real_pipeline_structlog_and_stdlib(json_logs):
    log = structlog.get_logger("dunning.test")
    log.info("customer contacted", to="grace@example.com", authorization="Bearer abc.def.ghi", invoice_id="in_9")
    try:
        raise RuntimeError("card 4111 1111 1111 1111 refused for grace@example.com")
    except RuntimeError:
        log.exception("charge failed")
    # Libraries log through the standard library: uvicorn, temporalio, stripe… even after uvicorn
    # installed its own non-propagating handlers.
    logging.getLogger("uvicorn.error").warning("request with Bearer sometoken123 from +15555550123")
    logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", "/c/Pv0jC38aDO-J9fWMNFL1jZtdMNKPW-VF", "1.1", 200)

    lines = json_logs()
    text = json.dumps(lines)
    for secret in ("grace@example.com", "abc.def.ghi", "4111 1111", "sometoken123", "+15555550123", "Pv0jC38a"):
        assert secret not in text
    assert lines[0]["event"] == "customer contacted" and lines[0]["invoice_id"] == "in_9"
    assert lines[0]["to"] == "g***@example.com"
    assert CARD in lines[1]["exception"] and "RuntimeError" in lines[1]["exception"]
    assert lines[2]["logger"] == "uvicorn.error" and "Bearer [redacted]" in lines[2]["event"]
    assert lines[3]["logger"] == "uvicorn.access" and '"GET /c/[redacted] HTTP/1.1"' in lines[3]["event"]
