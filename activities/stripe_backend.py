"""The `stripe` payments backend: charges, declines, access and links, with the official SDK.

Every call goes through `stripe.StripeClient` and its async methods. The SDK's own network
retries are off: Temporal retries the activity with backoff, and a retried charge reuses
the same idempotency key, so Stripe answers it with the first result instead of charging
again.

Error policy (the contract's "a decline is a result, not an error"):
- a card error (HTTP 402) is a `ChargeResult` with status "declined";
- 5xx, 409 (idempotency key in use), 429, connection errors and timeouts raise
  `ProviderUnavailable` (retried, never counted as an attempt);
- authentication, permission and invalid-request errors raise `ProviderRejected`
  (not retried; the reason shows up in the case). Messages never carry secrets.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar
from urllib.parse import quote

import stripe
import structlog
from pydantic import BaseModel, ValidationError

from activities.backends import Contact, ProviderRejected, ProviderUnavailable
from dunning.card_expiry import RenewalCard
from dunning.declines import classify_decline
from dunning.models import AccessRequest, ChargeRequest, ChargeResult, CustomerProfile, DeclineCategory, SavedCard
from dunning.timezones import Place, TimezoneHints, infer_timezone
from runtime.settings import Settings, reveal

log = structlog.get_logger(__name__)

T = TypeVar("T")

#: Subscription metadata our suspension writes, so the SaaS app (and a human) can see it.
ACCESS_METADATA_KEY = "dunning_access"
#: Customer metadata we read.
TIMEZONE_METADATA_KEY = "timezone"
SMS_OPT_OUT_METADATA_KEY = "dunning_sms_opt_out"

#: Stripe codes that mean "the customer must confirm this payment themselves".
_AUTHENTICATION_CODES = frozenset(
    {"authentication_required", "authentication_not_handled", "invoice_payment_intent_requires_action"}
)
_TRUTHY = frozenset({"1", "true", "yes", "y", "on", "opted_out", "stop"})
_SECRET_PATTERN = re.compile(r"\b(sk|rk|pk|whsec)_(live|test)?_?[A-Za-z0-9*]+")


def _redact(text: str | None) -> str:
    """Stripe masks keys in its messages already; this makes sure no key-like string leaks."""
    return _SECRET_PATTERN.sub(lambda m: f"{m.group(1)}_***", text or "")


def _plain(obj: Any) -> dict[str, Any]:
    """A StripeObject as plain dicts and lists (what Stripe sent, field for field)."""
    if obj is None:
        return {}
    if isinstance(obj, Mapping):
        return dict(obj)
    return obj.to_dict()


def _id(value: Any) -> str | None:
    """An id field that may or may not be expanded."""
    if isinstance(value, Mapping):
        return value.get("id")
    return value or None


def _dict(value: Any) -> dict[str, Any]:
    """A nested object of an error body, or `{}` when it is absent or not an object."""
    return value if isinstance(value, dict) else {}


def _place(value: Any) -> Place | None:
    """An address (`address`, `shipping.address`, `tax.location`) as far as time zones go."""
    if not isinstance(value, Mapping) or not value.get("country"):
        return None
    state = value.get("state")
    return Place(country=str(value["country"]), state=str(state) if state else None)


def sms_opted_out_in(customer: Mapping[str, Any]) -> bool:
    """The customer's `dunning_sms_opt_out` metadata, as we and the SaaS app write it."""
    metadata = customer.get("metadata") or {}
    return str(metadata.get(SMS_OPT_OUT_METADATA_KEY, "")).strip().lower() in _TRUTHY


def timezone_hints(customer: Mapping[str, Any]) -> TimezoneHints:
    """Everything on a Stripe customer that says where they are, raw (`dunning.timezones` decides)."""
    metadata = customer.get("metadata") or {}
    shipping = customer.get("shipping") or {}
    tax = customer.get("tax") or {}
    locales = customer.get("preferred_locales") or []
    return TimezoneHints(
        metadata=str(metadata.get(TIMEZONE_METADATA_KEY) or "").strip() or None,
        address=_place(customer.get("address")),
        phone=customer.get("phone") or None,
        shipping=_place(shipping.get("address") if isinstance(shipping, Mapping) else None),
        tax_location=_place(tax.get("location") if isinstance(tax, Mapping) else None),
        locale=str(locales[0]) if locales else None,
    )


