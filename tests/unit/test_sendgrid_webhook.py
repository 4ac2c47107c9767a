"""`POST /webhooks/sendgrid/events` in a small FastAPI app, with real ECDSA P-256 keys made here and
events signed the way SendGrid signs them (`timestamp + body`, base64 DER signature)."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import FastAPI

from dunning.email_suppression import SuppressionKind
from runtime.database import DatabaseUnavailable
from runtime.email_suppression import DatabaseEmailSuppressions
from runtime.settings import Settings
from starter.api import deps
from starter.api.main import BodySizeLimit
from starter.api.routes import sendgrid_webhook
from starter.api.sendgrid_signature import SIGNATURE_HEADER, TIMESTAMP_HEADER
from tests.helpers.database import sqlite_database

PRIVATE = ec.generate_private_key(ec.SECP256R1())


def public_key_b64(private: ec.EllipticCurvePrivateKey = PRIVATE) -> str:
    """As SendGrid shows the verification key: base64 of the DER SubjectPublicKeyInfo."""
    der = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def sign(body: bytes, timestamp: str, private: ec.EllipticCurvePrivateKey = PRIVATE) -> str:
    return base64.b64encode(private.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()


def sg_event(event: str, event_id: str, email: str = "anna@example.com", **extra: Any) -> dict[str, Any]:
    """One event as SendGrid posts it; our custom args arrive as top-level fields."""
    return {
        "email": email,
        "timestamp": 1795251600,
        "event": event,
        "sg_event_id": event_id,
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
        "category": ["dunning"],
        "idempotency_key": "dunning-sub_1@x/step-0/email",
        "customer_id": "cus_1",
        "case_id": "dunning-sub_1@x",
        **extra,
    }


@pytest.fixture
def store(tmp_path: Path) -> DatabaseEmailSuppressions:
    return DatabaseEmailSuppressions(sqlite_database(tmp_path))


def make_app(store: Any, key: str | None = public_key_b64()) -> FastAPI:
    app = FastAPI()
    app.include_router(sendgrid_webhook.router)
    app.dependency_overrides[deps.get_settings] = lambda: Settings(sendgrid_webhook_public_key=key)
    app.dependency_overrides[deps.get_email_suppressions] = lambda: store
    return app


@pytest.fixture
def app(store: DatabaseEmailSuppressions) -> FastAPI:
    return make_app(store)


async def post(
    app: Any, body: bytes | list[Any], *, timestamp: str | None = None, signature: str | None = "sign"
) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    timestamp = str(int(time.time())) if timestamp is None else timestamp
    headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: timestamp}
    if signature == "sign":
        signature = sign(raw, timestamp)
    if signature is not None:
        headers[SIGNATURE_HEADER] = signature
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        return await client.post(sendgrid_webhook.PATH, content=raw, headers=headers)


async def test_a_signed_batch_suppresses_what_stops_email_and_ignores_the_rest(app, store) -> None:
    batch = [
        sg_event("processed", "ev-p"),
        sg_event("delivered", "ev-d", response="250 OK"),
        sg_event("bounce", "ev-b", email="Anna@Example.com", reason="550 5.1.1 The email account does not exist",
                 status="5.1.1", type="bounce", bounce_classification="Invalid Address"),  # fmt: skip
        sg_event("bounce", "ev-blocked", email="bob@example.com", reason="421 try later", type="blocked"),
        sg_event("spamreport", "ev-s", email="carla@example.com", customer_id="cus_2"),
        sg_event("group_unsubscribe", "ev-g", email="dan@example.com", asm_group_id=42),
        sg_event("unsubscribe", "ev-u", email="eve@example.com"),
        sg_event("dropped", "ev-dr", email="fay@example.com", reason="Bounced Address"),
        sg_event("a_type_from_next_year", "ev-new"),
    ]
    response = await post(app, batch)
    assert response.status_code == 200, response.text
    assert response.json() == {"received": 9, "suppressed": 5, "duplicates": 0, "ignored": 4, "unusable": 0}

    anna = await store.suppression_for("anna@example.com")
    assert anna is not None
    assert (anna.kind, anna.reason, anna.event_id) == (
        SuppressionKind.BOUNCE, "email bounced: 550 5.1.1 The email account does not exist", "ev-b"
    )  # fmt: skip
    assert (anna.customer_id, anna.case_id) == ("cus_1", "dunning-sub_1@x")
    assert anna.suppressed_at.timestamp() == 1795251600
    assert await store.suppression_for("bob@example.com") is None  # blocked is temporary
    carla = await store.suppression_for("carla@example.com")
    assert carla is not None and (carla.reason, carla.customer_id) == ("marked as spam", "cus_2")
    dan = await store.suppression_for("dan@example.com")
    assert dan is not None and dan.reason == "unsubscribed (group 42)"
    eve = await store.suppression_for("eve@example.com")
    assert eve is not None and eve.reason == "unsubscribed"
    fay = await store.suppression_for("fay@example.com")
    assert fay is not None and fay.reason == "email dropped by SendGrid: Bounced Address"


async def test_a_redelivered_batch_counts_once(app, store) -> None:
    batch = [sg_event("bounce", "ev-1", reason="550 no such user")]
    assert (await post(app, batch)).json()["suppressed"] == 1
    again = await post(app, batch)  # SendGrid retries after a timeout on its side
    assert again.status_code == 200
    assert again.json()["suppressed"] == 0 and again.json()["duplicates"] == 1


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("body", "signature does not match"),
        ("other_key", "signature does not match"),
        ("garbage", "malformed X-Twilio-Email-Event-Webhook-Signature"),
        ("missing", "missing X-Twilio-Email-Event-Webhook-Signature"),
        ("timestamp", "signature does not match"),
    ],
)
async def test_a_bad_signature_is_refused_with_its_reason(app, store, tamper: str, reason: str) -> None:
    body = json.dumps([sg_event("spamreport", "ev-x")]).encode()
    now = str(int(time.time()))
    signature: str | None = sign(body, now)
    timestamp = now
    if tamper == "body":
        body = body.replace(b"anna", b"bert")
    elif tamper == "other_key":
        signature = sign(body, now, ec.generate_private_key(ec.SECP256R1()))
    elif tamper == "garbage":
        signature = "not base64 !!"
    elif tamper == "missing":
        signature = None
    elif tamper == "timestamp":
        timestamp = str(int(now) - 1)  # the signature covers the timestamp
    response = await post(app, body, timestamp=timestamp, signature=signature)
    assert response.status_code == 400
    assert reason in response.json()["detail"]
    assert await store.suppression_for("anna@example.com") is None


@pytest.mark.parametrize(("offset", "reason"), [(-301, "stale timestamp"), (+301, "timestamp in the future")])
async def test_a_stale_or_future_timestamp_is_refused(app, store, offset: int, reason: str) -> None:
    body = json.dumps([sg_event("bounce", "ev-old")]).encode()
    then = str(int(time.time()) + offset)
    response = await post(app, body, timestamp=then, signature=sign(body, then))  # a captured delivery, replayed
    assert response.status_code == 400 and reason in response.json()["detail"]
    assert await store.suppression_for("anna@example.com") is None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "body is not JSON"),
        (b'{"event": "bounce"}', "not a JSON array"),
        (b"\xff\xfe", "body is not JSON"),
    ],
)
async def test_a_malformed_body_is_refused_with_its_reason(app, body: bytes, reason: str) -> None:
    response = await post(app, body)  # correctly signed, but not what SendGrid sends
    assert response.status_code == 400 and reason in response.json()["detail"]


async def test_odd_events_are_skipped_not_the_batch(app, store) -> None:
    batch = ["a string", {"event": "bounce", "email": "x@example.com"}, sg_event("unsubscribe", "ev-ok")]
    response = await post(app, batch)
    assert response.status_code == 200
    assert response.json() == {"received": 3, "suppressed": 1, "duplicates": 0, "ignored": 0, "unusable": 2}


async def test_bounded_event_count_and_body(app, monkeypatch) -> None:
    monkeypatch.setattr(sendgrid_webhook, "MAX_EVENTS", 3)
    response = await post(app, [sg_event("open", f"ev-{i}") for i in range(4)])
    assert response.status_code == 413 and "more than 3 events" in response.json()["detail"]
    monkeypatch.setattr(sendgrid_webhook, "MAX_BODY_BYTES", 100)
    response = await post(app, [sg_event("open", "ev-big")])
    assert response.status_code == 413


async def test_sendgrid_batches_pass_the_apps_body_limit_other_paths_do_not(app) -> None:
    """SendGrid sends up to 768 KB per batch: above the app's 256 KiB limit for other routes."""
    limited = BodySizeLimit(app, max_bytes=256 * 1024, by_path={sendgrid_webhook.PATH: sendgrid_webhook.MAX_BODY_BYTES})
    batch = [sg_event("delivered", f"ev-{i}", response="250 " + "x" * 400) for i in range(1200)]
    assert 512 * 1024 < len(json.dumps(batch)) < sendgrid_webhook.MAX_BODY_BYTES
    response = await post(limited, batch)
    assert response.status_code == 200 and response.json()["ignored"] == 1200


async def test_no_key_configured_is_503(store) -> None:
    response = await post(make_app(store, key=None), [sg_event("bounce", "ev-1")])
    assert response.status_code == 503 and "SENDGRID_WEBHOOK_PUBLIC_KEY" in response.json()["detail"]
    assert response.headers["Retry-After"]
    bad = await post(make_app(store, key="bm90IGEga2V5"), [sg_event("bounce", "ev-1")])
    assert bad.status_code == 503 and "not a public key" in bad.json()["detail"]


async def test_database_down_is_503_so_sendgrid_retries() -> None:
    class Down:
        async def record(self, events: Any) -> list[Any]:
            raise DatabaseUnavailable("connection refused")

    response = await post(make_app(Down()), [sg_event("bounce", "ev-1")])
    assert response.status_code == 503


async def test_pem_keys_work_too(store) -> None:
    pem = PRIVATE.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    response = await post(make_app(store, key=pem.decode()), [sg_event("unsubscribe", "ev-pem")])
    assert response.status_code == 200 and response.json()["suppressed"] == 1
