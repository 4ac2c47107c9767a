"""What we read of a Stripe event, as strict pydantic models: one model per shape we act on.

A signed event is still outside input (a leaked secret, a tampered test event, a Stripe field
we did not expect). Each model names only the fields the webhook reads; every other field is
ignored. Two kinds of field:

- **needed** (ids, the amount, the currency, the subscription): strict. A value Stripe never
  sends (`amount_due` of `0`, `true` or `"1000"`; an id of 300 characters or with a quote in it;
  a currency of four letters) fails validation and the event is acknowledged as *ignored* with
  the reason: it can never become usable, and anything but a 2xx makes Stripe retry it for days.
- **decorative** (decline codes and message, the hosted invoice link, the card, the policy
  name, `created`): lenient. A bad value becomes `None` (a message is cut to 500 characters), so
  a real failure with one odd field still opens its case, and nothing unbounded is stored in it.

Bounds: ids ≤ 255 characters of `[A-Za-z0-9_]`, codes ≤ 100, messages ≤ 500, amounts strict
integers 1 … 10¹² − 1 (Stripe's 12 digits; `bool` is not an integer here), currencies three
letters, links `https://` only (a link is handed to the customer and the SaaS app), `created`
a timezone-aware datetime or `None` whatever number or garbage it was.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)

from dunning.models import MAX_AMOUNT

MAX_ID_LENGTH = 255
MAX_CODE_LENGTH = 100
MAX_MESSAGE_LENGTH = 500
MAX_URL_LENGTH = 2048


def _none_on_error(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    try:
        return handler(value)
    except ValidationError:
        return None


def _ref(value: Any) -> Any:
    """A reference Stripe sends as an id or, expanded, as the object itself."""
    return value.get("id") if isinstance(value, dict) else value


def _truncate(value: Any) -> Any:
    return value[:MAX_MESSAGE_LENGTH] if isinstance(value, str) else value


def https_only(url: object) -> str | None:
    """`url` when it is a plain `https://` link, else None: a link we hand on (to the case, the
    SaaS app's banner, the customer's browser) is never `javascript:`, `data:` or plain http."""
    if not isinstance(url, str) or len(url) > MAX_URL_LENGTH:
        return None
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # e.g. a malformed IPv6 host
        return None
    return url if parts.scheme == "https" and host else None


def _https(value: str) -> str:
    if https_only(value) is None:
        raise ValueError("only https:// links are taken from an event")
    return value


def _timestamp(value: Any) -> datetime | None:
    """Unix seconds as an aware datetime; `None` for anything that is not a representable time."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, ValueError, OSError):
        return None


