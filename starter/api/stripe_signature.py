"""`Stripe-Signature`, checked the way Stripe signs, by a function that cannot raise.

Stripe signs `"{t}.{raw body}"` with HMAC-SHA256 under the endpoint's secret and sends
`Stripe-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>…]` (two `v1` while a secret is being
rolled). We accept the event when one `v1` matches one of our secrets (`STRIPE_WEBHOOK_SECRET`
takes several, comma-separated) and `t` is within the tolerance of our clock, in the past *or*
the future: a signature dated next year is as suspicious as one from last year.

Why not the SDK's `WebhookSignature.verify_header`: it compares the header's signature as a
`str` with `hmac.compare_digest`, which raises `TypeError` for any non-ASCII character, so
`v1=é` made an unauthenticated 500; and it accepts any timestamp in the future. Here the
header is parsed strictly (digits, lower-case hex), the comparison is between ASCII bytes in
constant time, and anything unexpected is a refusal with a reason, never an exception.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Sequence

_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_V1 = re.compile(r"[0-9a-f]{64}")
#: At most this many `v1` signatures are tried (Stripe sends one, two during a secret rollover).
MAX_SIGNATURES = 8

MISSING = "missing Stripe-Signature header"
MALFORMED = "malformed Stripe-Signature header"
NO_V1 = "malformed Stripe-Signature header (no v1 signature)"
MISMATCH = "signature does not match the body"
STALE = "stale timestamp: the event was signed too long ago"
FUTURE = "timestamp in the future: the event is signed for later than now"
NO_SECRET = "no webhook secret configured"


def signature_problem(
    body: bytes,
    header: str | None,
    secrets: Sequence[str],
    *,
    tolerance: int,
    now: float | None = None,
) -> str | None:
    """None when `header` is a valid Stripe signature of `body` under one of `secrets`, else why not.

    Never raises: whatever the header holds, the answer is a reason."""
    try:
        return _problem(body, header, secrets, tolerance, time.time() if now is None else now)
    except Exception:  # noqa: BLE001 - the one promise of this function: a reason, never an exception
        return MALFORMED


def _problem(body: bytes, header: str | None, secrets: Sequence[str], tolerance: int, now: float) -> str | None:
    if not header:
        return MISSING
    keys = [s.encode("utf-8") for s in secrets if s]
    if not keys:
        return NO_SECRET
    timestamp: str | None = None
    signatures: list[bytes] = []
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if name == "t" and timestamp is None:
            timestamp = value
        elif name == "v1" and _V1.fullmatch(value) and len(signatures) < MAX_SIGNATURES:
            signatures.append(value.encode("ascii"))
    if timestamp is None or not _TIMESTAMP.fullmatch(timestamp):
        return MALFORMED
    if not signatures:
        return NO_V1
    signed = timestamp.encode("ascii") + b"." + body
    expected = [hmac.new(key, signed, hashlib.sha256).hexdigest().encode("ascii") for key in keys]
    # Every pair is compared (no early exit), so timing says nothing about which one matched.
    matched = False
    for mine in expected:
        for theirs in signatures:
            matched |= hmac.compare_digest(mine, theirs)
    if not matched:
        return MISMATCH
    age = now - int(timestamp)
    if age > tolerance:
        return STALE
    if age < -tolerance:
        return FUTURE
    return None
