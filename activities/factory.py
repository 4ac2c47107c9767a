"""Builds the configured backends and the activity objects the worker registers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from activities.backends import EmailBackend, PaymentsBackend, SmsBackend
from activities.case_activities import NotificationActivities, PaymentActivities, case_activities
from runtime.consent import SqliteConsentStore
from activities.sandbox import SandboxOutbox, SandboxPayments
from runtime.settings import Settings
from activities.stripe_backend import StripePayments

log = structlog.get_logger(__name__)


def build_activities(settings: Settings) -> list[Callable[..., Any]]:
    """The activity callables for the worker, with the backends the settings choose."""
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
        payments = StripePayments.from_settings(settings)
    else:
        payments = SandboxPayments()
    outbox = SandboxOutbox()
    email, sms = build_email_backend(settings, outbox), build_sms_backend(settings, outbox)
    # Opt-outs outlive cases and restarts; the API's Twilio webhook writes the same file.
    consent = SqliteConsentStore(consent_path(settings))
    payment_activities = PaymentActivities(payments)
    notification_activities = NotificationActivities(
        payments,
        email,
        sms,
        consent,
        message_defaults={
            "company_name": settings.dunning_company_name,
            "support_email": settings.dunning_support_email,
        },
    )
    return case_activities(payment_activities, notification_activities)


def consent_path(settings: Settings) -> Path:
    return settings.dunning_state_dir / "consent.sqlite3"


def build_email_backend(settings: Settings, sandbox: SandboxOutbox) -> EmailBackend:
    if settings.email_backend() != "sendgrid":
        return sandbox
    from activities.sendgrid_backend import SendGridEmail

    return SendGridEmail(
        settings.sendgrid_api_key or "",
        settings.dunning_email_from,
        host=settings.sendgrid_api_host,
        timeout=settings.dunning_provider_timeout,
        reply_to=settings.dunning_support_email,
    )


def build_sms_backend(settings: Settings, sandbox: SandboxOutbox) -> SmsBackend:
    if settings.sms_backend() != "twilio":
        return sandbox
    from activities.twilio_backend import TwilioSms

    return TwilioSms(
        settings.twilio_account_sid or "",
        settings.twilio_auth_token or "",
        settings.twilio_from_number or "",
        api_base=settings.twilio_api_base,
        timeout=settings.dunning_provider_timeout,
    )