StripeId = Annotated[str, StringConstraints(pattern=rf"^[A-Za-z0-9_]{{3,{MAX_ID_LENGTH}}}$")]
Ref = Annotated[StripeId, BeforeValidator(_ref)]
Code = Annotated[str, StringConstraints(pattern=rf"^[A-Za-z0-9_.\-]{{1,{MAX_CODE_LENGTH}}}$")]
Message = Annotated[str, BeforeValidator(_truncate)]
HttpsUrl = Annotated[str, AfterValidator(_https)]
Amount = Annotated[int, Field(strict=True, ge=1, le=MAX_AMOUNT)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{3}$", to_lower=True)]
PolicyName = Annotated[str, StringConstraints(min_length=1, max_length=MAX_CODE_LENGTH)]
EventType = Annotated[str, StringConstraints(pattern=rf"^[a-z0-9_.]{{1,{MAX_CODE_LENGTH}}}$")]
When = Annotated[datetime | None, BeforeValidator(_timestamp)]


class _Shape(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


# Lenient fields: a bad value is `None`, never a refusal.
LenientRef = Annotated[Ref | None, WrapValidator(_none_on_error)]
LenientCode = Annotated[Code | None, WrapValidator(_none_on_error)]
LenientMessage = Annotated[Message | None, WrapValidator(_none_on_error)]
LenientUrl = Annotated[HttpsUrl | None, WrapValidator(_none_on_error)]
LenientDict = Annotated[dict[str, Any] | None, WrapValidator(_none_on_error)]
LenientText = Annotated[Annotated[str, StringConstraints(max_length=MAX_CODE_LENGTH)] | None, WrapValidator(_none_on_error)]


# --- the envelope ------------------------------------------------------------------------


class EventData(_Shape):
    object: dict[str, Any]
    previous_attributes: LenientDict = None


class StripeEvent(_Shape):
    """Every event: who it is (for redeliveries), what it is, when, and its object."""

    id: StripeId
    type: EventType
    created: When = None
    data: EventData


# --- invoices -----------------------------------------------------------------------------


def _policy_name(metadata: dict[str, Any] | None) -> str | None:
    """Stripe metadata values are strings; anything else (or absurdly long) names no policy."""
    value = (metadata or {}).get("dunning_policy")
    return value if isinstance(value, str) and 0 < len(value) <= MAX_CODE_LENGTH else None


class SubscriptionDetails(_Shape):
    subscription: Ref | None = None
    metadata: LenientDict = None


class InvoiceParent(_Shape):
    subscription_details: SubscriptionDetails | None = None


class LegacySubscriptionDetails(_Shape):
    metadata: LenientDict = None


class _SubscriptionInvoice(_Shape):
    """An invoice's subscription and its `dunning_policy`, current API and legacy."""

    parent: InvoiceParent | None = None
    # Before API 2025-03-31 the invoice named its subscription at the top level.
    subscription: Ref | None = None
    subscription_details: Annotated[LegacySubscriptionDetails | None, WrapValidator(_none_on_error)] = None

    def subscription_id(self) -> str | None:
        details = self.parent.subscription_details if self.parent else None
        if details is not None and details.subscription:
            return details.subscription
        return self.subscription

    def requested_policy(self) -> str | None:
        details = self.parent.subscription_details if self.parent else None
        if details is not None and details.subscription:
            return _policy_name(details.metadata)
        legacy = self.subscription_details
        return _policy_name(legacy.metadata if legacy else None)


class InvoiceOfSubscription(_SubscriptionInvoice):
    """`invoice.paid` / `invoice.payment_succeeded`: which invoice of which subscription."""

    id: StripeId


class UpcomingInvoice(_SubscriptionInvoice):
    """`invoice.upcoming`: a renewal announced days ahead (the invoice has no id yet). When it will
    be charged: `next_payment_attempt`, else the end of the period."""

    customer: Ref
    next_payment_attempt: When = None
    period_end: When = None

    def renewal_at(self) -> datetime | None:
        return self.next_payment_attempt or self.period_end


class PaymentError(_Shape):
    code: LenientCode = None
    decline_code: LenientCode = None
    advice_code: LenientCode = None
    message: LenientMessage = None
    payment_method: LenientRef = None


class ExpandedIntent(_Shape):
    last_payment_error: Annotated[PaymentError | None, WrapValidator(_none_on_error)] = None


class FailedInvoice(InvoiceOfSubscription):
    """`invoice.payment_failed`: everything a case opens with."""

    customer: Ref
    amount_due: Amount
    currency: Currency
    billing_reason: LenientText = None
    default_payment_method: LenientRef = None
    hosted_invoice_url: LenientUrl = None
    # Expanded on older API versions and in the sandbox demo; an id (or nothing) otherwise.
    payment_intent: Annotated[ExpandedIntent | None, WrapValidator(_none_on_error)] = None

    def payment_error(self) -> PaymentError:
        error = self.payment_intent.last_payment_error if self.payment_intent else None
        return error or PaymentError()


# --- subscriptions, cards, customers ------------------------------------------------------------


class CancellationDetails(_Shape):
    reason: LenientCode = None
    comment: LenientMessage = None


class DeletedSubscription(_Shape):
    """`customer.subscription.deleted`."""

    id: StripeId
    cancellation_details: Annotated[CancellationDetails | None, WrapValidator(_none_on_error)] = None


class CardOfCustomer(_Shape):
    """`payment_method.attached`, `payment_method.automatically_updated`, `customer.source.updated`."""

    id: LenientRef = None
    customer: Ref | None = None


class InvoiceSettings(_Shape):
    default_payment_method: LenientRef = None


class UpdatedCustomer(_Shape):
    """`customer.updated`: its default payment method (the new one) and what changed."""

    id: StripeId
    invoice_settings: Annotated[InvoiceSettings | None, WrapValidator(_none_on_error)] = None
    default_source: LenientRef = None


class ExpiringSource(_Shape):
    """`customer.source.expiring`: a card (a legacy source) of the customer expires at the end of
    this month. Stripe sends it for Cards and Sources only, never for PaymentMethods."""

    id: StripeId
    customer: Ref
    exp_month: Annotated[int, Field(strict=True, ge=1, le=12)]
    exp_year: Annotated[int, Field(strict=True, ge=2000, le=2200)]
    brand: LenientText = None
    last4: Annotated[Annotated[str, StringConstraints(pattern=r"^[0-9]{4}$")] | None, WrapValidator(_none_on_error)] = None


def why(exc: ValidationError, what: str) -> str:
    """The first problem of a validation, without the offending value (it may be huge or hostile)."""
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{what}.{where}: {error['msg']}"[:300] if where else f"{what}: {error['msg']}"[:300]