def _error_body(exc: stripe.StripeError) -> dict[str, Any]:
    body = exc.json_body if isinstance(exc.json_body, dict) else {}
    error = body.get("error")
    return error if isinstance(error, dict) else {}


class FailureDetails(BaseModel):
    """Why Stripe's own attempt at an invoice failed: the PaymentIntent's `last_payment_error`."""

    code: str | None = None
    decline_code: str | None = None
    advice_code: str | None = None
    message: str | None = None
    payment_method_id: str | None = None


class FailureFacts(BaseModel):
    """What Stripe says about a failed invoice as its case is about to open: why it failed, and
    whether it still needs collecting (events arrive out of order: the invoice may be paid or the
    subscription canceled by now). A status is None when it could not be read."""

    invoice_status: str | None = None
    subscription_status: str | None = None
    failure: FailureDetails | None = None


class RenewingSubscription(NamedTuple):
    subscription_id: str
    renewal_at: datetime
    requested_policy: str | None


def _period_end(subscription: dict[str, Any]) -> datetime | None:
    """When the subscription renews: its items' period end (current API), else its own (older)."""
    items = (subscription.get("items") or {}).get("data") if isinstance(subscription.get("items"), dict) else None
    candidates = [i.get("current_period_end") for i in items or [] if isinstance(i, dict)]
    candidates.append(subscription.get("current_period_end"))
    ends: list[int] = [e for e in candidates if isinstance(e, int) and not isinstance(e, bool)]
    end = min(ends) if ends else None
    return datetime.fromtimestamp(end, UTC) if end else None


