"""Builds the configured backends and the activity objects the worker registers."""

from __future__ import annotations

import structlog

from activities.backends import PaymentsBackend
from activities.case_activities import NotificationActivities, PaymentActivities
from activities.sandbox import MemoryConsentStore, SandboxOutbox, SandboxPayments
from activities.settings import Settings
from activities.stripe_backend import StripePayments

log = structlog.get_logger(__name__)


def build_activities(settings: Settings) -> list[object]:
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
    consent = MemoryConsentStore()
    payment_activities = PaymentActivities(payments)
    notification_activities = NotificationActivities(payments, outbox, outbox, consent)
    return [
        payment_activities.charge_invoice,
        payment_activities.suspend_access,
        payment_activities.restore_access,
        payment_activities.cancel_subscription,
        payment_activities.get_customer,
        notification_activities.send_notification,
    ]
