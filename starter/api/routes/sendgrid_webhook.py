"""`POST /webhooks/sendgrid/events`, SendGrid's router: the Event Webhook, so that a bounced,
complaining or unsubscribed address gets no more email and the ladder goes on by SMS and in-app.

SendGrid posts a JSON array of events, signed (see starter/api/sendgrid_signature.py). The ones
that stop email to an address:

| event | when it suppresses | the case's reason |
|---|---|---|
| `bounce` | a hard bounce (not `type: blocked`, a temporary refusal) | `email bounced: {reason}` |
| `dropped` | SendGrid dropped it for the address (bounced, unsubscribed, spam-reporting, invalid) | `email dropped by SendGrid: {reason}` |
| `spamreport` | always | `marked as spam` |
| `unsubscribe`, `group_unsubscribe` | always | `unsubscribed` |

Every other type (`processed`, `delivered`, `open`, `click`, `deferred`, …) is acknowledged and
ignored. Each event counts once: SendGrid redelivers a batch until it gets a 2xx, and the store
keeps every `sg_event_id` it recorded. The customer and case come from the message's custom args
(`customer_id`, `case_id`, set by activities/sendgrid_backend.py).

No case is signalled: the worker's `send_notification` reads the store before every email, so the
next message finds the suppression, skips the email with the reason and sends an SMS instead.

Answers: 200 with counts; 400 with the reason for a bad or missing signature, a stale or future
timestamp, or a body that is not a JSON array of objects; 413 above `MAX_BODY_BYTES` or
`MAX_EVENTS`; 503 (SendGrid retries) while `SENDGRID_WEBHOOK_PUBLIC_KEY` is unset or the database
is down. Logs name event types and ids, never addresses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse

from dunning.email_suppression import suppresses, suppression_reason
from runtime.email_suppression import SuppressionEvent
from starter.api.deps import (
    EmailSuppressionsDep,
    ServiceUnavailable,
    SettingsDep,
    TimingsDep,
    database_or_503,
)
from starter.api.sendgrid_signature import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    BadPublicKey,
    load_public_key,
    signature_problem,
)

log = structlog.get_logger("dunning.webhooks.sendgrid")

router = APIRouter(tags=["sendgrid"])

PATH = "/webhooks/sendgrid/events"
#: SendGrid sends a batch every 30 s or at 768 KB, whichever comes first: room for that, no more.
MAX_BODY_BYTES = 1024 * 1024
#: Events in one batch (768 KB of the smallest events SendGrid sends is a few thousand).
MAX_EVENTS = 10_000
#: Ids and custom args longer than this are not ours.
MAX_ID_CHARS = 255
MAX_EMAIL_CHARS = 320


@dataclass
class Batch:
    """What a verified batch holds: the suppressing events, and how many others were ignored."""

    suppressions: list[SuppressionEvent] = field(default_factory=list)
    ignored: int = 0
    unusable: list[str] = field(default_factory=list)


def _text(value: Any, limit: int = MAX_ID_CHARS) -> str | None:
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        text = str(value).strip()
        return text if text and len(text) <= limit else None
    return None


def _time(value: Any, default: datetime) -> datetime:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1e11:
        return datetime.fromtimestamp(value, UTC)
    return default


def read_batch(events: list[Any], now: datetime) -> Batch:
    """The suppressing events of a batch (pure). An event we cannot use is counted and named,
    never a reason to refuse the batch: SendGrid would redeliver it forever."""
    batch = Batch()
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            batch.unusable.append(f"event {index}: not an object")
            continue
        kind = suppresses(
            str(event.get("event") or ""),
            bounce_type=_text(event.get("type")),
            reason=_text(event.get("reason"), 1000),
        )
        if kind is None:
            batch.ignored += 1
            continue
        event_id, email = _text(event.get("sg_event_id")), _text(event.get("email"), MAX_EMAIL_CHARS)
        if event_id is None or email is None or "@" not in email:
            batch.unusable.append(f"event {index} ({kind}): no sg_event_id or email")
            continue
        detail = _text(event.get("reason"), 1000) or _text(event.get("status"))
        if kind == "group_unsubscribe" and _text(event.get("asm_group_id")):
            detail = f"group {_text(event.get('asm_group_id'))}"
        batch.suppressions.append(
            SuppressionEvent(
                event_id=event_id,
                email=email,
                kind=kind,
                reason=suppression_reason(kind, detail),
                at=_time(event.get("timestamp"), now),
                customer_id=_text(event.get("customer_id")),
                case_id=_text(event.get("case_id")),
            )
        )
    return batch


@router.post(PATH, summary="SendGrid's signed Event Webhook: bounces, spam reports and unsubscribes stop email")
async def sendgrid_events(
    request: Request, settings: SettingsDep, timings: TimingsDep, store: EmailSuppressionsDep
) -> JSONResponse:
    if not settings.sendgrid_webhook_public_key:
        raise ServiceUnavailable("SENDGRID_WEBHOOK_PUBLIC_KEY is not configured: cannot verify SendGrid events")
    try:
        key = load_public_key(settings.sendgrid_webhook_public_key)
    except BadPublicKey as exc:
        log.error("sendgrid webhook misconfigured", error=str(exc))
        raise ServiceUnavailable(str(exc)) from None
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise HTTPException(413, f"body larger than {MAX_BODY_BYTES} bytes")
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise HTTPException(413, f"body larger than {MAX_BODY_BYTES} bytes")
    problem = signature_problem(
        body,
        request.headers.get(SIGNATURE_HEADER),
        request.headers.get(TIMESTAMP_HEADER),
        key,
        tolerance=timings.webhook_tolerance_seconds,
    )
    if problem:
        log.warning("sendgrid webhook refused", reason=problem)
        raise HTTPException(400, problem)
    try:
        events = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HTTPException(400, f"body is not JSON: {exc}") from None
    if not isinstance(events, list):
        raise HTTPException(400, "body is not a JSON array of events")
    if len(events) > MAX_EVENTS:
        raise HTTPException(413, f"more than {MAX_EVENTS} events in one delivery")

    batch = read_batch(events, datetime.now(UTC))
    if batch.unusable:
        log.warning("sendgrid webhook: unusable events skipped", count=len(batch.unusable), first=batch.unusable[0])
    with database_or_503():  # SendGrid retries a 503: nothing is lost while the database is down
        recorded = await store.record(batch.suppressions)
    for event in recorded:
        # Open cases are not signalled: their next email finds the suppression and goes by SMS.
        log.info(
            "email suppressed", kind=event.kind.value, event_id=event.event_id, customer_id=event.customer_id, case_id=event.case_id
        )
    return JSONResponse(
        {
            "received": len(events),
            "suppressed": len(recorded),
            "duplicates": len(batch.suppressions) - len(recorded),
            "ignored": batch.ignored,
            "unusable": len(batch.unusable),
        }
    )
