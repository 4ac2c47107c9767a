"""The interfaces every backend implements, chosen by configuration like Django's email backends.

`sandbox` implements them in memory for tests and the demo; `stripe`, `sendgrid` and
`twilio` implement them against the real providers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from pydantic import BaseModel, Field

from dunning.models import AccessRequest, ChargeRequest, ChargeResult, CustomerProfile, SavedCard
from runtime.email_suppression import Suppression


class Contact(BaseModel):
    """Contact details, looked up at send time and never stored in workflow history."""

    customer_id: str
    name: str | None = None
    email: str | None = None
    phone: str | None = None
    locale: str = "en"
    sms_opted_out: bool = Field(False, description="the provider's record of an SMS opt-out (Stripe metadata)")


class PaymentsBackend(Protocol):
    async def charge_invoice(self, request: ChargeRequest) -> ChargeResult:
        """Pay the open invoice off-session with the request's idempotency key.

        Declines are returned as results. Provider outages raise `ProviderUnavailable`
        (retried by Temporal); misconfiguration raises `ProviderRejected` (not retried).
        """

    async def invoice_is_open(self, invoice_id: str) -> bool:
        """True while the invoice still needs paying (re-checked before every message)."""

    async def charged_card(self, request: ChargeRequest) -> SavedCard | None:
        """The card this charge would use (the request's, else the subscription's or customer's
        default) with its fingerprint, brand and last four; None when it is no card or unknown."""

    async def saved_cards(self, customer_id: str) -> list[SavedCard]:
        """The customer's saved cards (PaymentMethods of type card), for backup cards."""

    async def suspend_access(self, request: AccessRequest) -> None: ...

    async def restore_access(self, request: AccessRequest) -> None: ...

    async def cancel_subscription(self, request: AccessRequest) -> None: ...

    async def get_customer(self, customer_id: str) -> CustomerProfile: ...

    async def get_contact(self, customer_id: str) -> Contact: ...

    async def update_link(
        self, customer_id: str, invoice_id: str | None, return_url: str | None = None, *, portal_home: bool = False
    ) -> str:
        """Where the customer updates the card (or pays the invoice), created at their click on
        their page; `return_url` brings them back to it. `portal_home`: the portal's start page
        (where a canceled customer resubscribes), not its update-the-card flow."""

    async def hosted_invoice_url(self, invoice_id: str) -> str | None:
        """The invoice's hosted page: the one place that runs 3-D Secure for an authentication decline."""

    async def set_sms_opt_out_metadata(self, customer_id: str, opted_out: bool) -> None:
        """Mirror an SMS opt-out (True) or opt-in (False) into the provider's customer record
        (Stripe metadata `dunning_sms_opt_out`). The service's database stays the record."""


class LinkIssuer(Protocol):
    async def issue(self, *, case_id: str, workflow_id: str, run_id: str, customer_id: str) -> str:
        """The case's own link (`/c/{token}`), the one every message carries."""


class EmailBackend(Protocol):
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
        """Send one email; returns the provider's message id. `tags` (customer_id, case_id) travel
        with the message and come back in the provider's events (SendGrid's `custom_args`)."""


class EmailSuppressions(Protocol):
    """Addresses we no longer email (bounced, spam report, unsubscribed): the SendGrid webhook
    writes them, `send_notification` reads them before every email."""

    async def suppression_for(self, email: str) -> Suppression | None: ...


class SmsBackend(Protocol):
    async def send_sms(self, *, to: str, body: str, idempotency_key: str) -> str:
        """Send one SMS; returns the provider's message id."""


class ConsentStore(Protocol):
    """Lasting SMS opt-outs, across cases and restarts."""

    async def sms_opted_out(self, customer_id: str) -> bool: ...

    async def set_sms_opt_out(self, customer_id: str, opted_out: bool, source: str | None = None) -> None: ...


class ProviderUnavailable(Exception):
    """A provider outage (5xx, 429, timeout): Temporal retries it; never counted as an attempt."""


class ProviderRejected(Exception):
    """The provider refused the request for good (bad key, invalid request): not retried."""


class RecipientUnreachable(Exception):
    """This channel cannot reach the customer (opted out, bad number, bounced): final for it."""


class RecipientOptedOut(RecipientUnreachable):
    """The provider says the customer opted out (Twilio 21610): recorded in the consent store too."""
