"""Sandbox backends that really behave, for tests and the offline demo.

Cards follow Stripe's test payment methods by name (`pm_card_visa` pays,
`pm_card_chargeDeclinedInsufficientFunds` declines softly, `pm_card_chargeDeclinedExpiredCard`
hard, `pm_card_authenticationRequired` asks for 3-D Secure), or a scripted list of decline
codes set with `script_card`. Charges honour idempotency keys the way Stripe does.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from pydantic import BaseModel, ValidationError
from temporalio import activity

from activities.backends import Contact, ProviderUnavailable, RecipientUnreachable
from dunning.declines import classify_decline
from dunning.models import AccessRequest, ChargeRequest, ChargeResult, CustomerProfile, SavedCard
from dunning.timezones import Place, TimezoneHints, infer_timezone
from runtime.links import LinkSigner

# Stripe test payment methods and the decline each one produces.
TEST_CARD_DECLINES = {
    "pm_card_chargeDeclined": "generic_decline",
    "pm_card_chargeDeclinedInsufficientFunds": "insufficient_funds",
    "pm_card_chargeDeclinedExpiredCard": "expired_card",
    "pm_card_chargeDeclinedLostCard": "lost_card",
    "pm_card_chargeDeclinedStolenCard": "stolen_card",
    "pm_card_chargeDeclinedIncorrectCvc": "incorrect_cvc",
    "pm_card_chargeDeclinedProcessingError": "processing_error",
    "pm_card_authenticationRequired": "authentication_required",
    "pm_card_chargeCustomerFail": "generic_decline",
}


def _now() -> datetime:
    """The activity's scheduled time when inside one (virtual time in time-skipping tests)."""
    if activity.in_activity():
        return activity.info().current_attempt_scheduled_time
    return datetime.now(UTC)


@dataclass
class SandboxCustomer:
    customer_id: str
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    locale: str = "en"
    timezone: str | None = None  # Stripe's `timezone` metadata
    plan_name: str | None = "Pro"
    default_payment_method_id: str | None = None
    country: str | None = None  # the billing address, as far as time zones go
    state: str | None = None
    sms_opted_out: bool = False  # Stripe's `dunning_sms_opt_out` metadata


@dataclass
class SandboxCard:
    """A saved card: Stripe's fingerprint (one per card number, whichever customer saved it)."""

    payment_method_id: str
    fingerprint: str
    brand: str = "visa"
    last4: str = "4242"
    exp_month: int = 12
    exp_year: int = 2099
    customer_id: str | None = None


@dataclass
class ChargeLogEntry:
    invoice_id: str
    idempotency_key: str
    payment_method_id: str | None
    result: ChargeResult
    at: datetime


#: The sandbox's example "billing portal" (nothing answers there), unless `dunning up` serves one.
SANDBOX_PORTAL = "https://billing.example.com"


