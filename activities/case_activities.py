"""The case's activities, as classes with their backends injected.

Tests and the demo swap the backend (sandbox, Stripe, SendGrid, Twilio), never the
activity, so what runs in tests is exactly what runs in production.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.backends import (
    ConsentStore,
    EmailBackend,
    EmailSuppressions,
    LinkIssuer,
    PaymentsBackend,
    ProviderRejected,
    ProviderUnavailable,
    RecipientOptedOut,
    RecipientUnreachable,
    SmsBackend,
)
from activities.messages import UnknownTemplate, render_message
from activities.sandbox import MailboxMessage, SandboxMailbox
from activities.stripe_backend import SMS_OPT_OUT_METADATA_KEY
from dunning import contract
from dunning.models import (
    PAID_ELSEWHERE,
    AccessRequest,
    Channel,
    ChargeRequest,
    ChargeResult,
    CustomerProfile,
    NotificationRequest,
    NotificationResult,
    SavedCard,
)
from runtime.card_budget import CardBudgetStore, MemoryCardBudget, Reservation
from runtime.database import DatabaseUnavailable

log = structlog.get_logger(__name__)


@contextmanager
def provider_errors() -> Iterator[None]:
    """Outages (a provider's, our database's) stay retryable; rejections stop retrying and show
    their reason in the case."""
    try:
        yield
    except ProviderRejected as exc:
        raise ApplicationError(str(exc), type="ProviderRejected", non_retryable=True) from exc
    except ProviderUnavailable as exc:
        raise ApplicationError(str(exc), type="ProviderUnavailable") from exc
    except DatabaseUnavailable as exc:
        raise ApplicationError(str(exc), type="DatabaseUnavailable") from exc


async def mirror_sms_opt_out(
    payments: PaymentsBackend, customer_id: str, opted_out: bool, *, attempts: int = 3, pause: float = 0.5
) -> bool:
    """Write an opt-out (or opt-in) into the customer's Stripe metadata, retrying an outage a few
    times. Never raises: our database already holds the change and stays the record; a failure
    is logged as an error (and a later refused SMS of that customer writes it again)."""
    for attempt in range(1, attempts + 1):
        try:
            await payments.set_sms_opt_out_metadata(customer_id, opted_out)
            return True
        except ProviderUnavailable as exc:
            if attempt < attempts:
                await asyncio.sleep(pause * attempt)
                continue
            reason = str(exc)
        except Exception as exc:  # noqa: BLE001 - a mirror must never undo or hide the opt-out itself
            reason = f"{type(exc).__name__}: {exc}"
        log.error(
            "sms opt-out NOT mirrored to Stripe metadata; the database has it",
            customer_id=customer_id,
            opted_out=opted_out,
            metadata_key=SMS_OPT_OUT_METADATA_KEY,
            reason=reason,
        )
        return False
    return False


def _activity_now() -> datetime:
    """When this attempt of the activity was scheduled: the time the budget counts by (virtual
    time on the time-skipping server, about now in production)."""
    if activity.in_activity():
        return activity.info().current_attempt_scheduled_time
    return datetime.now(UTC)


class PaymentActivities:
    def __init__(self, payments: PaymentsBackend, card_budget: CardBudgetStore | None = None) -> None:
        self.payments = payments
        # The card's budget across cases: the service's database in production.
        self.card_budget: CardBudgetStore = card_budget if card_budget is not None else MemoryCardBudget()

    @activity.defn(name=contract.CHARGE_INVOICE.name)
    async def charge_invoice(self, request: ChargeRequest) -> ChargeResult:
        with provider_errors():
            return await self._charge(request)

    async def _charge(self, request: ChargeRequest) -> ChargeResult:
        """Reserve the attempt in the card's budget (atomically, across cases), then charge; the
        result says what the budget is now. A refused reservation is a result, not an attempt."""
        card = await self.payments.charged_card(request)
        if card is None or not card.fingerprint:
            return await self.payments.charge_invoice(request)
        reservation = Reservation(
            fingerprint=card.fingerprint,
            idempotency_key=request.idempotency_key,
            case_ref=request.idempotency_key.partition("@")[0],
            customer_id=request.customer_id,
            limit=request.card_budget_limit,
            payment_method_id=request.payment_method_id,
        )
        decision = await self.card_budget.reserve(reservation, _activity_now())
        if not decision.allowed:
            budget = decision.budget
            code = "card_blocked" if budget.blocked_code else "card_budget_exhausted"
            why = (
                f"this card must never be retried ({budget.blocked_code})"
                if budget.blocked_code
                else f"this card reached its budget of {budget.limit} attempts in 30 days across cases"
            )
            log.info("charge refused by the card's budget", invoice_id=request.invoice_id, code=code, used_by=budget.used_by)
            return ChargeResult(
                invoice_id=request.invoice_id,
                status="refused",
                code=code,
                message=why,
                payment_method_id=request.payment_method_id,
                card_budget=budget,
            )
        try:
            result = await self.payments.charge_invoice(request)
        except ProviderRejected:
            await self.card_budget.release(reservation)  # Stripe refused the request: no attempt
            raise
        budget = await self.card_budget.settle(reservation, result, _activity_now())
        return result.model_copy(update={"card_budget": budget, "card_brand": card.brand, "card_last4": card.last4})

    @activity.defn(name=contract.LIST_SAVED_CARDS.name)
    async def list_saved_cards(self, customer_id: str) -> list[SavedCard]:
        with provider_errors():
            return await self.payments.saved_cards(customer_id)

    @activity.defn(name=contract.SUSPEND_ACCESS.name)
    async def suspend_access(self, request: AccessRequest) -> None:
        with provider_errors():
            await self.payments.suspend_access(request)

    @activity.defn(name=contract.RESTORE_ACCESS.name)
    async def restore_access(self, request: AccessRequest) -> None:
        with provider_errors():
            await self.payments.restore_access(request)

    @activity.defn(name=contract.CANCEL_SUBSCRIPTION.name)
    async def cancel_subscription(self, request: AccessRequest) -> None:
        with provider_errors():
            await self.payments.cancel_subscription(request)

    @activity.defn(name=contract.GET_CUSTOMER.name)
    async def get_customer(self, customer_id: str) -> CustomerProfile:
        with provider_errors():
            return await self.payments.get_customer(customer_id)


class NotificationActivities:
    def __init__(
        self,
        payments: PaymentsBackend,
        email: EmailBackend,
        sms: SmsBackend,
        consent: ConsentStore,
        links: LinkIssuer,
        message_defaults: Mapping[str, str | None] | None = None,
        mailbox: SandboxMailbox | None = None,
        suppressions: EmailSuppressions | None = None,
    ) -> None:
        self.links = links
        # Addresses SendGrid's Event Webhook told us to stop emailing (None: nothing is suppressed).
        self.suppressions = suppressions
        self.payments = payments
        self.email = email
        self.sms = sms
        self.consent = consent
        # Sender-wide template values (company_name, support_email); the case's context wins.
        self.message_defaults = {k: v for k, v in (message_defaults or {}).items() if v}
        # Development only (`dunning up`): every message as the customer got it, for the local mailbox.
        self.mailbox = mailbox

    @activity.defn(name=contract.SEND_NOTIFICATION.name)
    async def send_notification(self, request: NotificationRequest) -> NotificationResult:
        with provider_errors():
            return await self._send(request)

    async def _send(self, request: NotificationRequest) -> NotificationResult:
        channel = request.channel
        if request.check_invoices_open and request.invoice_ids:
            # One open invoice is reason enough to write: stop reading Stripe at the first one
            # (a case with ten invoices made ten sequential reads per message).
            for invoice_id in request.invoice_ids:
                if await self.payments.invoice_is_open(invoice_id):
                    break
            else:
                return NotificationResult(channel=channel, status="skipped", reason=PAID_ELSEWHERE)
        if channel is Channel.IN_APP:
            # The banner lives in the case itself and is served by the API from the `status` query.
            if self.mailbox is not None:
                await self._show_banner_in_mailbox(request)
            return NotificationResult(channel=channel, status="sent", reason="in-app banner updated")
        contact = await self.payments.get_contact(request.customer_id)
        to = contact.phone if channel is Channel.SMS else contact.email
        if channel is Channel.SMS:
            if not to:
                return NotificationResult(
                    channel=channel, status="skipped", reason="no phone number", fallback_channel=Channel.EMAIL
                )
            if await self.consent.sms_opted_out(request.customer_id):
                if not contact.sms_opted_out:
                    # A STOP whose mirror into Stripe failed (the webhook logged it): mend it now.
                    await mirror_sms_opt_out(self.payments, request.customer_id, True, attempts=1)
                return NotificationResult(
                    channel=channel,
                    status="skipped",
                    reason="customer opted out of SMS",
                    fallback_channel=Channel.EMAIL,
                )
            if contact.sms_opted_out:
                # Set in Stripe (by the SaaS app, support, or our mirror): read at send time, so a
                # START that cleared it counts at once.
                return NotificationResult(
                    channel=channel,
                    status="skipped",
                    reason=f"customer opted out of SMS (Stripe metadata {SMS_OPT_OUT_METADATA_KEY})",
                    fallback_channel=Channel.EMAIL,
                )
        elif not to:
            return NotificationResult(channel=channel, status="skipped", reason="no email address")
        elif self.suppressions is not None and (stopped := await self.suppressions.suppression_for(to)) is not None:
            # Bounced, marked as spam or unsubscribed (SendGrid's Event Webhook): the ladder goes on by SMS.
            return NotificationResult(channel=channel, status="skipped", reason=stopped.reason, fallback_channel=Channel.SMS)
        link = await self._link(request)
        try:
            message = render_message(
                request.template,
                channel,
                {**self.message_defaults, **request.context, "customer_name": contact.name, "update_url": link},
                locale=contact.locale,
            )
        except (UnknownTemplate, ValueError) as exc:
            # A policy naming a template nobody wrote won't fix itself on retry.
            raise ProviderRejected(f"cannot render '{request.template}' for {channel}: {exc}") from exc
        try:
            if channel is Channel.SMS:
                provider_id = await self.sms.send_sms(
                    to=to, body=message.text, idempotency_key=request.idempotency_key
                )
            else:
                provider_id = await self.email.send_email(
                    to=to,
                    subject=message.subject or "",
                    text=message.text,
                    html=message.html,
                    idempotency_key=request.idempotency_key,
                    tags={"customer_id": request.customer_id, "case_id": request.case_id},
                )
        except RecipientUnreachable as exc:
            if isinstance(exc, RecipientOptedOut):
                # Twilio knows of a STOP we missed (webhook down, number not mapped): keep it for good.
                await self.consent.set_sms_opt_out(request.customer_id, True, source="provider:opted_out")
                await mirror_sms_opt_out(self.payments, request.customer_id, True)
            return NotificationResult(
                channel=channel,
                status="failed",
                reason=str(exc),
                fallback_channel=Channel.EMAIL if channel is Channel.SMS else None,
            )
        if channel is Channel.SMS:
            # The number may answer STOP later: the inbound webhook maps it back to this customer.
            remember = getattr(self.consent, "remember_sms_recipient", None)
            if remember is not None:
                await remember(request.customer_id, contact.phone)
        if self.mailbox is not None:
            await self.mailbox.record(
                MailboxMessage(
                    at=datetime.now(UTC),
                    customer_id=request.customer_id,
                    channel=channel.value,
                    template=request.template,
                    to=to,
                    name=contact.name,
                    locale=contact.locale,
                    subject=message.subject,
                    text=message.text,
                    html=message.html,
                    link=link,
                    idempotency_key=request.idempotency_key,
                )
            )
        return NotificationResult(channel=channel, status="sent", provider_message_id=provider_id)

    async def _link(self, request: NotificationRequest) -> str:
        """The one link in the message (`update_url`): the case's own page, never a provider
        session (those expire before the customer reads this)."""
        info = activity.info()
        return await self.links.issue(
            case_id=request.case_id,
            workflow_id=info.workflow_id or request.case_id.partition("@")[0],
            run_id=info.workflow_run_id or "",
            customer_id=request.customer_id,
        )

    async def _show_banner_in_mailbox(self, request: NotificationRequest) -> None:
        """The banner as the case set it, for the local mailbox (the SaaS app asks the API for the
        current one). A banner that cannot be shown there never fails the case's step."""
        assert self.mailbox is not None
        try:
            contact = await self.payments.get_contact(request.customer_id)
            link = await self._link(request)
            banner = render_message(
                request.template,
                Channel.IN_APP,
                {**self.message_defaults, **request.context, "customer_name": contact.name, "update_url": link},
                locale=contact.locale,
            )
            await self.mailbox.record(
                MailboxMessage(
                    at=datetime.now(UTC),
                    customer_id=request.customer_id,
                    channel=Channel.IN_APP.value,
                    template=request.template,
                    name=contact.name,
                    locale=contact.locale,
                    text=banner.text,
                    link=link,
                    idempotency_key=request.idempotency_key,
                )
            )
        except Exception as exc:  # development aid only
            activity.logger.warning("in-app banner not shown in the local mailbox: %s", exc)


def case_activities(payments: PaymentActivities, notifications: NotificationActivities) -> list[Callable[..., Any]]:
    """The contract's case activities, as a worker registers them."""
    return [
        payments.charge_invoice,
        payments.list_saved_cards,
        payments.suspend_access,
        payments.restore_access,
        payments.cancel_subscription,
        payments.get_customer,
        notifications.send_notification,
    ]
