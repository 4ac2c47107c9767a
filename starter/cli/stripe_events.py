"""Stripe-shaped webhook events, signed the way Stripe signs them, for the demo and tests.

The shapes follow Stripe's published fixtures (`shared/stripe/fixtures3.json`, current API
version), trimmed to the fields a webhook consumer reads, so the demo runs without that file.
The signature is Stripe's scheme: header `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of
"<t>.<raw body>" keyed by the endpoint secret>`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Any

API_VERSION = "2025-08-27.basil"

# Declines the sandbox payments backend produces for each Stripe test card (activities/sandbox.py).
CARD_DECLINE = {
    "pm_card_chargeDeclinedInsufficientFunds": ("card_declined", "insufficient_funds"),
    "pm_card_chargeDeclinedExpiredCard": ("expired_card", "expired_card"),
    "pm_card_chargeDeclined": ("card_declined", "generic_decline"),
    "pm_card_chargeDeclinedLostCard": ("card_declined", "lost_card"),
    "pm_card_authenticationRequired": ("authentication_required", "authentication_required"),
}


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header value for this raw body."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def event(event_type: str, obj: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": event_id or _id("evt"),
        "object": "event",
        "api_version": API_VERSION,
        "created": int(time.time()),
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }


def invoice(
    *,
    invoice_id: str,
    customer_id: str,
    subscription_id: str,
    amount_due: int,
    currency: str = "usd",
    status: str = "open",
    payment_method_id: str | None = None,
    decline_code: str | None = None,
    policy: str | None = None,
    customer_name: str | None = None,
    plan: str = "Pro",
) -> dict[str, Any]:
    """An invoice object as Stripe sends it in `invoice.*` events (subscription cycle)."""
    now = int(time.time())
    paid = status == "paid"
    metadata = {"dunning_policy": policy} if policy else {}
    code, card_decline = CARD_DECLINE.get(payment_method_id or "", ("card_declined", "generic_decline"))
    decline_code = decline_code or card_decline
    last_payment_error = (
        None
        if paid
        else {
            "type": "card_error",
            "code": code,
            "decline_code": decline_code,
            "message": f"Your card was declined ({decline_code}).",
            "payment_method": {"id": payment_method_id, "object": "payment_method", "type": "card"},
        }
    )
    return {
        "id": invoice_id,
        "object": "invoice",
        "account_country": "US",
        "amount_due": amount_due,
        "amount_paid": amount_due if paid else 0,
        "amount_remaining": 0 if paid else amount_due,
        "attempt_count": 1,
        "attempted": True,
        "auto_advance": not paid,
        "billing_reason": "subscription_cycle",
        "collection_method": "charge_automatically",
        "created": now,
        "currency": currency,
        "customer": customer_id,
        "customer_email": f"{customer_id}@example.com",
        "customer_name": customer_name,
        "default_payment_method": payment_method_id,
        "hosted_invoice_url": f"https://invoice.stripe.com/i/{invoice_id}",
        "last_finalization_error": None,
        "lines": {
            "object": "list",
            "data": [
                {
                    "id": f"il_{invoice_id[3:]}",
                    "object": "line_item",
                    "amount": amount_due,
                    "currency": currency,
                    "description": f"1 × {plan} (monthly)",
                    "invoice": invoice_id,
                    "parent": {
                        "type": "subscription_item_details",
                        "subscription_item_details": {"subscription": subscription_id},
                    },
                    "period": {"start": now, "end": now + 30 * 86400},
                    "quantity": 1,
                }
            ],
            "has_more": False,
            "url": f"/v1/invoices/{invoice_id}/lines",
        },
        "livemode": False,
        "metadata": {},
        "next_payment_attempt": None if paid else now + 3 * 86400,
        "number": f"DEMO-{invoice_id[-6:].upper()}",
        "parent": {
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {"subscription": subscription_id, "metadata": metadata},
        },
        # Where older API versions put the failed charge; current ones reach it via `payments`.
        "payment_intent": {
            "id": f"pi_{invoice_id[3:]}",
            "object": "payment_intent",
            "status": "succeeded" if paid else "requires_payment_method",
            "last_payment_error": last_payment_error,
        },
        "period_end": now,
        "period_start": now - 30 * 86400,
        "status": status,
        "status_transitions": {"paid_at": now if paid else None, "finalized_at": now},
        "subtotal": amount_due,
        "total": amount_due,
    }


def payment_method(*, payment_method_id: str, customer_id: str, last4: str = "4242") -> dict[str, Any]:
    return {
        "id": payment_method_id,
        "object": "payment_method",
        "allow_redisplay": "unspecified",
        "billing_details": {"email": None, "name": None, "phone": None},
        "card": {
            "brand": "visa",
            "country": "US",
            "display_brand": "visa",
            "exp_month": 12,
            "exp_year": time.gmtime().tm_year + 3,
            "funding": "credit",
            "last4": last4,
        },
        "created": int(time.time()),
        "customer": customer_id,
        "livemode": False,
        "metadata": {},
        "type": "card",
    }


def subscription(
    *, subscription_id: str, customer_id: str, status: str = "canceled", policy: str | None = None
) -> dict[str, Any]:
    now = int(time.time())
    return {
        "id": subscription_id,
        "object": "subscription",
        "cancel_at_period_end": False,
        "canceled_at": now if status == "canceled" else None,
        "cancellation_details": {"comment": None, "feedback": None, "reason": "cancellation_requested"},
        "collection_method": "charge_automatically",
        "created": now - 90 * 86400,
        "currency": "usd",
        "customer": customer_id,
        "ended_at": now if status == "canceled" else None,
        "livemode": False,
        "metadata": {"dunning_policy": policy} if policy else {},
        "status": status,
    }