@dataclass
class SandboxPayments:
    """An in-memory Stripe: customers, invoices, cards, charges, access state."""

    customers: dict[str, SandboxCustomer] = field(default_factory=dict)
    paid_invoices: set[str] = field(default_factory=set)
    voided_invoices: set[str] = field(default_factory=set)
    scripted_cards: dict[str, list[str | None]] = field(default_factory=dict)
    charges: list[ChargeLogEntry] = field(default_factory=list)
    idempotent_results: dict[str, ChargeResult] = field(default_factory=dict)
    access_log: list[tuple[str, str, datetime]] = field(default_factory=list)
    outage_calls_left: int = 0
    #: Saved cards by payment method id; a card not listed has the fingerprint `fp_{its id}`.
    cards: dict[str, SandboxCard] = field(default_factory=dict)
    #: Where the "billing portal" lives: `dunning up` serves a local one (/dev/portal) so the
    #: demo's customer journey can be clicked through; elsewhere an example address.
    portal_url: str = SANDBOX_PORTAL

    def add_customer(self, customer_id: str, **details: object) -> SandboxCustomer:
        customer = SandboxCustomer(customer_id=customer_id, **details)  # type: ignore[arg-type]
        self.customers[customer_id] = customer
        return customer

    def add_card(self, payment_method_id: str, customer_id: str | None = None, **details: object) -> SandboxCard:
        """Save a card (for `customer_id`, listed as a backup card); `fingerprint=` the same for two
        payment methods makes them one card, as Stripe does for one card number saved twice."""
        details.setdefault("fingerprint", f"fp_{payment_method_id}")
        card = SandboxCard(payment_method_id=payment_method_id, customer_id=customer_id, **details)  # type: ignore[arg-type]
        self.cards[payment_method_id] = card
        return card

    def _card(self, payment_method_id: str) -> SandboxCard:
        return self.cards.get(payment_method_id) or SandboxCard(payment_method_id, f"fp_{payment_method_id}")

    async def charged_card(self, request: ChargeRequest) -> SavedCard | None:
        pm = request.payment_method_id or self._customer(request.customer_id).default_payment_method_id
        if pm is None:
            return None
        return self._saved(self._card(pm))

    @staticmethod
    def _saved(card: SandboxCard, default: str | None = None) -> SavedCard:
        return SavedCard(
            payment_method_id=card.payment_method_id,
            fingerprint=card.fingerprint,
            brand=card.brand,
            last4=card.last4,
            exp_month=card.exp_month,
            exp_year=card.exp_year,
            is_default=card.payment_method_id == default,
        )

    async def saved_cards(self, customer_id: str) -> list[SavedCard]:
        self._maybe_outage()
        default = self._customer(customer_id).default_payment_method_id
        return [self._saved(c, default) for c in self.cards.values() if c.customer_id == customer_id]

    def script_card(self, payment_method_id: str, outcomes: list[str | None]) -> None:
        """The next charges on this card return these decline codes in turn (None = paid), then pay."""
        self.scripted_cards[payment_method_id] = list(outcomes)

    def _customer(self, customer_id: str) -> SandboxCustomer:
        if customer_id not in self.customers:
            self.add_customer(
                customer_id,
                name="Sandbox Customer",
                email=f"{customer_id}@example.com",
                phone="+15555550100",
            )
        return self.customers[customer_id]

    def _maybe_outage(self) -> None:
        if self.outage_calls_left > 0:
            self.outage_calls_left -= 1
            raise ProviderUnavailable("sandbox outage (503)")

    def _decline_for(self, payment_method_id: str | None) -> str | None:
        script = self.scripted_cards.get(payment_method_id or "")
        if script:
            return script.pop(0)
        return TEST_CARD_DECLINES.get(payment_method_id or "")

    @property
    def successful_charges(self) -> list[ChargeLogEntry]:
        return [c for c in self.charges if c.result.status == "succeeded"]

    async def charge_invoice(self, request: ChargeRequest) -> ChargeResult:
        self._maybe_outage()
        if request.idempotency_key in self.idempotent_results:
            return self.idempotent_results[request.idempotency_key]
        if request.invoice_id in self.paid_invoices:
            return ChargeResult(invoice_id=request.invoice_id, status="already_paid")
        if request.invoice_id in self.voided_invoices:
            return ChargeResult(invoice_id=request.invoice_id, status="voided")
        card = request.payment_method_id or self._customer(request.customer_id).default_payment_method_id
        decline = self._decline_for(card)
        if decline is None:
            result = ChargeResult(
                invoice_id=request.invoice_id,
                status="succeeded",
                payment_method_id=card,
                payment_intent_id=f"pi_sandbox_{len(self.charges) + 1}",
            )
            self.paid_invoices.add(request.invoice_id)
        else:
            code = "authentication_required" if decline == "authentication_required" else "card_declined"
            result = ChargeResult(
                invoice_id=request.invoice_id,
                status="declined",
                category=classify_decline(decline_code=decline, code=code),
                code=code,
                decline_code=decline,
                message=f"Your card was declined ({decline}).",
                payment_method_id=card,
            )
        self.idempotent_results[request.idempotency_key] = result
        self.charges.append(
            ChargeLogEntry(request.invoice_id, request.idempotency_key, card, result, _now())
        )
        return result

    async def invoice_is_open(self, invoice_id: str) -> bool:
        return invoice_id not in self.paid_invoices and invoice_id not in self.voided_invoices

    async def suspend_access(self, request: AccessRequest) -> None:
        self._maybe_outage()
        self.access_log.append(("suspend", request.subscription_id, _now()))

    async def restore_access(self, request: AccessRequest) -> None:
        self._maybe_outage()
        self.access_log.append(("restore", request.subscription_id, _now()))

    async def cancel_subscription(self, request: AccessRequest) -> None:
        self._maybe_outage()
        self.access_log.append(("cancel", request.subscription_id, _now()))

    async def get_customer(self, customer_id: str) -> CustomerProfile:
        customer = self._customer(customer_id)
        hints = TimezoneHints(
            metadata=customer.timezone,
            address=Place(customer.country, customer.state) if customer.country else None,
            phone=customer.phone,
            locale=customer.locale,
        )
        zone = infer_timezone(hints, _now())
        return CustomerProfile(
            customer_id=customer_id,
            name=customer.name,
            locale=customer.locale,
            timezone=zone.chosen,
            timezone_candidates=list(zone.candidates),
            timezone_source=zone.source,
            timezone_narrowed_by=list(zone.narrowed_by),
            sms_opted_out=customer.sms_opted_out,
            has_email=bool(customer.email),
            has_phone=bool(customer.phone),
            plan_name=customer.plan_name,
            default_payment_method_id=customer.default_payment_method_id,
        )

    async def get_contact(self, customer_id: str) -> Contact:
        c = self._customer(customer_id)
        return Contact(
            customer_id=customer_id,
            name=c.name,
            email=c.email,
            phone=c.phone,
            locale=c.locale,
            sms_opted_out=c.sms_opted_out,
        )

    async def set_sms_opt_out_metadata(self, customer_id: str, opted_out: bool) -> None:
        self._maybe_outage()
        self._customer(customer_id).sms_opted_out = opted_out

    async def update_link(
        self, customer_id: str, invoice_id: str | None, return_url: str | None = None, *, portal_home: bool = False
    ) -> str:
        back = f"?return_url={quote(return_url, safe='')}" if return_url else ""
        return f"{self.portal_url}/{'portal' if portal_home else 'update'}/{customer_id}{back}"

    async def hosted_invoice_url(self, invoice_id: str) -> str | None:
        if self.portal_url != SANDBOX_PORTAL:
            return None  # `dunning up`'s local portal stands in for the invoice's page too
        return f"{SANDBOX_PORTAL}/invoice/{invoice_id}"


