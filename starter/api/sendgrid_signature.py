"""SendGrid's Signed Event Webhook, checked the way SendGrid signs, by a function that cannot raise.

SendGrid signs `timestamp + raw body` (the `X-Twilio-Email-Event-Webhook-Timestamp` header's
digits, then the body's bytes) with ECDSA P-256 over SHA-256, and sends the DER signature in
base64 as `X-Twilio-Email-Event-Webhook-Signature`. The verification key (Mail Settings → Event
Webhook → Signed Event Webhook) is the base64 DER of the public key: `SENDGRID_WEBHOOK_PUBLIC_KEY`.

Why not the SDK's `sendgrid.helpers.eventwebhook.EventWebhook`: it is untyped, has changed what
a bad signature does between releases (an exception in some, False in others), and does not look
at the timestamp, so a captured delivery could be replayed forever. Here, with `cryptography`
directly, the headers are parsed strictly, the timestamp must be within the tolerance of our
clock (past or future, like Stripe's), and anything unexpected is a refusal with a reason.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from functools import lru_cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

_TIMESTAMP = re.compile(r"[0-9]{1,12}")
#: A P-256 DER signature is at most 72 bytes (96 in base64); anything much longer is not one.
MAX_SIGNATURE_CHARS = 200

MISSING_SIGNATURE = f"missing {SIGNATURE_HEADER} header"
MISSING_TIMESTAMP = f"missing {TIMESTAMP_HEADER} header"
MALFORMED_SIGNATURE = f"malformed {SIGNATURE_HEADER} header (base64 of an ECDSA signature expected)"
MALFORMED_TIMESTAMP = f"malformed {TIMESTAMP_HEADER} header (Unix seconds expected)"
MISMATCH = "signature does not match the timestamp and body"
STALE = "stale timestamp: the events were signed too long ago"
FUTURE = "timestamp in the future: the events are signed for later than now"


class BadPublicKey(ValueError):
    """`SENDGRID_WEBHOOK_PUBLIC_KEY` is not an ECDSA P-256 public key (a configuration error)."""


@lru_cache(maxsize=4)
def load_public_key(text: str) -> ec.EllipticCurvePublicKey:
    """The verification key as SendGrid shows it (base64 DER), or PEM; raises `BadPublicKey`."""
    try:
        if "BEGIN PUBLIC KEY" in text:
            key = load_pem_public_key(text.strip().encode("ascii"))
        else:
            key = load_der_public_key(base64.b64decode("".join(text.split()), validate=True))
    except (ValueError, TypeError, binascii.Error, UnicodeEncodeError) as exc:
        raise BadPublicKey(f"SENDGRID_WEBHOOK_PUBLIC_KEY is not a public key: {type(exc).__name__}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise BadPublicKey("SENDGRID_WEBHOOK_PUBLIC_KEY is not an ECDSA P-256 public key")
    return key


def signature_problem(
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    key: ec.EllipticCurvePublicKey,
    *,
    tolerance: int,
    now: float | None = None,
) -> str | None:
    """None when `signature` is SendGrid's signature of `timestamp + body` under `key`, else why not."""
    try:
        return _problem(body, signature, timestamp, key, tolerance, time.time() if now is None else now)
    except Exception:  # noqa: BLE001 - the one promise of this function: a reason, never an exception
        return MALFORMED_SIGNATURE


def _problem(
    body: bytes, signature: str | None, timestamp: str | None, key: ec.EllipticCurvePublicKey, tolerance: int, now: float
) -> str | None:
    if not signature:
        return MISSING_SIGNATURE
    if not timestamp:
        return MISSING_TIMESTAMP
    timestamp = timestamp.strip()
    if not _TIMESTAMP.fullmatch(timestamp):
        return MALFORMED_TIMESTAMP
    signature = signature.strip()
    if len(signature) > MAX_SIGNATURE_CHARS or not signature.isascii():
        return MALFORMED_SIGNATURE
    try:
        der = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return MALFORMED_SIGNATURE
    try:
        key.verify(der, timestamp.encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return MISMATCH
    # Checked after the signature, so an attacker learns nothing about our clock.
    age = now - int(timestamp)
    if age > tolerance:
        return STALE
    if age < -tolerance:
        return FUTURE
    return None
