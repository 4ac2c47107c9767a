"""Builds the configured backends and the activity objects the worker registers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from activities.backends import EmailBackend, PaymentsBackend, SmsBackend
from activities.case_activities import NotificationActivities, PaymentActivities, case_activities
from activities.ledger_activities import LedgerActivities
from activities.sandbox import SandboxMailbox, SandboxOutbox, SandboxPayments
from activities.stripe_backend import StripePayments
from runtime.card_budget import DatabaseCardBudget
from runtime.consent import DatabaseConsentStore
from runtime.database import Database
from runtime.email_suppression import DatabaseEmailSuppressions
from runtime.links import CaseLinks, LinkSigner, parse_link_keys
from runtime.ledger import DatabaseLedger
from runtime.settings import ConfigError, Settings, reveal

log = structlog.get_logger(__name__)


def build_activities(settings: Settings, database: Database | None = None) -> list[Callable[..., Any]]:
    """The activity callables for the worker, with the backends the settings choose.

    `database` is the migrated one the worker opened at start (default: the settings', unopened)."""
    payments_kind, email_kind, sms_kind = (
        settings.payments_backend(),
        settings.email_backend(),
        settings.sms_backend(),
    )
    log.info(
        "backends chosen",
        payments=payments_kind,
        email=email_kind,
        sms=sms_kind,
        note="sandbox means nothing leaves this machine" if "sandbox" in (payments_kind, email_kind, sms_kind) else "",
    )
    payments: PaymentsBackend
    if payments_kind == "stripe":
        _require(
            "payments go through Stripe",
            "DUNNING_PAYMENTS=stripe" if settings.dunning_payments else "STRIPE_API_KEY is set",
            {"STRIPE_API_KEY": settings.stripe_api_key},
        )
        payments = StripePayments.from_settings(settings)
    else:
        payments = SandboxPayments()
    outbox = SandboxOutbox()
    email, sms = build_email_backend(settings, outbox), build_sms_backend(settings, outbox)
    # Opt-outs outlive cases and restarts; the API's Twilio webhook writes the same database.
    database = database or Database.from_settings(settings)
    consent = DatabaseConsentStore(database)
    links = CaseLinks(LinkSigner(parse_link_keys(reveal(settings.dunning_link_keys))), settings.public_url(), database)
    # The card's 30-day budget, shared by every case (and worker) that charges the card.
    payment_activities = PaymentActivities(payments, DatabaseCardBudget(database))
    notification_activities = NotificationActivities(
        payments,
        email,
        sms,
        consent,
        links,
        message_defaults=settings.message_defaults(),
        mailbox=_sandbox_mailbox(settings),
        # Bounces, spam reports, unsubscribes: the API's SendGrid webhook writes the same database.
        suppressions=DatabaseEmailSuppressions(database),
    )
    # The recovery ledger: every case's facts, read back by the API's reports and metrics.
    ledger = LedgerActivities(DatabaseLedger(database))
    return [*case_activities(payment_activities, notification_activities), *ledger.activities()]


def _sandbox_mailbox(settings: Settings) -> SandboxMailbox | None:
    """Development only: keep what the sandbox sends for the API's local mailbox (`dunning up`)."""
    path = settings.sandbox_mailbox_file()
    if path is None:
        return None
    log.info("sandbox messages are kept for the local mailbox", file=str(path))
    return SandboxMailbox(path.resolve())


def _require(what: str, chosen_by: str, needed: dict[str, object]) -> None:
    """A provider chosen without what it needs stops the worker at start, in one line."""
    missing = [name for name, value in needed.items() if not value]
    if missing:
        names = " and ".join(missing)
        raise ConfigError(
            f"{names} {'is' if len(missing) == 1 else 'are'} not set: {what} ({chosen_by}),"
            f" which needs {', '.join(needed)}"
        )


def build_email_backend(settings: Settings, sandbox: SandboxOutbox) -> EmailBackend:
    if settings.email_backend() != "sendgrid":
        return sandbox
    _require(
        "email goes through SendGrid",
        "DUNNING_EMAIL=sendgrid" if settings.dunning_email else "SENDGRID_API_KEY is set",
        {"SENDGRID_API_KEY": settings.sendgrid_api_key, "DUNNING_EMAIL_FROM": settings.dunning_email_from},
    )
    from activities.sendgrid_backend import SendGridEmail

    assert settings.dunning_email_from  # _require stopped the start otherwise
    return SendGridEmail(
        reveal(settings.sendgrid_api_key),
        settings.dunning_email_from,
        host=settings.sendgrid_api_host,
        timeout=settings.dunning_provider_timeout,
        reply_to=settings.dunning_support_email,
    )


def build_sms_backend(settings: Settings, sandbox: SandboxOutbox) -> SmsBackend:
    if settings.sms_backend() != "twilio":
        return sandbox
    _require(
        "SMS goes through Twilio",
        "DUNNING_SMS=twilio" if settings.dunning_sms else "TWILIO_AUTH_TOKEN is set",
        {
            "TWILIO_ACCOUNT_SID": settings.twilio_account_sid,
            "TWILIO_AUTH_TOKEN": settings.twilio_auth_token,
            "TWILIO_FROM_NUMBER": settings.twilio_from_number,
        },
    )
    from activities.twilio_backend import TwilioSms

    return TwilioSms(
        settings.twilio_account_sid or "",
        reveal(settings.twilio_auth_token),
        settings.twilio_from_number or "",
        api_base=settings.twilio_api_base,
        timeout=settings.dunning_provider_timeout,
    )
