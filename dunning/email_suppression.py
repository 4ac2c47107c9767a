"""Why email to an address stopped: SendGrid's event types, the ones that stop it, and how the
case says so. Pure: the API's SendGrid webhook (starter/api/routes/sendgrid_webhook.py) decides
with it, the store (runtime/email_suppression.py) keeps it, `send_notification` reads it back.
"""

from __future__ import annotations

from enum import StrEnum


class SuppressionKind(StrEnum):
    """SendGrid Event Webhook types after which we stop emailing an address."""

    BOUNCE = "bounce"
    DROPPED = "dropped"
    SPAMREPORT = "spamreport"
    UNSUBSCRIBE = "unsubscribe"
    GROUP_UNSUBSCRIBE = "group_unsubscribe"


#: `dropped` events whose reason is about the address (SendGrid drops mail to addresses on its own
#: suppression lists, or invalid ones). Other drops (spam content, a bad SMTPAPI header, over
#: quota) say nothing about the address and suppress nothing.
ADDRESS_DROP_REASONS = ("bounced address", "unsubscribed address", "spam reporting address", "invalid")

#: How every suppression reason starts, so the case can tell "email stopped" from other skips.
EMAIL_BOUNCED = "email bounced"
EMAIL_DROPPED = "email dropped by SendGrid"
MARKED_AS_SPAM = "marked as spam"
UNSUBSCRIBED = "unsubscribed"
SUPPRESSION_REASONS = (EMAIL_BOUNCED, EMAIL_DROPPED, MARKED_AS_SPAM, UNSUBSCRIBED)


def suppresses(event_type: str, *, bounce_type: str | None = None, reason: str | None = None) -> SuppressionKind | None:
    """The kind of suppression a SendGrid event means, or None when it stops nothing.

    A `bounce` of type `blocked` is temporary (the receiving server refused for now, often our IP's
    reputation): SendGrid keeps the address deliverable, and so do we. A `dropped` suppresses only
    when its reason names the address."""
    try:
        kind = SuppressionKind(event_type)
    except ValueError:
        return None
    if kind is SuppressionKind.BOUNCE and (bounce_type or "").lower() == "blocked":
        return None
    if kind is SuppressionKind.DROPPED and not (reason or "").strip().lower().startswith(ADDRESS_DROP_REASONS):
        return None
    return kind


def suppression_reason(kind: SuppressionKind, detail: str | None = None) -> str:
    """How the case's timeline says why no email went: `email bounced: 550 5.1.1 unknown user`."""
    detail = " ".join((detail or "").split())[:200]
    if kind is SuppressionKind.BOUNCE:
        return f"{EMAIL_BOUNCED}: {detail}" if detail else EMAIL_BOUNCED
    if kind is SuppressionKind.DROPPED:
        return f"{EMAIL_DROPPED}: {detail}" if detail else EMAIL_DROPPED
    if kind is SuppressionKind.SPAMREPORT:
        return MARKED_AS_SPAM
    if kind is SuppressionKind.GROUP_UNSUBSCRIBE:
        return f"{UNSUBSCRIBED} ({detail})" if detail else UNSUBSCRIBED
    return UNSUBSCRIBED


def is_email_suppression(reason: str | None) -> bool:
    """True for a skip reason `suppression_reason` wrote."""
    return bool(reason) and str(reason).startswith(SUPPRESSION_REASONS)