@dataclass
class SandboxLinks:
    """Signs case links like the real issuer but keeps no record (workflow tests with no database)."""

    public_url: str = "https://pay.example.com"
    signer: LinkSigner = field(default_factory=lambda: LinkSigner([b"sandbox-link-key-not-secret"]))
    issued: dict[str, str] = field(default_factory=dict)

    async def issue(self, *, case_id: str, workflow_id: str, run_id: str, customer_id: str) -> str:
        _, token = self.signer.token_for(case_id)
        self.issued[case_id] = token
        return f"{self.public_url}/c/{token}"


@dataclass
class OutboxMessage:
    channel: str
    to: str
    body: str
    idempotency_key: str
    subject: str | None = None
    html: str | None = None
    at: datetime = field(default_factory=_now)


@dataclass
class SandboxOutbox:
    """Email and SMS backend that records what would have been sent, once per idempotency key."""

    messages: list[OutboxMessage] = field(default_factory=list)
    unreachable: set[str] = field(default_factory=set)
    gate: asyncio.Event | None = None
    waiting_at_gate: asyncio.Event = field(default_factory=asyncio.Event)

    async def _pass_gate(self) -> None:
        """Tests hold sends here to make something happen while a message is in flight."""
        if self.gate is not None:
            self.waiting_at_gate.set()
            await self.gate.wait()

    def _record(self, message: OutboxMessage) -> str:
        if message.to in self.unreachable:
            raise RecipientUnreachable(f"{message.channel} recipient unreachable")
        for index, existing in enumerate(self.messages):
            if existing.idempotency_key == message.idempotency_key:
                return f"sandbox-{index + 1}"
        self.messages.append(message)
        return f"sandbox-{len(self.messages)}"

    async def send_email(
        self,
        *,
        to: str,
        subject: str,
        text: str,
        html: str | None,
        idempotency_key: str,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        await self._pass_gate()
        return self._record(OutboxMessage("email", to, text, idempotency_key, subject, html))

    async def send_sms(self, *, to: str, body: str, idempotency_key: str) -> str:
        return self._record(OutboxMessage("sms", to, body, idempotency_key))


class MailboxMessage(BaseModel):
    """One message as the customer received it, in the local mailbox (`GET /dev/mailbox`)."""

    at: datetime
    customer_id: str
    channel: str  # email, sms, in_app
    template: str
    to: str | None = None
    name: str | None = None
    locale: str | None = None
    subject: str | None = None
    text: str
    html: str | None = None
    link: str | None = None
    idempotency_key: str

    @property
    def key(self) -> str:
        """A short, URL-safe name for this message (its own page in the mailbox)."""
        return hashlib.sha256(self.idempotency_key.encode()).hexdigest()[:16]


@dataclass
class SandboxMailbox:
    """What the sandbox sends, kept in a JSON Lines file for the local mailbox.

    The worker appends (one line a message, one `write` each, so lines never interleave); the API,
    another process, reads. Only `dunning up` turns it on (`DUNNING_SANDBOX_OUTBOX_FILE`), and only
    while email and SMS are on the sandbox: nothing here ever runs against a real provider.
    """

    path: Path

    async def record(self, message: MailboxMessage) -> None:
        await asyncio.to_thread(self._append, message.model_dump_json() + "\n")

    def _append(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def read(self, limit: int = 1000) -> list[MailboxMessage]:
        """The latest `limit` messages, newest first; a retried send is shown once, a torn or
        foreign line is skipped."""
        try:
            lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()[-limit:]
        except FileNotFoundError:
            return []
        seen: set[str] = set()
        messages: list[MailboxMessage] = []
        for line in lines:
            try:
                message = MailboxMessage.model_validate(json.loads(line))
            except (ValueError, ValidationError):
                continue
            if message.idempotency_key not in seen:
                seen.add(message.idempotency_key)
                messages.append(message)
        # newest first; of two at the same moment, the one written later
        return [m for _, m in sorted(enumerate(messages), key=lambda im: (im[1].at, im[0]), reverse=True)]


@dataclass
class MemoryConsentStore:
    opted_out: set[str] = field(default_factory=set)

    async def sms_opted_out(self, customer_id: str) -> bool:
        return customer_id in self.opted_out

    async def set_sms_opt_out(self, customer_id: str, opted_out: bool, source: str | None = None) -> None:
        (self.opted_out.add if opted_out else self.opted_out.discard)(customer_id)