class StripePayments:
    """`PaymentsBackend` on Stripe Billing.

    `api_base` is `STRIPE_API_BASE` (tests and sandboxes point it at a fake); `timeout` is per
    HTTP request, so a hung Stripe call fails fast and Temporal retries it.
    """

    def __init__(
        self,
        api_key: str,
        *,
        api_base: str | None = None,
        timeout: float = 20.0,
        max_network_retries: int = 0,
        portal_return_url: str | None = None,
        http_client: stripe.HTTPClient | None = None,
    ) -> None:
        if not api_key:
            raise ProviderRejected("STRIPE_API_KEY is not set: the stripe payments backend needs it")
        base_addresses: dict[str, str] = {}
        if api_base:
            base_addresses = {"api": api_base.rstrip("/")}
        self.portal_return_url = portal_return_url
        self.client = stripe.StripeClient(
            api_key,
            base_addresses=base_addresses,  # type: ignore[arg-type]
            max_network_retries=max_network_retries,
            http_client=http_client or stripe.HTTPXClient(timeout=timeout),
        )

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> StripePayments:
        """STRIPE_API_KEY, STRIPE_API_BASE, STRIPE_PORTAL_RETURN_URL, DUNNING_PROVIDER_TIMEOUT."""
        if settings.dunning_provider_timeout:
            options.setdefault("timeout", settings.dunning_provider_timeout)
        return cls(
            reveal(settings.stripe_api_key),
            api_base=settings.stripe_api_base,
            portal_return_url=settings.stripe_portal_return_url,
            **options,
        )

    # --- error translation ----------------------------------------------------------

    async def _call(self, what: str, call: Callable[[], Awaitable[T]], *, card_errors: bool = False) -> T:
        """Runs one Stripe call, turning outages into `ProviderUnavailable` and refusals into
        `ProviderRejected`. With `card_errors`, a `CardError` passes through for the caller to read."""
        try:
            return await call()
        except stripe.CardError as exc:
            if card_errors:
                raise
            error = _error_body(exc)
            raise ProviderRejected(
                f"Stripe declined while {what} (code {error.get('code') or exc.code}): "
                f"{_redact(error.get('message') or str(exc))}"
            ) from exc
        except (stripe.APIConnectionError, stripe.RateLimitError) as exc:
            raise ProviderUnavailable(f"Stripe unavailable while {what}: {type(exc).__name__}") from exc
        except (stripe.AuthenticationError, stripe.PermissionError) as exc:
            raise ProviderRejected(
                f"Stripe refused the API key while {what} ({type(exc).__name__}, HTTP {exc.http_status}): "
                f"{_redact(exc.user_message or str(exc))}"
            ) from exc
        except (stripe.InvalidRequestError, stripe.IdempotencyError) as exc:
            error = _error_body(exc)
            raise ProviderRejected(
                f"Stripe rejected the request while {what} (HTTP {exc.http_status}, "
                f"code {error.get('code') or exc.code or 'none'}): {_redact(error.get('message') or str(exc))}"
            ) from exc
        except stripe.StripeError as exc:
            status = exc.http_status or 0
            if status >= 500 or status in (0, 408, 409, 429):
                raise ProviderUnavailable(f"Stripe unavailable while {what}: HTTP {status or 'no response'}") from exc
            raise ProviderRejected(
                f"Stripe rejected the request while {what} (HTTP {status}): {_redact(str(exc))}"
            ) from exc

    # --- charging -------------------------------------------------------------------

    async def _get(self, what: str, path: str, **params: Any) -> dict[str, Any]:
        """A GET read as plain JSON. The typed `retrieve_async` builds a StripeObject tree that we
        only turn back into dicts: for a whole invoice that costs ~4 ms of CPU per call, most of a
        webhook's time in the API (docs/performance.md). Errors are raised exactly as by the
        typed calls (same requestor), so `_call` maps them the same way."""
        response = await self._call(what, lambda: self.client.raw_request_async("get", path, **params))
        data = response.data
        return data if isinstance(data, dict) else {}

    async def _invoice(self, invoice_id: str) -> dict[str, Any]:
        return await self._get(f"reading invoice {invoice_id}", f"/v1/invoices/{quote(invoice_id, safe='')}")

    @staticmethod
    def _settled(invoice: dict[str, Any], invoice_id: str) -> ChargeResult | None:
        status = invoice.get("status")
        if status == "paid":
            return ChargeResult(invoice_id=invoice_id, status="already_paid")
        if status in ("void", "uncollectible"):
            return ChargeResult(invoice_id=invoice_id, status="voided", message=f"invoice is {status}")
        return None

    async def charge_invoice(self, request: ChargeRequest) -> ChargeResult:
        invoice_id = request.invoice_id
        settled = self._settled(await self._invoice(invoice_id), invoice_id)
        if settled is not None:
            return settled

        params: dict[str, Any] = {"off_session": True}
        card = request.payment_method_id
        if card:
            # Legacy cards and sources are paid with `source`, PaymentMethods with `payment_method`.
            params["source" if card.startswith(("card_", "src_", "ba_")) else "payment_method"] = card
        try:
            paid = await self._call(
                f"paying invoice {invoice_id}",
                lambda: self.client.v1.invoices.pay_async(
                    invoice_id,
                    params,  # type: ignore[arg-type]  # keys chosen at run time (source or payment_method)
                    {"idempotency_key": request.idempotency_key},
                ),
                card_errors=True,
            )
        except stripe.CardError as exc:
            return self._declined(request, exc)
        except ProviderRejected:
            # Paid or voided between our read and the payment (Stripe says "invoice is already
            # paid"): report what happened rather than an error.
            settled = self._settled(await self._invoice(invoice_id), invoice_id)
            if settled is not None:
                return settled
            raise

        invoice = _plain(paid)
        settled_status = invoice.get("status")
        if settled_status == "paid":
            log.info("stripe charge succeeded", invoice_id=invoice_id, attempt=request.attempt)
            if card:
                await self._make_default(request, card)
            return ChargeResult(
                invoice_id=invoice_id,
                status="succeeded",
                payment_method_id=card or _id(invoice.get("default_payment_method")),
                payment_intent_id=self._payment_intent_of(invoice),
            )
        if settled_status in ("void", "uncollectible"):
            return ChargeResult(invoice_id=invoice_id, status="voided", message=f"invoice is {settled_status}")
        # Still open after paying: an asynchronous payment method is processing it. Not an error;
        # the next scheduled step re-reads the invoice first.
        return ChargeResult(
            invoice_id=invoice_id,
            status="declined",
            category=DeclineCategory.SOFT,
            code="payment_pending",
            message=f"the payment is still processing (invoice status {settled_status})",
            payment_method_id=card,
            payment_intent_id=self._payment_intent_of(invoice),
        )

    async def _make_default(self, request: ChargeRequest, card: str) -> None:
        """The card that just paid becomes the subscription's and the customer's default, so the
        next renewal does not try the card that failed. Best effort: the payment stands either way."""
        key = f"{request.idempotency_key}/default"
        if card.startswith(("card_", "src_", "ba_")):
            subscription: dict[str, Any] = {"default_source": card}
            customer: dict[str, Any] = {"default_source": card}
        else:
            subscription = {"default_payment_method": card}
            customer = {"invoice_settings": {"default_payment_method": card}}
        try:
            await self._call(
                f"making {card} the default of {request.subscription_id}",
                lambda: self.client.v1.subscriptions.update_async(
                    request.subscription_id, subscription, {"idempotency_key": f"{key}/subscription"}  # type: ignore[arg-type]
                ),
            )
            await self._call(
                f"making {card} the default of {request.customer_id}",
                lambda: self.client.v1.customers.update_async(
                    request.customer_id, customer, {"idempotency_key": f"{key}/customer"}  # type: ignore[arg-type]
                ),
            )
        except (ProviderUnavailable, ProviderRejected) as exc:
            log.warning("the new card paid but could not be made the default", card=card, reason=str(exc))

    @staticmethod
    def _payment_intent_of(invoice: dict[str, Any]) -> str | None:
        # Before API 2025-03-31 the invoice named its PaymentIntent; now its `payments` list does.
        if invoice.get("payment_intent"):
            return _id(invoice["payment_intent"])
        for payment in (invoice.get("payments") or {}).get("data") or []:
            intent = (payment.get("payment") or {}).get("payment_intent")
            if intent:
                return _id(intent)
        return None

    @staticmethod
    def _declined(request: ChargeRequest, exc: stripe.CardError) -> ChargeResult:
        error = _error_body(exc)
        intent = _dict(error.get("payment_intent"))
        last_error = _dict(intent.get("last_payment_error"))
        code = error.get("code") or exc.code
        decline_code = error.get("decline_code") or last_error.get("decline_code")
        advice_code = error.get("advice_code") or last_error.get("advice_code")
        if code in _AUTHENTICATION_CODES or decline_code in _AUTHENTICATION_CODES:
            category = DeclineCategory.AUTHENTICATION
        else:
            category = classify_decline(decline_code=decline_code, code=code, advice_code=advice_code)
        payment_method = error.get("payment_method")
        result = ChargeResult(
            invoice_id=request.invoice_id,
            status="declined",
            category=category,
            code=code,
            decline_code=decline_code,
            advice_code=advice_code,
            message=error.get("message") or exc.user_message,
            payment_method_id=_id(payment_method) or request.payment_method_id,
            payment_intent_id=_id(intent) if intent else None,
        )
        log.info(
            "stripe charge declined",
            invoice_id=request.invoice_id,
            attempt=request.attempt,
            code=code,
            decline_code=decline_code,
            advice_code=advice_code,
            category=category.value,
        )
        return result

    async def _invoice_with_payments(self, invoice_id: str) -> dict[str, Any]:
        return await self._get(
            f"reading why invoice {invoice_id} failed",
            f"/v1/invoices/{quote(invoice_id, safe='')}",
            expand=["payments.data.payment.payment_intent"],
        )

    @staticmethod
    def _failure_of(invoice: dict[str, Any]) -> FailureDetails | None:
        payments = (invoice.get("payments") or {}).get("data") or []
        for payment in sorted(payments, key=lambda p: p.get("created") or 0, reverse=True):
            intent = (payment.get("payment") or {}).get("payment_intent")
            error = intent.get("last_payment_error") if isinstance(intent, dict) else None
            if isinstance(error, dict) and (error.get("code") or error.get("decline_code")):
                return FailureDetails(
                    code=error.get("code"),
                    decline_code=error.get("decline_code"),
                    advice_code=error.get("advice_code"),
                    message=error.get("message"),
                    payment_method_id=_id(error.get("payment_method")),
                )
        return None

    async def failure_details(self, invoice_id: str) -> FailureDetails | None:
        """The decline behind `invoice.payment_failed`, which the event itself does not carry.

        Read from the invoice's payments (current API: `payments.data.payment.payment_intent`),
        newest first; None when no payment on the invoice has an error.
        """
        return self._failure_of(await self._invoice_with_payments(invoice_id))

    async def failure_facts(self, invoice_id: str, subscription_id: str) -> FailureFacts:
        """The invoice (with its decline) and its subscription, read at once. One read failing
        leaves its status None; both failing raise the invoice's error."""
        reads: tuple[dict[str, Any] | BaseException, dict[str, Any] | BaseException] = await asyncio.gather(
            self._invoice_with_payments(invoice_id), self._subscription(subscription_id), return_exceptions=True
        )
        invoice, subscription = reads
        if isinstance(invoice, BaseException) and isinstance(subscription, BaseException):
            raise invoice
        facts = FailureFacts()
        if isinstance(invoice, dict):
            status = invoice.get("status")
            facts.invoice_status = status if isinstance(status, str) else None
            facts.failure = self._failure_of(invoice)
        else:
            log.warning("invoice not read at case opening", invoice_id=invoice_id, error=type(invoice).__name__)
        if isinstance(subscription, dict):
            status = subscription.get("status")
            facts.subscription_status = status if isinstance(status, str) else None
        else:
            log.warning(
                "subscription not read at case opening", subscription_id=subscription_id, error=type(subscription).__name__
            )
        return facts

    async def invoice_is_open(self, invoice_id: str) -> bool:
        try:
            invoice = await self._invoice(invoice_id)
        except ProviderRejected as exc:
            if isinstance(exc.__cause__, stripe.InvalidRequestError) and exc.__cause__.http_status == 404:
                return False  # deleted: nothing left to pay
            raise
        return invoice.get("status") == "open"

    # --- access ---------------------------------------------------------------------

    async def _subscription(self, subscription_id: str) -> dict[str, Any]:
        return await self._get(
            f"reading subscription {subscription_id}", f"/v1/subscriptions/{quote(subscription_id, safe='')}"
        )

    async def suspend_access(self, request: AccessRequest) -> None:
        """Stop billing the subscription (new invoices are voided) and mark access suspended.

        The SaaS app reads `metadata.dunning_access` (or our in-app endpoint) to gate access.
        """
        sid = request.subscription_id
        if (await self._subscription(sid)).get("status") == "canceled":
            log.info("suspend skipped: subscription already canceled", subscription_id=sid)
            return
        await self._call(
            f"suspending subscription {sid}",
            lambda: self.client.v1.subscriptions.update_async(
                sid,
                {
                    "pause_collection": {"behavior": "void"},
                    "metadata": {ACCESS_METADATA_KEY: "suspended", "dunning_reason": request.reason[:500]},
                },
            ),
        )
        log.info("stripe access suspended", subscription_id=sid)

    async def restore_access(self, request: AccessRequest) -> None:
        sid = request.subscription_id
        if (await self._subscription(sid)).get("status") == "canceled":
            log.info("restore skipped: subscription already canceled", subscription_id=sid)
            return
        await self._call(
            f"restoring subscription {sid}",
            lambda: self.client.v1.subscriptions.update_async(
                sid,
                # An empty string unsets a field in Stripe's API.
                {"pause_collection": "", "metadata": {ACCESS_METADATA_KEY: "active", "dunning_reason": ""}},
            ),
        )
        log.info("stripe access restored", subscription_id=sid)

    async def cancel_subscription(self, request: AccessRequest) -> None:
        sid = request.subscription_id
        # DELETE takes no idempotency key: read first so an activity retry is a no-op.
        if (await self._subscription(sid)).get("status") == "canceled":
            log.info("cancel skipped: subscription already canceled", subscription_id=sid)
            return
        await self._call(
            f"canceling subscription {sid}",
            lambda: self.client.v1.subscriptions.cancel_async(
                sid,
                {"cancellation_details": {"comment": request.reason[:500]}},
            ),
        )
        log.info("stripe subscription canceled", subscription_id=sid)

    # --- the customer ---------------------------------------------------------------

    async def _customer(self, customer_id: str, **params: Any) -> dict[str, Any]:
        return await self._get(
            f"reading customer {customer_id}", f"/v1/customers/{quote(customer_id, safe='')}", **params
        )

    @staticmethod
    def _locale(customer: dict[str, Any]) -> str:
        locales = customer.get("preferred_locales") or []
        return str(locales[0]).replace("-", "_") if locales else "en"

    async def get_customer(self, customer_id: str) -> CustomerProfile:
        # `tax` (Stripe Tax's location of the customer) is only sent when asked for.
        customer = await self._customer(customer_id, expand=["tax"])
        if customer.get("deleted"):
            return CustomerProfile(customer_id=customer_id, has_email=False, has_phone=False)
        invoice_settings = customer.get("invoice_settings") or {}
        zone = infer_timezone(timezone_hints(customer), datetime.now(UTC))
        if zone.ignored:
            log.info("time zone hints ignored", customer_id=customer_id, ignored=list(zone.ignored))
        return CustomerProfile(
            customer_id=customer_id,
            name=customer.get("name"),
            locale=self._locale(customer),
            timezone=zone.chosen,
            timezone_candidates=list(zone.candidates),
            timezone_source=zone.source,
            timezone_narrowed_by=list(zone.narrowed_by),
            has_email=bool(customer.get("email")),
            has_phone=bool(customer.get("phone")),
            sms_opted_out=sms_opted_out_in(customer),
            default_payment_method_id=_id(invoice_settings.get("default_payment_method"))
            or _id(customer.get("default_source")),
        )

    async def get_contact(self, customer_id: str) -> Contact:
        customer = await self._customer(customer_id)
        if customer.get("deleted"):
            return Contact(customer_id=customer_id)
        return Contact(
            customer_id=customer_id,
            name=customer.get("name"),
            email=customer.get("email"),
            phone=customer.get("phone"),
            locale=self._locale(customer),
            sms_opted_out=sms_opted_out_in(customer),
        )

    async def set_sms_opt_out_metadata(self, customer_id: str, opted_out: bool) -> None:
        """Mirror a STOP (or a START, which clears it) into the customer's `dunning_sms_opt_out`
        metadata, so the SaaS app and Stripe's dashboard see it. Our database stays the record."""
        value = "true" if opted_out else ""  # an empty string deletes the key
        await self._call(
            f"writing the SMS opt-out of {customer_id}",
            lambda: self.client.v1.customers.update_async(
                customer_id, {"metadata": {SMS_OPT_OUT_METADATA_KEY: value}}
            ),
        )
        log.info("sms opt-out mirrored to stripe", customer_id=customer_id, opted_out=opted_out)

    async def update_link(
        self, customer_id: str, invoice_id: str | None, return_url: str | None = None, *, portal_home: bool = False
    ) -> str:
        """A billing-portal session that opens straight on "update payment method", created when the
        customer clicks (sessions are short-lived); when the portal is not configured (or refuses),
        the invoice's hosted page, where a new card pays it. `return_url`: the customer's page."""
        params: dict[str, Any] = {"customer": customer_id}
        if not portal_home:
            params["flow_data"] = {"type": "payment_method_update"}
        if return_url or self.portal_return_url:
            params["return_url"] = return_url or self.portal_return_url
        try:
            session = await self._call(
                f"creating a billing portal session for {customer_id}",
                lambda: self.client.v1.billing_portal.sessions.create_async(params),  # type: ignore[arg-type]
            )
            url = _plain(session).get("url")
            if url:
                return url
        except ProviderRejected as exc:
            log.info("billing portal unavailable, falling back to the hosted invoice page", reason=str(exc))
            if not invoice_id:
                raise
        if invoice_id:
            hosted = (await self._invoice(invoice_id)).get("hosted_invoice_url")
            if hosted:
                return hosted
        raise ProviderRejected(
            f"no update link for {customer_id}: the billing portal gave none and invoice {invoice_id} "
            "has no hosted page"
        )

    # --- pre-dunning: the card a renewal will charge ------------------------------------

    @staticmethod
    def _default_card(holder: dict[str, Any]) -> str | None:
        """A subscription's or customer's default: the payment method, else the legacy source."""
        settings = holder.get("invoice_settings")
        default = _id(settings.get("default_payment_method")) if isinstance(settings, dict) else None
        return default or _id(holder.get("default_payment_method")) or _id(holder.get("default_source"))

    async def _card(self, payment_method_id: str) -> RenewalCard | None:
        """The card's expiry (PaymentMethods also read legacy `card_…` sources); None for what is
        no card (a SEPA debit, a bank account): nothing of it expires."""
        method = await self._get(
            f"reading payment method {payment_method_id}", f"/v1/payment_methods/{quote(payment_method_id, safe='')}"
        )
        card = method.get("card")
        if not isinstance(card, dict):
            return None
        try:
            return RenewalCard.model_validate(
                {
                    "payment_method_id": payment_method_id,
                    "brand": card.get("brand") if isinstance(card.get("brand"), str) else None,
                    "last4": card.get("last4") if isinstance(card.get("last4"), str) else None,
                    "exp_month": card.get("exp_month"),
                    "exp_year": card.get("exp_year"),
                }
            )
        except ValidationError:
            log.warning("payment method without a usable expiry", payment_method_id=payment_method_id)
            return None

    async def renewal_card(self, subscription_id: str, customer_id: str) -> RenewalCard | None:
        """The card the subscription's next renewal will be charged to, as Stripe picks it: the
        subscription's default payment method (or source), else the customer's invoice default
        (or default source). None when there is none, or it is no card."""
        card_id = self._default_card(await self._subscription(subscription_id))
        if card_id is None:
            card_id = self._default_card(await self._customer(customer_id))
        return await self._card(card_id) if card_id else None

    async def subscriptions_charging(self, customer_id: str, card_id: str) -> list[RenewingSubscription]:
        """The customer's active subscriptions whose next renewal charges this card (for
        `customer.source.expiring`, which names the card and not the subscription)."""
        listing = await self._get(
            f"listing subscriptions of {customer_id}", "/v1/subscriptions", customer=customer_id, status="active", limit=100
        )
        customer_default: str | None = None
        found: list[RenewingSubscription] = []
        for sub in listing.get("data") or []:
            if not isinstance(sub, dict) or not isinstance(sub.get("id"), str):
                continue
            charged = self._default_card(sub)
            if charged is None:
                customer_default = customer_default or self._default_card(await self._customer(customer_id)) or ""
                charged = customer_default or None
            renewal = _period_end(sub)
            if charged == card_id and renewal is not None:
                metadata = sub.get("metadata")
                policy = metadata.get("dunning_policy") if isinstance(metadata, dict) else None
                found.append(RenewingSubscription(sub["id"], renewal, policy if isinstance(policy, str) else None))
        return found

    # --- the card's budget and backup cards ----------------------------------------------

    @staticmethod
    def _saved_card(method: dict[str, Any], default: str | None = None) -> SavedCard | None:
        """A PaymentMethod (or legacy card) as a saved card: Stripe's `card.fingerprint` names
        the card number, the same for every customer and every time it is saved."""
        card = method.get("card") if isinstance(method.get("card"), dict) else None
        if card is None and method.get("object") == "card":
            card = method  # a legacy card source
        if not isinstance(card, dict) or not isinstance(method.get("id"), str):
            return None

        def text(name: str) -> str | None:
            value = card.get(name) if card else None
            return value if isinstance(value, str) and value else None

        def number(name: str) -> int | None:
            value = card.get(name) if card else None
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        return SavedCard(
            payment_method_id=method["id"],
            fingerprint=text("fingerprint"),
            brand=text("brand"),
            last4=text("last4"),
            exp_month=number("exp_month"),
            exp_year=number("exp_year"),
            is_default=method["id"] == default,
        )

    async def charged_card(self, request: ChargeRequest) -> SavedCard | None:
        """The card this charge uses (the request's, else the subscription's default, else the
        customer's), read from Stripe with its fingerprint; None when it is no card."""
        card_id = request.payment_method_id
        if card_id is None:
            card_id = self._default_card(await self._subscription(request.subscription_id))
        if card_id is None:
            card_id = self._default_card(await self._customer(request.customer_id))
        if card_id is None:
            return None
        try:
            method = await self._get(
                f"reading payment method {card_id}", f"/v1/payment_methods/{quote(card_id, safe='')}"
            )
        except ProviderRejected as exc:
            if isinstance(exc.__cause__, stripe.InvalidRequestError) and exc.__cause__.http_status == 404:
                return None  # not a PaymentMethod Stripe knows (a bank account): no card budget
            raise
        return self._saved_card(method)

    async def saved_cards(self, customer_id: str) -> list[SavedCard]:
        """The customer's saved PaymentMethods of type card (the default one marked)."""
        listing = await self._get(
            f"listing the cards of {customer_id}",
            f"/v1/customers/{quote(customer_id, safe='')}/payment_methods",
            type="card",
            limit=100,
        )
        default = self._default_card(await self._customer(customer_id))
        cards = [self._saved_card(m, default) for m in listing.get("data") or [] if isinstance(m, dict)]
        return [c for c in cards if c is not None]

    async def hosted_invoice_url(self, invoice_id: str) -> str | None:
        url = (await self._invoice(invoice_id)).get("hosted_invoice_url")
        return url if isinstance(url, str) and url else None

    async def aclose(self) -> None:
        """Closes the HTTP connection pool (tests; the worker keeps it for its lifetime)."""
        client = self.client._requestor._client  # noqa: SLF001 - the SDK exposes no public close
        close = getattr(client, "close_async", None)
        if close is not None:
            await close()
